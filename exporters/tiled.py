"""Tiled export of the VAE encoder and decoders (`mi2v export --tile HxW | --memory-budget MIB`).

The component is cut into stages (mi2v_export/models/stages.py); each stage's receptive field is measured by
autograd (mi2v_export/models/receptive.py) and sets its halo, so the stitched output equals the whole-frame model
(exact) unless a smaller `--halo` asks for blended overlaps. Every stage is exported by the target's own exporter
as a fixed-size tile model (`<component>.s<k><suffix>`); the entry keeps the component's whole-frame inputs and
outputs, its test vectors are whole-frame, and its `tiling` record lists the stages in order with their plans
(mi2v_export/runtimes/sessions.py runs them, one stage model resident at a time). A budget picks each stage's
tile by measurement (exporters/tile_budget.py).
"""

from __future__ import annotations

import dataclasses
import functools
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace

import torch
from torch import nn

from mi2v_export import chunking, precision, runtimes, tiling
from mi2v_export.errors import BadInputError
from mi2v_export.manifest import TensorInfo
from mi2v_export.models.receptive import receptive_field, temporal_field
from mi2v_export.models.stages import Stage, stages_of
from mi2v_export.runtimes import measure as runtime_measure
from mi2v_export.runtimes.sessions import (STAGE_INPUT, STAGE_OUTPUT, STREAMED_FORMAT, TILING_FORMAT, TIMED_FORMAT,
                                           open_session)

from .base import Artifact, ArtifactRun, ComponentSpec, ExportOptions, ProgressCallback, ProgressEvent

TILED_COMPONENTS = ("encoder", "decoder")
MIB = 1 << 20


@dataclass(frozen=True)
class TileRequest:
    """What the user asked for: a tile (video pixels), or a budget the exporter meets by measuring."""

    tile: tuple[int, int] | None = None
    halo: int | None = None  # video pixels; None: each stage's receptive field (exact)
    budget_mib: float | None = None
    stream_rows: int | None = None  # video rows per band: every stage streamed (mi2v_export/streaming.py)
    time_chunk: int | None = None  # video frames per chunk core: stages chunked in time (mi2v_export/chunking.py)

    @property
    def active(self) -> bool:
        return any(v is not None for v in (self.tile, self.budget_mib, self.stream_rows, self.time_chunk))


def check_request(tile: str | None, halo: int | None, budget: float | None, components: list[str],
                  frame: tuple[int, int], precisions: dict, stream_rows: int | None = None,
                  time_chunk: int | None = None) -> TileRequest:
    """Validate --tile / --halo / --memory-budget / --stream-rows / --time-chunk before any model is built (one-line
    BadInputError). --time-chunk goes with --tile or --memory-budget (the spatial windows of each time chunk), or
    alone (whole frames)."""
    asked = [f for f, v in (("--tile", tile), ("--memory-budget", budget), ("--stream-rows", stream_rows))
             if v is not None]
    if time_chunk is not None:
        chunking.check_chunk(time_chunk)
        if stream_rows is not None:
            raise BadInputError("--time-chunk and --stream-rows cannot be combined: streamed bands hold the whole clip")
        if "decoder" not in components:
            raise BadInputError("--time-chunk applies to the decoder (the encoder reads one frame, the conditioning "
                                "image)")
        if not asked:
            _check_tiled_components(components, precisions)
            return TileRequest(time_chunk=time_chunk)
    if not asked:
        if halo is not None:
            raise BadInputError("--halo applies to a tiled export: give --tile or --memory-budget")
        return TileRequest()
    if len(asked) > 1:
        raise BadInputError(f"{' and '.join(asked)} cannot be combined: give one (a budget picks the tile or the "
                            "band itself)")
    if stream_rows is not None:
        _check_stream_rows(stream_rows, frame, halo)
    _check_tiled_components(components, precisions)
    if budget is not None and not (0 < budget < 1 << 30):
        raise BadInputError(f"--memory-budget {budget:g}: expected a positive number of MiB")
    if halo is not None and (halo < 0 or halo % tiling.TILE_MULTIPLE):
        raise BadInputError(f"--halo {halo}: expected a multiple of {tiling.TILE_MULTIPLE} video pixels, ≥ 0")
    size = None
    if tile is not None:
        size = tiling.parse_tile(tile)
        tiling.check_tile_fits(size, frame)
    return TileRequest(size, halo, budget, stream_rows, time_chunk)


