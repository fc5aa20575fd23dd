"""Row streaming: a chain of stage models run band by band, each keeping only the rows its successor still needs.

Why: a stage tiled into windows recomputes its whole receptive field around every window. The 720p Turbo-VAED's
last stage reads 7 units (56 video pixels) each side, so windows that fit 512 MiB cost 2.4x the untiled decode
(benchmarks/results/tile_cost_720p_decoder.json). Cut into its smallest steps (mi2v_export/models/stages.py
`fine_steps`), each step reads only one or two rows of its own input each side. Each step then runs on full-width
row bands with that small halo (mi2v_export/tiling.py plans them: windows clamped inside the frame, exact). The
steps run as a wavefront: a step's band asks the step before for the rows it needs, and rows no later band reads
are dropped. The large feature maps between the steps never exist whole, and the halo recomputed is a few rows per
step. Measured at 720p it runs about as fast as windows and needs more memory at small bands (every step is a resident
model; exporters/tile_stream.py gives the figures).

Torch-free and runtime-free like the tile loop: `runs[k]` runs step k's band model on a numpy array.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from .errors import BadInputError
from .tiling import RunTile, StagePlan, core_span


class _Source:
    """The group's input, kept whole (small by construction: the stage's own input)."""

    def __init__(self, x: np.ndarray):
        self.x = x

    def take(self, lo: int, hi: int) -> np.ndarray:
        return self.x[..., lo:hi, :]

    def release(self, before: int) -> None:
        pass


class _Rows:
    """One step's output rows as its bands produce them, in order; rows before `release` are dropped."""

    def __init__(self, run: RunTile, plan: StagePlan, upstream):
        if plan.grid.cols.count != 1:
            raise BadInputError("a streamed step runs on full-width row bands; its plan splits the columns")
        self.run, self.rows, self.up = run, plan.grid.rows, upstream
        self.s_in, self.s_out = plan.scale_in, plan.scale_out
        self.next = 0                                   # the next band to run
        self.chunks: list[tuple[int, np.ndarray]] = []  # (first row, rows) of output produced and still needed
        self.end = 0                                    # output rows produced so far

    @property
    def finished(self) -> bool:
        return self.next == self.rows.count

    def band(self) -> tuple[int, np.ndarray]:
        """Run the next band: (its first output row, its core rows). Rows of the input no later band reads are
        released upstream."""
        a, i = self.rows, self.next
        lo = a.windows[i] * self.s_in
        y = np.asarray(self.run(np.ascontiguousarray(self.up.take(lo, lo + a.window * self.s_in))))
        self.next += 1
        self.up.release(a.windows[self.next] * self.s_in if self.next < a.count else 1 << 62)
        if a.count == 1:  # one band: the whole axis, at the run's own size
            return 0, y
        c0, c1 = core_span(a, i)
        w = a.windows[i]
        return c0 * self.s_out, y[..., (c0 - w) * self.s_out:(c1 - w) * self.s_out, :]

    def take(self, lo: int, hi: int) -> np.ndarray:
        while self.end < hi and not self.finished:
            start, rows = self.band()
            self.chunks.append((start, rows))
            self.end = start + rows.shape[-2]
        parts = [rows[..., max(lo - s, 0):hi - s, :] for s, rows in self.chunks if s < hi and s + rows.shape[-2] > lo]
        return parts[0] if len(parts) == 1 else np.concatenate(parts, axis=-2)

    def release(self, before: int) -> None:
        self.chunks = [(s, rows) for s, rows in self.chunks if s + rows.shape[-2] > before]


def run_streamed(runs: Sequence[RunTile], x: np.ndarray, plans: Sequence[StagePlan]) -> np.ndarray:
    """Run the chain of `runs` (step k's band model, planned by `plans[k]`) on `x` and return the last step's
    whole output; only the last step's output is ever whole."""
    if not runs or len(runs) != len(plans):
        raise BadInputError("a streamed stage needs one plan per step")
    upstream = _Source(x)
    for run, plan in zip(runs, plans):
        upstream = _Rows(run, plan, upstream)
    last, out = upstream, None
    while not last.finished:
        start, rows = last.band()
        if out is None:
            if last.rows.count == 1:
                return rows
            out = np.empty((*rows.shape[:-2], last.rows.frame * last.s_out, rows.shape[-1]), dtype=rows.dtype)
        out[..., start:start + rows.shape[-2], :] = rows
    return out


__all__ = ["run_streamed"]
