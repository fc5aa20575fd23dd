"""Comparing a run with the PyTorch fp32 reference (`mi2v generate --compare-to reference`): per-step latent
error, per-frame PSNR / SSIM, the gate, and the `--json` report (schema REPORT_SCHEMA_VERSION)."""

from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np

from ..errors import VerificationError
from ..files import write_json_atomic
from ..parity import TRAJECTORY_PSNR_MIN_DB, VIDEO_PSNR_MIN_DB, frame_metrics, max_abs, rel_l2
from .sampler import GenerateConfig, GenerateResult
from .stages import Stage

REPORT_SCHEMA_VERSION = 1
# `--compare-to reference` gate: every output frame's PSNR against PyTorch fp32, by artifact precision
# (parity.VIDEO_PSNR_MIN_DB, re-exported by the package).


def precision_of(stages: dict[str, Stage]) -> str:
    """fp32 when every stage is; the one reduced precision otherwise, or "mixed" when they differ."""
    reduced = {s.precision for s in stages.values()} - {"fp32"}
    if not reduced:
        return "fp32"
    return reduced.pop() if len(reduced) == 1 else "mixed"


def gate_of(stages: dict[str, Stage]) -> float:
    """Per-frame PSNR gate of a run: the loosest trajectory gate the artifacts' manifest entries carry, else the
    default of the run's precision. Each entry's gate was measured with that component alone off fp32, so a run
    is held to its least precise component's: the shippable mix (a w8a8 denoiser, gate 30 dB, with fp16 VAE parts,
    gate 40 dB) cannot reach the fp16 gate, and holding it there refused every such run."""
    return run_gate([s.gate_db for s in stages.values() if getattr(s, "gate_db", None) is not None],
                    precision_of(stages))


def run_gate(gates: list[float], precision: str) -> float:
    """The one rule (gate_of's): the loosest of the components' trajectory gates, else `precision`'s video gate."""
    if gates:
        return min(float(g) for g in gates)
    return VIDEO_PSNR_MIN_DB.get(precision, TRAJECTORY_PSNR_MIN_DB.get(precision, 25.0))


def compare_runs(result: GenerateResult, reference: GenerateResult, min_psnr_db: float) -> dict:
    """Per-step latent relative error and per-frame PSNR / SSIM (video mapped to [0, 1], data range 1, before
    uint8 rounding) of a run against the PyTorch reference run; `passed` when every frame reaches `min_psnr_db`."""
    steps = []
    sched = result.schedule
    for i, (a, r) in enumerate(zip(result.latents, reference.latents)):
        steps.append({"step": i, "timestep": float(sched.timesteps[i]), "sigma": float(sched.sigmas[i]),
                      "sigma_next": float(sched.sigmas[i + 1]), "latent_rel_err": rel_l2(a, r),
                      "latent_max_abs": max_abs(a, r)})
    to01 = [(v[0].permute(1, 2, 3, 0) + 1.0) / 2.0 for v in (result.video, reference.video)]  # (F,H,W,3)
    frames = frame_metrics(to01[0], to01[1], data_range=1.0)
    psnrs = [f["psnr_db"] for f in frames]
    failing = [f["frame"] for f in frames if not f["psnr_db"] >= min_psnr_db]  # NaN fails too
    return {
        "conditioning": {"latent_rel_err": rel_l2(result.cond_latent, reference.cond_latent),
                         "latent_max_abs": max_abs(result.cond_latent, reference.cond_latent)},
        "steps": steps,
        "frames": frames,
        "summary": {
            "min_psnr_db": min(psnrs),
            "mean_psnr_db": float(np.mean(psnrs)),
            "min_ssim": min(f["ssim"] for f in frames),
            "max_latent_rel_err": max(s["latent_rel_err"] for s in steps),
            "threshold_psnr_db": min_psnr_db,
            "failing_frames": failing,
            "passed": not failing,
        },
    }


def json_safe(value):
    """JSON has no inf/nan: write them as "inf" / "-inf" / "nan" strings, as the export manifest does."""
    if isinstance(value, float) and not math.isfinite(value):
        return "nan" if math.isnan(value) else ("inf" if value > 0 else "-inf")
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    return value


def build_report(config: GenerateConfig, result: GenerateResult, reference: GenerateResult, comparison: dict,
                 *, image: str, preset: str, decoder: str, precision: str) -> dict:
    """The `--json` report of `mi2v generate --compare-to reference` (schema REPORT_SCHEMA_VERSION)."""
    geo = config.geometry
    return {
        "schema_version": REPORT_SCHEMA_VERSION,
        "kind": "mi2v-generate-compare",
        "image": image,
        "preset": preset,
        "decoder": decoder,
        "resolution": [geo.height, geo.width],
        "frames": geo.frames,
        "latent_shape": list(geo.latent_shape),
        "num_steps": config.steps,
        "seed": config.seed,
        "flow_score": config.flow_score,
        "posterior": result.posterior,
        "timesteps": [float(t) for t in result.schedule.timesteps],
        "sigmas": [float(s) for s in result.schedule.sigmas],
        "reference": "pytorch-fp32",
        "precision": precision,
        "backends": result.backends,
        "reference_backends": reference.backends,
        **comparison,
        "timings_s": {"artifacts": _timing_record(result), "reference": _timing_record(reference)},
        "memory": {"artifacts": result.memory, "reference": reference.memory},
        "notes": result.notes,
    }


def _timing_record(r: GenerateResult) -> dict:
    return {**{k: round(v, 4) for k, v in r.timings.items()}, "steps": [round(t, 4) for t in r.step_times]}



def write_json(data: dict, out: str | os.PathLike) -> Path:
    return write_json_atomic(out, json_safe(data), allow_nan=False)


def check_psnr_gate(comparison: dict, what: str = "artifact pipeline") -> None:
    s = comparison["summary"]
    if not s["passed"]:
        raise VerificationError(
            f"{what} diverges from PyTorch fp32: min frame PSNR {s['min_psnr_db']:.1f} dB < "
            f"{s['threshold_psnr_db']:.0f} dB on frame(s) {', '.join(map(str, s['failing_frames']))}")

