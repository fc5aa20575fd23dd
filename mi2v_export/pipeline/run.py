"""`mi2v generate` as one call: GenerateRequest (the flags) → plan_generate (checks, no model) → run_generate (the
stages, the run, the optional PyTorch fp32 reference and comparison, the files).

Side effects stay at the edges: nothing here prints; progress goes through a callback; files are written
atomically (temp file in the same folder, then rename), all or nothing.
"""

from __future__ import annotations

import gc
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .. import bounds
from ..contract import COMPONENTS
from ..errors import BadInputError
from ..files import atomic_path
from ..models import weight_bytes
from ..outputs import check_file
from ..presets import get_preset
from ..shapes import parse_resolution
from .artifacts import build_stages, decoder_kind_of, parse_use, read_artifacts
from .media import DEFAULT_FPS, contact_sheet_path, load_image, write_contact_sheet, write_video
from .report import build_report, compare_runs, gate_of, precision_of, write_json
from .sampler import (DEFAULT_FLOW_SCORE, DEFAULT_STEPS, GenerateConfig, GenerateResult, Pipeline, ProgressFn,
                      flow_schedule, no_progress)
from .stages import Stage, TorchStage
from .weights import checkpoint_parts, decoder_from_checkpoints, torch_stage


@dataclass
class GenerateRequest:
    """What `mi2v generate` is asked for; None means: from the artifacts, else the checkpoints, else the preset."""

    image: Path
    out: Path
    checkpoints: list[Path] = field(default_factory=list)
    artifacts: list[Path] = field(default_factory=list)
    use: list[str] = field(default_factory=list)  # `--use` values
    fallback: str = "none"  # component missing from the artifacts: "none" (error) or "pytorch"
    preset: str | None = None
    decoder: str | None = None
    steps: int = DEFAULT_STEPS
    seed: int = 0
    resolution: str | None = None  # "HxW"
    frames: int | None = None
    flow_score: float = DEFAULT_FLOW_SCORE
    posterior: str = "sample"
    fit: str = "stretch"
    fps: int = DEFAULT_FPS
    compare_to: str | None = None  # "reference": also run PyTorch fp32 and compare
    report: Path | None = None  # the comparison report (JSON)
    min_psnr: float | None = None  # the comparison gate; None: the artifacts' manifest gate (pipeline.gate_of)
    allow_modified: bool = False  # run artifacts that differ from their manifest (mi2v_export/integrity.py)
    memory_budget: float | None = None  # MiB: only artifacts whose measured runtime memory fits (one stage at a time)


@dataclass
class GeneratePlan:
    """A checked request with everything resolved that needs no model."""

    request: GenerateRequest
    image: Any  # PIL image
    manifests: list
    use: dict[str, str]
    preset: str
    config: GenerateConfig
    parts: dict
    decoder: str


@dataclass
class GenerateRun:
    plan: GeneratePlan
    result: GenerateResult
    reference: GenerateResult | None
    comparison: dict | None
    seconds: dict[str, float]  # host seconds: run (load models), reference, compare, write
    notes: list[str]
    sheet: Path  # the contact sheet written beside the video


def plan_generate(request: GenerateRequest) -> GeneratePlan:
    """Check the request and resolve preset, size and decoder (explicit option > artifacts' manifest >
    checkpoints > preset default); BadInputError before any model is built."""
    r = request
    out = Path(r.out)
    if out.suffix.lower() != ".mp4":
        raise BadInputError(f"--out {out}: the video must be an .mp4 file")
    check_file(out, "--out")
    if r.report is not None:
        check_file(r.report, "--report")
    if r.compare_to not in (None, "reference"):
        raise BadInputError(f"--compare-to {r.compare_to!r}: only 'reference' (PyTorch fp32) is supported")
    if r.report is not None and r.compare_to is None:
        raise BadInputError("--report writes the comparison report: use it with --compare-to reference")
    if r.compare_to and not r.artifacts:
        raise BadInputError("--compare-to reference compares exported artifacts with PyTorch: pass --artifacts DIR")
    if r.fps < 1:
        raise BadInputError(f"--fps must be positive, got {r.fps}")
    if r.memory_budget is not None and (not r.artifacts or r.memory_budget <= 0):
        raise BadInputError("--memory-budget picks among exported artifacts by their measured memory: pass "
                            "--artifacts DIR and a positive number of MiB")
    if r.fallback not in ("none", "pytorch"):
        raise BadInputError(f"--fallback must be 'none' or 'pytorch', got {r.fallback!r}")
    flow_schedule(r.steps)  # validates the step count
    image = load_image(r.image)
    use = parse_use(r.use)
    arts = [read_artifacts(a) for a in r.artifacts]
    preset = get_preset(r.preset or (arts[0].preset if arts else "mobilei2v-270m"))
    if r.resolution is not None:
        height, width = parse_resolution(r.resolution)
    else:
        height, width = tuple(arts[0].resolution) if arts else (preset.height, preset.width)
    frames = r.frames if r.frames is not None else (arts[0].frames if arts else preset.frames)
    config = GenerateConfig(height=height, width=width, frames=frames, steps=r.steps, seed=r.seed,
                            flow_score=r.flow_score, posterior=r.posterior, fit=r.fit)
    bounds.check_cap(preset, height, width, frames)  # before the geometry's model-free checks build anything
    parts = checkpoint_parts(r.checkpoints)
    decoder = r.decoder or next((k for k in map(decoder_kind_of, arts) if k), None) \
        or decoder_from_checkpoints(parts) or "turbo-vaed"
    weights = weight_bytes(preset, COMPONENTS, decoder)
    bounds.check_memory(config.geometry, weights, "run", "this video")
    return GeneratePlan(request=r, image=image, manifests=arts, use=use, preset=preset.name, config=config,
                        parts=parts, decoder=decoder)


