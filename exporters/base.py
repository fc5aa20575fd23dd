"""The exporter interface and its registry: one `Exporter` per target, found by name.

Adding a target is adding a module to this package that defines an `Exporter` subclass decorated with
`@register`; `get_exporter` imports every module of the package once, so the new file is picked up by itself.

An exporter turns one `ComponentSpec` (an fp32 eval-mode module with the contract's named example inputs) into an
artifact file in a folder, and knows how to check it: `inspect` (structural, always possible) and `run` (execute on
a runtime of this host, or say why not). Heavy libraries are imported inside the methods, so importing the
registry stays cheap.
"""

from __future__ import annotations

import importlib
import pkgutil
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

import numpy as np
import torch
from torch import nn

from mi2v_export.contract import runs_on_host
from mi2v_export.errors import BadInputError
from mi2v_export.manifest import TensorInfo

DTYPES = ("fp32", "fp16")
TORCH_DTYPES = {"fp32": torch.float32, "fp16": torch.float16}


# ---------------------------------------------------------------------------------------------------------------
# Progress


@dataclass(frozen=True)
class ProgressEvent:
    """`state` is "start", "done", "skip" or "info"; `stage` is one of STAGES (or a free-form info line)."""

    component: str
    stage: str
    state: str
    detail: str = ""
    seconds: float | None = None


ProgressCallback = Callable[[ProgressEvent], None]
STAGES = ("load", "reference", "rewrite", "export", "lower", "serialize", "vectors", "inspect", "verify")


def no_progress(event: ProgressEvent) -> None:
    return None


# ---------------------------------------------------------------------------------------------------------------
# What an exporter receives and returns


@dataclass
class ExportOptions:
    """Resolved, validated options of one export run (what the CLI flags become)."""

    target: str
    delegate: str | None = None
    dtype: str = "fp32"  # the graph's floating dtype: "fp16" for precision fp16, "fp32" otherwise
    precision: str = "fp32"  # this component's mi2v_export.precision name (set per component by the orchestrator)
    precisions: dict = field(default_factory=dict)  # component → Precision of the whole run
    calibration: object = None  # this component's calibration records (set by the orchestrator for integer ones)
    recipe: dict | None = None  # the mixed-precision recipe (mi2v_export.recipe), for the component it names
    verify: bool = True
    test_vectors: bool = True  # write the sampler inputs and PyTorch outputs beside the artifact (testvectors.py)
    etrecord: bool = False  # ExecuTorch: also write <component>.etrecord for per-op profiling
    compute_units: str = "all"  # Core ML (target coreml, delegate coreml)
    min_ios: int = 17  # Core ML minimum deployment target
    soc: str = "SM8650"  # QNN chipset
    allow_cpu_fallback: bool = False  # QNN: accept nodes the HTP refuses (run by onnxruntime's CPU EP)
    opset: int = 18  # ONNX


@dataclass
class ComponentSpec:
    """One component ready to export: the module (fp32, eval) and its example inputs in contract order.

    Exporters may rewrite `module` in place (the reference output is computed before export)."""

    name: str  # encoder | denoiser | decoder
    model: str  # mobilei2v-denoiser | ltx-encoder | turbo-vaed | ltx-decoder
    module: nn.Module
    inputs: dict[str, torch.Tensor]  # contract names → seeded example tensors (fp32)
    output_names: tuple[str, ...]
    attention: dict | None = None  # kernels.describe_plan record when an attention rewrite was applied
    reference: dict[str, torch.Tensor] | None = None  # PyTorch fp32 outputs on `inputs` (None when not needed)
    vectors: list[tuple[dict, dict]] = field(default_factory=list)  # (inputs, reference outputs) test-vector sets
    stages_s: dict[str, float] = field(default_factory=dict)  # time spent building it ("load", "reference")

    @property
    def args(self) -> tuple[torch.Tensor, ...]:
        return tuple(self.inputs.values())


