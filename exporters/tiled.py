"""Tiled export of the VAE encoder and decoders (`mi2v export --tile HxW | --memory-budget MIB`).

The component is cut into stages (mi2v_export/models/stages.py); each stage's receptive field is measured by
autograd (mi2v_export/models/receptive.py) and sets its halo, so the stitched output equals the whole-frame model
(exact) unless a smaller `--halo` asks for blended overlaps. Every stage is exported by the target's own exporter
as a fixed-size tile model (`<component>.s<k><suffix>`); the entry keeps the component's whole-frame inputs and
outputs, its test vectors are whole-frame, and its `tiling` record lists the stages in order with their plans
(mi2v_export/runtimes/sessions.py runs them). With a budget, candidate tiles are tried largest first, each
exported and measured in a fresh process (runtimes/measure.py); the largest that fits is kept.
"""

from __future__ import annotations

import math
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace

import torch
from torch import nn

from mi2v_export import precision, runtimes, tiling
from mi2v_export.errors import BadInputError
from mi2v_export.manifest import TensorInfo
from mi2v_export.models.receptive import receptive_field
from mi2v_export.models.stages import Stage, stages_of
from mi2v_export.runtimes import measure as runtime_measure
from mi2v_export.runtimes.sessions import STAGE_INPUT, STAGE_OUTPUT, TILING_FORMAT, open_session

from .base import Artifact, ArtifactRun, ComponentSpec, ExportOptions, ProgressCallback, ProgressEvent

TILED_COMPONENTS = ("encoder", "decoder")
MIB = 1 << 20


@dataclass(frozen=True)
class TileRequest:
    """What the user asked for: a tile (video pixels), or a budget the exporter meets by measuring."""

    tile: tuple[int, int] | None = None
    halo: int | None = None  # video pixels; None: each stage's receptive field (exact)
    budget_mib: float | None = None

    @property
    def active(self) -> bool:
        return self.tile is not None or self.budget_mib is not None


def check_request(tile: str | None, halo: int | None, budget: float | None, components: list[str],
                  frame: tuple[int, int], precisions: dict) -> TileRequest:
    """Validate --tile / --halo / --memory-budget before any model is built (one-line BadInputError)."""
    if tile is None and budget is None:
        if halo is not None:
            raise BadInputError("--halo applies to a tiled export: give --tile or --memory-budget")
        return TileRequest()
    if tile is not None and budget is not None:
        raise BadInputError("give --tile or --memory-budget, not both (the budget picks the tile)")
    if not any(c in TILED_COMPONENTS for c in components):
        raise BadInputError(f"--tile / --memory-budget apply to the {' and '.join(TILED_COMPONENTS)} only")
    if budget is not None and not (0 < budget < 1 << 30):
        raise BadInputError(f"--memory-budget {budget:g}: expected a positive number of MiB")
    if halo is not None and (halo < 0 or halo % tiling.TILE_MULTIPLE):
        raise BadInputError(f"--halo {halo}: expected a multiple of {tiling.TILE_MULTIPLE} video pixels, ≥ 0")
    for name in TILED_COMPONENTS:
        chosen = precisions.get(name)
        if chosen is not None and chosen.value in precision.INTEGER | {"mixed"}:
            raise BadInputError(f"--tile with --precision {chosen.value} for the {name}: tiled exports are fp32 or "
                                "fp16 (stage-wise calibration is not built yet)")
    size = None
    if tile is not None:
        size = tiling.parse_tile(tile)
        tiling.check_tile_fits(size, frame)
    return TileRequest(size, halo, budget)


# ---------------------------------------------------------------------------------------------------------------
# Planning


def _video_hw(name: str, stages: list[Stage]) -> tuple[int, int]:
    """The video side of a component: the decoder's output, the encoder's input."""
    shape = stages[-1].output_shape if name == "decoder" else stages[0].input_shape
    return int(shape[-2]), int(shape[-1])


