"""A tiled component (`mi2v export --tile HxW | --memory-budget MIB`): one tile for every stage, or, with a budget,
each stage's own largest tile whose measured peak fits.

Why per stage: a tiled session holds one stage model at a time (mi2v_export/runtimes/sessions.py, residency
"stage"), so a call's peak is its worst stage's: that stage's model, its windows and the whole tensors it reads and
writes. Each stage can therefore be searched alone. The early stages work on the small latent grid and usually fit
whole (one window, no halo to recompute); only the stages near the video are split. One tile for every stage cost
5.1-6.0x the untiled 720p decode (benchmarks/results/tiled_720p_onnx_decoder.json): every stage recomputed its halo
in 56 windows.

Each stage is searched by measurement (exporters/tile_search.py): whole first; where it does not fit whole, streamed
in row bands (exporters/tile_stream.py: a row or two of halo per step), then in windows. The assembled component
is measured again: what released stages leave behind adds to the next one's peak (measured: 10-80 MiB on a 720p
decoder with onnxruntime), so where it does not fit, every stage's limit is lowered by that overhead and the
stages above it take smaller windows (at most ASSEMBLY_ROUNDS measurements) before the budget is refused. A stage
that does not fit even at its smallest window is cut between its steps first (its weights, not its windows, set
its peak): the 720p LTX encoder's last stage peaked at 669 MiB whole with 574 MB of weights, and its 45 latent rows
cannot be split.
"""

from __future__ import annotations

import time
from pathlib import Path

from mi2v_export import tiling
from mi2v_export.errors import BadInputError
from mi2v_export.models import stages as stage_cuts

from . import tiled
from .base import Artifact, ComponentSpec, ExportOptions, ProgressCallback, ProgressEvent
from .tile_search import SearchContext, StageSearch, stage_candidates, suggested_budget
from .tile_stream import StreamSearch, export_streamed

MIB = tiled.MIB
ASSEMBLY_ROUNDS = 3  # assembled measurements before the budget is refused (each lowers every stage's limit)


def export_component(spec: ComponentSpec, exporter, options: ExportOptions, staging: Path,
                     progress: ProgressCallback, request: tiled.TileRequest
                     ) -> tuple[Artifact, list[str], dict | None]:
    """(artifact, inspect checks, measured memory or None) of a tiled component, written into `staging`."""
    t0 = time.perf_counter()
    stages, fields = tiled.stage_fields(spec)
    progress(ProgressEvent(spec.name, "tile", "done", f"{len(stages)} stages, receptive fields {fields} units",
                           seconds=time.perf_counter() - t0))
    times = tiled.time_plans(spec.name, stages, request)
    if request.tile is not None or request.budget_mib is None and request.stream_rows is None:
        tile = request.tile or tuple(tiling.grid_px(tiled.video_hw(spec.name, stages)))  # --time-chunk alone
        plans = tiled.plan(spec.name, stages, fields, request, tile)
        record = tiled.tiling_record(spec.name, stages, plans, request, tile, times)
        artifact, checks = tiled.export_stages(spec, exporter, options, staging, progress, stages, plans, record,
                                               times)
        return artifact, checks, None
    if request.stream_rows is not None:
        artifact, checks = export_streamed(spec, exporter, options, staging, progress, request, stages)
        return artifact, checks, None
    return fit_budget(spec, exporter, options, staging, progress, request, stages, fields)


def fit_budget(spec, exporter, options, staging, progress, request, stages, fields):
    """Each stage's largest fitting tile, the stages assembled into one component and measured again."""
    runtime = exporter.host_runtime(options)
    if runtime is None or not runtime.measures_memory:
        raise BadInputError("--memory-budget measures each candidate tile, and no runtime here measures "
                            f"{options.target} artifacts: give --tile instead")
    ctx = SearchContext(spec, exporter, options, staging, progress, request, stages)
    searches = _search_stages(ctx, fields)
    kept = [s.keep() for s in searches]
    for _ in range(ASSEMBLY_ROUNDS):
        artifact, memory = _assembled(ctx, searches, kept)
        got = memory.get("bytes")
        if got is not None and got <= ctx.limit:
            return artifact, [c for _, _, checks in kept for c in checks], memory
        if got is None:
            break
        overhead = got - max(s.bytes[s.best[0]] or 0 for s in searches)
        progress(ProgressEvent(spec.name, "budget", "info", f"assembled: {got / MIB:.0f} MiB, {overhead / MIB:.0f} "
                               "MiB above its worst stage: each stage gets that much less"))
        for k, search in enumerate(searches):
            before = search.best[0]
            if not search.tighten(ctx.limit - max(overhead, 0)):
                smallest = search.bytes.get(search.last)  # its smallest window, plus what assembly adds
                floor = None if smallest is None else smallest + max(overhead, 0)
                raise BadInputError(_over(request, spec.name, got, memory, floor))
            if search.best[0] != before:
                kept[k] = search.keep()
    raise BadInputError(_over(request, spec.name, got, memory))


