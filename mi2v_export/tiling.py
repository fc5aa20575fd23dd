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

    def record(self, scale: int = TILE_MULTIPLE) -> dict:
        """The manifest's `tiling` record (video pixels where the CLI speaks them, grid units beside)."""
        return {"tile": [self.rows.tile * scale, self.cols.tile * scale],
                "window": [self.rows.window * scale, self.cols.window * scale],
                "halo": max(self.rows.halo, self.cols.halo) * scale,
                "grid": [self.rows.count, self.cols.count],
                "receptive_field": self.receptive_field * scale,
                "units_per_latent_pixel": scale,
                "exact": self.exact, "blending": "none" if self.exact else "linear"}


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


def grid_from_record(record: Mapping, frame: tuple[int, int]) -> TileGrid:
    """Rebuild the grid a tiled artifact was exported for, on a frame of `frame` grid units (checked against the
    record's window: the tile model has a fixed input size)."""
    scale = int(record["units_per_latent_pixel"])
    tile = tuple(t // scale for t in record["tile"])
    halo = int(record["halo"]) // scale
    grid = plan_grid(frame, tile, halo, int(record["receptive_field"]) // scale)
    want = tuple(w // scale for w in record["window"])
    if grid.window != want:
        raise BadInputError(f"the tiled artifact's window is {list(record['window'])} video pixels, which does not fit a "
                         f"{frame[0] * scale}x{frame[1] * scale} frame: export the tile for this resolution")
    return grid


def parse_tile(text: str) -> tuple[int, int]:
    """`--tile HxW` in video pixels, both multiples of 32."""
    try:
        h, w = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise BadInputError(f"--tile {text!r}: expected HxW in video pixels, e.g. 256x256") from None
    if h <= 0 or w <= 0 or h % TILE_MULTIPLE or w % TILE_MULTIPLE:
        raise BadInputError(f"--tile {text}: both sides must be positive multiples of {TILE_MULTIPLE} video pixels")
    return h, w


def check_tile_fits(tile: tuple[int, int], frame_px: tuple[int, int]) -> None:
    if tile[0] > frame_px[0] or tile[1] > frame_px[1]:
        raise BadInputError(f"--tile {tile[0]}x{tile[1]} is larger than the {frame_px[0]}x{frame_px[1]} frame")


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
    out = acc = None
    for i in range(rows.count):
        for j in range(cols.count):
            y0, x0 = rows.windows[i], cols.windows[j]
            window = x[..., _span(y0, rows.window, scale_in), _span(x0, cols.window, scale_in)]
            y = np.asarray(run(np.ascontiguousarray(window)))
            if out is None:
                shape = (*y.shape[:-2], int(rows.frame * scale_out), int(cols.frame * scale_out))
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
    (r0, r1), (c0, c1) = _core(rows, i), _core(cols, j)
    ry, cx = rows.windows[i], cols.windows[j]
    out[..., int(r0 * s):int(r1 * s), int(c0 * s):int(c1 * s)] = \
        y[..., int((r0 - ry) * s):int((r1 - ry) * s), int((c0 - cx) * s):int((c1 - cx) * s)]


def _core(axis: AxisPlan, index: int) -> tuple[int, int]:
    start = axis.starts[index]
    return start, min(start + axis.tile, axis.frame)