def stage_fields(spec: ComponentSpec) -> tuple[list[Stage], list[int]]:
    """The stages of a component on its export frame, and each stage's receptive field in its own grid units."""
    x = next(iter(spec.inputs.values()))
    stages = stages_of(spec.module, tuple(x.shape))
    fields = []
    for stage in stages:
        scale_in, scale_out, _, _ = tiling.stage_scales(stage.input_shape[-2:], stage.output_shape[-2:])
        c, t = stage.input_shape[1], stage.input_shape[2]
        generator = torch.Generator().manual_seed(0)
        probe = lambda n, c=c, t=t, s=scale_in: torch.randn(1, c, t, n * s, n * s, generator=generator)  # noqa: E731
        fields.append(receptive_field(stage.module, probe, scale_in, scale_out))
    return stages, fields


def plan(name: str, stages: list[Stage], fields: list[int], request: TileRequest,
         tile: tuple[int, int]) -> list[tiling.StagePlan]:
    """Each stage's plan for a tile of `tile` video pixels (the halo: each field, or `request.halo` pixels)."""
    video = _video_hw(name, stages)
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


def _window_shape(stage: Stage, p: tiling.StagePlan) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """(input, output) shapes of the stage's tile model."""
    rows, cols = p.grid.rows, p.grid.cols
    def side(axis, k, shape, scale):
        return shape[k] if axis.count == 1 else axis.window * scale
    win_in = (*stage.input_shape[:-2], side(rows, -2, stage.input_shape, p.scale_in),
              side(cols, -1, stage.input_shape, p.scale_in))
    win_out = (*stage.output_shape[:-2], side(rows, -2, stage.output_shape, p.scale_out),
               side(cols, -1, stage.output_shape, p.scale_out))
    return win_in, win_out


def _as_stage(progress: ProgressCallback, component: str, k: int) -> ProgressCallback:
    """A stage's progress events, reported as the component's (stage k named in the step)."""
    return lambda e: progress(ProgressEvent(component, f"{e.stage} s{k}", e.state, e.detail, e.seconds))


def export_stages(spec: ComponentSpec, exporter, options: ExportOptions, folder: Path, progress: ProgressCallback,
                  stages: list[Stage], plans: list[tiling.StagePlan], record: dict) -> tuple[Artifact, list[str]]:
    """Export every stage's tile model into `folder` and describe the whole as one artifact (whole-frame I/O)."""
    generator = torch.Generator().manual_seed(0)
    entries, extra, checks, seconds, first = [], {}, [], {}, None
    for k, (stage, p) in enumerate(zip(stages, plans)):
        win_in, win_out = _window_shape(stage, p)
        sub = ComponentSpec(name=f"{spec.name}.s{k}", model=spec.model, module=_StageIO(stage.module).eval(),
                            inputs={STAGE_INPUT: torch.randn(win_in, generator=generator)},
                            output_names=(STAGE_OUTPUT,))
        progress(ProgressEvent(spec.name, "tile", "info", f"stage {k}: window {list(win_in[-2:])} → "
                               f"{list(win_out[-2:])}, grid {p.grid.rows.count}x{p.grid.cols.count}, "
                               f"halo {p.grid.rows.halo}/{p.grid.cols.halo} (field {p.grid.receptive_field})"))
        art = exporter.export(sub, folder, options, _as_stage(progress, spec.name, k))
        checks += [f"stage {k}: {c}" for c in exporter.inspect(art, folder, sub, options)]
        first = first or art
        seconds.update({f"s{k}.{n}": v for n, v in art.stages_s.items()})
        if k:
            extra[f"tile_stage_{k}"] = art.file
        extra.update({f"s{k}.{role}": f for role, f in art.extra_files.items()})
        entries.append({"file": art.file, "input_window": list(win_in), "output_window": list(win_out),
                        "plan": p.record(), "target_info": art.target_info, "delegation": art.delegation})
    record["stages"] = entries
    dtype = first.inputs[0].dtype
    inputs = [TensorInfo(n, tuple(int(d) for d in x.shape), dtype) for n, x in spec.inputs.items()]
    outputs = [TensorInfo(spec.output_names[0], tuple(int(d) for d in stages[-1].output_shape), dtype)]
    artifact = Artifact(file=first.file, inputs=inputs, outputs=outputs, extra_files=extra,
                        target_info=_worst_of(entries, "target_info", "_share"),
                        delegation=_worst_of(entries, "delegation", "_share_delegated") or None,
                        stages_s=seconds, rewrites=first.rewrites)
    artifact.tiling = record
    return artifact, checks


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


