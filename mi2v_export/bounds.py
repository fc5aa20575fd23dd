"""Size bounds: every command that takes a video size refuses an impossible one at once, before any work.

Two checks, both cheap and torch-free: the preset's documented cap (`Preset.max_side`, `Preset.max_frames` in
mi2v_export/presets.py), then a memory estimate checked against what this machine can give a new process
("needs ~N GiB, this machine has M GiB"). Without them `--resolution 100000x100000` ran until the kernel's OOM
killer ended it, or a traceback under a memory limit.

The estimate is linear in what grows with the request, with coefficients from measured peaks on the reference
machine (benchmarks/results/export_720p_*.json, and the runtime figures in benchmarks/results/precision_720p_*):
an export peaks near EXPORT_WEIGHT_FACTOR x the component's fp32 weights plus EXPORT_BYTES_PER_ELEMENT per
element of its largest video tensor (frames x height x width); a run (generate, host bench) near
RUN_WEIGHT_FACTOR x the weights plus RUN_BYTES_PER_ELEMENT per element. It is an estimate to refuse what cannot
fit, not a promise that what passes will. Torch-free: the CLI imports it at start-up; the weights come from
`mi2v_export.models.weight_bytes` (counted on torch's `meta` device).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

from .errors import BadInputError
from .presets import Preset
from .shapes import VideoGeometry

GIB = 1 << 30
BASELINE_BYTES = int(0.7 * GIB)  # python + torch + runtimes imported, before any model
EXPORT_WEIGHT_FACTOR = 10  # 720p denoiser w8a8 export: 11.0 GiB for 1.07 GB of fp32 weights
EXPORT_BYTES_PER_ELEMENT = 400  # 720p Turbo-VAED export: 5.9 GiB for 720x1280x17 = 15.7 M elements
RUN_WEIGHT_FACTOR = 2  # fp32 weights, plus the runtime's packed copy
RUN_BYTES_PER_ELEMENT = 120  # onnxruntime 720p Turbo-VAED decode: 1.76 GB for 15.7 M elements

# The video tensor each component's activations scale with: the image (one frame) for the encoder, the latent
# for the denoiser (its activations are tokens x width, small next to its weights), the whole video for a decoder.
ELEMENTS = {
    "encoder": lambda g: g.height * g.width,
    "denoiser": lambda g: g.tokens * 1152,
    "decoder": lambda g: g.decoded_height * g.decoded_width * g.frames,
}


def check_cap(preset: Preset, height: int, width: int, frames: int) -> None:
    """The preset's documented cap; BadInputError (exit 2) naming it otherwise."""
    big = [f"{name} {side}" for name, side in (("height", height), ("width", width)) if side > preset.max_side]
    if big:
        raise BadInputError(f"{' and '.join(big)} {'are' if len(big) > 1 else 'is'} above the {preset.name} "
                            f"preset's cap of {preset.max_side} "
                            f"pixels a side (docs/guides/security.md: Bounds)")
    if frames > preset.max_frames:
        raise BadInputError(f"frames {frames} is above the {preset.name} preset's cap of {preset.max_frames}")


def estimate_bytes(geo: VideoGeometry, weights: Mapping[str, int], mode: str) -> int:
    """Expected peak bytes of exporting (mode "export": one component at a time, so the largest) or running
    (mode "run": every stage, weights together) the components in `weights` (component → fp32 weight bytes)."""
    if mode == "export":
        return BASELINE_BYTES + max(EXPORT_WEIGHT_FACTOR * w + EXPORT_BYTES_PER_ELEMENT * ELEMENTS[c](geo)
                                    for c, w in weights.items())
    return (BASELINE_BYTES + RUN_WEIGHT_FACTOR * sum(weights.values())
            + RUN_BYTES_PER_ELEMENT * max(ELEMENTS[c](geo) for c in weights))


def available_bytes() -> int:
    """What a new process can use: MemAvailable, lowered to the cgroup's memory limit (a container, a CI job,
    `systemd-run -p MemoryMax=`) minus what the cgroup already uses."""
    avail = _meminfo("MemAvailable") or os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    limit, used = _cgroup_limit()
    if limit is not None:
        avail = min(avail, max(0, limit - (used or 0)))
    return avail


def check_memory(geo: VideoGeometry, weights: Mapping[str, int], mode: str, what: str) -> int:
    """BadInputError when the estimate exceeds what this machine has; returns the estimate."""
    need, have = estimate_bytes(geo, weights, mode), available_bytes()
    if need > have:
        raise BadInputError(f"{what} at {geo.height}x{geo.width}x{geo.frames} needs ~{need / GIB:.1f} GiB, this "
                            f"machine has {have / GIB:.1f} GiB available; choose a smaller --resolution or --frames")
    return need


def check_request(preset: Preset, geo: VideoGeometry, weights: Mapping[str, int], mode: str, what: str) -> int:
    """The cap, then the memory estimate (the one call commands make)."""
    check_cap(preset, geo.height, geo.width, geo.frames)
    return check_memory(geo, weights, mode, what)


def _meminfo(key: str) -> int | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


def _cgroup_limit() -> tuple[int | None, int | None]:
    """(memory.max, memory.current) of this process's cgroup v2, None where unlimited or unknown."""
    try:
        rel = Path("/proc/self/cgroup").read_text().splitlines()[0].split(":", 2)[2]
        base = Path("/sys/fs/cgroup") / rel.lstrip("/")
        text = (base / "memory.max").read_text().strip()
        used = int((base / "memory.current").read_text().strip())
    except (OSError, IndexError, ValueError):
        return None, None
    return (None if text == "max" else int(text)), used
