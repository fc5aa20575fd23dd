"""Pipeline stages: one component on one back-end behind one interface, `run(**inputs) -> outputs` (float32 CPU
tensors by the contract's I/O names).

Every stage runs a session of mi2v_export.runtimes: `TorchStage` the PyTorch reference (`pytorch`), the artifact
stages whatever runtime runs the file (`OnnxStage`: onnxruntime, or the QNN HTP simulator for a QNN EPContext
model; `ExecuTorchStage`: the ExecuTorch runtime; `CoreMLStage`: Core ML, macOS only). `artifact_stage` picks the
runtime from the manifest entry (`runtimes.for_entry`), else from the file's suffix. Inputs are cast to what the
artifact takes and outputs back to float32 (fp16 artifacts get fp16 inputs).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .. import runtimes
from ..contract import COMPONENTS, ENCODER, IO
from ..errors import BadInputError, MissingDependencyError
from ..qnn import RUNTIME as QNN_RUNTIME
from ..runtimes import Runtime, Session, memory
from ..runtimes.pytorch import REFERENCE
from ..runtimes.sessions import is_tiled, open_session


class Stage(ABC):
    """One pipeline component on one back-end. `run` takes and returns float32 CPU tensors by contract name."""

    component: str
    backend: str  # "pytorch" | "onnxruntime" | "qnn-htp-simulator" | "executorch" | "coreml"
    source: str  # what runs: a file path or a description of the PyTorch weights
    precision: str = "fp32"
    gate_db: float | None = None  # per-frame PSNR gate from the manifest (trajectory), artifacts only

    @abstractmethod
    def run(self, **inputs: torch.Tensor) -> dict[str, torch.Tensor]:
        ...

    def load(self) -> None:
        """Make the stage ready to run (the pipeline calls it before its timer starts: loading is not run time)."""

    def release(self) -> None:
        """Free what the stage holds until its next run (the pipeline calls it when it moves on, so one stage's
        runtime is resident at a time); a PyTorch stage keeps its module."""

    @property
    def provides_logvar(self) -> bool:
        return False

    def describe(self) -> str:
        return f"{self.backend} ({self.precision}) · {self.source}"


def check_component(component: str) -> None:
    if component not in COMPONENTS:
        raise BadInputError(f"unknown component {component!r}; expected one of {', '.join(COMPONENTS)}")


def run_session(session: Session, inputs: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A runtime session on torch tensors: the session's inputs by name, its outputs as float32 tensors."""
    feeds = {name: inputs[name].detach().cpu().numpy() for name in session.input_names}
    return {name: torch.from_numpy(value).float() for name, value in session.run(feeds).items()}


class TorchStage(Stage):
    """PyTorch eager, float32: the reference. Wraps the module of `mi2v_export.models` (or any module with the
    contract's positional forward). An encoder module with `.moments()` also gives the posterior log-variance."""

    backend = "pytorch"

    def __init__(self, component: str, module: nn.Module, source: str = "pytorch"):
        check_component(component)
        self.component, self.module, self.source = component, module, source
        names, outs = IO[component]
        moments = self.provides_logvar
        self.session = runtimes.get(REFERENCE).load(
            module=module, input_names=names, output_names=["moments"] if moments else outs[:1],
            call=module.moments if moments else None)
        self.precision = {"float16": "fp16", "bfloat16": "bf16"}.get(self.session.dtype, "fp32")

    @property
    def provides_logvar(self) -> bool:
        return self.component == ENCODER and hasattr(self.module, "moments")

    @torch.inference_mode()
    def run(self, **inputs: torch.Tensor) -> dict[str, torch.Tensor]:
        out = run_session(self.session, inputs)
        if "moments" not in out:
            return out
        moments = out["moments"]
        c = moments.shape[1] // 2
        return {"latent": moments[:, :c], "logvar": moments[:, c:c + 1]}


class ArtifactStage(Stage):
    """An exported artifact on a runtime of mi2v_export.runtimes; it must have the contract's I/O names."""

    def __init__(self, component: str, path: Path, runtime: Runtime, entry: Any = None, **options: Any):
        check_component(component)
        path = Path(path)
        self.component, self.source = component, str(path)
        why = runtime.available()
        if why:
            raise MissingDependencyError(self.unavailable(path, entry, why))
        # a tiled entry: its stages; `low_memory`: the runtime frees a run's activations (generate is about
        # fitting the phone, and loads one stage at a time; an adapter takes what it can)
        options = {"low_memory": True, **options}
        self._open = lambda: open_session(runtime, path, entry, **options)
        self.session: Session | None = self._open()
        try:
            # what GenerateResult.backends names: the runtime family, or the simulator a QNN model runs on
            self.backend = QNN_RUNTIME if runtime.name == QNN_RUNTIME else runtime.family
            self._check_contract(path)
            self.precision = "fp16" if any(t.dtype == "float16" for t in self.session.inputs) else "fp32"
            self.tiled, self.output_names = is_tiled(entry), list(self.session.output_names)
            self._input_shapes = self.session.input_shapes()  # kept: checking shapes must not load it again
        finally:
            self.release()  # checked; loaded again before it runs, once the stage before it is released

    def release(self) -> None:
        if self.session is not None:
            self.session.close()
            self.session = None
            memory.return_freed()

    def load(self) -> None:
        if self.session is None:
            self.session = self._open()

    def _loaded(self) -> Session:
        self.load()
        return self.session

    def unavailable(self, path: Path, entry: Any, why: str) -> str:
        return f"{path.name}: {why}; use another artifact of the {self.component} here, or --fallback pytorch"

    def _check_contract(self, path: Path) -> None:
        names, outs = IO[self.component]
        ins, got = self.session.input_names, self.session.output_names
        missing = [n for n in names if n not in ins] + [n for n in outs if n not in got]
        if missing:
            raise BadInputError(f"{path.name}: does not follow the artifact contract for the {self.component} "
                                f"(missing I/O {', '.join(missing)}; it has inputs {', '.join(ins)} and outputs "
                                f"{', '.join(got)})")

    @property
    def provides_logvar(self) -> bool:
        return self.component == ENCODER and "logvar" in self.output_names

    def input_shapes(self) -> dict[str, tuple]:
        return dict(self._input_shapes)

    def run(self, **inputs: torch.Tensor) -> dict[str, torch.Tensor]:
        session = self._loaded()
        unexpected = [n for n in session.input_names if n not in inputs]
        if unexpected:
            raise BadInputError(f"{Path(self.source).name}: unexpected input {unexpected[0]!r}")
        return run_session(session, inputs)

    def describe(self) -> str:
        return super().describe() + (" (tiled)" if self.tiled else "")


