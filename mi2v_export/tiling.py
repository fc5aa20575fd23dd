"""Spatial tiling of the VAE encoder and decoders: the grid, the halo and the one tile loop every consumer uses.

Why tiling can be exact here: the VAE's norms work per pixel over channels (no spatial statistics, see
mi2v_export/models/turbo_vaed.py and mi2v_export/models/ltx_vae.py), so an output pixel depends only on the input
pixels inside its receptive field. A tile model run on a window that extends the tile's core by a halo covering that
field, with windows clamped inside the frame (so the frame's own borders keep their zero padding), reproduces the
whole-frame output on the core. A smaller halo is allowed: the cores then overlap and are blended linearly.

Everything is counted in *grid units*: latent pixels (one latent pixel = `scale` video pixels). The tile loop is
given the input's and the output's scale (decoder: latent in, video out ×32; encoder: video in ×32, latent out) and
works on the last two axes of numpy arrays, so it runs unchanged for every runtime (torch-free: `mi2v verify`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Mapping

import numpy as np

from .errors import BadInputError

TILE_MULTIPLE = 32      # video pixels per latent pixel: tiles are whole latent pixels


@dataclass(frozen=True)
class AxisPlan:
    """One spatial axis: the frame, the core of each tile, the window the tile model sees, and where each starts."""

    frame: int          # grid units along this axis
    tile: int           # core size
    window: int         # tile model's input size: min(tile + 2 halo, frame)
    halo: int
    starts: tuple[int, ...]     # core starts
    windows: tuple[int, ...]    # window starts (clamped inside the frame)

    @property
    def count(self) -> int:
        return len(self.starts)


def plan_axis(frame: int, tile: int, halo: int) -> AxisPlan:
    """Cores of `tile` partition [0, frame) (the last one may be shorter); each window is the core ± halo, shifted
    inside the frame. A tile as large as the frame gives one window, the whole axis."""
    if tile <= 0 or halo < 0:
        raise BadInputError(f"tile {tile} and halo {halo} must be positive")
    if tile + 2 * halo >= frame:
        return AxisPlan(frame, frame, frame, 0, (0,), (0,))
    window = tile + 2 * halo
    starts = tuple(range(0, frame, tile))
    windows = tuple(min(max(s - halo, 0), frame - window) for s in starts)
    return AxisPlan(frame, tile, window, halo, starts, windows)


@dataclass(frozen=True)
class TileGrid:
    """The 2-D grid: rows × columns of windows, in grid units, with the receptive field that decides exactness."""

    rows: AxisPlan
    cols: AxisPlan
    receptive_field: int        # grid units each side an output pixel reads

    @property
    def window(self) -> tuple[int, int]:
        return self.rows.window, self.cols.window

    @property
    def count(self) -> int:
        return self.rows.count * self.cols.count

    @property
    def exact(self) -> bool:
        """True when every core is at least one receptive field from any window border inside the frame."""
        return all(_core_covered(a, self.receptive_field) for a in (self.rows, self.cols))


def _core_covered(axis: AxisPlan, field: int) -> bool:
    for start, win in zip(axis.starts, axis.windows):
        end = min(start + axis.tile, axis.frame)
        if start - win < field and win > 0:
            return False
        if win + axis.window - end < field and win + axis.window < axis.frame:
            return False
    return True


def plan_grid(frame: tuple[int, int], tile: tuple[int, int], halo: int, receptive_field: int) -> TileGrid:
    return TileGrid(plan_axis(frame[0], tile[0], halo), plan_axis(frame[1], tile[1], halo), receptive_field)


def parse_tile(text: str) -> tuple[int, int]:
    """`--tile HxW` in video pixels, both multiples of 32."""
    try:
        h, w = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise BadInputError(f"--tile {text!r}: expected HxW in video pixels, e.g. 256x256") from None
    if h <= 0 or w <= 0 or h % TILE_MULTIPLE or w % TILE_MULTIPLE:
        raise BadInputError(f"--tile {text}: both sides must be positive multiples of {TILE_MULTIPLE} video pixels")
    return h, w


def grid_px(frame_px: tuple[int, ...]) -> tuple[int, ...]:
    """The frame rounded up to whole latent pixels, in video pixels (720 rows → 736)."""
    return tuple(-(-f // TILE_MULTIPLE) * TILE_MULTIPLE for f in frame_px)


def check_tile_fits(tile: tuple[int, int], frame_px: tuple[int, int]) -> None:
    """A tile fits the frame's latent grid: the frame rounded up to whole latent pixels (720 rows are 23 latent
    rows, 736 pixels, so `--tile 736x1280` is the whole 720p frame)."""
    grid = grid_px(frame_px)
    if tile[0] > grid[0] or tile[1] > grid[1]:
        raise BadInputError(f"--tile {tile[0]}x{tile[1]} is larger than the {frame_px[0]}x{frame_px[1]} frame "
                            f"({grid[0]}x{grid[1]} in whole latent pixels)")


# ---------------------------------------------------------------------------------------------------------------
# Stages: each runs on its own grid (mi2v_export/models/stages.py cuts the VAE into them)


@dataclass(frozen=True)
class StagePlan:
    """One stage's tiling. Its grid unit is the coarser of its input and output pixels: `scale_in` / `scale_out`
    array pixels per unit (a ×2 upsampler: 1 and 2; a ×½ downsampler: 2 and 1); `unit_px` is the video pixels
    per unit along each axis (None for an axis whose frame is not a whole number of units: never split)."""

    grid: TileGrid
    scale_in: int
    scale_out: int
    unit_px: tuple[int | None, int | None]

    def record(self) -> dict:
        g = self.grid
        return {"scale_in": self.scale_in, "scale_out": self.scale_out, "unit_px": list(self.unit_px),
                "whole": [u is not None for u in self.unit_px],
                "frame": [g.rows.frame, g.cols.frame], "tile": [g.rows.tile, g.cols.tile],
                "window": list(g.window), "halo": [g.rows.halo, g.cols.halo], "grid": [g.rows.count, g.cols.count],
                "receptive_field": g.receptive_field, "exact": g.exact}


def stage_scales(in_hw: tuple[int, int], out_hw: tuple[int, int]
                 ) -> tuple[int, int, tuple[int, int], tuple[bool, bool]]:
    """(scale_in, scale_out, frame in units, whole per axis) of a stage mapping `in_hw` to `out_hw`. The scale is
    the rounded ratio (a stride-2 stage with ceil division still halves); an axis whose sizes are not exactly that
    ratio apart (45 → 23 rows) is not whole: it is one window, never split."""
    up = out_hw[0] >= in_hw[0]
    ratios = [o / i if up else i / o for i, o in zip(in_hw, out_hw)]
    scale = max(int(round(max(ratios))), 1)
    whole = tuple((o == i * scale) if up else (i == o * scale) for i, o in zip(in_hw, out_hw))
    frame = tuple(i if up else (i // scale if w else i) for i, w in zip(in_hw, whole))
    return (1, scale, frame, whole) if up else (scale, 1, frame, whole)


def plan_stage(in_hw: tuple[int, int], out_hw: tuple[int, int], video_hw: tuple[int, int],
               tile_px: tuple[int, int], receptive_field: int, halo_px: int | None = None) -> StagePlan:
    """Tile a stage so that each core is `tile_px` video pixels (rounded down to whole units, at least one) with a
    halo of its receptive field (exact) or `halo_px` video pixels in units of each axis, at most the field
    (blended)."""
    scale_in, scale_out, frame, whole = stage_scales(in_hw, out_hw)
    unit = tuple(v // f if w and v % f == 0 else None for v, f, w in zip(video_hw, frame, whole))
    tile = tuple(max(t // u, 1) if u else f for t, u, f in zip(tile_px, unit, frame))
    halo = tuple(receptive_field if halo_px is None or not u else min(-(-halo_px // u), receptive_field)
                 for u in unit)
    grid = TileGrid(plan_axis(frame[0], tile[0], halo[0]), plan_axis(frame[1], tile[1], halo[1]),
                    receptive_field)
    return StagePlan(grid, scale_in, scale_out, unit)


def tile_count(record: Mapping) -> int:
    """Windows per call of a stage, from its plan record."""
    rows, cols = record["grid"]
    return int(rows) * int(cols)


def stage_from_record(record: Mapping, in_hw: tuple[int, int]) -> StagePlan:
    """Rebuild a stage's plan from its record for an input of `in_hw` pixels; BadInputError when that frame is
    not the one the (fixed-size) tile model was exported for."""
    frame = tuple(int(v) for v in record["frame"])
    scale_in = int(record["scale_in"])
    whole = record.get("whole") or [i % scale_in == 0 for i in in_hw]
    got = tuple(i // scale_in if w else i for i, w in zip(in_hw, whole))
    if got != frame:
        raise BadInputError(f"the tiled artifact was exported for a stage frame of {list(frame)} units, not "
                            f"{list(got)}: export it again for this resolution")
    halo = [int(h) for h in record["halo"]]
    grid = TileGrid(plan_axis(frame[0], int(record["tile"][0]), halo[0]),
                    plan_axis(frame[1], int(record["tile"][1]), halo[1]), int(record["receptive_field"]))
    if list(grid.window) != [int(w) for w in record["window"]]:
        raise BadInputError(f"the tiled artifact's window {record['window']} does not match its own plan")
    unit = tuple(None if u is None else int(u) for u in record["unit_px"])
    return StagePlan(grid, scale_in, int(record["scale_out"]), unit)


RunTile = Callable[[np.ndarray], np.ndarray]


def _ramp(axis: AxisPlan, index: int, size_out: int, scale_out: float) -> np.ndarray:
    """Blend weights along one axis of a window's output: linear over the halo at borders inside the frame."""
    weights = np.ones(size_out, dtype=np.float64)
    fade = int(round(2 * axis.halo * scale_out))
    if fade == 0:
        return weights
    ramp = (np.arange(fade, dtype=np.float64) + 0.5) / fade
    if axis.windows[index] > 0:
        weights[:fade] = ramp
    if axis.windows[index] + axis.window < axis.frame:
        weights[-fade:] = np.minimum(weights[-fade:], ramp[::-1])
    return weights


