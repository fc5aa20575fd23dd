"""One stage's search for the largest window whose measured peak fits a budget (exporters/tile_budget.py runs the
searches, stage after stage, and assembles what they keep).

A probe exports one stage with one plan into its own folder and measures it in a fresh process
(mi2v_export/runtimes/measure.py) as a one-stage tiled component on the stage's whole input; a probe that fails to
export or run does not fit. Each stage is binary-searched over its distinct windows, largest first (a peak grows
with the window); only each stage's best probe stays on disk. A streamed stage (exporters/tile_stream.py) searches
its band height the same way, each probe exporting every step of the stage.
"""

from __future__ import annotations

import math
import shutil

from mi2v_export import chunking, tiling
from mi2v_export.manifest import TensorInfo
from mi2v_export.models.stages import Stage
from mi2v_export.runtimes.sessions import STAGE_INPUT, STAGE_OUTPUT

from . import tiled
from .base import Artifact, ProgressEvent

MIB = tiled.MIB


def candidate_tiles(frame: tuple[int, int]) -> list[tuple[int, int]]:
    """Tiles that split the frame into 1..8 bands each way (multiples of 32 px, at most the frame)."""
    out = set()
    for a in range(1, 9):
        for b in range(1, 9):
            tile = tuple(f if n == 1 else max(min(math.ceil(f / n / 32) * 32, f), 32) for f, n in zip(frame, (a, b)))
            out.add(tile)
    return sorted(out)


def cost(stage: Stage, p: tiling.StagePlan, tp: chunking.TimePlan | None = None) -> int:
    """The window's input + output elements: what a stage's peak grows with."""
    win_in, win_out = tiled.window_shape(stage, p, tp)
    return math.prod(win_in) + math.prod(win_out)


def windows(p: tiling.StagePlan, tp: chunking.TimePlan | None = None) -> int:
    """Windows per call: the spatial ones times the time chunks."""
    return p.grid.count * (1 if tp is None else tp.count)


def work(stage: Stage, p: tiling.StagePlan, tp: chunking.TimePlan | None = None) -> int:
    """Input elements over every window of a call (time chunks too): what a stage's time grows with (halos
    recomputed)."""
    return windows(p, tp) * math.prod(tiled.window_shape(stage, p, tp)[0])


Candidate = tuple[tuple[int, int], tiling.StagePlan, "chunking.TimePlan | None"]  # (tile, plan, time chunks)


def stage_candidates(name: str, stages: list[Stage], fields: list[int], request: tiled.TileRequest,
                     k: int) -> list[Candidate]:
    """Stage k's plans worth measuring as (tile, plan, time plan), the largest window first: only the front of
    window size against work, so that a smaller window always costs more work (a 736x160 column band recomputes less
    halo than a 96x1280 row band of about the same window on a wide frame, and is kept instead). On a long clip the
    windows are also cut in time (exporters/tiled.py `time_candidates`) and compete on the same front."""
    video, stage = tiled.video_hw(name, stages), stages[k]
    plans = [(tile, tiling.plan_stage(stage.input_shape[-2:], stage.output_shape[-2:], video, tile, fields[k],
                                      request.halo), tp)
             for tile in candidate_tiles(video) for tp in tiled.time_candidates(name, stages, k, request)]
    front, least = [], None
    for tile, p, tp in sorted(plans, key=lambda c: (cost(stage, c[1], c[2]), work(stage, c[1], c[2]))):
        if least is None or work(stage, p, tp) < least:
            front.append((tile, p, tp))
            least = work(stage, p, tp)
    return front[::-1]


def suggested_budget(peak_bytes: int) -> int:
    """A budget the measured peak meets again: plus 5 %, rounded up to 10 MiB (two fresh processes differ by about
    1 %)."""
    return int(math.ceil(peak_bytes * 1.05 / MIB / 10) * 10)


class SearchContext:
    """What every probe of one budget search shares."""

    def __init__(self, spec, exporter, options, staging, progress, request, stages):
        self.spec, self.exporter, self.options, self.staging = spec, exporter, options, staging
        self.progress, self.request, self.stages = progress, request, stages
        self.dropped_probes: list[dict] = []  # forms not kept: a stage before its cut, streaming that did not fit

    @property
    def limit(self) -> float:
        return self.request.budget_mib * MIB

    def tile_px(self, p: tiling.StagePlan) -> list[int]:
        return tiled.stage_tile_px(p, tiled.video_hw(self.spec.name, self.stages))


