"""Precisions of exported artifacts (`mi2v export --precision`): their names and the per-component parser. Which
precisions a (target, delegate) produces is declared by its exporter (`Exporter.supported`, exporters/base.py).

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

from .contract import COMPONENTS, EXPORT_DTYPES
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
        """Integer weights (everything but the floating dtypes fp32 / fp16)."""
        return self.value not in EXPORT_DTYPES

    @property
    def float_dtype(self) -> str:
        """The floating dtype of the graph around the quantized ops ("fp16" for fp16, else "fp32")."""
        return "fp16" if self is Precision.FP16 else "fp32"


INTEGER = frozenset(p.value for p in Precision if p.quantized and p is not Precision.MIXED)
# the low precisions a mixed-precision recipe tries one unit at a time (`mi2v quantize analyze`, mi2v_export/recipe.py)
RECIPE_PRECISIONS: tuple[str, ...] = (Precision.W8A8.value, Precision.W8.value, Precision.W4.value)


def is_quantized(name: str) -> bool:
    """Whether a precision name (an artifact's `precision`) is anything but fp32 / fp16 (mixed included)."""
    return name not in EXPORT_DTYPES


def target_label(target: str, delegate: str | None) -> str:
    return f"--target {target}" + (f" --delegate {delegate}" if delegate else "")


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


def check_supported(cells: tuple[Precision, ...], label: str, precision: Precision,
                    component: str | None = None) -> None:
    """One-line error when the target of `label` (`target_label`), which produces `cells`, cannot produce
    `precision`."""
    if precision is Precision.MIXED or precision in cells:
        return
    who = f" (for the {component})" if component else ""
    raise BadInputError(f"{label} does not support --precision {precision.value}{who}; "
                        f"it supports: {', '.join(p.value for p in cells) or 'nothing'}")


def resolve(text: str | None, dtype: str | None, components: list[str], cells: tuple[Precision, ...], label: str,
            default: str) -> dict[str, Precision]:
    """Per-component precisions of one export from `--precision` and its alias `--dtype` (validated against the
    target's `cells`; `label` names the target in errors)."""
    parsed = parse(text)
    alias = None
    if dtype is not None:
        if dtype not in EXPORT_DTYPES:
            raise BadInputError(f"unknown dtype {dtype!r}; choose one of: {', '.join(EXPORT_DTYPES)} (or use "
                                "--precision)")
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
        check_supported(cells, label, p, c if isinstance(parsed, dict) else None)
    return chosen
