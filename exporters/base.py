"""The exporter interface and its registry: one `Exporter` per target, found by name.

Adding a target is adding a module to `exporters/targets/` that defines an `Exporter` subclass decorated with
`@register` and declares its facts as class attributes (see `Exporter`): its options, precisions, rewrites,
test-vector format and runtime. `discover` imports every module of that package once, so the new file is picked
up by itself: the CLI's `--target` / `--delegate` choices, the precision checks, the manifest's `flags` and what
runs on this host all come from the registry.

An exporter turns one `ComponentSpec` (an fp32 eval-mode module with the contract's named example inputs) into an
artifact file in a folder, and knows how to check it: `inspect` (structural, always possible) and `run` (execute on
a runtime of this host, or say why not). Whether a runtime here runs an artifact, and running it, belong to the
runtime layer (mi2v_export/runtimes: `runnable`, `why_not`, `Runtime.load`); an exporter only declares the runtime
family it targets (`runtime`).

Torch-free on purpose: the CLI builds its option lists from this registry when it starts, so this module and the
target modules import torch (and our modules built on it: rewrites, quantize, components, tensors) only inside the
methods that do the work.
"""

from __future__ import annotations

import dataclasses
import importlib
import pkgutil
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from mi2v_export import runtimes
from mi2v_export.errors import BadInputError
from mi2v_export.manifest import TensorInfo
from mi2v_export.precision import Precision

if TYPE_CHECKING:
    import numpy as np
    import torch
    from torch import nn

TARGETS_PACKAGE = "targets"  # the subpackage `discover` imports: one module per target


# ---------------------------------------------------------------------------------------------------------------
# Progress


@dataclass(frozen=True)
class ProgressEvent:
    """`state` is "start", "done", "skip" or "info"; `stage` names the step (load, reference, rewrite, export,
    lower, quantize, serialize, vectors, inspect, verify) or is a free-form info line."""

    component: str
    stage: str
    state: str
    detail: str = ""
    seconds: float | None = None


ProgressCallback = Callable[[ProgressEvent], None]


def no_progress(event: ProgressEvent) -> None:
    return None


# ---------------------------------------------------------------------------------------------------------------
# What an exporter receives and returns


@dataclass
class TargetOptions:
    """A target's own flags (its exporter's `options_type`): filled from the same-named fields of the export
    request (the CLI flags), written to the manifest's `flags` by `Exporter.manifest_flags`. This base has none."""


@dataclass
class ExportOptions:
    """Resolved, validated options of one export run: what every target shares, and the target's own record."""

    target: str
    delegate: str | None = None
    dtype: str = "fp32"  # the graph's floating dtype: "fp16" for precision fp16, "fp32" otherwise
    precision: str = "fp32"  # this component's mi2v_export.precision name (set per component by the orchestrator)
    precisions: dict = field(default_factory=dict)  # component → Precision of the whole run
    calibration: object = None  # this component's calibration records (set by the orchestrator for integer ones)
    recipe: dict | None = None  # the mixed-precision recipe (mi2v_export.recipe), for the component it names
    verify: bool = True
    test_vectors: bool = True  # write the sampler inputs and PyTorch outputs beside the artifact (testvectors.py)
    target_options: Any = field(default_factory=TargetOptions)  # the exporter's `options_type` record
    tiles: Any = None  # exporters/tiled.TileRequest (--tile / --halo / --memory-budget)


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
    tiling: dict | None = None  # a tiled component's record (exporters/tiled.py); its file is the first stage's


@dataclass
class ArtifactRun:
    """Outputs of executing the artifact on a runtime here (None when no runtime exists, with the reason).
    `verified_on` is the name of the runtime (mi2v_export/runtimes) that ran it, "pytorch-simulated" for a
    PyTorch stand-in."""

    outputs: dict[str, np.ndarray] | None
    verified_on: str | None
    reason: str | None = None


