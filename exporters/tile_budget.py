"""A tiled component (`mi2v export --tile HxW | --memory-budget MIB`): one tile for every stage, or, with a budget,
each stage's own largest tile whose measured peak fits.

Why per stage: a tiled session holds one stage model at a time (mi2v_export/runtimes/sessions.py, residency
"stage"), so a call's peak is its worst stage's: that stage's model, its windows and the whole tensors it reads and
writes. Each stage can therefore be searched alone. The early stages work on the small latent grid and usually fit
whole (one window, no halo to recompute); only the stages near the video are split. One tile for every stage cost
5.1-6.0x the untiled 720p decode (benchmarks/results/tiled_720p_onnx_decoder.json): every stage recomputed its halo
in 56 windows.

A probe exports one stage with one plan into its own folder and measures it in a fresh process
(mi2v_export/runtimes/measure.py) as a one-stage tiled component on the stage's whole input; a probe that fails to
export or run does not fit. Each stage is binary-searched over its distinct windows, largest first (a peak grows
with the window); only each stage's best probe stays on disk. The assembled component is measured again: what released stages leave behind adds to the next one's peak (measured: 10-80 MiB on a 720p
decoder with onnxruntime), so where it does not fit, every stage's limit is lowered by that overhead and the
stages above it take smaller windows (at most ASSEMBLY_ROUNDS measurements) before the budget is refused. A stage
that does not fit even at its smallest window is cut between its steps first (its weights, not its windows, set
its peak): the 720p LTX encoder's last stage peaked at 669 MiB whole with 574 MB of weights, and its 45 latent rows
cannot be split.
"""

from __future__ import annotations

import math
import shutil
import time
from pathlib import Path

from mi2v_export import tiling
from mi2v_export.errors import BadInputError
from mi2v_export.manifest import TensorInfo
from mi2v_export.models import stages as stage_cuts
from mi2v_export.models.stages import Stage
from mi2v_export.runtimes.sessions import STAGE_INPUT, STAGE_OUTPUT, TILING_FORMAT

from . import tiled
from .base import Artifact, ComponentSpec, ExportOptions, ProgressCallback, ProgressEvent

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
    if request.tile is not None:
        plans = tiled.plan(spec.name, stages, fields, request, request.tile)
        record = tiled.tiling_record(spec.name, stages, plans, request, request.tile)
        artifact, checks = tiled.export_stages(spec, exporter, options, staging, progress, stages, plans, record)
        return artifact, checks, None
    return fit_budget(spec, exporter, options, staging, progress, request, stages, fields)


def candidate_tiles(frame: tuple[int, int]) -> list[tuple[int, int]]:
    """Tiles that split the frame into 1..8 bands each way (multiples of 32 px, at most the frame)."""
    out = set()
    for a in range(1, 9):
        for b in range(1, 9):
            tile = tuple(f if n == 1 else max(min(math.ceil(f / n / 32) * 32, f), 32) for f, n in zip(frame, (a, b)))
            out.add(tile)
    return sorted(out)


def _cost(stage: Stage, p: tiling.StagePlan) -> int:
    """The window's input + output elements: what a stage's peak grows with."""
    win_in, win_out = tiled.window_shape(stage, p)
    return math.prod(win_in) + math.prod(win_out)


def _work(stage: Stage, p: tiling.StagePlan) -> int:
    """Input elements over every window of a call: what a stage's time grows with (halos recomputed)."""
    return p.grid.count * math.prod(tiled.window_shape(stage, p)[0])


def stage_candidates(name: str, stages: list[Stage], fields: list[int], request: tiled.TileRequest,
                     k: int) -> list[tuple[tuple[int, int], tiling.StagePlan]]:
    """Stage k's plans worth measuring as (tile, plan), the largest window first: only the front of window size
    against work, so that a smaller window always costs more work (a 736x160 column band recomputes less halo than
    a 96x1280 row band of about the same window on a wide frame, and is kept instead)."""
    video, stage = tiled.video_hw(name, stages), stages[k]
    plans = [(tile, tiling.plan_stage(stage.input_shape[-2:], stage.output_shape[-2:], video, tile, fields[k],
                                      request.halo)) for tile in candidate_tiles(video)]
    front, least = [], None
    for tile, p in sorted(plans, key=lambda tp: (_cost(stage, tp[1]), _work(stage, tp[1]))):
        if least is None or _work(stage, p) < least:
            front.append((tile, p))
            least = _work(stage, p)
    return front[::-1]


