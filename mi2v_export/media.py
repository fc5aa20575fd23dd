"""Video and image files of `mi2v generate`: the H.264 MP4, the contact sheet beside it, and reading a video back.

Every writer goes through `files.atomic_path` (a temporary file in the destination folder, renamed into place when
complete), so a failure or a signal never leaves half a video.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np

from .errors import BadInputError, Mi2vError, first_line
from .files import atomic_path

DEFAULT_FPS = 17  # upstream save_sample(fps=17)


def write_video(frames: np.ndarray, out: str | os.PathLike, fps: int = DEFAULT_FPS) -> Path:
    """(F, H, W, 3) uint8 → H.264 MP4 (yuv420p) with the ffmpeg bundled by imageio-ffmpeg."""
    import imageio.v2 as imageio

    out = Path(out)
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
        raise BadInputError(f"frames must be (F, H, W, 3) uint8, got {frames.shape} {frames.dtype}")
    if frames.shape[1] % 2 or frames.shape[2] % 2:
        raise BadInputError(f"H.264 (yuv420p) needs even sizes, got {frames.shape[1]}x{frames.shape[2]}")
    with atomic_path(out) as tmp:
        try:
            writer = imageio.get_writer(tmp, format="FFMPEG", mode="I", fps=fps, codec="libx264",
                                        pixelformat="yuv420p", quality=8, macro_block_size=1,
                                        ffmpeg_log_level="error", output_params=["-movflags", "+faststart"])
            try:
                for frame in frames:
                    writer.append_data(frame)
            finally:
                writer.close()
        except (OSError, RuntimeError) as exc:
            raise Mi2vError(f"could not write {out.name}: {first_line(exc)}") from None
    return out


def contact_sheet(frames: np.ndarray, columns: int | None = None, max_tile_width: int = 320,
                  gap: int = 4) -> "PIL.Image.Image":  # noqa: F821
    """All frames in a grid (≤ 6 columns), downscaled to at most `max_tile_width` wide, on a dark background."""
    from PIL import Image

    n, h, w, _ = frames.shape
    columns = columns or min(n, 6)
    rows = math.ceil(n / columns)
    scale = min(1.0, max_tile_width / w)
    tw, th = max(1, round(w * scale)), max(1, round(h * scale))
    sheet = Image.new("RGB", (columns * tw + (columns + 1) * gap, rows * th + (rows + 1) * gap), (24, 24, 24))
    for i, frame in enumerate(frames):
        tile = Image.fromarray(frame)
        if (tw, th) != (w, h):
            tile = tile.resize((tw, th), Image.Resampling.BILINEAR)
        r, c = divmod(i, columns)
        sheet.paste(tile, (gap + c * (tw + gap), gap + r * (th + gap)))
    return sheet


def write_contact_sheet(frames: np.ndarray, out: str | os.PathLike) -> Path:
    out = Path(out)
    with atomic_path(out) as tmp:
        contact_sheet(frames).save(tmp, format="PNG")
    return out


def contact_sheet_path(video_out: str | os.PathLike) -> Path:
    """`clip.mp4` → `clip_contact.png`, next to the video."""
    video_out = Path(video_out)
    return video_out.with_name(f"{video_out.stem}_contact.png")


def read_video(path: str | os.PathLike) -> np.ndarray:
    """Read an MP4 back as (F, H, W, 3) uint8 (for tests and checks)."""
    import imageio.v2 as imageio

    reader = imageio.get_reader(str(path), format="FFMPEG")
    try:
        return np.stack([np.asarray(f) for f in reader])
    finally:
        reader.close()
