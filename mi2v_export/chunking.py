"""Chunking the VAE stages in time: a long clip run as overlapping windows of frames, each with a halo of frames
that covers the stage's temporal field, so the stitched output equals the whole clip's.

Why it is exact, and where it pays: a VAE stage's convolutions read a few frames each side
(mi2v_export/models/receptive.py `temporal_field` measures it), so an output frame depends only on the input frames
in that field. At 17 frames every stage of both decoders reads its whole input, and no chunk can be smaller than the
clip (benchmarks/results/vae_receptive_field_720p.json, "time_chunking"); at 121 frames the high-resolution stages
read 5-8 of their 31-61 frames each side, and a chunk holds a fraction of their feature maps.

Time is counted in *units*, the coarser side's frames: a stage that doubles the frame rate maps n input frames to
2(n - 1) + 1 (the temporal upsamplers drop the first frame; mi2v_export/models/stages.py), one that halves it reads
2(n - 1) + 1 frames for n (the causal encoder keeps the first frame alone). A window of n units starting at unit a
therefore covers fine frames [s·a, s·a + s(n - 1) + 1) on a side of `s` frames per unit, and unit i owns the fine
frames [s·i, s·(i + 1)) of the output (the field is measured for exactly those frames). The halo is the field, at
least one unit where s > 1 (a core's last frames come from the next unit), and windows never blend: always exact.
Torch-free, like mi2v_export/tiling.py, whose axis plan it reuses.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping

import numpy as np

from .errors import BadInputError
from .tiling import AxisPlan, RunTile, core_span, plan_axis

TIME_AXIS = -3  # (B, C, T, H, W)
CHUNK_MULTIPLE = 8  # video frames per latent frame: a chunk is whole latent frames (frames = 8k + 1)


def fine_frames(units: int, scale: int) -> int:
    """Frames on a side of `scale` frames per unit, for `units` units: s(n - 1) + 1."""
    return scale * (units - 1) + 1


def time_scales(t_in: int, t_out: int) -> tuple[int, int] | None:
    """(scale_in, scale_out) frames per unit of a stage mapping `t_in` frames to `t_out`; None when the two are not
    s(n - 1) + 1 apart (one frame, or a layout this module does not know: such a stage is never chunked)."""
    if t_in == t_out:
        return 1, 1
    small, large = min(t_in, t_out), max(t_in, t_out)
    if small < 2 or (large - 1) % (small - 1):
        return None
    s = (large - 1) // (small - 1)
    return (1, s) if t_out > t_in else (s, 1)


@dataclass(frozen=True)
class TimePlan:
    """One stage's chunks in time: the axis in units, frames per unit on each side, the measured field, and video
    frames per unit (what `--time-chunk` is counted in)."""

    axis: AxisPlan
    scale_in: int
    scale_out: int
    field: int
    unit_frames: int

    @property
    def count(self) -> int:
        return self.axis.count

    @property
    def chunk_frames(self) -> int:
        """Video frames per core (what `--time-chunk` asked, rounded down to whole units)."""
        return self.axis.tile * self.unit_frames

    @property
    def frames_in(self) -> int:
        """The stage's input frames in one window: what its tile model is exported for."""
        return fine_frames(self.axis.window, self.scale_in)

    @property
    def frames_out(self) -> int:
        return fine_frames(self.axis.window, self.scale_out)

    def record(self) -> dict:
        a = self.axis
        return {"frames": a.frame, "tile": a.tile, "window": a.window, "halo": a.halo, "chunks": a.count,
                "scale_in": self.scale_in, "scale_out": self.scale_out, "field": self.field,
                "unit_frames": self.unit_frames, "exact": True}


def plan_time(t_in: int, t_out: int, video_frames: int, chunk_frames: int, field: int) -> TimePlan | None:
    """A stage's time plan for cores of `chunk_frames` video frames (rounded down to whole units, at least one);
    None when the stage cannot be chunked or one window would hold the whole clip (the stage runs whole in time)."""
    scales = time_scales(t_in, t_out)
    if scales is None:
        return None
    units = t_out if scales[0] > 1 else t_in
    if units < 2 or (video_frames - 1) % (units - 1):
        return None
    unit_frames = (video_frames - 1) // (units - 1)
    halo = max(field, 1 if max(scales) > 1 else 0)
    axis = plan_axis(units, max(chunk_frames // unit_frames, 1), halo)
    if axis.count == 1:
        return None
    return TimePlan(axis, scales[0], scales[1], field, unit_frames)


def time_from_record(record: Mapping | None, t_in: int) -> TimePlan | None:
    """Rebuild a stage's time plan from its record for an input of `t_in` frames; BadInputError when the clip is not
    the one the tile model was exported for."""
    if not record:
        return None
    scale_in, scale_out = int(record["scale_in"]), int(record["scale_out"])
    units = int(record["frames"])
    if fine_frames(units, scale_in) != t_in:
        raise BadInputError(f"the tiled artifact was chunked in time for {fine_frames(units, scale_in)} input frames, "
                            f"not {t_in}: export it again for this clip length")
    axis = plan_axis(units, int(record["tile"]), int(record["halo"]))
    if axis.window != int(record["window"]) or axis.count == 1:
        raise BadInputError(f"the tiled artifact's time window {record['window']} does not match its own plan")
    return TimePlan(axis, scale_in, scale_out, int(record["field"]), int(record["unit_frames"]))


def _owned(unit: int, scale: int, total: int) -> int:
    """The first output frame unit `unit` owns (the end of the clip for the unit past the last)."""
    return min(scale * unit, total)


def run_chunked(run: RunTile, x: np.ndarray, plan: TimePlan) -> np.ndarray:
    """Run `run` on every time window of `x` (frames on axis -3) and copy each window's core frames into the
    whole clip's output."""
    a, out = plan.axis, None
    total = fine_frames(a.frame, plan.scale_out)
    for k, win in enumerate(a.windows):
        i0 = win * plan.scale_in
        y = np.asarray(run(np.ascontiguousarray(x[..., i0:i0 + plan.frames_in, :, :])))
        if y.shape[TIME_AXIS] != plan.frames_out:
            raise BadInputError(f"a time window gave {y.shape[TIME_AXIS]} frames, its plan says {plan.frames_out}")
        if out is None:
            out = np.empty((*y.shape[:TIME_AXIS], total, *y.shape[TIME_AXIS + 1:]), dtype=y.dtype)
        c0, c1 = (_owned(u, plan.scale_out, total) for u in core_span(a, k))
        o = win * plan.scale_out
        out[..., c0:c1, :, :] = y[..., c0 - o:c1 - o, :, :]
    return out


def check_chunk(frames: int) -> None:
    """`--time-chunk FRAMES`: a positive multiple of 8 video frames."""
    if frames <= 0 or frames % CHUNK_MULTIPLE:
        raise BadInputError(f"--time-chunk {frames}: expected a positive multiple of {CHUNK_MULTIPLE} video frames")


__all__ = ["CHUNK_MULTIPLE", "TIME_AXIS", "TimePlan", "check_chunk", "fine_frames", "plan_time", "run_chunked",
           "time_from_record", "time_scales"]