class OnnxStage(ArtifactStage):
    """`<component>.onnx` on onnxruntime's CPU EP; inputs are matched by name."""

    def __init__(self, component: str, path: Path, threads: int | None = None, qnn_soc: str | None = None,
                 qnn_fp16: bool = True, qnn_cpu_fallback: bool = False, *, entry: Any = None,
                 runtime: Runtime | None = None):
        """`qnn_soc`: a QNN EPContext model compiled for that SoC, run on the onnxruntime-qnn HTP (simulator);
        `qnn_cpu_fallback` when it was exported with --allow-cpu-fallback."""
        if qnn_soc:
            runtime = runtime or runtimes.get(QNN_RUNTIME)
            options = {"soc": qnn_soc, "fp16": qnn_fp16, "allow_cpu_fallback": qnn_cpu_fallback}
        else:
            runtime, options = runtime or runtimes.get("onnxruntime"), {"threads": threads}
        super().__init__(component, path, runtime, entry, **options)


class ExecuTorchStage(ArtifactStage):
    """`<component>.pte` on the ExecuTorch runtime. A .pte has no input names: inputs go in the manifest's order
    (else the contract's); dtypes and shapes come from the program's own method metadata."""

    def __init__(self, component: str, path: Path, input_names: list[str] | None = None,
                 output_names: list[str] | None = None, *, entry: Any = None, runtime: Runtime | None = None,
                 threads: int | None = None):
        """`threads`: the ExecuTorch thread pool's size (process-wide); None keeps the runtime's."""
        check_component(component)
        names, outs = IO[component]
        runtime = runtime or runtimes.get("executorch-portable")
        try:
            super().__init__(component, path, runtime, entry, input_names=input_names or names,
                             output_names=output_names or outs, threads=threads)
        except BadInputError:
            if entry is not None and runtimes.runnable(entry) is None:
                raise MissingDependencyError(self.unavailable(Path(path), entry, "")) from None
            raise

    def unavailable(self, path: Path, entry: Any, why: str) -> str:
        if entry is not None and entry.delegate not in (None, "xnnpack"):
            return (f"{path.name} is lowered for the {entry.delegate} delegate, which runs only on the device; use "
                    "an XNNPACK or ONNX artifact here, or --fallback pytorch")
        return super().unavailable(path, entry, why)


class CoreMLStage(ArtifactStage):
    """A Core ML `.mlpackage` through coremltools' predict (all compute units): runs only on macOS."""

    def __init__(self, component: str, path: Path, *, entry: Any = None, runtime: Runtime | None = None,
                 threads: int | None = None):  # Core ML schedules its own threads
        super().__init__(component, path, runtime or runtimes.get("coreml-all"), entry)
        self.precision = "fp16"  # pragma: no cover - macOS only

    def unavailable(self, path: Path, entry: Any, why: str) -> str:
        return (f"{path.name}: Core ML models run only on macOS; export this component to ONNX or ExecuTorch, or "
                "pass --fallback pytorch")


# Artifact suffix → the stage class of runtimes that need more than `ArtifactStage` (names a .pte lacks, the QNN
# simulator's options, Core ML's platform message); every other registered runtime (LiteRT, ...) runs as ArtifactStage
STAGE_BACKENDS: dict[str, type[ArtifactStage]] = {".onnx": OnnxStage, ".pte": ExecuTorchStage,
                                                  ".mlpackage": CoreMLStage}


def artifact_stage(component: str, path: Path, entry: Any = None, threads: int | None = None) -> Stage:
    """The stage for one artifact file on the runtime that runs its manifest entry here (`runtimes.runnable`,
    else the first that accepts it, which then says why it cannot run), or, without an entry, by its suffix.
    `threads`: the runtime's intra-op threads (None: its default)."""
    path = Path(path)
    accepting = runtimes.for_entry(entry) if entry is not None else runtimes.for_path(path)
    runtime = (runtimes.runnable(entry) if entry is not None else None) or next(iter(accepting), None)
    if runtime is None:
        known = sorted({r.suffix for r in runtimes.all() if r.suffix})
        raise BadInputError(f"{path.name}: unknown artifact type (expected {', '.join(known)})")
    cls = STAGE_BACKENDS.get(runtime.suffix, ArtifactStage)
    stage = cls(component, path, entry=entry, runtime=runtime, threads=threads)
    if entry is not None:
        stage.precision = entry.precision or entry.dtype  # the exported precision, even with fp32 program I/O
        stage.gate_db = (entry.trajectory or {}).get("gate_db")  # the trajectory gate it passed at export
    return stage
