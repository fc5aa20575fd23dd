"""`run_export`: validate everything, then for each component load → reference → export → inspect → verify,
all inside a staging folder that is moved into place only when every component passed (manifest.Staging).

Order of failure checks (cheap first, before any model is built): target / delegate / component / decoder /
dtype / resolution / options, the target's environment (e.g. the QNN SDK), `--attention mobile` availability,
the checkpoints (readable, each feeding one exported component), and the output folder (an existing manifest must
describe the same preset, size and weights).
"""

from __future__ import annotations

import dataclasses
import errno
import gc
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from mi2v_export import bounds, parity, precision, runtimes, testvectors
from mi2v_export.contract import DECODER_KINDS, parse_components
from mi2v_export.errors import BadInputError, Mi2vError, VerificationError, first_line
from mi2v_export.files import tree_digest
from mi2v_export.outputs import check_folder
from mi2v_export.manifest import (
    ArtifactEntry,
    FileInfo,
    Manifest,
    Staging,
    staging_home,
    now_iso,
    read_manifest_if_any,
    tool_version,
)
from mi2v_export.models import weight_bytes
from mi2v_export.presets import get_preset
from mi2v_export.runtimes import memory
from mi2v_export.parity import TRAJECTORY_MARGIN_DB
from mi2v_export.runtimes.pytorch import SIMULATED
from mi2v_export.qnn import DEFAULT_SOC
from mi2v_export.shapes import geometry, parse_resolution
from mi2v_export.verify import run_record

from . import components as comp
from . import margin, quality, tile_budget, tiled
from .base import (
    ExportOptions,
    ProgressCallback,
    ProgressEvent,
    discover,
    get_exporter,
    no_progress,
)


@dataclass
class ExportRequest:
    """Everything `mi2v export` can be asked for (the CLI flags, unvalidated)."""

    target: str
    out_dir: Path
    components: str = "all"
    delegate: str | None = None
    decoder: str = "turbo-vaed"
    preset: str = "mobilei2v-270m"
    checkpoints: list[Path] = field(default_factory=list)
    resolution: str | None = None  # "HxW"; None → the preset's
    frames: int | None = None  # None → the preset's
    dtype: str | None = None  # alias of precision fp32|fp16; None → the target's default (fp16 Core ML, else fp32)
    precision: str | None = None  # `--precision`: one name or COMPONENT=NAME pairs (mi2v_export.precision)
    calibration: Path | None = None  # `--calibration DIR`: images; None → the packaged default set
    min_psnr: float | None = None  # `--min-psnr DB`: overrides the trajectory gate's per-frame PSNR floor
    gate_margin: float = TRAJECTORY_MARGIN_DB  # `--gate-margin DB`: integer exports clear the gate by this (0: off)
    recipe: Path | None = None  # `--recipe FILE`: unit → precision (mixed precision, `mi2v quantize analyze`)
    attention: str = "reference"
    rewrite: list[str] = field(default_factory=list)  # `--rewrite NAME=VALUE` on top of the attention plan
    verify: bool = True
    test_vectors: bool = True  # write the sampler inputs and PyTorch outputs beside each artifact (testvectors.py)
    # the targets' own flags: each exporter's `options_type` takes the ones it declares (exporters/targets)
    etrecord: bool = False  # executorch
    compute_units: str = "all"  # coreml, executorch --delegate coreml
    min_ios: int = 17  # coreml, executorch --delegate coreml
    soc: str = DEFAULT_SOC  # onnx / executorch --delegate qnn
    allow_cpu_fallback: bool = False  # onnx/qnn: accept nodes the HTP refuses (node / FLOP shares recorded)
    tile: str | None = None  # `--tile HxW` (video pixels) for the encoder / decoder (exporters/tiled.py)
    halo: int | None = None  # `--halo PX`: smaller than the receptive field → blended, measured
    memory_budget: float | None = None  # `--memory-budget MIB`: the largest tile whose measured peak fits
    stream_rows: int | None = None  # `--stream-rows PX`: every stage streamed in bands of PX rows
    time_chunk: int | None = None  # `--time-chunk FRAMES`: stages chunked in time (mi2v_export/chunking.py)


@dataclass
class ExportReport:
    out_dir: Path
    manifest: Manifest  # the merged manifest now in out_dir
    entries: list[ArtifactEntry]  # this run's artifacts