@dataclass
class Artifact:
    """What `Exporter.export` produced inside the staging folder."""

    file: str  # primary file (or folder) name, e.g. "denoiser.onnx"
    inputs: list[TensorInfo]
    outputs: list[TensorInfo]
    extra_files: dict[str, str] = field(default_factory=dict)  # role → file name
    target_info: dict = field(default_factory=dict)
    delegation: dict | None = None
    stages_s: dict[str, float] = field(default_factory=dict)
    rewrites: list[str] = field(default_factory=list)
    test_vectors: dict | None = None  # the manifest's test_vectors record once they are written


SIMULATED_RUNTIME = "pytorch-simulated"  # verified_on of an artifact checked by its quantized graph in PyTorch


@dataclass
class ArtifactRun:
    """Outputs of executing the artifact on a runtime here (None when no runtime exists, with the reason)."""

    outputs: dict[str, np.ndarray] | None
    verified_on: str | None
    reason: str | None = None


# ---------------------------------------------------------------------------------------------------------------
# The interface


class Exporter(ABC):
    name: ClassVar[str]  # the --target value
    delegate: ClassVar[str | None] = None  # set: this class handles `--target name --delegate delegate` only
    extension: ClassVar[str]  # artifact suffix, e.g. ".onnx"
    summary: ClassVar[str] = ""

    # -- options ---------------------------------------------------------------------------------------------
    def delegates(self) -> Mapping[str, str]:
        """--delegate values this target takes (name → one-line description); empty when it takes none."""
        return {}

    def default_delegate(self) -> str | None:
        return None

    def default_dtype(self, delegate: str | None) -> str:
        return "fp32"

    def resolve(self, options: ExportOptions) -> ExportOptions:
        """Validate the target-specific options and fill defaults; BadInputError with one line otherwise."""
        delegates = self.delegates()
        if options.delegate is not None and not delegates:
            raise BadInputError(f"--delegate does not apply to --target {self.name} (executorch and onnx take one)")
        if delegates:
            if options.delegate is None:
                options.delegate = self.default_delegate()
            if options.delegate not in delegates:
                raise BadInputError(f"unknown delegate {options.delegate!r} for --target {self.name}; choose one "
                                    f"of: {', '.join(delegates)}")
        return options

    def check_environment(self, options: ExportOptions) -> None:
        """Fail at once (MissingDependencyError) when something this export needs is missing on this host."""
        return None

    def simulated_module(self, component: str) -> nn.Module | None:
        """The PyTorch stand-in (contract-positional forward) of this run's `component` artifact when no runtime here
        executes it and `run` checked it as "pytorch-simulated"; the trajectory gate runs it in its place."""
        entry = self._simulated.get(component)
        return entry[1] if entry else None

    def _remember_simulated(self, spec: ComponentSpec, precision: str, module: nn.Module) -> None:
        if isinstance(module, torch.fx.GraphModule):  # a PT2E graph: the pipeline's .eval() raises unless allowed
            from torchao.quantization.pt2e import allow_exported_model_train_eval

            allow_exported_model_train_eval(module)
        self._simulated = {**self._simulated, spec.name: ((id(spec.module), precision), module)}

    def _recalled_simulated(self, spec: ComponentSpec, precision: str) -> nn.Module | None:
        key, module = self._simulated.get(spec.name, (None, None))
        return module if key == (id(spec.module), precision) else None

    def forget_simulated(self) -> None:
        """Drop the stand-ins once the trajectory gate ran (a 720p Core ML w8 / w4 denoiser's is ~1 GB of fp32)."""
        self._simulated = {}

    _simulated: dict = {}  # component → ((id of its module, precision), stand-in module)

    def runs_here(self, options: ExportOptions) -> bool:
        """Whether `run` can execute artifacts of these options on this host (else the PyTorch reference output is
        only computed when something else needs it, e.g. a BundledProgram)."""
        return runs_on_host(self.name, options.delegate)

    def file_name(self, component: str) -> str:
        return f"{component}{self.extension}"

    def gate(self, options: ExportOptions):
        """The parity gate against PyTorch fp32 for artifacts of these options."""
        from mi2v_export import parity

        return parity.gate_for(options.recipe["precision"] if options.recipe else options.precision)

    # -- work ------------------------------------------------------------------------------------------------
    @abstractmethod
    def export(self, spec: ComponentSpec, out_dir: Path, options: ExportOptions,
               progress: ProgressCallback) -> Artifact:
        """Lower `spec` into `out_dir / self.file_name(spec.name)` (plus extra files) and describe it."""

    @abstractmethod
    def inspect(self, artifact: Artifact, out_dir: Path, spec: ComponentSpec, options: ExportOptions) -> list[str]:
        """Structural checks that need no runtime; returns what was checked, raises VerificationError on a fault."""

    @abstractmethod
    def run(self, artifact: Artifact, out_dir: Path, spec: ComponentSpec, options: ExportOptions) -> ArtifactRun:
        """Execute the artifact on this host's runtime with `spec.inputs` (cast to the artifact's input dtypes)."""