def run_artifact(runtime: runtimes.Runtime, path: Path | None, feeds: Mapping[str, Any], keep: Sequence[str],
                 **load_options: Any) -> ArtifactRun:
    """Load `path` on `runtime` (an adapter of mi2v_export/runtimes, `load_options` its own), run `feeds` once
    and keep the outputs named in `keep`. A file the runtime refuses is a failed check of the export (RuntimeError, which
    orchestrate words as a VerificationError), not a bad command line."""
    try:
        session = runtime.load(path, **load_options)
    except BadInputError as exc:
        raise RuntimeError(str(exc)) from None
    with session:
        outputs = session.run(feeds)
    return ArtifactRun(outputs={n: outputs[n] for n in keep}, verified_on=runtime.name)


# ---------------------------------------------------------------------------------------------------------------
# The interface


class Exporter(ABC):
    """One target (or one delegate of a target with a class of its own). Its facts are class attributes, read by
    the CLI, the orchestrator, the test vectors and the structure tests; none of them is listed anywhere else."""

    name: ClassVar[str]  # the --target value
    delegate: ClassVar[str | None] = None  # set: this class handles `--target name --delegate delegate` only
    extension: ClassVar[str]  # artifact suffix, e.g. ".onnx"
    summary: ClassVar[str] = ""
    cli_order: ClassVar[int] = 100  # place in the CLI's --target list (lower first)
    options_type: ClassVar[type] = TargetOptions  # this target's own flags (a TargetOptions dataclass)
    supported: ClassVar[tuple[Precision, ...]] = (Precision.FP32,)  # precisions it produces, in the order errors show
    runtime: ClassVar[str] = ""  # the runtime family it targets (a `family` of mi2v_export/runtimes)
    test_vector_format: ClassVar[str] = "npz"  # the mi2v_export.testvectors format written beside its artifacts
    rewrites: ClassVar[tuple[str, ...]] = ()  # module swaps applied before export (rewrites.LOWERING_REWRITES)
    trace_rewrites: ClassVar[tuple[str, ...]] = ()  # trace-time substitutions entered around torch.export

    # -- options ---------------------------------------------------------------------------------------------
    def delegates(self) -> Mapping[str, str]:
        """--delegate values this target takes (name → one-line description); empty when it takes none."""
        return {}

    def default_delegate(self) -> str | None:
        return None

    def default_dtype(self, delegate: str | None) -> str:
        return "fp32"

    def keeps_units(self, precision: str) -> bool:
        """Whether this target's quantizer leaves a recipe's float units alone at `precision`: where it does, an
        integer export short of its gate margin keeps its costliest units float (exporters/margin.py)."""
        return True

    def precisions_for(self, delegate: str | None) -> tuple[Precision, ...]:
        """The precisions `--target name --delegate delegate` produces and gates here (`supported`)."""
        return self.supported

    @property
    def runtime_package(self) -> str | None:
        """The pip distribution of the runtime that executes its artifacts (the runtime adapter's `package`)."""
        found = runtimes.for_target(self.name, self.delegate or self.default_delegate())
        return found[0].package if found else None

    def target_options(self, flags: object) -> TargetOptions:
        """This target's options record, filled from the same-named attributes of `flags` (the export request)."""
        names = [f.name for f in dataclasses.fields(self.options_type)]
        return self.options_type(**{n: getattr(flags, n) for n in names if hasattr(flags, n)})

    def manifest_flags(self, options: ExportOptions) -> dict:
        """This target's entries of the manifest's `flags` (the options that shaped the artifact)."""
        return dataclasses.asdict(options.target_options)

    def resolve(self, options: ExportOptions) -> ExportOptions:
        """Validate the target-specific options and fill defaults; BadInputError with one line otherwise."""
        delegates = self.delegates()
        if options.delegate is not None and not delegates:
            with_one = " and ".join(sorted(t for t in discover() if get_exporter(t).delegates()))
            raise BadInputError(f"--delegate does not apply to --target {self.name} ({with_one} take one)")
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
        import torch

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

    def host_runtime(self, options: ExportOptions) -> runtimes.Runtime | None:
        """The runtime that executes artifacts of these options here (`runtimes.runnable`), None where none can."""
        return runtimes.runnable(options)

    def runs_here(self, options: ExportOptions) -> bool:
        """Whether `run` can execute artifacts of these options on this host (else the PyTorch reference output is
        only computed when something else needs it, e.g. a BundledProgram)."""
        return self.host_runtime(options) is not None

    def run_here(self, path: Path, feeds: Mapping[str, Any], options: ExportOptions, keep: Sequence[str],
                 **load_options: Any) -> ArtifactRun:
        """`run_artifact` on `host_runtime`; no outputs and the runtime layer's one-line reason where none runs it."""
        runtime = self.host_runtime(options)
        if runtime is None:
            return ArtifactRun(outputs=None, verified_on=None, reason=runtimes.why_not(options))
        return run_artifact(runtime, path, feeds, keep, **load_options)

    def file_name(self, component: str) -> str:
        return f"{component}{self.extension}"

    def gate(self, options: ExportOptions):
        """The parity gate against PyTorch fp32 for artifacts of these options."""
        from mi2v_export import parity  # numpy: kept out of the CLI's start-up

        return parity.gate_for(options.recipe["precision"] if options.recipe else options.precision)

    def planned_memory(self, artifact: Artifact) -> int | None:
        """The bytes the target's own memory plan reserves (`runtime_memory.planned_bytes`), None where it has
        none; what a runtime really uses is measured for every target alike (exporters/tiled.py `measured`)."""
        return None

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
    """Import every module of the targets package (once) so their `@register` decorators run."""
    global _discovered
    if not _discovered:
        package = importlib.import_module(f"{__name__.rsplit('.', 1)[0]}.{TARGETS_PACKAGE}")
        for info in pkgutil.iter_modules(package.__path__):
            if not info.name.startswith("_"):
                importlib.import_module(f"{package.__name__}.{info.name}")
        _discovered = True
    return EXPORTERS