def _check_tiled_components(components: list[str], precisions: dict) -> None:
    if not any(c in TILED_COMPONENTS for c in components):
        raise BadInputError(f"--tile / --memory-budget / --time-chunk apply to the {' and '.join(TILED_COMPONENTS)} "
                            "only")
    for name in TILED_COMPONENTS:
        chosen = precisions.get(name)
        if chosen is not None and chosen.value in precision.INTEGER | {"mixed"}:
            raise BadInputError(f"--tile with --precision {chosen.value} for the {name}: tiled exports are fp32 or "
                                "fp16 (stage-wise calibration is not built yet)")


def request_for(spec: ComponentSpec, request: TileRequest) -> TileRequest:
    """The request as it applies to one component: none to a component that is never tiled, and no --time-chunk
    to one whose input has a single frame (the encoder reads the conditioning image: nothing to chunk in time)."""
    if spec.name not in TILED_COMPONENTS:
        return TileRequest()
    if request.time_chunk is not None and next(iter(spec.inputs.values())).shape[2] <= 1:
        request = dataclasses.replace(request, time_chunk=None)
    return request if request.active else TileRequest()


def _check_stream_rows(rows: int, frame: tuple[int, int], halo: int | None) -> None:
    if halo is not None:
        raise BadInputError("--halo applies to windows; streamed bands are exact (their halo is each step's field)")
    if rows <= 0 or rows % tiling.TILE_MULTIPLE:
        raise BadInputError(f"--stream-rows {rows}: expected a positive multiple of {tiling.TILE_MULTIPLE} video rows")
    whole = tiling.grid_px(frame)[0]
    if rows > whole:
        raise BadInputError(f"--stream-rows {rows} is more than the frame's {frame[0]} rows ({whole} in whole "
                            "latent pixels)")


# ---------------------------------------------------------------------------------------------------------------
# Planning


def _video_shape(name: str, stages: list[Stage]) -> tuple[int, ...]:
    """The video side of a component: the decoder's output, the encoder's input."""
    return stages[-1].output_shape if name == "decoder" else stages[0].input_shape


def video_hw(name: str, stages: list[Stage]) -> tuple[int, int]:
    shape = _video_shape(name, stages)
    return int(shape[-2]), int(shape[-1])


def stage_fields(spec: ComponentSpec) -> tuple[list[Stage], list[int]]:
    """The stages of a component on its export frame, and each stage's receptive field in its own grid units."""
    x = next(iter(spec.inputs.values()))
    stages = stages_of(spec.module, tuple(x.shape))
    return stages, [stage_field(stage) for stage in stages]


def stage_field(stage: Stage) -> int:
    """A stage's receptive field in its own grid units (autograd on seeded square probes)."""
    scale_in, scale_out, _, _ = tiling.stage_scales(stage.input_shape[-2:], stage.output_shape[-2:])
    c, t = stage.input_shape[1], stage.input_shape[2]
    generator = torch.Generator().manual_seed(0)
    probe = lambda n: torch.randn(1, c, t, n * scale_in, n * scale_in, generator=generator)  # noqa: E731
    return receptive_field(stage.module, probe, scale_in, scale_out)


def video_frames(name: str, stages: list[Stage]) -> int:
    return int(_video_shape(name, stages)[2])


@functools.lru_cache(maxsize=64)
def stage_time_field(stage: Stage) -> int | None:
    """A stage's temporal field in its own time units (autograd on a seeded probe two spatial units square), None
    when its frames are not in a layout mi2v_export/chunking.py chunks."""
    scales = chunking.time_scales(stage.input_shape[2], stage.output_shape[2])
    if scales is None:
        return None
    scale_in = tiling.stage_scales(stage.input_shape[-2:], stage.output_shape[-2:])[0]
    generator = torch.Generator().manual_seed(0)
    side = 2 * scale_in
    probe = lambda f: torch.randn(1, stage.input_shape[1], f, side, side, generator=generator)  # noqa: E731
    return temporal_field(stage.module, probe, *scales)


def stage_time(name: str, stages: list[Stage], k: int, request: TileRequest) -> chunking.TimePlan | None:
    """Stage k's time plan for `request.time_chunk` video frames per core; None when not asked, or when its
    field leaves no window shorter than its clip (it runs whole in time)."""
    stage = stages[k]
    if request.time_chunk is None or min(stage.input_shape[2], stage.output_shape[2]) < 2:
        return None
    field = stage_time_field(stage)
    if field is None:
        return None
    return chunking.plan_time(stage.input_shape[2], stage.output_shape[2], video_frames(name, stages),
                              request.time_chunk, field)


