"""Mixed precision: units of a component, the recipe file (unit → precision), and the sensitivity analysis that
writes it (`mi2v quantize analyze`).

A unit is a named submodule of the component's model: for the denoiser each transformer block (`blocks.N`), the
patch/time/flow/caption embedders (with their modulation MLPs `t_block`, `flow_block`) and the final layer; for the
decoders and the encoder their top-level stages. The analysis quantizes one unit at a time (PyTorch-simulated:
int8 per-channel weights, for w8a8 also int8 per-tensor activations at the unit's linear/conv inputs; int4 groups
of 32 for w4), runs the 2-step sampler on the validation image and measures the worst frame's PSNR against the
all-fp32 run. Units whose PSNR falls below `unit_psnr_db` keep fp32 in the recipe.

Recipe JSON: {"format": "mi2v-precision-recipe", "version": 1, "component", "precision" (the low precision),
"units": {unit: precision}, "analysis": {unit: {"psnr_db_min", "drop_db"}}, "unit_psnr_db"}.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from torch import nn

from .contract import EXPORT_DTYPES
from .errors import BadInputError
from .precision import RECIPE_PRECISIONS

FORMAT = "mi2v-precision-recipe"
VERSION = 1
KEEP = EXPORT_DTYPES  # what a unit left out of the low precision keeps
# The denoiser's units outside its blocks: the embedders, their modulation MLPs and the final layer (the units
# exporters/quantize/units.py gives int8 under w4: SENSITIVE_UNITS)
DENOISER_UNITS_FLAT = ("x_embedder", "t_embedder", "t_block", "flow_embedder", "flow_block", "y_embedder",
                       "final_layer")


def units_of(component: str, model: nn.Module) -> list[str]:
    """The unit names of a component's model (see the module docstring)."""
    if component == "denoiser":
        names = [n for n in DENOISER_UNITS_FLAT if hasattr(model, n)]
        return names + [f"blocks.{i}" for i in range(len(model.blocks))]
    wrapped = {"decoder": "decoder", "encoder": "encoder"}.get(component)  # the VAE parts' inner network
    inner = getattr(model, wrapped) if wrapped and isinstance(getattr(model, wrapped, None), nn.Module) else model
    prefix = f"{wrapped}." if inner is not model else ""
    out = []
    for name, child in inner.named_children():
        if isinstance(child, nn.ModuleList):
            out += [f"{prefix}{name}.{i}" for i in range(len(child))]
        elif any(p.numel() for p in child.parameters()):
            out.append(prefix + name)
    return out


def load(path: Path, component: str | None = None) -> dict:
    """A validated recipe; one-line BadInputError otherwise."""
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, ValueError) as exc:
        raise BadInputError(f"--recipe {path}: not a readable JSON file ({str(exc).splitlines()[0]})") from None
    if not isinstance(data, dict) or data.get("format") != FORMAT or not isinstance(data.get("units"), dict):
        raise BadInputError(f"--recipe {path}: not a {FORMAT} file (write one with `mi2v quantize analyze`)")
    if data.get("precision") not in RECIPE_PRECISIONS:
        raise BadInputError(f"--recipe {path}: precision {data.get('precision')!r} is not one of "
                            f"{', '.join(RECIPE_PRECISIONS)}")
    bad = {u: p for u, p in data["units"].items() if p not in KEEP + (data["precision"],)}
    if bad:
        raise BadInputError(f"--recipe {path}: units may be {data['precision']} or fp32/fp16, not {bad}")
    if component is not None and data.get("component") != component:
        raise BadInputError(f"--recipe {path} is for the {data.get('component')}, not the {component}")
    return data


def kept_units(recipe: dict) -> list[str]:
    """Units that stay at higher precision (excluded from quantization)."""
    return sorted(u for u, p in recipe["units"].items() if p in KEEP)


# ---------------------------------------------------------------------------------------------------------------
# Simulated quantization (the analysis only; artifacts use the real quantizers of exporters/quantize)


