"""The media of `mi2v generate`: the input image (read, normalised, preprocessed into the encoder's input) and the
output video (frames to uint8, the H.264 MP4, the contact sheet beside it, reading a video back).

Preprocessing: RGB, resized straight to H×W (aspect ratio *not* kept, like upstream's `Resize([720,1280])`;
`fit="cover"` scales and centre-crops instead), normalised to [-1, 1]. EXIF rotation is applied; grayscale and
palette images are converted; transparent images are composited on white (upstream's `.convert("RGB")` would
expose whatever colour hides under the alpha). Every writer goes through `files.atomic_path` (a temporary file in
the destination folder, renamed into place when complete), so a failure or a signal never leaves half a video.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import imageio.v2 as imageio
import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError

from ..errors import BadInputError, Mi2vError, first_line
from ..files import atomic_path

MIN_IMAGE_SIDE = 32
FIT_MODES = ("stretch", "cover")
DEFAULT_FPS = 17  # upstream save_sample(fps=17)

# ---------------------------------------------------------------------------------------------------------------
# The input image


def load_image(path: str | os.PathLike) -> Image.Image:
    """Open an image file as 8-bit RGB, or raise one clear BadInputError."""
    path = Path(path)
    if not path.exists():
        raise BadInputError(f"{path}: no such file")
    if path.is_dir():
        raise BadInputError(f"{path}: is a folder, not an image")
    try:
        with Image.open(path) as img:
            img.load()
            img = ImageOps.exif_transpose(img)
            return to_rgb(img)
    except (UnidentifiedImageError, Image.DecompressionBombError) as exc:
        kind = "too large to decode safely" if isinstance(exc, Image.DecompressionBombError) else \
            "not an image PIL can read (PNG, JPEG, WebP, BMP, TIFF, …)"
        raise BadInputError(f"{path.name}: {kind}") from None
    except (OSError, SyntaxError, ValueError) as exc:
        raise BadInputError(f"{path.name}: unreadable image ({exc})") from None


def to_rgb(img: Image.Image) -> Image.Image:
    """Any PIL mode → 8-bit RGB: alpha composited on white, 16-bit/float grayscale rescaled, palettes expanded."""
    if img.mode in ("I;16", "I;16L", "I;16B", "I;16N", "I", "F"):
        arr = np.asarray(img, dtype=np.float64)
        top = 65535.0 if img.mode.startswith("I;16") or arr.max(initial=0) > 255 else 255.0
        if img.mode == "F" and arr.max(initial=0) <= 1.0:
            top = 1.0
        img = Image.fromarray(np.clip(arr / top * 255.0 + 0.5, 0, 255).astype(np.uint8), "L")
    if img.mode == "P" and "transparency" in img.info:
        img = img.convert("RGBA")
    if img.mode in ("RGBA", "LA", "PA", "La", "RGBa"):
        img = img.convert("RGBA")
        background = Image.new("RGBA", img.size, (255, 255, 255, 255))
        img = Image.alpha_composite(background, img)
    return img.convert("RGB")


def preprocess_image(img, height: int, width: int, fit: str = "stretch") -> torch.Tensor:
    """PIL image (any mode) → (1, 3, 1, H, W) float32 in [-1, 1], the encoder's `image` input."""
    if fit not in FIT_MODES:
        raise BadInputError(f"fit must be one of {', '.join(FIT_MODES)}, got {fit!r}")
    img = to_rgb(img)
    w0, h0 = img.size
    if min(w0, h0) < MIN_IMAGE_SIDE:
        raise BadInputError(f"image is {w0}x{h0} pixels; it needs at least {MIN_IMAGE_SIDE} on each side")
    if fit == "cover":
        scale = max(width / w0, height / h0)
        cw, ch = min(w0, round(width / scale)), min(h0, round(height / scale))
        left, top = (w0 - cw) // 2, (h0 - ch) // 2
        img = img.crop((left, top, left + cw, top + ch))
    if img.size != (width, height):
        img = img.resize((width, height), Image.Resampling.BILINEAR, reducing_gap=None)
    x = torch.from_numpy(np.asarray(img, dtype=np.uint8).copy()).permute(2, 0, 1).float() / 255.0
    return (x * 2.0 - 1.0)[None, :, None]


def to_uint8_frames(video: torch.Tensor) -> np.ndarray:
    """(1, 3, F, H, W) float in [-1, 1] → (F, H, W, 3) uint8, rounded like upstream's save_sample."""
    x = ((video[0].float().clamp(-1, 1) + 1.0) / 2.0 * 255.0 + 0.5).clamp(0, 255).to(torch.uint8)
    return x.permute(1, 2, 3, 0).contiguous().numpy()



# ---------------------------------------------------------------------------------------------------------------
# The output video


def write_video(frames: np.ndarray, out: str | os.PathLike, fps: int = DEFAULT_FPS) -> Path:
    """(F, H, W, 3) uint8 → H.264 MP4 (yuv420p) with the ffmpeg bundled by imageio-ffmpeg."""
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
                  gap: int = 4) -> Image.Image:
    """All frames in a grid (≤ 6 columns), downscaled to at most `max_tile_width` wide, on a dark background."""
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
    reader = imageio.get_reader(str(path), format="FFMPEG")
    try:
        return np.stack([np.asarray(f) for f in reader])
    finally:
        reader.close()
