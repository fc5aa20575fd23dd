"""Precisions of exported artifacts (`mi2v export --precision`): their names, the per-component parser, and the one
table of which (target, delegate) can produce which precision.

Names (a contract: the manifest's `precision` field, the QNN helper's `--precision`, recipes):

    fp32   as the PyTorch model
    fp16   half weights and activations (fp32 islands where the model needs them)
    w8a8   int8 weights per channel + int8 activations, static, calibrated on the real sampler
    w8     int8 weights, activations dynamic (int8 per token) or float
    w4     4-bit weights (groups or palettes)
    w8a16  int8 weights + int16 activations (Qualcomm HTP's choice; ONNX QDQ)
    mixed  a recipe (unit -> precision) chose per layer; the manifest carries the recipe

`--precision P` applies P to every exported component; `--precision denoiser=w8a8,decoder=fp16,encoder=fp16`
names them one by one (components not named get their target's default, fp16 on Core ML, fp32 elsewhere).
`--dtype fp32|fp16` stays as an alias of `--precision fp32|fp16` (both given must agree).
"""

from __future__ import annotations

from enum import Enum

from .contract import COMPONENTS
from .errors import BadInputError


class Precision(str, Enum):
    FP32 = "fp32"
    FP16 = "fp16"
    W8A8 = "w8a8"
    W8 = "w8"
    W4 = "w4"
    W8A16 = "w8a16"
    MIXED = "mixed"

    def __str__(self) -> str:
        return self.value

    @property
    def quantized(self) -> bool:
        """Integer weights (everything but fp32 / fp16)."""
        return self not in (Precision.FP32, Precision.FP16)

    @property
    def float_dtype(self) -> str:
        """The floating dtype of the graph around the quantized ops ("fp16" for fp16, else "fp32")."""
        return "fp16" if self is Precision.FP16 else "fp32"

    @property
    def calibrated(self) -> bool:
        """Whether this precision needs calibration data (static activation ranges)."""
        return self in (Precision.W8A8, Precision.W8A16)


INTEGER = frozenset(p.value for p in Precision if p.quantized and p is not Precision.MIXED)

# (target, delegate) -> the precisions that target produces and gates here, in the order shown in errors.
# One place: the exporters, the CLI and the tests read this table. Add a cell only with its exporter path.
SUPPORT: dict[tuple[str, str | None], tuple[Precision, ...]] = {
    ("onnx", None): (Precision.FP32, Precision.FP16, Precision.W8A8, Precision.W8, Precision.W4, Precision.W8A16),
    ("executorch", "xnnpack"): (Precision.FP32, Precision.FP16, Precision.W8A8, Precision.W8, Precision.W4),
    ("executorch", "vulkan"): (Precision.FP32, Precision.FP16, Precision.W8A8, Precision.W8, Precision.W4),
    ("executorch", "qnn"): (Precision.FP16,),
    ("onnx", "qnn"): (Precision.FP16, Precision.W8A16, Precision.W8A8),  # QNN EP: fp16 on the HTP, QDQ ints
    ("executorch", "coreml"): (Precision.FP32, Precision.FP16),
    ("coreml", None): (Precision.FP32, Precision.FP16, Precision.W8A8, Precision.W8, Precision.W4),
}


def target_label(target: str, delegate: str | None) -> str:
    return f"--target {target}" + (f" --delegate {delegate}" if delegate else "")


def supported(target: str, delegate: str | None) -> tuple[Precision, ...]:
    return SUPPORT.get((target, delegate), ())


def parse_one(text: str) -> Precision:
    """One precision name; BadInputError naming the valid ones."""
    try:
        return Precision(text.strip().lower())
    except ValueError:
        names = ", ".join(p.value for p in Precision if p is not Precision.MIXED)
        raise BadInputError(f"unknown precision {text.strip()!r}; choose one of: {names}") from None


def parse(text: str | None) -> dict[str, Precision] | Precision | None:
    """`--precision` text: None, one precision for all components, or {component: precision}."""
    if text is None or not text.strip():
        return None
    if "=" not in text:
        p = parse_one(text)
        if p is Precision.MIXED:
            raise BadInputError("--precision mixed is what a recipe produces; pass --recipe FILE instead")
        return p
    out: dict[str, Precision] = {}
    for part in text.split(","):
        name, sep, value = part.partition("=")
        name = name.strip()
        if not sep or name not in COMPONENTS:
            raise BadInputError(f"--precision {text!r}: expected COMPONENT=PRECISION pairs (components: "
                                f"{', '.join(COMPONENTS)}), got {part.strip()!r}")
        if name in out:
            raise BadInputError(f"--precision {text!r}: {name} is named twice")
        out[name] = parse_one(value)
        if out[name] is Precision.MIXED:
            raise BadInputError("--precision mixed is what a recipe produces; pass --recipe FILE instead")
    return out


def check_supported(target: str, delegate: str | None, precision: Precision, component: str | None = None) -> None:
    """One-line error when (target, delegate) cannot produce `precision`."""
    cells = supported(target, delegate)
    if precision is Precision.MIXED or precision in cells:
        return
    who = f" (for the {component})" if component else ""
    raise BadInputError(f"{target_label(target, delegate)} does not support --precision {precision.value}{who}; "
                        f"it supports: {', '.join(p.value for p in cells) or 'nothing'}")


def resolve(text: str | None, dtype: str | None, components: list[str], target: str, delegate: str | None,
            default: str) -> dict[str, Precision]:
    """Per-component precisions of one export from `--precision` and its alias `--dtype` (validated)."""
    parsed = parse(text)
    alias = None
    if dtype is not None:
        if dtype not in ("fp32", "fp16"):
            raise BadInputError(f"unknown dtype {dtype!r}; choose one of: fp32, fp16 (or use --precision)")
        alias = Precision(dtype)
    if isinstance(parsed, Precision) and alias is not None and parsed is not alias:
        raise BadInputError(f"--dtype {dtype} and --precision {parsed.value} disagree; --dtype is an alias of "
                            "--precision fp32|fp16, pass only one")
    if isinstance(parsed, dict):
        unknown = sorted(set(parsed) - set(components))
        if unknown:
            raise BadInputError(f"--precision names {', '.join(unknown)}, which this export does not include "
                                f"(--component {','.join(components)})")
    base = parsed if isinstance(parsed, Precision) else (alias or Precision(default))
    chosen = {c: (parsed.get(c, base) if isinstance(parsed, dict) else base) for c in components}
    for c, p in chosen.items():
        check_supported(target, delegate, p, c if isinstance(parsed, dict) else None)
    return chosen