def run_tiled(run: RunTile, x: np.ndarray, grid: TileGrid, scale_in: float, scale_out: float,
              on_tile: Callable[[int, int], None] | None = None) -> np.ndarray:
    """Run `run` on every window of `x` (last two axes spatial, `scale_in` array pixels per grid unit) and stitch
    its outputs (`scale_out` pixels per grid unit): cores are copied when the grid is exact, blended otherwise."""
    rows, cols = grid.rows, grid.cols
    if grid.count == 1:
        y = np.asarray(run(np.ascontiguousarray(x)))
        if on_tile is not None:
            on_tile(0, 1)
        return y
    out = acc = None
    for i in range(rows.count):
        for j in range(cols.count):
            y0, x0 = rows.windows[i], cols.windows[j]
            window = x[..., _span(y0, rows.window, scale_in), _span(x0, cols.window, scale_in)]
            y = np.asarray(run(np.ascontiguousarray(window)))
            if out is None:  # an axis with one window keeps the run's own size (its frame may not be whole units)
                shape = (*y.shape[:-2], *(y.shape[k] if a.count == 1 else int(a.frame * scale_out)
                                          for k, a in ((-2, rows), (-1, cols))))
                out = np.zeros(shape, dtype=np.float64 if not grid.exact else y.dtype)
                acc = None if grid.exact else np.zeros(shape[-2:], dtype=np.float64)
            if grid.exact:
                _copy_core(out, y, rows, cols, i, j, scale_out)
            else:
                w = np.outer(_ramp(rows, i, y.shape[-2], scale_out), _ramp(cols, j, y.shape[-1], scale_out))
                ys, xs = _span(y0, rows.window, scale_out), _span(x0, cols.window, scale_out)
                out[..., ys, xs] += y * w
                acc[ys, xs] += w
            if on_tile is not None:
                on_tile(i * cols.count + j, grid.count)
    if acc is not None:
        out = (out / acc).astype(y.dtype)
    return out


def _span(start: int, size: int, scale: float) -> slice:
    return slice(int(start * scale), int((start + size) * scale))


def _copy_core(out: np.ndarray, y: np.ndarray, rows: AxisPlan, cols: AxisPlan, i: int, j: int, s: float) -> None:
    (dr, sr), (dc, sc) = _core_slices(rows, i, s), _core_slices(cols, j, s)
    out[..., dr, dc] = y[..., sr, sc]


def _core_slices(axis: AxisPlan, index: int, s: float) -> tuple[slice, slice]:
    """(destination, source) slices of a window's core along one axis; a single window is copied whole."""
    if axis.count == 1:
        return slice(None), slice(None)
    (a, b), w = core_span(axis, index), axis.windows[index]
    return slice(int(a * s), int(b * s)), slice(int((a - w) * s), int((b - w) * s))


def core_span(axis: AxisPlan, index: int) -> tuple[int, int]:
    """A window's core along one axis, in grid units: [start, end)."""
    start = axis.starts[index]
    return start, min(start + axis.tile, axis.frame)