def _is_disk_full(exc: BaseException) -> bool:
    if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return True
    return "No space left on device" in str(exc)


def resolve(request: ExportRequest):
    """Validate a request without doing any work: (exporter, options, components, preset, geometry)."""
    exporter = get_exporter(request.target, request.delegate)
    components = parse_components(request.components)
    if request.decoder not in DECODER_KINDS:
        raise BadInputError(f"unknown decoder {request.decoder!r}; choose one of: {', '.join(DECODER_KINDS)}")
    preset = get_preset(request.preset)
    if request.resolution:
        h, w = parse_resolution(request.resolution)
    else:
        h, w = preset.height, preset.width
    frames = request.frames if request.frames is not None else preset.frames
    geo = geometry(h, w, frames)
    options = ExportOptions(target=exporter.name, delegate=request.delegate, verify=request.verify,
                            test_vectors=request.test_vectors, target_options=exporter.target_options(request))
    options = exporter.resolve(options)
    options.precisions = precision.resolve(request.precision, request.dtype, components,
                                           exporter.precisions_for(options.delegate),
                                           precision.target_label(exporter.name, options.delegate),
                                           exporter.default_dtype(options.delegate))
    if request.recipe is not None:
        options.recipe = _apply_recipe(request, options, components, exporter)
    options.dtype = options.precisions[components[0]].float_dtype
    if request.calibration is not None and not Path(request.calibration).is_dir():
        raise BadInputError(f"--calibration {request.calibration}: not a folder of images")
    if request.min_psnr is not None and not (0 < request.min_psnr < 200):
        raise BadInputError(f"--min-psnr {request.min_psnr:g}: expected a PSNR in dB between 0 and 200")
    if not 0 <= request.gate_margin <= 20:
        raise BadInputError(f"--gate-margin {request.gate_margin:g}: expected dB between 0 (off) and 20")
    _check_flag_applies(request, exporter, "etrecord")
    comp.check_attention_available(request.attention, comp.parse_rewrite_options(request.rewrite))
    options.tiles = tiled.check_request(request.tile, request.halo, request.memory_budget, components,
                                        (geo.height, geo.width), options.precisions, request.stream_rows,
                                        request.time_chunk)
    return exporter, options, components, preset, geo


def _check_flag_applies(request: ExportRequest, exporter, flag: str) -> None:
    """BadInputError when `flag` is set but this target's options do not take it (one line naming those that do)."""
    if getattr(request, flag) == getattr(ExportRequest, flag) or hasattr(exporter.target_options(request), flag):
        return
    takers = [t for t in discover() if hasattr(get_exporter(t).target_options(request), flag)]
    raise BadInputError(f"--{flag.replace('_', '-')} applies to --target {' / '.join(takers)} only")


def _apply_recipe(request: ExportRequest, options: ExportOptions, components: list[str], exporter) -> dict:
    """Load `--recipe`, check its component is exported and its precision is a cell of this target, and make that
    component "mixed"."""
    from mi2v_export import recipe as rc

    data = rc.load(Path(request.recipe))
    name = data.get("component")
    if name not in components:
        raise BadInputError(f"--recipe {request.recipe} is for the {name}, which this export does not include "
                            f"(--component {','.join(components)})")
    if request.precision and "=" in request.precision and f"{name}=" in request.precision:
        raise BadInputError(f"--recipe sets the {name}'s precision; drop {name}=... from --precision")
    precision.check_supported(exporter.precisions_for(options.delegate),
                              precision.target_label(exporter.name, options.delegate),
                              precision.Precision(data["precision"]), name)
    options.precisions[name] = precision.Precision.MIXED
    return data


@dataclass
class ExportPlan:
    """A validated request: everything checked that can be checked before any model is built."""

    request: ExportRequest
    exporter: object
    options: ExportOptions
    components: list[str]
    preset: str
    geo: object
    routing: dict
    manifest: Manifest  # the new manifest's shared fields (components filled in by the run)


