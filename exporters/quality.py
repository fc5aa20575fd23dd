"""Quality of reduced-precision artifacts: calibration data, the component gate on held-out inputs and the
trajectory gate (the whole sampler on the artifacts against PyTorch fp32). Runtime memory is measured by the
runtime layer (mi2v_export/runtimes/measure.py).

`QualityContext` is built once per export run and lazily: the fp32 PyTorch stages of all three components (the
same weights as the export) and the calibration set are made only when a component needs them.
"""

from __future__ import annotations

import dataclasses
import warnings
from pathlib import Path

import torch

from mi2v_export import calibration, parity
from mi2v_export.errors import VerificationError
from mi2v_export.runtimes.pytorch import SIMULATED

TRAJECTORY_STEPS = 2
TRAJECTORY_SEED = 0


class QualityContext:
    """What the quality gates of one export share: fp32 stages and the calibration set, built on first use."""

    def __init__(self, request, plan):
        self.request, self.plan = request, plan
        self._stages: dict | None = None
        self._calibration = None

    def stages(self) -> dict:
        if self._stages is None:
            from mi2v_export.pipeline import checkpoint_parts, torch_stage

            parts = checkpoint_parts(self.request.checkpoints)
            with warnings.catch_warnings():  # "seeded weights" is already said by the export itself
                warnings.simplefilter("ignore")
                self._stages = {c: torch_stage(c, self.plan.preset, self.request.decoder, parts)
                                for c in ("encoder", "denoiser", "decoder")}
        return self._stages

    def calibration(self) -> calibration.CalibrationSet:
        if self._calibration is None:
            self._calibration = calibration.build(
                self.stages(), self.plan.geo, folder=self.request.calibration, weights=self.plan.manifest.source,
                decoder=self.request.decoder, preset=self.plan.preset)
        return self._calibration


def held_out_parity(exporter, artifact, staging: Path, spec, options, ctx: QualityContext):
    """The component gate's metrics on the held-out records (the validation image through the real sampler):
    (Metrics, verified_on, records) or None when no runtime here runs the artifact."""
    records = ctx.calibration().held_out[spec.name]
    module = ctx.stages()[spec.name].module
    outs, refs, verified_on = [], [], None
    for rec in records:
        inputs = {n: rec[n] for n in spec.inputs}
        result = exporter.run(artifact, staging, dataclasses.replace(spec, inputs=inputs), options)
        if result.outputs is None:
            return None
        verified_on = result.verified_on
        with torch.no_grad():
            ref = module(*inputs.values()).float().numpy()
        outs.append(result.outputs[spec.output_names[0]])
        refs.append(ref)
    return parity.compare(outs, refs), verified_on, len(records)


def trajectory(entries: list, staging: Path, ctx: QualityContext, min_psnr: float | None,
               simulated: dict | None = None) -> dict:
    """Generate on the validation image with this run's artifacts (PyTorch fp32 for the other components) and
    compare every frame with the all-fp32 PyTorch run; the record says whether every frame reaches the gate
    (`check_gate` raises when not).
    `simulated`: component → the PyTorch stand-in of an artifact no runtime here runs (its quantized graph)."""
    from mi2v_export.pipeline import GenerateConfig, Pipeline, compare_runs, load_image

    torch_stages = ctx.stages()
    stages = dict(torch_stages)
    for e in entries:
        stages[e.component] = _artifact_or_simulated_stage(e, staging, (simulated or {}).get(e.component))
    gate_db = min_psnr if min_psnr is not None else min(
        parity.TRAJECTORY_PSNR_MIN_DB[e.precision] for e in entries)
    geo = ctx.plan.geo
    config = GenerateConfig(geo.height, geo.width, geo.frames, steps=TRAJECTORY_STEPS, seed=TRAJECTORY_SEED)
    image = load_image(calibration.VALIDATION_IMAGE)
    result = Pipeline(stages).generate(image, config)
    # an exported encoder gives no log-variance, so its run conditions on the posterior mean: the reference does too
    reference = Pipeline(torch_stages).generate(image, config, posterior=result.posterior)
    summary = compare_runs(result, reference, gate_db)["summary"]
    record = {"image": calibration.VALIDATION_IMAGE.name, "steps": TRAJECTORY_STEPS, "seed": TRAJECTORY_SEED,
              "psnr_db_min": parity._json_float(float(summary["min_psnr_db"])),
              "psnr_db": parity._json_float(float(summary["mean_psnr_db"])), "ssim_min": summary["min_ssim"],
              "gate_db": gate_db, "passed": bool(summary["passed"]),
              "artifacts": {e.component: e.precision for e in entries}, "reference": parity.REFERENCE,
              "verified_on": {e.component: stages[e.component].backend for e in entries}}
    return record


def check_gate(record: dict, entries: list) -> None:
    """VerificationError when the trajectory's worst frame is below its gate (nothing is written then)."""
    if not record["passed"]:
        which = ", ".join(f"{e.component} {e.precision}" for e in entries)
        raise VerificationError(f"trajectory gate: the 2-step video on {record['image']} with {which} reaches "
                                f"{float(record['psnr_db_min']):.1f} dB on its worst frame, below "
                                f"{record['gate_db']:g} dB vs PyTorch fp32; no artifact was written (--min-psnr "
                                "overrides the gate)")


def _artifact_or_simulated_stage(entry, staging: Path, simulated):
    from mi2v_export.pipeline import TorchStage, artifact_stage

    if simulated is None:
        return artifact_stage(entry.component, staging / entry.file, entry)
    stage = TorchStage(entry.component, simulated, source=f"{entry.file} simulated in PyTorch")
    stage.backend, stage.precision = SIMULATED, entry.precision
    return stage