MAX_TIME_CHUNKS = 8  # the most chunks a budget cuts a stage's clip into


def time_candidates(name: str, stages: list[Stage], k: int, request: TileRequest) -> list[chunking.TimePlan | None]:
    """Stage k's time plans a budget tries: the one --time-chunk gives, else the whole clip (None) and every split
    into 2..MAX_TIME_CHUNKS chunks that its temporal field leaves shorter than the clip (long clips only)."""
    if request.time_chunk is not None:
        return [stage_time(name, stages, k, request)]
    def chunked(frames: int) -> chunking.TimePlan | None:
        return stage_time(name, stages, k, dataclasses.replace(request, time_chunk=frames))
    finest, out, seen = chunked(chunking.CHUNK_MULTIPLE), [None], set()
    if finest is None:  # not even the shortest chunk splits this stage's clip
        return out
    for n in range(2, MAX_TIME_CHUNKS + 1):
        tp = chunked(-(-finest.axis.frame // n) * finest.unit_frames)
        if tp is not None and (tp.axis.tile, tp.axis.window) not in seen:
            seen.add((tp.axis.tile, tp.axis.window))
            out.append(tp)
    return out


def time_plans(name: str, stages: list[Stage], request: TileRequest) -> list[chunking.TimePlan | None]:
    """Every stage's time plan; BadInputError when --time-chunk splits no stage (at this clip length each reads
    its whole clip), naming the fields."""
    plans = [stage_time(name, stages, k, request) for k in range(len(stages))]
    if request.time_chunk is not None and not any(plans):
        raise BadInputError(f"--time-chunk {request.time_chunk}: no stage of the {name} can be split in time at "
                            f"{video_frames(name, stages)} frames (each stage's temporal field covers its clip); "
                            "use a longer clip or leave --time-chunk out")
    return plans


def plan(name: str, stages: list[Stage], fields: list[int], request: TileRequest,
         tile: tuple[int, int]) -> list[tiling.StagePlan]:
    """Each stage's plan for a tile of `tile` video pixels (the halo: each field, or `request.halo` pixels)."""
    video = video_hw(name, stages)
    return [tiling.plan_stage(stage.input_shape[-2:], stage.output_shape[-2:], video, tile, field, request.halo)
            for stage, field in zip(stages, fields)]


# ---------------------------------------------------------------------------------------------------------------
# Export


class _StageIO(nn.Module):
    def __init__(self, module: nn.Module):
        super().__init__()
        self.module = module

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.module(x)


def window_shape(stage: Stage, p: tiling.StagePlan, tp: chunking.TimePlan | None = None
                 ) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """(input, output) shapes of the stage's tile model: its spatial window, and its time window where chunked."""
    rows, cols = p.grid.rows, p.grid.cols
    def side(axis, k, shape, scale):
        return shape[k] if axis.count == 1 else axis.window * scale
    t_in, t_out = (stage.input_shape[2], stage.output_shape[2]) if tp is None else (tp.frames_in, tp.frames_out)
    win_in = (*stage.input_shape[:2], t_in, side(rows, -2, stage.input_shape, p.scale_in),
              side(cols, -1, stage.input_shape, p.scale_in))
    win_out = (*stage.output_shape[:2], t_out, side(rows, -2, stage.output_shape, p.scale_out),
               side(cols, -1, stage.output_shape, p.scale_out))
    return win_in, win_out


def _as_stage(progress: ProgressCallback, component: str, k: int) -> ProgressCallback:
    """A stage's progress events, reported as the component's (stage k named in the step)."""
    return lambda e: progress(ProgressEvent(component, f"{e.stage} s{k}", e.state, e.detail, e.seconds))


def export_stage(spec: ComponentSpec, exporter, options: ExportOptions, folder: Path, progress: ProgressCallback,
                 k: int, stage: Stage, p: tiling.StagePlan, tp: chunking.TimePlan | None = None
                 ) -> tuple[dict, Artifact, list[str]]:
    """Export stage k's tile model into `folder`: (its entry in the tiling record, the artifact, inspect checks).
    Its example input is seeded by k, so a stage exports the same alone (a budget probe) or with the others."""
    win_in, win_out = window_shape(stage, p, tp)
    generator = torch.Generator().manual_seed(k)
    sub = ComponentSpec(name=f"{spec.name}.s{k}", model=spec.model, module=_StageIO(stage.module).eval(),
                        inputs={STAGE_INPUT: torch.randn(win_in, generator=generator)}, output_names=(STAGE_OUTPUT,))
    progress(ProgressEvent(spec.name, "tile", "info", f"stage {k}: window {list(win_in[-2:])} → "
                           f"{list(win_out[-2:])}, grid {p.grid.rows.count}x{p.grid.cols.count}, "
                           f"halo {p.grid.rows.halo}/{p.grid.cols.halo} (field {p.grid.receptive_field})"
                           + ("" if tp is None else f", {tp.count} time chunks of {tp.frames_in} frames")))
    art = exporter.export(sub, folder, options, _as_stage(progress, spec.name, k))
    checks = [f"stage {k}: {c}" for c in exporter.inspect(art, folder, sub, options)]
    entry = {"file": art.file, "input_window": list(win_in), "output_window": list(win_out),
             "plan": p.record(), "target_info": art.target_info, "delegation": art.delegation}
    if tp is not None:
        entry["time"] = tp.record()
    return entry, art, checks


def export_stages(spec: ComponentSpec, exporter, options: ExportOptions, folder: Path, progress: ProgressCallback,
                  stages: list[Stage], plans: list[tiling.StagePlan], record: dict,
                  times: list[chunking.TimePlan | None] | None = None) -> tuple[Artifact, list[str]]:
    """Export every stage's tile model into `folder` and describe the whole as one artifact (whole-frame I/O)."""
    times = times or [None] * len(stages)
    done = [export_stage(spec, exporter, options, folder, progress, k, stage, p, tp)
            for k, (stage, p, tp) in enumerate(zip(stages, plans, times))]
    return assemble(spec, stages, [d[0] for d in done], [d[1] for d in done], record), \
        [c for d in done for c in d[2]]


def assemble(spec: ComponentSpec, stages: list[Stage], entries: list[dict], arts: list[Artifact],
             record: dict) -> Artifact:
    """The component's artifact from its stages' (whole-frame I/O; the first stage's file; the rest as extras)."""
    seconds = {f"s{k}.{n}": v for k, art in enumerate(arts) for n, v in art.stages_s.items()}
    extra = stage_files(arts)
    record["stages"] = entries
    record["format"] = record_format(entries)
    first = arts[0]
    dtype = first.inputs[0].dtype
    inputs = [TensorInfo(n, tuple(int(d) for d in x.shape), dtype) for n, x in spec.inputs.items()]
    outputs = [TensorInfo(spec.output_names[0], tuple(int(d) for d in stages[-1].output_shape), dtype)]
    artifact = Artifact(file=first.file, inputs=inputs, outputs=outputs, extra_files=extra,
                        target_info=_worst_of(entries, "target_info", "_share"),
                        delegation=_worst_of(entries, "delegation", "_share_delegated") or None,
                        stages_s=seconds, rewrites=first.rewrites)
    artifact.tiling = record
    return artifact


def stage_files(arts: list[Artifact]) -> dict[str, str]:
    """The extra files of a tiled entry: every stage's file after the first (`tile_stage_<k>`, the order
    sessions.check_record requires) and each stage's own extra files (`s<k>.<role>`)."""
    extra = {}
    for k, art in enumerate(arts):
        if k:
            extra[f"tile_stage_{k}"] = art.file
        extra.update({f"s{k}.{role}": f for role, f in art.extra_files.items()})
    return extra


def record_format(entries: list[dict]) -> int:
    """The tiling record's format for these stage entries: streamed stages need a reader of format 2, time chunks
    one of format 3."""
    if any("time" in e for e in entries):
        return TIMED_FORMAT
    return STREAMED_FORMAT if any("stream" in e for e in entries) else TILING_FORMAT


def _worst_of(entries: list[dict], key: str, suffix: str) -> dict:
    """The first stage's record of `key` with every share (fields ending in `suffix`) replaced by the lowest over
    the stages ("100 % on the HTP" holds for a tiled component only when it holds for each stage) and every byte
    count by the largest."""
    records = [e[key] for e in entries if e.get(key)]
    if not records:
        return {}
    out = dict(records[0], tiled_stages=len(entries)) if key == "target_info" else dict(records[0])
    for name, value in records[0].items():
        if name.endswith(suffix) and isinstance(value, (int, float)):
            out[name] = min(r.get(name, value) for r in records)
        elif name.endswith("_bytes") and isinstance(value, int):  # planned memory: the largest stage's (one runs
            out[name] = max(r.get(name) or 0 for r in records)   # at a time)
    return out


def stage_tile_px(p: tiling.StagePlan, video: tuple[int, int]) -> list[int]:
    """A stage's core in video pixels (the whole `video` side where an axis is one window)."""
    g = p.grid
    return [a.tile * u if a.count > 1 and u else v for a, u, v in zip((g.rows, g.cols), p.unit_px, video)]


def tiling_record(name: str, stages: list[Stage], plans: list[tiling.StagePlan], request: TileRequest,
                  tile: tuple[int, int], times: list[chunking.TimePlan | None] | None = None) -> dict:
    """The manifest's `tiling` record (its `stages` list is filled by export_stages). `tile` is the smallest
    stage tile; `stage_tiles` each stage's (a budget tiles each stage only as finely as its own peak needs);
    `time_chunks` each stage's windows in time (1: whole clip)."""
    video = video_hw(name, stages)
    chunks = [1 if tp is None else tp.count for tp in (times or [None] * len(plans))]
    units = [max((u for u in p.unit_px if u), default=1) for p in plans]
    exact = all(p.grid.exact for p in plans)
    return {"format": TILING_FORMAT, "tile": list(tile), "stage_tiles": [stage_tile_px(p, video) for p in plans],
            "residency": "stage", "frame": list(video),
            "halo": max(max(p.grid.rows.halo, p.grid.cols.halo) * u for p, u in zip(plans, units)),
            "grid": [[p.grid.rows.count, p.grid.cols.count] for p in plans],
            "tiles": sum(p.grid.count * n for p, n in zip(plans, chunks)), "time_chunks": chunks,
            "receptive_field": max(p.grid.receptive_field * u for p, u in zip(plans, units)),
            "exact": exact, "blending": "none" if exact else "linear",
            "halo_policy": "receptive field" if request.halo is None else f"{request.halo} px",
            "memory_budget_mib": request.budget_mib, "time_chunk": request.time_chunk}


def entry_json(artifact: Artifact, options: ExportOptions) -> dict:
    """What the runtime layer reads from a manifest entry, before the entry exists (JSON: the memory probe's
    child process reads it too)."""
    return {"target": options.target, "delegate": options.delegate, "precision": options.precision,
            "file": artifact.file, "inputs": [t.to_dict() for t in artifact.inputs],
            "outputs": [t.to_dict() for t in artifact.outputs], "tiling": artifact.tiling,
            "target_info": artifact.target_info, "flags": {},
            "extra_files": [{"role": r, "file": f} for r, f in artifact.extra_files.items()]}


def entry_view(artifact: Artifact, options: ExportOptions) -> SimpleNamespace:
    return runtime_measure.entry_from_json(entry_json(artifact, options))


def run_here(exporter, artifact: Artifact, folder: Path, spec: ComponentSpec, options: ExportOptions) -> ArtifactRun:
    """The stitched whole-frame run on this host's runtime (the same session every consumer opens)."""
    runtime = exporter.host_runtime(options)
    if runtime is None:
        return ArtifactRun(None, None, runtimes.why_not(options))
    feeds = {n: x.numpy() for n, x in spec.inputs.items()}
    with open_session(runtime, folder / artifact.file, entry_view(artifact, options)) as session:
        out = session.run(feeds)
    return ArtifactRun({spec.output_names[0]: out[spec.output_names[0]]}, runtime.name)


def measured(exporter, artifact: Artifact, folder: Path, options: ExportOptions) -> dict | None:
    """The artifact's peak above its runtime's baseline in a fresh process (runtimes/measure.py; a tiled one's
    stitched whole-frame run), None where no runtime here runs it or its memory is not the device's."""
    runtime = exporter.host_runtime(options)
    if runtime is None or not runtime.measures_memory:
        return None
    entry = entry_json(artifact, options) if artifact.tiling else None
    return runtime_measure.measure(runtime.name, folder / artifact.file, entry=entry)


__all__ = ["TileRequest", "check_request", "request_for", "stage_files", "record_format", "stage_fields", "stage_field", "plan",
           "export_stage", "export_stages", "assemble",
           "tiling_record", "stage_tile_px", "window_shape", "run_here", "measured", "entry_view", "entry_json",
           "MIB", "TILED_COMPONENTS", "video_hw", "video_frames", "stage_time", "stage_time_field", "time_candidates",
           "time_plans"]