def prepare(request: ExportRequest) -> ExportPlan:
    """Validate flags, environment, checkpoints and the output folder (BadInputError / MissingDependencyError /
    CheckpointError with one line) without exporting anything."""
    exporter, options, components, preset, geo = resolve(request)
    weights = weight_bytes(preset, components, request.decoder)
    bounds.check_request(preset, geo, weights, "export", "this export")
    exporter.check_environment(options)
    out_dir = Path(request.out_dir)
    for folder in {out_dir.absolute(), staging_home(out_dir.absolute())}:  # the artifacts' folder, where staged
        check_folder(folder, "--out", need_bytes=int(1.1 * sum(weights.values())))  # fp32 artifacts at most
    routing, source = comp.route_checkpoints(components, request.decoder, request.checkpoints)
    manifest = Manifest(preset=preset.name, resolution=(geo.height, geo.width), frames=geo.frames,
                        latent_shape=tuple(geo.latent_shape), source=source)
    if out_dir.exists() and not out_dir.is_dir():
        raise BadInputError(f"--out {out_dir}: exists and is not a folder")
    existing = read_manifest_if_any(out_dir)  # BadInputError when unreadable: never overwrite what we can't read
    if existing is not None:
        why = existing.conflict_with(manifest)
        if why:
            raise BadInputError(f"--out {out_dir} already holds other artifacts ({why}); choose another folder")
    return ExportPlan(request, exporter, options, components, preset.name, geo, routing, manifest)


def run_export(request: ExportRequest | ExportPlan, progress: ProgressCallback = no_progress,
               stop_requested: Callable[[], bool] = lambda: False) -> ExportReport:
    """Export every requested component into a staging folder, then move them into the output folder.

    `stop_requested` is asked at every progress event and before the commit: a signal handler's KeyboardInterrupt
    can be swallowed (raised inside a weakref callback or `__del__`, Python only prints "Exception ignored"), so an
    interrupted export must not rely on the exception alone to keep its output out of the folder."""
    plan = request if isinstance(request, ExportPlan) else prepare(request)
    progress = _stoppable(progress, stop_requested)
    req = plan.request
    out_dir = Path(req.out_dir)
    entries: list[ArtifactEntry] = []
    files: list[str] = []
    try:
        with Staging(out_dir) as staging:
            ctx = quality.QualityContext(req, plan)
            for name in plan.components:
                entry = _export_one(name, req, plan.exporter, plan.options, plan.preset, plan.geo,
                                    plan.routing[name], staging.path, progress, ctx)
                entries.append(entry)
                files += entry.files()
            try:
                _trajectory_gate(entries, plan, staging.path, ctx, progress)  # may export components again
            finally:
                plan.exporter.forget_simulated()
            files = list(dict.fromkeys(f for e in entries for f in e.files()))
            plan.manifest.components = entries
            _raise_if_stopped(stop_requested)
            merged = staging.commit(plan.manifest, files)
    except Mi2vError:
        raise
    except (OSError, RuntimeError) as exc:
        if _is_disk_full(exc):
            raise Mi2vError(f"no space left on the device holding {out_dir.absolute().parent}; nothing was written "
                            "to the output folder") from None
        raise
    return ExportReport(out_dir=out_dir, manifest=merged, entries=entries)


def _raise_if_stopped(stop_requested: Callable[[], bool]) -> None:
    if stop_requested():
        raise KeyboardInterrupt


def _stoppable(progress: ProgressCallback, stop_requested: Callable[[], bool]) -> ProgressCallback:
    def checked(event: ProgressEvent) -> None:
        _raise_if_stopped(stop_requested)
        progress(event)
    return checked


def _component_options(name: str, options: ExportOptions) -> ExportOptions:
    """The run's options with this component's precision (and recipe, when it is the mixed one)."""
    chosen = options.precisions.get(name, precision.Precision(options.dtype))
    return dataclasses.replace(options, precision=chosen.value, dtype=chosen.float_dtype,
                               recipe=options.recipe if chosen is precision.Precision.MIXED else None)


def _calibrate(name: str, spec, options: ExportOptions, ctx, stage, done) -> int:
    """Set this component's calibration records when its precision is an integer one (recorded once per run, or
    read from the cache); returns the fp32 weight bytes (the basis of `compression`)."""
    if (options.precision in precision.INTEGER or options.recipe) and ctx is not None:
        t0 = stage("calibrate", "recording the sampler's inputs")
        options.calibration = ctx.calibration().samples[name]
        done("calibrate", t0, f"{len(options.calibration)} records" + (" (cached)" if ctx.calibration().cached
                                                                      else ""))
    return sum(t.numel() * 4 for t in list(spec.module.parameters()) + list(spec.module.buffers()))


