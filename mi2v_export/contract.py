"""The one home of the names every part of mi2v agrees on: components and their I/O tensors, decoder kinds,
attention plans, the floating export dtypes, Core ML compute units, and this machine's CPU. Export targets and
delegates and their runtimes are not listed here: each exporter declares its own (exporters/base.py, the registry:
`target_names`, `runtime_of`); which artifacts this host runs is the runtime layer's answer (mi2v_export/runtimes:
`runnable`, `why_not`).

Torch-free on purpose: the CLI builds its option Enums from here without importing a model or a runtime.
"""

from __future__ import annotations

import platform
from enum import Enum

from .errors import BadInputError
from .presets import PRESETS
from .qnn import SOCS

# ---- components and their tensors -----------------------------------------------------------------------------

ENCODER, DENOISER, DECODER = "encoder", "denoiser", "decoder"
COMPONENTS: tuple[str, ...] = (ENCODER, DENOISER, DECODER)

# component → (input names, output names), in call order: the names of the ONNX / Core ML / .pte signatures
IO: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    ENCODER: (("image",), ("latent",)),
    DENOISER: (("latent", "timestep", "flow_score"), ("velocity",)),
    DECODER: (("latent",), ("video",)),
}

TURBO_VAED, LTX = "turbo-vaed", "ltx"
DECODER_KINDS: tuple[str, ...] = (TURBO_VAED, LTX)

# the model parts a checkpoint can hold (the Turbo-VAED part shares its name with its decoder kind)
PART_DENOISER, LTX_ENCODER, LTX_DECODER, PART_TURBO_VAED = "denoiser", "ltx-encoder", "ltx-decoder", "turbo-vaed"
PARTS: tuple[str, ...] = (PART_DENOISER, LTX_ENCODER, LTX_DECODER, PART_TURBO_VAED)


def parse_components(text: str | None) -> list[str]:
    """'all' → every component; 'encoder,decoder' → those, in contract order (BadInputError otherwise)."""
    names = [t.strip() for t in (text or "").split(",") if t.strip()]
    if names == ["all"]:
        return list(COMPONENTS)
    bad = [n for n in names if n not in COMPONENTS]
    if bad or not names:
        raise BadInputError(f"unknown component {', '.join(map(repr, bad)) or repr(text)}; choose one of: "
                            f"{', '.join(COMPONENTS)}, all")
    return [c for c in COMPONENTS if c in names]


# ---- export ---------------------------------------------------------------------------------------------------

ATTENTION_PLANS: tuple[str, ...] = ("reference", "mobile", "ane")  # the presets of kernels.plan.PLANS
# The floating dtypes a graph is exported in (`--dtype`, the precisions fp32 / fp16); every other precision of
# mi2v_export.precision is quantized.
EXPORT_DTYPES: tuple[str, ...] = ("fp32", "fp16")

# Core ML compute units: the one spelling mi2v uses (flags, manifest), and the names of coremltools (the same,
# upper-case) and of Swift's MLComputeUnits (what the iOS app writes in its reports)
COMPUTE_UNITS: tuple[str, ...] = ("all", "cpu_and_ne", "cpu_and_gpu", "cpu_only")
COREMLTOOLS_UNIT = {unit: unit.upper() for unit in COMPUTE_UNITS}
SWIFT_UNIT = dict(zip(COMPUTE_UNITS, ("all", "cpuAndNeuralEngine", "cpuAndGPU", "cpuOnly")))


def unit_from_swift(name: str) -> str:
    """An MLComputeUnits name from an iOS report → mi2v's spelling (unknown names pass through)."""
    return {v: k for k, v in SWIFT_UNIT.items()}.get(name, name)


# ---- CLI choices (Typer shows and checks them; values are the strings above) -----------------------------------


def choices(name: str, values) -> type[Enum]:
    """A str Enum whose members are `values` (Typer lists them in --help and refuses others as usage errors)."""
    return Enum(name, {v: v for v in values}, type=str)


Component = choices("Component", COMPONENTS)
DecoderKind = choices("DecoderKind", DECODER_KINDS)
AttentionPlan = choices("AttentionPlan", ATTENTION_PLANS)
ExportDtype = choices("ExportDtype", EXPORT_DTYPES)
ComputeUnit = choices("ComputeUnit", COMPUTE_UNITS)
PresetName = choices("PresetName", PRESETS)
Part = choices("Part", PARTS)
Soc = choices("Soc", SOCS)  # Snapdragon SoCs a QNN export compiles for (the table: mi2v_export/qnn.py)


def cpu_model() -> str:
    """This machine's CPU model name (recorded with every benchmark and verification: timings differ by CPU)."""
    from pathlib import Path

    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


CPU_FLAG_PREFIXES = ("avx", "fma", "f16c", "amx", "vnni", "sse4")  # the flags that change kernel choice and speed


def cpu_flags() -> list[str]:
    """This machine's vector / matrix CPU flags (AVX*, FMA, F16C, AMX*, VNNI, SSE4*), recorded with every benchmark
    beside `cpu_model()`: the same model name can come with other flags, and timings follow the flags."""
    from pathlib import Path

    try:
        line = next((ln for ln in Path("/proc/cpuinfo").read_text().splitlines() if ln.startswith("flags")), "")
    except OSError:
        return []
    return [f for f in line.split(":", 1)[-1].split() if f.startswith(CPU_FLAG_PREFIXES)]