def tiling_record(name: str, stages: list[Stage], plans: list[tiling.StagePlan], request: TileRequest,
                  tile: tuple[int, int]) -> dict:
    """The manifest's `tiling` record (its `stages` list is filled by export_stages)."""
    video = _video_hw(name, stages)
    units = [max((u for u in p.unit_px if u), default=1) for p in plans]
    exact = all(p.grid.exact for p in plans)
    return {"format": TILING_FORMAT, "tile": list(tile), "frame": list(video),
            "halo": max(max(p.grid.rows.halo, p.grid.cols.halo) * u for p, u in zip(plans, units)),
            "grid": [[p.grid.rows.count, p.grid.cols.count] for p in plans],
            "tiles": sum(p.grid.count for p in plans),
            "receptive_field": max(p.grid.receptive_field * u for p, u in zip(plans, units)),
            "exact": exact, "blending": "none" if exact else "linear",
            "halo_policy": "receptive field" if request.halo is None else f"{request.halo} px",
            "memory_budget_mib": request.budget_mib}


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


# ---------------------------------------------------------------------------------------------------------------
# The component: a given tile, or the largest tile that fits a budget


def export_component(spec: ComponentSpec, exporter, options: ExportOptions, staging: Path,
                     progress: ProgressCallback, request: TileRequest) -> tuple[Artifact, list[str], dict | None]:
    """(artifact, inspect checks, measured memory or None) of a tiled component, written into `staging`."""
    t0 = time.perf_counter()
    stages, fields = stage_fields(spec)
    progress(ProgressEvent(spec.name, "tile", "done", f"{len(stages)} stages, receptive fields {fields} units",
                           seconds=time.perf_counter() - t0))
    if request.tile is not None:
        plans = plan(spec.name, stages, fields, request, request.tile)
        record = tiling_record(spec.name, stages, plans, request, request.tile)
        artifact, checks = export_stages(spec, exporter, options, staging, progress, stages, plans, record)
        return artifact, checks, None
    return _fit_budget(spec, exporter, options, staging, progress, request, stages, fields)


def candidate_tiles(frame: tuple[int, int]) -> list[tuple[int, int]]:
    """Tiles that split the frame into 1..8 bands each way (multiples of 32 px, at most the frame)."""
    out = set()
    for a in range(1, 9):
        for b in range(1, 9):
            tile = tuple(f if n == 1 else max(min(math.ceil(f / n / 32) * 32, f), 32) for f, n in zip(frame, (a, b)))
            out.add(tile)
    return sorted(out)


def _cost(stages: list[Stage], plans: list[tiling.StagePlan]) -> int:
    """The largest stage window's input + output elements: what a tile's peak grows with."""
    return max(math.prod(i) + math.prod(o) for i, o in (_window_shape(s, p) for s, p in zip(stages, plans)))


def suggested_budget(peak_bytes: int) -> int:
    """A budget the smallest tile meets again: its measured peak plus 5 %, rounded up to 10 MiB (two fresh
    processes differ by about 1 %)."""
    return int(math.ceil(peak_bytes * 1.05 / MIB / 10) * 10)