def suggested_budget(peak_bytes: int) -> int:
    """A budget the measured peak meets again: plus 5 %, rounded up to 10 MiB (two fresh processes differ by about
    1 %)."""
    return int(math.ceil(peak_bytes * 1.05 / MIB / 10) * 10)


class _Context:
    """What every probe of one budget search shares."""

    def __init__(self, spec, exporter, options, staging, progress, request, stages):
        self.spec, self.exporter, self.options, self.staging = spec, exporter, options, staging
        self.progress, self.request, self.stages = progress, request, stages
        self.cut_probes: list[dict] = []  # what the stages cut between their steps measured whole

    @property
    def limit(self) -> float:
        return self.request.budget_mib * MIB

    def tile_px(self, p: tiling.StagePlan) -> list[int]:
        return tiled.stage_tile_px(p, tiled.video_hw(self.spec.name, self.stages))


class StageSearch:
    """One stage's candidates, what each probe measured, and its best fitting probe kept on disk."""

    def __init__(self, ctx: _Context, k: int, ordered: list):
        self.ctx, self.k, self.ordered = ctx, k, ordered
        self.bytes: dict[int, int | None] = {}
        self.best: tuple | None = None  # (index, folder, entry, artifact, checks)
        self.limit = ctx.limit  # bytes a probe of this stage may peak at (lowered by `tighten`)

    @property
    def last(self) -> int:
        return len(self.ordered) - 1

    def fits(self, i: int) -> bool:
        if i not in self.bytes:
            self._probe(i)
        got = self.bytes[i]
        return got is not None and got <= self.limit

    def search(self) -> int | None:
        """The index of the largest fitting window, None when even the smallest does not fit. The whole frame is
        tried first (most stages fit it: one probe), then the smallest, then a binary search between."""
        if self.fits(0):
            return 0
        if not self.fits(self.last):
            return None
        return self._first_fit(1, self.last)

    def _first_fit(self, lo: int, hi: int) -> int:
        """The smallest index in [lo, hi] that fits, `hi` known to fit (a peak grows with the window)."""
        while lo < hi:
            mid = (lo + hi) // 2
            if self.fits(mid):
                hi = mid
            else:
                lo = mid + 1
        return lo

    def _probe(self, i: int) -> None:
        ctx, p = self.ctx, self.ordered[i][1]
        folder = ctx.staging / f".probe-s{self.k}-{i}"
        folder.mkdir()
        try:
            entry, art, checks = tiled.export_stage(ctx.spec, ctx.exporter, ctx.options, folder, ctx.progress,
                                                    self.k, ctx.stages[self.k], p)
            memory = tiled.measured(ctx.exporter, _probe_artifact(ctx.stages[self.k], entry, art), folder,
                                    ctx.options) or {}
        except Exception as exc:  # noqa: BLE001 - a window the target refuses (HTP memory, 2 GB protobuf) fits nothing
            entry, art, checks, memory = None, None, [], {"bytes": None, "error": str(exc).splitlines()[0][:200]}
        self.bytes[i] = got = memory.get("bytes")
        tile = ctx.tile_px(p)
        ctx.progress(ProgressEvent(ctx.spec.name, "budget", "info", f"stage {self.k}, tile {tile[0]}x{tile[1]} "
                                   f"({p.grid.count} windows): " + (f"{got / MIB:.0f} MiB" if got is not None
                                                                    else memory.get("error", "not measured"))))
        if got is not None and got <= self.limit and (self.best is None or i < self.best[0]):
            if self.best is not None:
                shutil.rmtree(self.best[1], ignore_errors=True)
            self.best = (i, folder, entry, art, checks)
        else:
            shutil.rmtree(folder, ignore_errors=True)

    def tighten(self, limit: float) -> bool:
        """Lower this stage's limit (the assembled component peaks above its worst stage by what released stages
        leave behind): keep the window when its peak is within it, else the largest smaller window that fits,
        exported again where its probe's files were deleted. False when none fits."""
        self.limit = limit
        if self.bytes[self.best[0]] <= limit:
            return True
        lo, hi = self.best[0] + 1, self.last
        self.best = None  # its files are in the staging folder already; the next kept probe replaces them
        if lo > hi or not self.fits(hi):
            return False
        lo = self._first_fit(lo, hi)
        if self.best is None or self.best[0] != lo:  # decided on a measurement whose files are gone
            self.best = None
            self.bytes.pop(lo, None)
            return self.fits(lo)
        return True

    def keep(self) -> tuple[dict, Artifact, list[str]]:
        """Move the best probe's files into the staging folder: (its tiling entry, artifact, checks)."""
        _, folder, entry, art, checks = self.best
        for path in folder.iterdir():
            shutil.move(str(path), self.ctx.staging / path.name)
        shutil.rmtree(folder, ignore_errors=True)
        return entry, art, checks

    def probes(self) -> list[dict]:
        plans = [(self.ordered[i][1], b) for i, b in sorted(self.bytes.items())]
        return [{"stage": self.k, "tile": self.ctx.tile_px(p), "windows": p.grid.count, "bytes": b} for p, b in plans]


