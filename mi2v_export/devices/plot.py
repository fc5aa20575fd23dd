"""`mi2v bench --plot FILE.png`: where the per-frame time goes (matplotlib, Agg backend: no display needed).

Left: the per-frame latency for 1 and 2 denoising steps as stacked bars (encoder / frames, steps × denoiser /
frames, decoder / frames, from each component's median). Right: each component's per-iteration samples (box plot,
whiskers at min/max) with its median written next to it; for a `--pipeline` report instead each clip's time in the
order they ran, stacked by stage (loads, encoder, denoiser, decoder, the rest), so a cold start and a drift show.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from ..errors import BadInputError, MissingDependencyError
from ..contract import COMPONENTS
from .report import BenchReport

COLORS = {"encoder": "#4c72b0", "denoiser": "#dd8452", "decoder": "#55a868"}


def plot_report(report: BenchReport, path: str | os.PathLike[str]) -> Path:
    path = Path(path)
    if path.suffix.lower() not in (".png", ".svg", ".pdf"):
        raise BadInputError(f"--plot {path}: use a .png (or .svg / .pdf) file name")
    try:
        import matplotlib

        matplotlib.use("Agg", force=True)
        import matplotlib.pyplot as plt
    except ImportError as exc:
        raise MissingDependencyError(f"--plot needs matplotlib ({exc}): `pip install matplotlib`") from None
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.2), gridspec_kw={"width_ratios": [1, 1.4]})
    device = report.device or {}
    who = device.get("model") or device.get("cpu") or device.get("transport", "")
    if device.get("simulated_device"):
        who = f"{who} (simulated)"
    preset = (report.artifacts or {}).get("preset", "")
    res = (report.artifacts or {}).get("resolution")
    frames = report.frames or 1
    size = f"{res[0]}x{res[1]}x{frames}" if res else f"{frames} frames"
    fig.suptitle(f"mi2v bench — {preset} {size} on {who}".strip(), fontsize=11)
    _per_frame_bars(left, report)
    if report.pipeline and report.pipeline.get("clips"):
        _clips(right, report.pipeline["clips"])
    else:
        _distributions(right, report)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _per_frame_bars(ax: Any, report: BenchReport) -> None:
    """Stacked bars of encoder / frames, steps × denoiser / frames and decoder / frames, for 1 and 2 steps."""
    frames = report.frames or 1
    labels = ["1 step", "2 steps"]
    bottoms = [0.0, 0.0]
    for c in COMPONENTS:
        comp = report.component(c)
        m = comp.median_ms() if comp else None
        if m is None:
            continue
        heights = [m * (s if c == "denoiser" else 1) / frames for s in (1, 2)]
        ax.bar(labels, heights, bottom=bottoms, color=COLORS[c], label=f"{c}{' × steps' if c == 'denoiser' else ''}")
        bottoms = [b + h for b, h in zip(bottoms, heights)]
    for i, s in enumerate((1, 2)):
        total = report.per_frame_ms(s)
        ax.text(i, bottoms[i], f"{total:.1f} ms" if total is not None else "incomplete", ha="center", va="bottom",
                fontsize=9)
    ax.set_ylabel("ms per frame (component medians / frames)")
    ax.set_title("per-frame latency", fontsize=10)
    ax.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.08), ncol=3, frameon=False)
    ax.margins(y=0.15)


# a pipeline clip's parts, bottom to top: (label, color, its milliseconds)
CLIP_PARTS = (("load", "#8c8c8c", lambda c: sum(c["load_ms"].values()) + sum(c.get("device_load_ms", {}).values())),
              ("encoder", COLORS["encoder"], lambda c: c["stage_ms"]["encoder"]),
              ("denoiser", COLORS["denoiser"], lambda c: c["stage_ms"]["denoiser"]),
              ("decoder", COLORS["decoder"], lambda c: c["stage_ms"]["decoder"]),
              ("pre/post + glue", "#c44e52", lambda c: c["preprocess_ms"] + c["postprocess_ms"] + c["glue_ms"]))


def _clips(ax: Any, clips: list[dict[str, Any]]) -> None:
    """`--pipeline`: each clip's time, in the order they ran, stacked by stage (transfers sit inside the stages)."""
    x = [f"{c['clip']}{' (cold)' if c['cold'] else ''}" for c in clips]
    bottoms = [0.0] * len(clips)
    for label, color, part in CLIP_PARTS:
        heights = [part(c) for c in clips]
        ax.bar(x, heights, bottom=bottoms, color=color, label=label)
        bottoms = [b + h for b, h in zip(bottoms, heights)]
    ax.set_xlabel("clip, in the order run")
    ax.set_ylabel("ms per clip")
    ax.set_title("whole runs, stacked by stage", fontsize=10)
    ax.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.12), ncol=3, frameon=False)


def _distributions(ax: Any, report: BenchReport) -> None:
    """Each component's per-iteration samples as a box plot (whiskers at min/max) with its median beside it."""
    data, names, colors = [], [], []
    for c in COMPONENTS:
        comp = report.component(c)
        if comp is None or not comp.samples():
            continue
        data.append(comp.samples())
        names.append(f"{c}\n{comp.runtime.get('name', '')}")
        colors.append(COLORS[c])
    if data:
        box = ax.boxplot(data, vert=False, whis=(0, 100), patch_artist=True)
        ax.set_yticks(range(1, len(names) + 1), names)
        for patch, color in zip(box["boxes"], colors):
            patch.set_facecolor(color)
            patch.set_alpha(0.6)
        for i, samples in enumerate(data, start=1):
            med = sorted(samples)[(len(samples) + 1) // 2 - 1]
            ax.text(max(samples), i + 0.25, f"p50 {med:.1f} ms (n={len(samples)})", ha="right", fontsize=8)
        ax.set_xscale("log")
    else:
        ax.text(0.5, 0.5, "no samples", ha="center", va="center", transform=ax.transAxes)
    ax.set_xlabel("ms per call (log scale)")
    ax.set_title("per-component latency", fontsize=10)