def _fit_budget(spec, exporter, options, staging, progress, request, stages, fields):
    """Binary search, largest candidate first, over distinct plans ordered by window size: each probe exports
    into its own folder and is measured (a probe that fails to export or run counts as not fitting); only the best
    fitting probe is kept on disk, and its files move into `staging`."""
    runtime = exporter.host_runtime(options)
    if runtime is None or not runtime.measures_memory:
        raise BadInputError("--memory-budget measures each candidate tile, and no runtime here measures "
                            f"{options.target} artifacts: give --tile instead")
    by_plan = {}
    for tile in candidate_tiles(_video_hw(spec.name, stages)):
        plans = plan(spec.name, stages, fields, request, tile)
        by_plan.setdefault(tuple(_window_shape(s, p) for s, p in zip(stages, plans)), (tile, plans))
    search = _Probes(spec, exporter, options, staging, progress, request, stages,
                     sorted(by_plan.values(), key=lambda tp: -_cost(stages, tp[1])))
    last = len(search.ordered) - 1
    if not search.fits(last):
        raise BadInputError(search.refusal(last))
    lo, hi = 0, last
    while lo < hi:
        mid = (lo + hi) // 2
        if search.fits(mid):
            hi = mid
        else:
            lo = mid + 1
    return search.keep(lo)


class _Probes:
    """The candidates of a budget search and what each probe measured (exporters/tiled.py `_fit_budget`)."""

    def __init__(self, spec, exporter, options, staging, progress, request, stages, ordered):
        self.spec, self.exporter, self.options, self.staging = spec, exporter, options, staging
        self.progress, self.request, self.stages, self.ordered = progress, request, stages, ordered
        self.bytes: dict[int, int | None] = {}
        self.best: tuple | None = None  # (index, folder, artifact, checks, memory) of the best fitting probe

    def fits(self, i: int) -> bool:
        if i not in self.bytes:
            self._probe(i)
        got = self.bytes[i]
        return got is not None and got <= self.request.budget_mib * MIB

    def _probe(self, i: int) -> None:
        tile, plans = self.ordered[i]
        folder = self.staging / f".probe-{i}"
        folder.mkdir()
        try:
            record = tiling_record(self.spec.name, self.stages, plans, self.request, tile)
            artifact, checks = export_stages(self.spec, self.exporter, self.options, folder, self.progress,
                                             self.stages, plans, record)
            memory = measured(self.exporter, artifact, folder, self.options) or {}
        except Exception as exc:  # noqa: BLE001 - a window the target refuses (HTP memory, 2 GB protobuf) fits nothing
            artifact, checks, memory = None, [], {"bytes": None, "error": str(exc).splitlines()[0][:200]}
        self.bytes[i] = memory.get("bytes")
        self.progress(ProgressEvent(self.spec.name, "budget", "info", f"tile {tile[0]}x{tile[1]}: " + (
            f"{self.bytes[i] / MIB:.0f} MiB" if self.bytes[i] is not None else memory.get("error", "not measured"))))
        if self.fits(i) and (self.best is None or i < self.best[0]):
            if self.best is not None:
                shutil.rmtree(self.best[1], ignore_errors=True)
            self.best = (i, folder, artifact, checks, memory)
        else:
            shutil.rmtree(folder, ignore_errors=True)

    def refusal(self, i: int) -> str:
        peak, tile = self.bytes.get(i), self.ordered[i][0]
        need = (f"use --memory-budget {suggested_budget(peak)} or more (a measured peak varies by a few percent)"
                if peak else "its peak could not be measured")
        return (f"--memory-budget {self.request.budget_mib:g}: no tile fits; the smallest, {tile[0]}x{tile[1]}, "
                f"peaks at {(peak or 0) / MIB:.0f} MiB: {need}")

    def keep(self, i: int) -> tuple[Artifact, list[str], dict]:
        index, folder, artifact, checks, memory = self.best
        assert index == i
        for path in folder.iterdir():
            shutil.move(str(path), self.staging / path.name)
        shutil.rmtree(folder, ignore_errors=True)
        artifact.tiling["probes"] = [{"tile": list(self.ordered[k][0]), "bytes": b} for k, b in sorted(self.bytes.items())]
        return artifact, checks, memory


__all__ = ["TileRequest", "check_request", "stage_fields", "plan", "export_stages", "tiling_record", "run_here",
           "measured", "entry_view", "entry_json", "export_component", "candidate_tiles", "MIB", "TILED_COMPONENTS"]
