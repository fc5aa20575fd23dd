"""Units of a component for quantization: which submodules a recipe keeps float, which a precision gives int8
instead of int4, and the PT2E filter that leaves the kept ones alone. Unit names are mi2v_export/recipe.py's, under
the export wrapper's `model` (e.g. `model.blocks.3`).
"""

from __future__ import annotations

from collections.abc import Sequence

from torchao.quantization.pt2e.quantizer.utils import get_module_name_filter

from mi2v_export.recipe import DENOISER_UNITS_FLAT, kept_units

# The denoiser's embedders, adaLN modulation MLPs and final layer (its units outside the blocks, 8 % of its weights),
# known to be sensitive: w4 gives them int8 weights, not int4 (benchmarks/w4_sensitive_units.py measures why).
SENSITIVE_UNITS = DENOISER_UNITS_FLAT


def kept(fqn: str, keep: Sequence[str]) -> bool:
    """Whether submodule `fqn` lies in one of the `keep` units (a recipe's float units)."""
    return any(fqn == k or fqn.startswith(k + ".") for k in keep)


def int8_units(component: str, precision: str, keep: Sequence[str] = ()) -> list[str]:
    """Submodules (names under the export wrapper's `model`) that `precision` quantizes to int8 instead, but for
    those a recipe keeps float (`keep`)."""
    units = [f"model.{u}" for u in SENSITIVE_UNITS] if (component, precision) == ("denoiser", "w4") else []
    return [u for u in units if not kept(u, keep)]


def plan_of(options) -> tuple[str, list[str]]:
    """(integer precision to apply, submodule names kept float) of a component: its precision, or for "mixed" the
    recipe's precision and its fp32/fp16 units (names under the export wrapper's `model`)."""
    if options.precision != "mixed":
        return options.precision, []
    return options.recipe["precision"], [f"model.{u}" for u in kept_units(options.recipe)]


def outside_units(keep: Sequence[str]):
    """PT2E `set_filter_function`: nodes outside the `keep` units (set_module_name(name, None) is "not supported
    yet" in ExecuTorch 1.5)."""
    filters = [get_module_name_filter(name) for name in keep]
    return lambda node: not any(f(node) for f in filters)