def _fake_weight(w: torch.Tensor, precision: str) -> torch.Tensor:
    flat = w.reshape(w.shape[0], -1)
    if precision == "w4":
        g = 32 if flat.shape[1] % 32 == 0 else flat.shape[1]
        blocks = flat.reshape(flat.shape[0], -1, g)
        scale = blocks.abs().amax(-1, keepdim=True).clamp_min(1e-12) / 7
        return (torch.round(blocks / scale).clamp(-8, 7) * scale).reshape(w.shape)
    scale = flat.abs().amax(-1, keepdim=True).clamp_min(1e-12) / 127
    return (torch.round(flat / scale).clamp(-127, 127) * scale).reshape(w.shape)


def _fake_activation(x: torch.Tensor) -> torch.Tensor:
    lo, hi = float(x.min()), float(x.max())
    scale = max(hi - lo, 1e-12) / 255
    zero = round(-lo / scale) - 128
    return (torch.clamp(torch.round(x / scale) + zero, -128, 127) - zero) * scale


def simulate_unit(model: nn.Module, unit: str, precision: str) -> list:
    """Fake-quantize one unit of `model` in place; returns the hooks to remove (weights are changed for good:
    call it on a copy)."""
    hooks = []
    for m in model.get_submodule(unit).modules():
        if isinstance(m, (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)):
            m.weight.data = _fake_weight(m.weight.data, precision)
            if precision == "w8a8":
                hooks.append(m.register_forward_pre_hook(lambda mod, args: (_fake_activation(args[0]),)
                                                         + tuple(args[1:])))
    return hooks


def _json_db(value: float) -> float | str:
    """A PSNR for JSON: rounded, "inf" when the unit changed nothing (e.g. its weights are unused)."""
    return round(value, 3) if value != float("inf") else "inf"


def analyze(stages: dict, component: str, precision: str, geo, unit_psnr_db: float, progress=None) -> dict:
    """Quantize one unit at a time (simulated), run the 2-step sampler on the validation image, and build the
    recipe: units at or above `unit_psnr_db` get `precision`, the others stay fp32."""
    import copy

    from .calibration import VALIDATION_IMAGE
    from .pipeline import GenerateConfig, Pipeline, TorchStage, compare_runs, load_image

    if precision not in RECIPE_PRECISIONS:
        raise BadInputError(f"--precision {precision}: analyze takes {', '.join(RECIPE_PRECISIONS)}")
    config = GenerateConfig(geo.height, geo.width, geo.frames, steps=2, seed=0)
    image = load_image(VALIDATION_IMAGE)
    reference = Pipeline(stages).generate(image, config)
    base = stages[component].module

    def psnr_with(units: list[str]) -> float:
        model = copy.deepcopy(base)
        for unit in units:
            simulate_unit(model, unit, precision)
        run = dict(stages, **{component: TorchStage(component, model)})
        return float(compare_runs(Pipeline(run).generate(image, config), reference, 0.0)["summary"]["min_psnr_db"])

    units = units_of(component, base)
    analysis = {}
    for i, unit in enumerate(units):
        if progress:
            progress(unit, i, len(units))
        analysis[unit] = {"psnr_db_min": _json_db(psnr_with([unit]))}
    chosen = {u: precision if float(a["psnr_db_min"]) >= unit_psnr_db else "fp32" for u, a in analysis.items()}
    quantized = [u for u, p in chosen.items() if p == precision]
    return {"format": FORMAT, "version": VERSION, "component": component, "precision": precision,
            "unit_psnr_db": unit_psnr_db, "units": chosen, "analysis": analysis,
            "simulated_psnr_db_min": {"all_units": _json_db(psnr_with(units)),
                                      "recipe": _json_db(psnr_with(quantized))},
            "validation": {"image": VALIDATION_IMAGE.name, "steps": 2, "seed": 0,
                           "resolution": [geo.height, geo.width], "frames": geo.frames}}