def _precision_fields(entry: ArtifactEntry, fp32_bytes: int, ctx, options: ExportOptions):
    """The manifest's precision fields of one entry (the trajectory is added once every component is done)."""
    size = (entry.tiling or {}).get("bytes", entry.bytes)  # a tiled entry: all its stage models
    entry.compression = round(size / fp32_bytes, 4) if fp32_bytes else None
    entry.export["fp32_bytes"] = fp32_bytes  # compression = bytes / fp32_bytes (the fp32 weights' size)
    entry.calibration = ctx.calibration().record() if options.calibration is not None and ctx is not None else None
    entry.recipe = options.recipe


def _memory_record(exporter, artifact, staging: Path, options: ExportOptions, measured: dict | None,
                   stage, done) -> dict | None:
    """The manifest's `runtime_memory`: the peak of a fresh process that loads and runs the artifact once, above
    that process's baseline (runtimes/measure.py), beside the target's planned bytes. Measured only when the
    export is verified (a --no-verify export stays quick) and a runtime here says what a device needs."""
    planned = exporter.planned_memory(artifact)
    if measured is None and options.verify:
        t0 = stage("memory")
        measured = tiled.measured(exporter, artifact, staging, options)
        done("memory", t0, "not measured here" if not measured or measured.get("bytes") is None
             else f"{measured['bytes'] / tiled.MIB:.0f} MiB above the runtime's baseline")
    if measured is None and planned is None:
        return None
    record = dict(measured or {"bytes": None, "method": "not measured: no runtime here measures this target"})
    record["planned_bytes"] = planned
    return record


def _trajectory_gate(entries: list[ArtifactEntry], plan: ExportPlan, staging: Path, ctx, progress) -> None:
    """The whole sampler on this run's reduced-precision artifacts vs PyTorch fp32 (quality.trajectory), recorded in
    every such entry. An integer export that lands less than the margin above its gate has its costliest units kept
    float and is exported again (exporters/margin.py) before the gate is judged. fp32 artifacts pass an exact gate
    already; an artifact no runtime here runs takes part through the PyTorch stand-in its component gate ran
    (recorded in `verified_on`), or is skipped when there is none."""
    gated, simulated = _gated(entries, plan)
    if not gated or not plan.request.verify:
        return
    progress(ProgressEvent("video", "trajectory", "start", f"2-step video on {quality.calibration.VALIDATION_IMAGE.name}"))
    t0 = time.perf_counter()
    record = quality.trajectory(gated, staging, ctx, plan.request.min_psnr, simulated)
    progress(ProgressEvent("video", "trajectory", "done", f"worst frame {float(record['psnr_db_min']):.1f} dB "
                           f"(gate {record['gate_db']:g} dB)", seconds=time.perf_counter() - t0))
    names = margin.candidates(gated, {n: p.value for n, p in plan.options.precisions.items()},
                              plan.options.recipe is not None, plan.exporter.keeps_units)
    if plan.request.gate_margin > 0 and margin.needed_db(record, plan.request.gate_margin) > 0 and names:
        record = _protect(entries, names, record, plan, staging, ctx, progress)
        gated, _ = _gated(entries, plan)
    quality.check_gate(record, gated)
    for e in gated:
        e.trajectory = record


def _gated(entries: list[ArtifactEntry], plan: ExportPlan) -> tuple[list[ArtifactEntry], dict]:
    """(the reduced-precision entries the trajectory runs, their PyTorch stand-ins where no runtime here runs
    them); the others get the reason in their `trajectory`."""
    reduced = [e for e in entries if (e.precision or "fp32") != "fp32" and e.parity.get("verified_on")]
    simulated = {e.component: plan.exporter.simulated_module(e.component) for e in reduced
                 if e.parity["verified_on"][-1]["runtime"] == SIMULATED}
    gated = [e for e in reduced if simulated.get(e.component) is not None
             or e.parity["verified_on"][-1]["runtime"] != SIMULATED]
    for e in reduced:
        if e not in gated:
            e.trajectory = {"passed": None, "reason": "the artifact's runtime is not on this host and its PyTorch "
                                                      "stand-in is gone (parity verified_on pytorch-simulated)"}
    return gated, {c: m for c, m in simulated.items() if m is not None}


