"""Rewrite plans: which rewrites to apply, their knobs, and a registry that applies them in order.

A `RewritePlan` is a frozen dataclass with one boolean per registered rewrite plus the knobs; named plans
(`PLANS`) are presets of it, and keyword overrides switch single rewrites or knobs (`rewrite(m, "mobile",
channels_first=False, query_chunk=256)`). `REWRITES` is the registry: name (= plan field) → summary + apply
function, applied in registration order. `describe_plan` gives the JSON-able record for an export manifest.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import nn

from mi2v_export.errors import BadInputError
from mi2v_export.models.denoiser import LinearAttention, MobileI2VDenoiser, SoftmaxAttention

from .constants import StepConstants
from .denoiser import MobileDenoiser
from .linear_attention import MobileLinearAttention
from .rope import RopeCache
from .softmax_attention import MobileSoftmaxAttention

PLAN_VERSION = 1


@dataclass(frozen=True)
class RewritePlan:
    """Which rewrites to apply (booleans, one per entry of `REWRITES`) and their settings."""

    # rewrites
    linear_attention: bool = False
    softmax_attention: bool = False
    channels_first: bool = False
    rope_tables: bool = False
    step_constants: bool = False
    # knobs
    linear_heads_per_group: int = 0  # linear attention: heads per tile (0 = all heads in one batched op)
    fp32_accumulate: bool = True  # linear attention core in fp32 (the reference's fp32_attention); off = model dtype
    softmax_heads_per_group: int = 1  # softmax attention: heads per tile (1 = one head after another, Apple split)
    query_chunk: int = 0  # softmax attention: queries per tile (0 = all; Apple SPLIT_EINSUM_V2 uses 512)
    softmax: str = "native"  # "native" (runtime softmax op on the last axis) or "split" (max/exp/sum/reciprocal)
    grid: tuple[int, int, int] | None = None  # latent (T, H, W) whose RoPE tables rope_tables precomputes
    schedule: tuple[tuple[float, float], ...] = ()  # (timestep, flow_score) pairs that step_constants bakes
    name: str = field(default="custom", compare=False)

    def __post_init__(self):
        if self.softmax not in ("native", "split"):
            raise BadInputError(f"softmax must be 'native' or 'split', got {self.softmax!r}")
        for knob in ("linear_heads_per_group", "softmax_heads_per_group", "query_chunk"):
            if int(getattr(self, knob)) < 0:
                raise BadInputError(f"{knob} must be >= 0, got {getattr(self, knob)}")
        if self.grid is not None:
            object.__setattr__(self, "grid", tuple(int(g) for g in self.grid))
            if len(self.grid) != 3 or min(self.grid) < 1:
                raise BadInputError(f"grid must be the latent (T, H, W), got {self.grid}")
        object.__setattr__(self, "schedule", tuple((float(t), float(f)) for t, f in self.schedule))

    def enabled(self) -> list[str]:
        return [name for name in REWRITES if getattr(self, name)]

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["grid"] = list(self.grid) if self.grid else None
        d["schedule"] = [list(p) for p in self.schedule]
        return d


@dataclass(frozen=True)
class Rewrite:
    name: str
    summary: str
    apply: Callable[[MobileDenoiser, RewritePlan], dict]
    requires: str | None = None  # plan field that must be set for the rewrite to apply (else it is skipped)


def _swap_attention(model: MobileDenoiser, kind: type, build: Callable[[nn.Module], nn.Module]) -> list[int]:
    done = []
    for i, block in enumerate(model.blocks):
        if type(block.attn) is kind:
            block.attn = build(block.attn)
            done.append(i)
    return done


def _apply_linear(model: MobileDenoiser, plan: RewritePlan) -> dict:
    blocks = _swap_attention(model, LinearAttention, lambda a: MobileLinearAttention(
        a, heads_per_group=plan.linear_heads_per_group, fp32_accumulate=plan.fp32_accumulate))
    return {"blocks": blocks, "heads_per_group": plan.linear_heads_per_group or model.config.num_heads,
            "fp32_accumulate": plan.fp32_accumulate}


def _apply_softmax(model: MobileDenoiser, plan: RewritePlan) -> dict:
    blocks = _swap_attention(model, SoftmaxAttention, lambda a: MobileSoftmaxAttention(
        a, heads_per_group=plan.softmax_heads_per_group, query_chunk=plan.query_chunk, softmax=plan.softmax))
    return {"blocks": blocks, "heads_per_group": plan.softmax_heads_per_group or model.config.num_heads,
            "query_chunk": plan.query_chunk or None, "softmax": plan.softmax}


def _apply_channels_first(model: MobileDenoiser, plan: RewritePlan) -> dict:
    model.to_channels_first()
    return {"layout": "(B*T, C, 1, H*W)", "linear_as": "conv1x1"}


def _apply_rope_tables(model: MobileDenoiser, plan: RewritePlan) -> dict:
    cfg = model.config
    dtype = model.x_embedder.proj.weight.dtype
    dtypes = tuple(dict.fromkeys((dtype, torch.float32)))
    layouts = ("channels",) if model.channels_first else ("tokens",)
    model.rope_cache = RopeCache(plan.grid, cfg.head_dim, cfg.rope_scales, cfg.rope_theta, dtypes, layouts).to(
        model.x_embedder.proj.weight.device)
    return {"grid": list(plan.grid)}


def _apply_step_constants(model: MobileDenoiser, plan: RewritePlan) -> dict:
    model.step_constants = StepConstants(model, plan.schedule)
    return {"schedule": [{"timestep": t, "flow_score": f} for t, f in plan.schedule],
            "baked": ["t_embedder", "t_block", "flow_embedder", "flow_block"]}


# Applied in this order (attention forms first, then the layout that converts their projections, then constants).
REWRITES: dict[str, Rewrite] = {r.name: r for r in (
    Rewrite("linear_attention", "LiteLA as K^T·V (d×d per head) before Q, normaliser as its own reduction, "
            "head groups, split/concat RoPE, no 5-D permutes", _apply_linear),
    Rewrite("softmax_attention", "explicit softmax, per-head split and query-chunked so the N×N scores are "
            "never whole; scale folded into q; never SDPA", _apply_softmax),
    Rewrite("channels_first", "whole block in (B·T, C, 1, S) with 1x1 convs for the Linears, channel-axis norms, "
            "per-frame modulation broadcast, GLUMBConv fed without transposes", _apply_channels_first),
    Rewrite("rope_tables", "RoPE cos/sin tables for one latent grid as constants, computed once instead of per "
            "block", _apply_rope_tables, requires="grid"),
    Rewrite("step_constants", "time/flow modulation for a fixed (timestep, flow_score) schedule baked into "
            "constants", _apply_step_constants, requires="schedule"),
)}

# Named plans. "mobile" = the rewrites that are exact and do not slow down the CPU runtimes measured by
# benchmarks/attention.py (onnxruntime CPU, ExecuTorch XNNPACK). "ane" adds Apple's channels-first layout and the
# split-einsum tiling (per-head linear attention, 512-query chunks) meant for Core ML / the Neural Engine, where
# (B, C, 1, S) is the native layout; on the CPU runtimes it is slower (1x1 Conv is slower than MatMul in
# onnxruntime, and ExecuTorch converts NCHW↔NHWC outside the XNNPACK delegate), so it is not part of "mobile".
PLANS: dict[str, RewritePlan] = {
    "reference": RewritePlan(name="reference"),
    "mobile": RewritePlan(name="mobile", linear_attention=True, softmax_attention=True, rope_tables=True,
                          step_constants=True),
    "ane": RewritePlan(name="ane", linear_attention=True, softmax_attention=True, channels_first=True,
                       rope_tables=True, step_constants=True, linear_heads_per_group=1, query_chunk=512),
}

PLAN_DOCS = {
    "reference": "no rewrite: the reference forward, op for op",
    "mobile": "exact rewrites that help onnxruntime CPU / ExecuTorch XNNPACK: linear + softmax attention forms, "
              "RoPE tables and per-step constants (the last two only when grid / schedule are given)",
    "ane": "mobile + the channels-first (B, C, 1, S) layout with 1x1 convs, per-head linear attention and 512-query "
           "softmax tiles (Apple's Neural Engine recipe; slower on the CPU runtimes)",
}


def make_plan(plan: str | RewritePlan = "mobile", **overrides) -> RewritePlan:
    if isinstance(plan, str):
        if plan not in PLANS:
            raise BadInputError(f"unknown rewrite plan {plan!r}; choose one of: {', '.join(PLANS)}")
        plan = PLANS[plan]
    elif not isinstance(plan, RewritePlan):
        raise BadInputError(f"plan must be a plan name or a RewritePlan, got {type(plan).__name__}")
    fields = {f.name for f in dataclasses.fields(RewritePlan)} - {"name"}
    unknown = sorted(set(overrides) - fields)
    if unknown:
        raise BadInputError(f"unknown rewrite option(s) {', '.join(unknown)}; valid: {', '.join(sorted(fields))}")
    if overrides:
        changed = {k: v for k, v in overrides.items() if v != getattr(plan, k)}
        name = plan.name if not changed else f"{plan.name}+" + ",".join(f"{k}={v}" for k, v in sorted(changed.items()))
        plan = dataclasses.replace(plan, **overrides, name=name)
    return plan


def rewrite(model: nn.Module, plan: str | RewritePlan = "mobile", **overrides) -> MobileDenoiser:
    """Rewritten denoiser with the same forward(latent, timestep, flow_score) and state-dict keys and shapes.

    The result shares the reference's parameters (no copy; `model` itself is not modified). Constants (RoPE
    tables, per-step modulation) are computed from the weights at call time: rewrite again after loading new weights.
    """
    if isinstance(model, MobileDenoiser):
        raise BadInputError("model is already rewritten; rewrite the reference model returned by load_denoiser")
    if not isinstance(model, MobileI2VDenoiser):
        raise BadInputError(f"rewrite() takes a MobileI2V denoiser (load_denoiser), got {type(model).__name__}")
    plan = make_plan(plan, **overrides)
    out = MobileDenoiser(model)
    report = {}
    for name, rw in REWRITES.items():
        entry = {"enabled": bool(getattr(plan, name)), "summary": rw.summary}
        if entry["enabled"] and rw.requires and not getattr(plan, rw.requires):
            entry.update(applied=False, skipped=f"no {rw.requires} given")
        elif entry["enabled"]:
            entry.update(applied=True, **rw.apply(out, plan))
        else:
            entry["applied"] = False
        report[name] = entry
    out.rewrite_plan = plan
    out.rewrite_report = {
        "plan": plan.name, "version": PLAN_VERSION,
        "applied": [n for n, e in report.items() if e["applied"]],
        "rewrites": report, "settings": plan.to_dict(),
        "baked": {"grid": list(plan.grid) if out.rope_cache is not None else None,
                  "schedule": [list(p) for p in plan.schedule] if out.step_constants is not None else None},
    }
    return out


def describe_plan(model_or_plan: nn.Module | RewritePlan | str = "mobile", **overrides) -> dict:
    """JSON-able record of a rewrite for the manifest: the applied rewrites, their settings and what was baked.

    Given a rewritten model: what was applied to it. Given a plan (name or RewritePlan): what it would apply.
    A reference model (not rewritten) is described as the "reference" plan.
    """
    if isinstance(model_or_plan, MobileDenoiser):
        return model_or_plan.rewrite_report
    if isinstance(model_or_plan, nn.Module):
        model_or_plan = "reference"
    plan = make_plan(model_or_plan, **overrides)
    rewrites = {}
    for name, rw in REWRITES.items():
        on = bool(getattr(plan, name))
        ready = not (rw.requires and not getattr(plan, rw.requires))
        rewrites[name] = {"enabled": on, "applied": on and ready, "summary": rw.summary}
        if on and not ready:
            rewrites[name]["skipped"] = f"no {rw.requires} given"
    return {"plan": plan.name, "version": PLAN_VERSION, "applied": [n for n, e in rewrites.items() if e["applied"]],
            "rewrites": rewrites, "settings": plan.to_dict(),
            "baked": {"grid": list(plan.grid) if plan.rope_tables and plan.grid else None,
                      "schedule": [list(p) for p in plan.schedule] if plan.step_constants and plan.schedule
                      else None}}