# ---------------------------------------------------------------------------------------------------------------
# Registry

EXPORTERS: dict[str, Exporter] = {}
DELEGATED: dict[tuple[str, str], Exporter] = {}  # (target, delegate) → an exporter of its own (e.g. onnx + qnn)
_discovered = False


def register(cls: type[Exporter]) -> type[Exporter]:
    """Class decorator: make `cls` available as `--target cls.name` (with `cls.delegate` set: as
    `--target cls.name --delegate cls.delegate`)."""
    if cls.delegate is not None:
        DELEGATED[(cls.name, cls.delegate)] = cls()
        return cls
    if cls.name in EXPORTERS and type(EXPORTERS[cls.name]) is not cls:
        raise RuntimeError(f"two exporters named {cls.name!r}: {type(EXPORTERS[cls.name]).__name__} and "
                           f"{cls.__name__}")
    EXPORTERS[cls.name] = cls()
    return cls


def discover() -> dict[str, Exporter]:
    """Import every module of this package (once) so their `@register` decorators run."""
    global _discovered
    if not _discovered:
        package = importlib.import_module(__name__.rsplit(".", 1)[0])
        for info in pkgutil.iter_modules(package.__path__):
            if not info.name.startswith("_"):
                importlib.import_module(f"{package.__name__}.{info.name}")
        _discovered = True
    return EXPORTERS


def targets() -> list[str]:
    return list(discover())


def get_exporter(target: str, delegate: str | None = None) -> Exporter:
    """The exporter of a target, or the one registered for this target and delegate when there is one."""
    exporters = discover()
    if target not in exporters:
        raise BadInputError(f"unknown target {target!r}; choose one of: {', '.join(exporters)}")
    return DELEGATED.get((target, delegate), exporters[target])


def delegated_exporters(target: str) -> dict[str, Exporter]:
    """delegate → exporter of the delegates registered with their own class for `target`."""
    discover()
    return {d: e for (t, d), e in DELEGATED.items() if t == target}


# ---------------------------------------------------------------------------------------------------------------
# Helpers shared by exporters


def numpy_dtype_name(dtype) -> str:
    """'float32' style name of a torch / numpy / onnx-elem dtype."""
    if isinstance(dtype, torch.dtype):
        return str(dtype).replace("torch.", "")
    return np.dtype(dtype).name


def cast_inputs(spec: ComponentSpec, dtype: str) -> tuple[torch.Tensor, ...]:
    """The example inputs in the precision the exported graph takes (floating tensors only)."""
    t = TORCH_DTYPES[dtype]
    return tuple(x.to(t) if x.is_floating_point() else x for x in spec.args)


def tensor_infos(names, tensors) -> list[TensorInfo]:
    return [TensorInfo(n, tuple(int(s) for s in t.shape), numpy_dtype_name(t.dtype)) for n, t in zip(names, tensors)]


def run_simulated(module, spec: ComponentSpec) -> ArtifactRun:
    """Run the PyTorch stand-in of an artifact that no runtime here executes (the quantized graph that was lowered
    or converted, or its decompressed weights): recorded as verified_on "pytorch-simulated", never as the runtime."""
    with torch.no_grad():
        out = module(*spec.args)
    return ArtifactRun(outputs={spec.output_names[0]: out.float().numpy()}, verified_on=SIMULATED_RUNTIME)
