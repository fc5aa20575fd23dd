"""Video size → latent grid, token counts, and the resolution rules of the LTX VAE.

The LTX encoder patchifies 4x4 and then halves each spatial axis three times with stride-2, pad-1 convolutions
(ceil division), and compresses time 8x causally. So H must be a multiple of 4, the latent height is ceil(H/32),
the decoder produces 32x that (720 → 23 → 736) and the pipeline crops back to H. Frames must be 8k+1.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

from .errors import BadInputError
from .presets import LATENT_CHANNELS

SPATIAL_PATCH = 4
SPATIAL_FACTOR = 32
TEMPORAL_FACTOR = 8
MIN_SIDE = 32


@dataclass(frozen=True)
class VideoGeometry:
    height: int
    width: int
    frames: int

    @property
    def latent_t(self) -> int:
        return (self.frames - 1) // TEMPORAL_FACTOR + 1

    @property
    def latent_h(self) -> int:
        return math.ceil(self.height / SPATIAL_FACTOR)

    @property
    def latent_w(self) -> int:
        return math.ceil(self.width / SPATIAL_FACTOR)

    @property
    def latent_shape(self) -> tuple[int, int, int, int, int]:
        return (1, LATENT_CHANNELS, self.latent_t, self.latent_h, self.latent_w)

    @property
    def tokens(self) -> int:
        return self.latent_t * self.latent_h * self.latent_w

    @property
    def decoded_height(self) -> int:
        return self.latent_h * SPATIAL_FACTOR

    @property
    def decoded_width(self) -> int:
        return self.latent_w * SPATIAL_FACTOR


def parse_resolution(text: str) -> tuple[int, int]:
    """'720x1280' → (720, 1280) (height x width)."""
    m = re.fullmatch(r"\s*(\d+)\s*[xX×]\s*(\d+)\s*", text or "")
    if not m:
        raise BadInputError(f"resolution {text!r} is not HEIGHTxWIDTH, e.g. 720x1280")
    return int(m.group(1)), int(m.group(2))


def geometry(height: int, width: int, frames: int) -> VideoGeometry:
    """Validate a video size against what the VAE can take and return its latent geometry."""
    for name, side in (("height", height), ("width", width)):
        if side < MIN_SIDE:
            raise BadInputError(f"{name} {side} is too small: the VAE needs at least {MIN_SIDE} pixels")
        if side % SPATIAL_PATCH:
            raise BadInputError(
                f"{name} {side} is not a multiple of {SPATIAL_PATCH} (the VAE patchifies 4x4); "
                f"try {side - side % SPATIAL_PATCH} or {side + SPATIAL_PATCH - side % SPATIAL_PATCH}")
    if frames < 1 or (frames - 1) % TEMPORAL_FACTOR:
        k = max(0, round((frames - 1) / TEMPORAL_FACTOR))
        raise BadInputError(f"frames {frames} is not 8k+1 (the VAE compresses time 8x causally); try {8 * k + 1}")
    return VideoGeometry(height, width, frames)