def target_names() -> tuple[str, ...]:
    """The --target values, in the CLI's order (`Exporter.cli_order`)."""
    return tuple(sorted(discover(), key=lambda name: EXPORTERS[name].cli_order))


def delegate_names() -> tuple[str, ...]:
    """Every --delegate value of every target, once each (the targets taken in name order)."""
    out: dict[str, None] = {}
    for name in sorted(discover()):
        out.update(dict.fromkeys(EXPORTERS[name].delegates()))
    return tuple(out)


def kinds() -> list[tuple[str, str | None]]:
    """Every (target, delegate) an export can name: each target with each of its delegates, and without one where
    it has no default delegate (e.g. plain ONNX)."""
    out: list[tuple[str, str | None]] = []
    for name in target_names():
        exporter = EXPORTERS[name]
        if exporter.default_delegate() is None:
            out.append((name, None))
        out += [(name, d) for d in exporter.delegates()]
    return out


def get_exporter(target: str, delegate: str | None = None) -> Exporter:
    """The exporter of a target, or the one registered for this target and delegate when there is one."""
    exporters = discover()
    if target not in exporters:
        raise BadInputError(f"unknown target {target!r}; choose one of: {', '.join(target_names())}")
    return DELEGATED.get((target, delegate), exporters[target])


def delegated_exporters(target: str) -> dict[str, Exporter]:
    """delegate → exporter of the delegates registered with their own class for `target`."""
    discover()
    return {d: e for (t, d), e in DELEGATED.items() if t == target}


def runtime_of(target: str) -> str | None:
    """The runtime family a target's exporter declares (onnxruntime, executorch, coreml), None for an unknown one.
    Whether an artifact runs on this machine is the runtime layer's answer: `runtimes.runnable` / `why_not`."""
    exporter = discover().get(target)
    return exporter.runtime if exporter is not None else None