def _protect(entries: list[ArtifactEntry], names: list[str], record: dict, plan: ExportPlan, staging: Path, ctx,
             progress) -> dict:
    """Keep the costliest units float until the trajectory clears its gate by the margin (exporters/margin.py);
    `entries` is updated in place with the components exported again. Returns the last trajectory record."""
    precisions = {n: plan.options.precisions[n].value for n in names}
    progress(ProgressEvent("video", "margin", "start", f"{float(record['psnr_db_min']):.1f} dB is less than "
                           f"{plan.request.gate_margin:g} dB above the gate: ranking units"))
    t0 = time.perf_counter()
    ranking = margin.rank(ctx.stages(), names, precisions, plan.geo)
    before = dict(record)
    lack = need = margin.needed_db(record, plan.request.gate_margin)
    count, promised = margin.first_count(ranking, need)
    for round_ in range(1, margin.ROUNDS + 1):
        for name, kept in ranking.first(count).items():
            auto = margin.recipe_for(name, precisions[name], ctx.stages(), kept, ranking, round_,
                                     plan.request.gate_margin)
            i = next(k for k, e in enumerate(entries) if e.component == name)
            entries[i] = _reexport(entries[i], auto, plan, staging, ctx, progress)
        gated, simulated = _gated(entries, plan)
        record = quality.trajectory(gated, staging, ctx, plan.request.min_psnr, simulated)
        if margin.needed_db(record, plan.request.gate_margin) <= 0 or count >= len(ranking.units):
            break
        gained = float(record["psnr_db_min"]) - float(before["psnr_db_min"])
        need = max(need, margin.next_need(lack, promised, gained))
        count, promised = margin.first_count(ranking, need, at_least=count + 1)
    for e in entries:
        if (e.recipe or {}).get("origin") == margin.ORIGIN:
            e.recipe["trajectory_db"] = {"before": before["psnr_db_min"], "after": record["psnr_db_min"],
                                         "gate": record["gate_db"]}
    progress(ProgressEvent("video", "margin", "done", f"{count} unit(s) kept float: worst frame "
                           f"{float(record['psnr_db_min']):.1f} dB (gate {record['gate_db']:g} dB)",
                           seconds=time.perf_counter() - t0))
    return record


def _reexport(old: ArtifactEntry, auto: dict, plan: ExportPlan, staging: Path, ctx, progress) -> ArtifactEntry:
    """The component exported again with the recipe's float units; it keeps its precision's name (and gate), and
    its recipe records what the float units cost in bytes."""
    name = old.component
    options = dataclasses.replace(plan.options, recipe=auto,
                                  precisions={**plan.options.precisions, name: precision.Precision.MIXED})
    entry = _export_one(name, plan.request, plan.exporter, options, plan.preset, plan.geo, plan.routing[name],
                        staging, progress, ctx)
    size = (entry.tiling or {}).get("bytes", entry.bytes)  # a tiled entry: all its stage models
    all_integer = (old.recipe or {}).get("cost", {}).get("bytes_all_integer",
                                                         (old.tiling or {}).get("bytes", old.bytes))
    entry.precision = auto["precision"]
    entry.recipe["cost"] = {"bytes_all_integer": all_integer, "bytes": size,
                            "ratio": round(size / all_integer, 4) if all_integer else None}
    return entry


def _measure(exporter, artifact, staging: Path, spec, options: ExportOptions, ctx):
    """(metrics, verified_on, reason, inputs) of the component gate. Integer precisions are measured on the held-out
    records of the real sampler (a seeded random input says little about int8 ranges); fp32/fp16 on the seeded
    input, as always."""
    if (options.precision in precision.INTEGER or options.recipe) and ctx is not None:
        held = quality.held_out_parity(exporter, artifact, staging, spec, options, ctx)
        if held is None:
            return None, None, exporter.run(artifact, staging, spec, options).reason, None
        metrics, verified_on, n = held
        return metrics, verified_on, None, f"held-out: {n} record(s) of the sampler on the validation image"
    result = (tiled.run_here(exporter, artifact, staging, spec, options) if artifact.tiling
              else exporter.run(artifact, staging, spec, options))
    if result.outputs is None:
        return None, None, result.reason, None
    if spec.reference is None:
        raise RuntimeError(f"{type(exporter).__name__}.runs_here() said no, but run() produced outputs")
    metrics = parity.compare(result.outputs, {n: r.numpy() for n, r in spec.reference.items()})
    return metrics, result.verified_on, None, f"seeded (seed {comp.INPUT_SEED})"