def run_generate(request: GenerateRequest, progress: ProgressFn = no_progress,
                 plan: GeneratePlan | None = None) -> GenerateRun:
    """The whole `mi2v generate`: build the stages, generate, optionally re-run PyTorch fp32 and compare, write
    the video, contact sheet and report. `progress(stage, done, total)` gets stages prefixed "artifacts · " /
    "reference · " when comparing, then "compare" and "write". The caller applies `check_psnr_gate` to
    `run.comparison` once it has shown the run (everything is written by then)."""
    plan = plan or plan_generate(request)
    prefix = "artifacts · " if request.compare_to else ""
    seconds: dict[str, float] = {}
    modified: list = []  # integrity.Modified of the files run with --allow-modified (recorded in the report)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        t0 = time.perf_counter()
        stages = build_stages(plan.preset, plan.decoder, plan.config.geometry, plan.manifests,
                              fallback=request.fallback, parts=plan.parts, use=plan.use,
                              progress=_prefixed(progress, prefix), allow_modified=request.allow_modified,
                              modified=modified, budget=_budget_bytes(request))
        seconds["run"] = time.perf_counter() - t0
        precision = precision_of(stages)
        manifest_gate = gate_of(stages)  # the trajectory gate the artifacts passed at export, if any
        result = Pipeline(stages).generate(plan.image, plan.config, _prefixed(progress, prefix))
        reference = _reference_run(plan, stages, result, progress, seconds) if request.compare_to else None
    comparison = None
    if reference is not None:
        progress("compare", 0, 1)
        t0 = time.perf_counter()
        threshold = request.min_psnr if request.min_psnr is not None else manifest_gate
        comparison = compare_runs(result, reference, threshold)
        comparison["modified_files"] = [m.to_dict() for m in modified]
        seconds["compare"] = time.perf_counter() - t0
        progress("compare", 1, 1)
    sheet = _write_outputs(plan, result, reference, comparison, precision, progress, seconds)
    notes = list(dict.fromkeys(_seeded_notes(caught) + _seeded_artifact_notes(plan.manifests) + result.notes
                               + [f"{m.file} differs from its manifest (--allow-modified)" for m in modified]))
    return GenerateRun(plan=plan, result=result, reference=reference, comparison=comparison, seconds=seconds,
                       notes=notes, sheet=sheet)


def _budget_bytes(request: GenerateRequest) -> int | None:
    return None if request.memory_budget is None else int(request.memory_budget * 2 ** 20)


def _prefixed(progress: ProgressFn, prefix: str) -> ProgressFn:
    return lambda stage, done, total: progress(f"{prefix}{stage}", done, total)


def _reference_run(plan: GeneratePlan, stages: dict[str, Stage], result: GenerateResult, progress: ProgressFn,
                   seconds: dict[str, float]) -> GenerateResult:
    """PyTorch fp32 with the same seed and the posterior mode the artifact run ended up with. The artifact
    sessions are released first: peak memory is the larger of the two runs, not their sum."""
    reuse = {c: s for c, s in stages.items() if isinstance(s, TorchStage)}
    stages.clear()
    gc.collect()
    t0 = time.perf_counter()
    ref_stages = {c: reuse.get(c) or torch_stage(c, plan.preset, plan.decoder, plan.parts) for c in COMPONENTS}
    seconds["reference"] = time.perf_counter() - t0
    return Pipeline(ref_stages).generate(plan.image, plan.config, _prefixed(progress, "reference · "),
                                         posterior=result.posterior)


def _write_outputs(plan: GeneratePlan, result: GenerateResult, reference: GenerateResult | None,
                   comparison: dict | None, precision: str, progress: ProgressFn, seconds: dict[str, float]) -> Path:
    request = plan.request
    progress("write", 0, 1)
    t0 = time.perf_counter()
    sheet = contact_sheet_path(request.out)
    try:  # all or nothing: each file goes to a temporary name beside it, renamed only once all are written
        with atomic_path(request.out) as video_tmp, atomic_path(sheet) as sheet_tmp:
            write_video(result.frames, video_tmp, fps=request.fps)
            write_contact_sheet(result.frames, sheet_tmp)
            if comparison is not None and request.report is not None:
                write_json(build_report(plan.config, result, reference, comparison, image=str(request.image),
                                        preset=plan.preset, decoder=plan.decoder, precision=precision),
                           request.report)
    except OSError as exc:
        raise BadInputError(f"cannot write {request.out} ({exc.strerror or exc}); nothing was written") from None
    seconds["write"] = time.perf_counter() - t0
    progress("write", 1, 1)
    return sheet


def _seeded_notes(caught) -> list[str]:
    seeded = [str(w.message).split(":")[0] for w in caught if "seeded random weights" in str(w.message)]
    if not seeded:
        return []
    return [f"no checkpoint for the {', '.join(dict.fromkeys(seeded))}: seeded random weights, so the video is "
            "noise (reproducible, fine for testing)"]


def _seeded_artifact_notes(manifests) -> list[str]:
    """Artifacts exported without a checkpoint carry seeded random weights: their video is noise too."""
    seeded = [str(m.folder) for m in manifests if (m.source or {}).get("weights") == "seeded"]
    if not seeded:
        return []
    return [f"the artifacts in {', '.join(seeded)} were exported with seeded random weights (no --checkpoint), so "
            "the video is noise (reproducible, fine for testing)"]