def _search_stages(ctx: SearchContext, fields: list[int]) -> list[StageSearch]:
    """Each stage's best fitting form, in order: whole, else streamed in row bands, else in windows. A stage whose
    smallest window does not fit is cut between its steps (mi2v_export/models/stages.py `split`: it is bound by its
    weights) and its parts are searched in its place. A streamed stage's steps replace it too. `ctx.stages` and
    `fields` are updated in place (only stages not yet probed are renumbered). Refused, naming the smallest
    feasible budget, when a stage that cannot be cut does not fit."""
    stages, searches, k = ctx.stages, [], 0
    limit = stage_cuts.tensor_limit(stages)
    def search_of(j: int) -> StageSearch:
        return StageSearch(ctx, j, stage_candidates(ctx.spec.name, stages, fields, ctx.request, j))
    while k < len(stages):
        search = search_of(k)
        plain = search.fits(0) or ctx.request.halo is not None or ctx.request.time_chunk is not None
        stream = None if plain else StreamSearch.of(ctx, k)
        if stream is not None and stream.search() is not None:
            ctx.dropped_probes += search.probes()  # the whole stage, which did not fit
            stages[k:k + 1], fields[k:k + 1] = stream.parts, stream.fields
            searches.append(stream)
            k += len(stream.parts)
            continue
        ctx.dropped_probes += stream.probes() if stream is not None else []
        if search.search() is not None:
            searches.append(search)
            k += 1
            continue
        parts = stage_cuts.split(stages[k], limit)
        if len(parts) == 1:
            rest = [search_of(j) for j in range(k + 1, len(stages))]
            raise BadInputError(_refusal([*searches, search, *rest], ctx.request))
        ctx.progress(ProgressEvent(ctx.spec.name, "budget", "info", f"stage {k} does not fit at its smallest "
                                   f"window: cut between its steps into {len(parts)} stages"))
        ctx.dropped_probes += [dict(p, cut_into=len(parts)) for p in search.probes()]
        stages[k:k + 1] = parts
        fields[k:k + 1] = [tiled.stage_field(part) for part in parts]
    return searches


def _over(request: tiled.TileRequest, name: str, got: int | None, memory: dict, floor: int | None = None) -> str:
    """The refusal after assembly; `floor`: the failing stage's smallest window plus the measured assembly overhead,
    the smallest budget that can fit (else the assembled peak names it)."""
    if got is None:
        return (f"--memory-budget {request.budget_mib:g}: the assembled {name} could not be measured "
                f"({memory.get('error', 'no figure')})")
    return (f"--memory-budget {request.budget_mib:g}: each stage fits alone, but the assembled {name} peaks at "
            f"{got / MIB:.0f} MiB: use --memory-budget {suggested_budget(floor or got)} or more")


def _assembled(ctx: SearchContext, searches: list[StageSearch], kept: list) -> tuple[Artifact, dict]:
    """The component from each search's kept probe (files already in the staging folder), measured whole."""
    plans = [p for s in searches for p in s.plans(s.best[0])]
    finest = max(range(len(plans)), key=lambda k: (plans[k].grid.count, k))
    times = [t for s in searches for t in s.times(s.best[0])]
    record = tiled.tiling_record(ctx.spec.name, ctx.stages, plans, ctx.request, tuple(ctx.tile_px(plans[finest])),
                                 times)
    record["probes"] = ctx.dropped_probes + [p for s in searches for p in s.probes()]
    artifact = tiled.assemble(ctx.spec, ctx.stages, [e for es, _, _ in kept for e in es],
                              [a for _, arts, _ in kept for a in arts], record)
    memory = tiled.measured(ctx.exporter, artifact, ctx.staging, ctx.options) or {}
    record["assembled_bytes"] = memory.get("bytes")
    return artifact, memory


def _refusal(searches: list[StageSearch], request: tiled.TileRequest) -> str:
    """No tile fits some stage: name the smallest feasible budget, the largest of every stage's smallest peak
    (probing the stages not yet probed at their smallest tile)."""
    peaks = []
    for s in searches:
        s.fits(s.last)
        peaks.append((s.bytes.get(s.last), s))
    if any(p is None for p, _ in peaks):
        worst = next(s for p, s in peaks if p is None)
        return (f"--memory-budget {request.budget_mib:g}: no tile fits; stage {worst.k}'s smallest tile could not "
                "be measured")
    peak, worst = max(peaks, key=lambda ps: ps[0])
    tile = worst.tile_of(worst.last)
    return (f"--memory-budget {request.budget_mib:g}: no tile fits; stage {worst.k}'s smallest, {tile[0]}x{tile[1]}, "
            f"peaks at {peak / MIB:.0f} MiB: use --memory-budget {suggested_budget(peak)} or more (a measured peak "
            "varies by a few percent)")


__all__ = ["export_component", "fit_budget"]