def _export_one(name: str, request: ExportRequest, exporter, options: ExportOptions, preset: str, geo,
                checkpoint: Path | None, staging: Path, progress: ProgressCallback,
                ctx: quality.QualityContext | None = None) -> ArtifactEntry:
    rss_method = memory.reset_peak()  # the peak below covers this component only, where the kernel allows it
    options = _component_options(name, options)
    t_start = time.perf_counter()
    stages: dict[str, float] = {}

    def stage(label: str, detail: str = ""):
        progress(ProgressEvent(name, label, "start", detail))
        return time.perf_counter()

    def done(label: str, t0: float, detail: str = ""):
        stages[label] = time.perf_counter() - t0
        progress(ProgressEvent(name, label, "done", detail, seconds=stages[label]))

    rewrite_options = comp.parse_rewrite_options(request.rewrite)
    # the PyTorch reference is computed only when something will compare against it (test vectors always do)
    need_reference = (request.verify and exporter.runs_here(options)) or options.test_vectors
    progress(ProgressEvent(name, "load", "start", f"{comp.model_name(name, request.decoder)} ({preset}, "
                                                  f"{'seeded weights' if checkpoint is None else checkpoint.name})"
                                                  + (" + PyTorch fp32 reference" if need_reference else "")))
    spec = comp.load_component(name, preset=preset, geo=geo, decoder_kind=request.decoder, checkpoint=checkpoint,
                               attention=request.attention, reference=need_reference,
                               rewrite_options=rewrite_options)
    stages.update(spec.stages_s)
    progress(ProgressEvent(name, "load", "done", seconds=spec.stages_s.get("load")))
    if spec.reference is not None:
        progress(ProgressEvent(name, "reference", "done", "PyTorch fp32 output on the test-vector input",
                               seconds=spec.stages_s.get("reference")))

    fp32_bytes = _calibrate(name, spec, options, ctx, stage, done)
    artifact, checks, measured = _produce(spec, exporter, options, staging, progress, stage, done, stages)
    parity_record = _verify(name, request, exporter, options, spec, artifact, staging, stage, done, progress, ctx)

    sha, size = tree_digest(staging / artifact.file)
    extra = [FileInfo(role, file, *tree_digest(staging / file)) for role, file in artifact.extra_files.items()]
    if artifact.tiling:  # the bytes of every stage model (and their own extra files), not the first one's only
        artifact.tiling["bytes"] = size + sum(f.bytes for f in extra if f.role != testvectors.ROLE)
    wall = time.perf_counter() - t_start
    flags = _flags(name, request, exporter, options, preset, geo, rewrite_options)
    entry = ArtifactEntry(
        component=name, model=spec.model, target=exporter.name, delegate=options.delegate, dtype=options.dtype,
        precision=options.precision,
        file=artifact.file, sha256=sha, bytes=size, inputs=artifact.inputs, outputs=artifact.outputs,
        export={"wall_s": round(wall, 3), "peak_rss_bytes": memory.peak_rss_bytes(), "peak_rss_method": rss_method,
                "stages_s": {k: round(v, 3) for k, v in stages.items()}},
        parity=parity_record, structure={"ok": True, "checks": checks}, delegation=artifact.delegation,
        target_info=artifact.target_info, flags=flags, attention=spec.attention, extra_files=extra,
        test_vectors=artifact.test_vectors, exported_at=now_iso(), tool_version=tool_version(),
        tiling=artifact.tiling)
    _precision_fields(entry, fp32_bytes, ctx, options)
    entry.runtime_memory = _memory_record(exporter, artifact, staging, options, measured, stage, done)
    entry.runtime_memory_bytes = (entry.runtime_memory or {}).get("bytes")
    del spec, artifact
    gc.collect()
    return entry


