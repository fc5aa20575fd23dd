"""The three exportable components, their fixed I/O contract, seeded example inputs and model loading.

Contract (names are part of the artifact format; bench and generate rely on them):
    encoder   image (B,3,1,H,W) in [-1,1]                                  → latent (B,128,t,h,w), posterior mean
    denoiser  latent (B,128,t,h,w), timestep (B,) on 0-1000, flow_score (B,) → velocity (B,128,t,h,w)
    decoder   latent (B,128,t,h,w)                                          → video (B,3,F,32h,32w), uncropped
B = 1 and every shape is static (from --resolution / --frames).

Models come from `mi2v_export.models.load_*` through `LOADERS` (one entry per component, replaceable in tests);
`--attention mobile` goes through `apply_attention`, the single place that calls `mi2v_export.kernels.rewrite`.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from mi2v_export.contract import ATTENTION_PLANS as ATTENTION
from mi2v_export.contract import COMPONENTS, IO
from mi2v_export.errors import BadInputError, CheckpointError, MissingDependencyError
from mi2v_export.shapes import VideoGeometry

from .base import ComponentSpec

# `--rewrite NAME=VALUE`: the RewritePlan switches and knobs a user may change on top of --attention. Not grid
# (always the export's latent grid) and not step_constants/schedule (timestep and flow_score stay inputs).
REWRITE_OPTIONS: dict[str, type | tuple[str, ...]] = {
    "linear_attention": bool, "softmax_attention": bool, "channels_first": bool, "rope_tables": bool,
    "fp32_accumulate": bool, "linear_heads_per_group": int, "softmax_heads_per_group": int, "query_chunk": int,
    "softmax": ("native", "split"),
}
_TRUE, _FALSE = ("true", "on", "yes", "1"), ("false", "off", "no", "0")
INPUT_SEED = 0


def model_name(component: str, decoder_kind: str) -> str:
    """The model part behind a component (checkpoint part names: denoiser, ltx-encoder, turbo-vaed, ltx-decoder)."""
    if component == "encoder":
        return "ltx-encoder"
    if component == "denoiser":
        return "denoiser"
    return "turbo-vaed" if decoder_kind == "turbo-vaed" else "ltx-decoder"


# ---------------------------------------------------------------------------------------------------------------
# Example inputs


def example_inputs(component: str, geo: VideoGeometry, seed: int = INPUT_SEED) -> dict[str, torch.Tensor]:
    """The fixed fp32 inputs of the contract's shapes that the export traces, verifies with and stores as the first
    test-vector set: what the sampler really feeds (a photo, the sampler's seeded noise, real timesteps; see
    mi2v_export.testvectors)."""
    if component not in COMPONENTS:
        raise BadInputError(f"unknown component {component!r}")
    from mi2v_export.testvectors import sampler_inputs

    return sampler_inputs(component, geo, seed)


# ---------------------------------------------------------------------------------------------------------------
# Named-I/O wrappers: the forward signature carries the contract's input names (torch.export / Core ML use them)


class EncoderIO(nn.Module):
    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return self.model(image)


class DenoiserIO(nn.Module):
    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, latent: torch.Tensor, timestep: torch.Tensor, flow_score: torch.Tensor) -> torch.Tensor:
        return self.model(latent, timestep, flow_score)


class DecoderIO(nn.Module):
    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, latent: torch.Tensor) -> torch.Tensor:
        return self.model(latent)


WRAPPERS: dict[str, type[nn.Module]] = {"encoder": EncoderIO, "denoiser": DenoiserIO, "decoder": DecoderIO}


# ---------------------------------------------------------------------------------------------------------------
# Loading


def _load_encoder(preset: str, decoder_kind: str, checkpoint: Path | None, seed: int) -> nn.Module:
    from mi2v_export.models import load_encoder

    return load_encoder(checkpoint=checkpoint, preset=preset, seed=seed)


def _load_denoiser(preset: str, decoder_kind: str, checkpoint: Path | None, seed: int) -> nn.Module:
    from mi2v_export.models import load_denoiser

    return load_denoiser(checkpoint=checkpoint, preset=preset, seed=seed)


def _load_decoder(preset: str, decoder_kind: str, checkpoint: Path | None, seed: int) -> nn.Module:
    from mi2v_export.models import load_decoder

    return load_decoder(kind=decoder_kind, checkpoint=checkpoint, preset=preset, seed=seed)


# component → loader(preset, decoder_kind, checkpoint or None, seed) → fp32 eval module. Tests may swap entries.
LOADERS: dict[str, Callable[[str, str, Path | None, int], nn.Module]] = {
    "encoder": _load_encoder, "denoiser": _load_denoiser, "decoder": _load_decoder,
}


def parse_rewrite_options(items: Sequence[str]) -> dict[str, Any]:
    """`["softmax=split", "query_chunk=512", "linear_attention=off"]` → typed RewritePlan overrides."""
    out: dict[str, Any] = {}
    for item in items:
        name, sep, raw = item.partition("=")
        name, raw = name.strip().replace("-", "_"), raw.strip()
        if not sep or not name or not raw:
            raise BadInputError(f"--rewrite {item!r}: use NAME=VALUE, e.g. --rewrite softmax=split")
        kind = REWRITE_OPTIONS.get(name)
        if kind is None:
            raise BadInputError(f"--rewrite {item!r}: unknown option {name!r}; choose from "
                                f"{', '.join(REWRITE_OPTIONS)}")
        if kind is bool:
            if raw.lower() not in _TRUE + _FALSE:
                raise BadInputError(f"--rewrite {item!r}: {name} takes true or false")
            out[name] = raw.lower() in _TRUE
        elif kind is int:
            if not raw.isdigit():
                raise BadInputError(f"--rewrite {item!r}: {name} takes a whole number ≥ 0")
            out[name] = int(raw)
        else:
            if raw not in kind:
                raise BadInputError(f"--rewrite {item!r}: {name} takes {' or '.join(kind)}")
            out[name] = raw
    return out


def apply_attention(model: nn.Module, attention: str, geo: VideoGeometry,
                    overrides: dict[str, Any] | None = None) -> tuple[nn.Module, dict | None]:
    """The one place `--attention` / `--rewrite` take effect: `reference` without overrides keeps the model;
    otherwise `mi2v_export.kernels.rewrite(model, plan=attention, grid=latent grid, **overrides)` (exact rewrites;
    no baked schedule, since timestep and flow_score stay inputs). Returns the model to export and the manifest
    record of the rewrite."""
    if attention not in ATTENTION:
        raise BadInputError(f"unknown attention {attention!r}; choose one of: {', '.join(ATTENTION)}")
    if attention == "reference" and not overrides:
        return model, None
    try:
        from mi2v_export.kernels import describe_plan, rewrite
    except ImportError as exc:
        raise MissingDependencyError(f"--attention mobile needs mi2v_export.kernels.rewrite, which is not "
                                     f"available ({exc})") from None
    fast = rewrite(model, plan=attention, grid=(geo.latent_t, geo.latent_h, geo.latent_w), **(overrides or {}))
    return fast, describe_plan(fast)


def check_attention_available(attention: str, overrides: dict[str, Any] | None = None) -> None:
    """Fail before any work when `--attention` / `--rewrite` cannot be honoured."""
    if attention not in ATTENTION:
        raise BadInputError(f"unknown attention {attention!r}; choose one of: {', '.join(ATTENTION)}")
    if attention != "reference" or overrides:
        try:
            from mi2v_export.kernels import rewrite  # noqa: F401
        except ImportError as exc:
            raise MissingDependencyError(f"--attention mobile needs mi2v_export.kernels.rewrite, which is not "
                                         f"available ({exc})") from None


def load_component(component: str, *, preset: str, geo: VideoGeometry, decoder_kind: str = "turbo-vaed",
                   checkpoint: Path | None = None, attention: str = "reference", seed: int = 0,
                   reference: bool = True, rewrite_options: dict[str, Any] | None = None) -> ComponentSpec:
    """Build the component (fp32, eval, wrapped with named I/O), its seeded example inputs and, when `reference`,
    the PyTorch fp32 output of the model *before* any rewrite (the parity reference)."""
    if component not in COMPONENTS:
        raise BadInputError(f"unknown component {component!r}; choose one of: {', '.join(COMPONENTS)}")
    t0 = time.perf_counter()
    model = LOADERS[component](preset, decoder_kind, checkpoint, seed)
    model = model.float().eval().requires_grad_(False)
    inputs = example_inputs(component, geo)
    outputs = IO[component][1]
    stages = {"load": time.perf_counter() - t0}
    ref, vectors = None, []
    if reference:
        t0 = time.perf_counter()
        vectors = reference_sets(component, model, inputs, outputs)
        ref = vectors[0][1]
        stages["reference"] = time.perf_counter() - t0
    attention_record = None
    if component == "denoiser":
        model, attention_record = apply_attention(model, attention, geo, rewrite_options)
    return ComponentSpec(name=component, model=model_name(component, decoder_kind),
                         module=WRAPPERS[component](model).eval(), inputs=inputs, output_names=outputs,
                         attention=attention_record, reference=ref, vectors=vectors, stages_s=stages)


def reference_sets(component: str, model: nn.Module, inputs: dict, output_names: Sequence[str]) -> list[tuple]:
    """PyTorch fp32 (inputs, outputs) of the first input set and of the sampler steps that follow it (the test
    vectors; the first pair is also the parity reference)."""
    from mi2v_export.testvectors import next_sampler_inputs

    sets = []
    step_inputs = inputs
    while step_inputs is not None:
        with torch.no_grad():
            out = model(*step_inputs.values())
        out = out if isinstance(out, (tuple, list)) else (out,)
        sets.append((step_inputs, {n: o.detach().float() for n, o in zip(output_names, out)}))
        step_inputs = next_sampler_inputs(component, len(sets), step_inputs, sets[-1][1])
    return sets


# ---------------------------------------------------------------------------------------------------------------
# Checkpoints → components


def route_checkpoints(components: Sequence[str], decoder_kind: str,
                      files: Sequence[str | Path]) -> tuple[dict[str, Path | None], dict]:
    """Which checkpoint file feeds which component, and the manifest's `source` record.

    No files → every component gets seeded weights. With files, every exported component must find its part in
    exactly one file, and every file must feed at least one exported component (CheckpointError otherwise).
    """
    if not files:
        return {c: None for c in components}, {"weights": "seeded", "seed": 0, "checkpoints": []}
    from mi2v_export.checkpoints import read_checkpoint

    parts = {}
    records = []
    for f in files:
        path = Path(f)
        ckpt = read_checkpoint(path)  # CheckpointError for missing / unsafe / unknown files
        parts[path] = list(ckpt.parts)
        records.append({"file": path.name, "sha256": ckpt.sha256, "bytes": path.stat().st_size,
                        "parts": list(ckpt.parts)})
        del ckpt
    routing: dict[str, Path | None] = {}
    for c in components:
        need = model_name(c, decoder_kind)
        hits = [p for p, held in parts.items() if need in held]
        if not hits:
            held = "; ".join(f"{p.name}: {', '.join(h)}" for p, h in parts.items())
            raise CheckpointError(f"no checkpoint holds the {need} for the {c} ({held})")
        if len(hits) > 1:
            raise CheckpointError(f"several checkpoints hold the {need}: {', '.join(p.name for p in hits)}")
        routing[c] = hits[0]
    used = set(routing.values())
    for p, held in parts.items():
        if p not in used:
            raise CheckpointError(f"{p.name} holds {', '.join(held)}, which matches none of the exported "
                                  f"components ({', '.join(model_name(c, decoder_kind) for c in components)})")
    for r in records:
        r["components"] = [c for c in components if routing[c] is not None and routing[c].name == r["file"]]
    return routing, {"weights": "checkpoint", "seed": None, "checkpoints": records}