def _probe_artifact(stage: Stage, entry: dict, art: Artifact) -> Artifact:
    """A one-stage tiled component on the stage's whole input: what a probe measures."""
    dtype = art.inputs[0].dtype
    probe = Artifact(file=art.file, inputs=[TensorInfo(STAGE_INPUT, tuple(stage.input_shape), dtype)],
                     outputs=[TensorInfo(STAGE_OUTPUT, tuple(stage.output_shape), dtype)],
                     extra_files=dict(art.extra_files))
    probe.tiling = {"format": TILING_FORMAT, "residency": "stage", "stages": [entry]}
    return probe


def fit_budget(spec, exporter, options, staging, progress, request, stages, fields):
    """Each stage's largest fitting tile, the stages assembled into one component and measured again."""
    runtime = exporter.host_runtime(options)
    if runtime is None or not runtime.measures_memory:
        raise BadInputError("--memory-budget measures each candidate tile, and no runtime here measures "
                            f"{options.target} artifacts: give --tile instead")
    ctx = _Context(spec, exporter, options, staging, progress, request, stages)
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


def _search_stages(ctx: _Context, fields: list[int]) -> list[StageSearch]:
    """Each stage's largest fitting window, in order. A stage whose smallest window does not fit is cut between its
    steps (mi2v_export/models/stages.py `split`: it is bound by its weights) and its parts are searched in its
    place; `ctx.stages` and `fields` are updated in place (only stages not yet probed are renumbered). Refused,
    naming the smallest feasible budget, when a stage that cannot be cut does not fit."""
    stages, searches, k = ctx.stages, [], 0
    limit = stage_cuts.tensor_limit(stages)
    def search_of(j: int) -> StageSearch:
        return StageSearch(ctx, j, stage_candidates(ctx.spec.name, stages, fields, ctx.request, j))
    while k < len(stages):
        search = search_of(k)
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
        ctx.cut_probes += [dict(p, cut_into=len(parts)) for p in search.probes()]
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


def _assembled(ctx: _Context, searches: list[StageSearch], kept: list) -> tuple[Artifact, dict]:
    """The component from each stage's kept probe (files already in the staging folder), measured whole."""
    plans = [s.ordered[s.best[0]][1] for s in searches]
    finest = max(range(len(plans)), key=lambda k: (plans[k].grid.count, k))
    record = tiled.tiling_record(ctx.spec.name, ctx.stages, plans, ctx.request, tuple(ctx.tile_px(plans[finest])))
    record["probes"] = ctx.cut_probes + [p for s in searches for p in s.probes()]
    artifact = tiled.assemble(ctx.spec, ctx.stages, [e for e, _, _ in kept], [a for _, a, _ in kept], record)
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
    tile = worst.ctx.tile_px(worst.ordered[worst.last][1])
    return (f"--memory-budget {request.budget_mib:g}: no tile fits; stage {worst.k}'s smallest, {tile[0]}x{tile[1]}, "
            f"peaks at {peak / MIB:.0f} MiB: use --memory-budget {suggested_budget(peak)} or more (a measured peak "
            "varies by a few percent)")


__all__ = ["export_component", "fit_budget", "candidate_tiles", "stage_candidates", "suggested_budget", "StageSearch"]