def _produce(spec, exporter, options: ExportOptions, staging: Path, progress: ProgressCallback, stage, done,
             stages: dict[str, float]):
    """(artifact, inspect checks, measured memory or None): the export (tiled when asked, exporters/tiled.py),
    its test vectors (whole-frame; a tiled ExecuTorch entry's as .npz, a bundled program holds one model) and the
    structural checks."""
    t0 = time.perf_counter()
    tiles = tiled.request_for(spec, options.tiles)
    measured = None
    if tiles.active:
        artifact, checks, measured = tile_budget.export_component(spec, exporter, options, staging, progress, tiles)
    else:
        artifact = exporter.export(spec, staging, options, progress)
    stages["export"] = time.perf_counter() - t0
    stages.update({f"export.{k}": v for k, v in artifact.stages_s.items()})
    if options.test_vectors:
        fmt = exporter.test_vector_format
        _write_test_vectors(testvectors.NPZ if artifact.tiling and fmt == testvectors.BUNDLED_PROGRAM else fmt,
                            artifact, spec, options, staging, stage, done)
    if not tiles.active:
        t0 = stage("inspect")
        checks = exporter.inspect(artifact, staging, spec, options)
        done("inspect", t0, f"{len(checks)} checks")
    return artifact, checks, measured


def _verify(name: str, request: ExportRequest, exporter, options: ExportOptions, spec, artifact, staging: Path,
            stage, done, progress: ProgressCallback, ctx=None) -> dict:
    """Run the artifact here against the PyTorch fp32 reference and apply the parity gate; the manifest's
    `parity` record (with the reason when it cannot run here). VerificationError when the gate fails."""
    gate = exporter.gate(options)
    parity_record = {"reference": parity.REFERENCE, "max_abs": None, "rel_l2": None, "psnr_db": None,
                     "verified_on": [], "reason": None, "gate": None, "input_seed": comp.INPUT_SEED}
    label = f"{name} ({exporter.name}{'/' + options.delegate if options.delegate else ''}, {options.precision})"
    if not request.verify:
        parity_record["reason"] = "not verified (--no-verify)"
        progress(ProgressEvent(name, "verify", "skip", "--no-verify"))
    else:
        t0 = stage("verify")
        try:
            metrics, verified_on, reason, inputs = _measure(exporter, artifact, staging, spec, options, ctx)
        except Mi2vError:
            raise
        except Exception as exc:  # noqa: BLE001 - a runtime that cannot load/run the artifact fails the gate
            raise VerificationError(f"{label}: the runtime here could not run {artifact.file}: "
                                    f"{first_line(exc, 500)}") from None
        if metrics is None:
            parity_record["reason"] = reason
            done("verify", t0, f"no runtime here: {reason}")
        else:
            passed = gate.passes(metrics)
            parity_record.update(metrics.to_dict())
            parity_record.pop("finite", None)
            parity_record.update(verified_on=[run_record(verified_on, runtimes.get(verified_on).version(), metrics,
                                                         gate, "export", 1)], inputs=inputs,
                                 gate=dict(gate.to_dict(), passed=passed, finite=metrics.finite))
            done("verify", t0, f"{verified_on}: {gate.describe(metrics)}")
            if not passed:
                raise VerificationError(f"{label} fails the parity gate on {verified_on}: {gate.describe(metrics)} "
                                        "vs PyTorch fp32; no artifact was written")
    return parity_record


def _flags(name: str, request: ExportRequest, exporter, options: ExportOptions, preset: str, geo,
           rewrite_options: dict) -> dict:
    """The manifest's `flags`: the options that shaped this artifact."""
    flags = {"preset": preset, "resolution": [geo.height, geo.width], "frames": geo.frames,
             "attention": request.attention if name == "denoiser" else None,
             "rewrite": rewrite_options if name == "denoiser" else None,
             "decoder": request.decoder if name == "decoder" else None, "verify": request.verify}
    flags["test_vectors"] = options.test_vectors
    flags.update(exporter.manifest_flags(options))  # the target's own options
    return flags


def _write_test_vectors(fmt: str, artifact, spec, options: ExportOptions, staging: Path, stage, done) -> None:
    """The sampler inputs and PyTorch outputs of `spec.vectors`, in the artifact's dtypes and its runtime's format
    (`fmt`, the exporter's `test_vector_format`), added to the artifact's extra files (the "vectors" stage)."""
    t0 = stage("vectors", f"{len(spec.vectors)} set(s)")
    sets = testvectors.to_artifact_dtypes(spec.vectors, artifact.inputs, artifact.outputs)
    tolerance_of = options.precision if precision.is_quantized(options.precision) else options.dtype
    record, files = testvectors.write(fmt, spec.name, artifact.file, tolerance_of, sets, staging)
    artifact.test_vectors = record
    artifact.extra_files.update(files)
    done("vectors", t0, f"{record['format']}, {record['bytes']} bytes")