class StageSearch:
    """One stage's candidates, what each probe measured, and its best fitting probe kept on disk."""

    def __init__(self, ctx: SearchContext, k: int, ordered: list):
        self.ctx, self.k, self.ordered = ctx, k, ordered
        self.bytes: dict[int, int | None] = {}
        self.best: tuple | None = None  # (index, folder, entries, artifacts, checks)
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
        ctx = self.ctx
        folder = ctx.staging / f".probe-s{self.k}-{i}"
        folder.mkdir()
        try:
            entries, arts, checks = self.export(folder, i)
            probe = probe_artifact(self.input_shape, self.output_shape, entries, arts)
            memory = tiled.measured(ctx.exporter, probe, folder, ctx.options) or {}
        except Exception as exc:  # noqa: BLE001 - a window the target refuses (HTP memory, 2 GB protobuf) fits nothing
            entries, arts, checks, memory = None, None, [], {"bytes": None, "error": str(exc).splitlines()[0][:200]}
        self.bytes[i] = got = memory.get("bytes")
        ctx.progress(ProgressEvent(ctx.spec.name, "budget", "info", f"{self.describe(i)}: " + (
            f"{got / MIB:.0f} MiB" if got is not None else memory.get("error", "not measured"))))
        if got is not None and got <= self.limit and (self.best is None or i < self.best[0]):
            if self.best is not None:
                shutil.rmtree(self.best[1], ignore_errors=True)
            self.best = (i, folder, entries, arts, checks)
        else:
            shutil.rmtree(folder, ignore_errors=True)

    # What a stage search and a streamed one (exporters/tile_stream.py) do differently

    @property
    def input_shape(self) -> tuple[int, ...]:
        return self.ctx.stages[self.k].input_shape

    @property
    def output_shape(self) -> tuple[int, ...]:
        return self.ctx.stages[self.k].output_shape

    def export(self, folder, i: int) -> tuple[list[dict], list[Artifact], list[str]]:
        """Export candidate i into `folder`: (the tiling record's entries, the artifacts, inspect checks)."""
        entry, art, checks = tiled.export_stage(self.ctx.spec, self.ctx.exporter, self.ctx.options, folder,
                                                self.ctx.progress, self.k, self.ctx.stages[self.k], self.ordered[i][1],
                                                self.ordered[i][2])
        return [entry], [art], checks

    def plans(self, i: int) -> list[tiling.StagePlan]:
        return [self.ordered[i][1]]

    def times(self, i: int) -> list[chunking.TimePlan | None]:
        """The time plan of each stage `plans(i)` gives (None: whole clip)."""
        return [self.ordered[i][2]]

    def windows(self, i: int) -> int:
        return windows(self.ordered[i][1], self.ordered[i][2])

    def tile_of(self, i: int) -> list[int]:
        return self.ctx.tile_px(self.ordered[i][1])

    def describe(self, i: int) -> str:
        tile = self.tile_of(i)
        tp = self.ordered[i][2]
        timed = "" if tp is None else f", {tp.count} chunks of {tp.chunk_frames} frames"
        return f"stage {self.k}, tile {tile[0]}x{tile[1]}{timed} ({self.windows(i)} windows)"

    def probe_record(self, i: int, got: int | None) -> dict:
        tp = self.ordered[i][2]
        return {"stage": self.k, "tile": self.tile_of(i), "windows": self.windows(i), "bytes": got,
                **({} if tp is None else {"time_chunk": tp.chunk_frames, "time_chunks": tp.count})}

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

    def keep(self) -> tuple[list[dict], list[Artifact], list[str]]:
        """Move the best probe's files into the staging folder: (its tiling entries, artifacts, checks)."""
        _, folder, entries, arts, checks = self.best
        for path in folder.iterdir():
            shutil.move(str(path), self.ctx.staging / path.name)
        shutil.rmtree(folder, ignore_errors=True)
        return entries, arts, checks

    def probes(self) -> list[dict]:
        return [self.probe_record(i, b) for i, b in sorted(self.bytes.items())]


def probe_artifact(input_shape: tuple[int, ...], output_shape: tuple[int, ...], entries: list[dict],
                   arts: list[Artifact]) -> Artifact:
    """Stages as a tiled component on the first one's whole input: what a probe measures."""
    dtype = arts[0].inputs[0].dtype
    probe = Artifact(file=arts[0].file, inputs=[TensorInfo(STAGE_INPUT, tuple(input_shape), dtype)],
                     outputs=[TensorInfo(STAGE_OUTPUT, tuple(output_shape), dtype)],
                     extra_files=tiled.stage_files(arts))
    probe.tiling = {"format": tiled.record_format(entries), "residency": "stage", "stages": entries}
    return probe


__all__ = ["SearchContext", "StageSearch", "candidate_tiles", "cost", "probe_artifact", "stage_candidates",
           "suggested_budget", "windows", "work"]
