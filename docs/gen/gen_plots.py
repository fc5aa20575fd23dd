"""Figures of the results pages, drawn with matplotlib (Agg, no display) from the numbers in the results JSON only.

Each function returns PNG bytes; the results generator puts them beside the page that shows them. Missing values
(None) are drawn as gaps, never as zeros.
"""

from __future__ import annotations

import io
import math
from collections.abc import Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (the backend is chosen first)

Number = float | int | None


def _png(fig) -> bytes:
    buffer = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buffer, format="png", dpi=90, metadata={"Software": None})
    plt.close(fig)
    return buffer.getvalue()


def _finite(values: Sequence[Number]) -> list[float]:
    return [v if isinstance(v, (int, float)) and math.isfinite(v) else math.nan for v in values]


def bar_panels(title: str, labels: Sequence[str], panels: Sequence[tuple[str, Sequence[Number], Number]]) -> bytes:
    """Side-by-side bar charts over the same labels: one (y label, values, reference line or None) per panel."""
    fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 3.6), squeeze=False)
    for ax, (ylabel, values, line) in zip(axes[0], panels):
        ax.bar(range(len(labels)), _finite(values), color="#4c72b0")
        ax.set_xticks(range(len(labels)), labels, rotation=45, ha="right", fontsize=8)
        ax.set_ylabel(ylabel)
        if line is not None:
            ax.axhline(line, color="#c44e52", linestyle="--", linewidth=1)
        ax.grid(axis="y", alpha=0.3)
    fig.suptitle(title, fontsize=10)
    return _png(fig)


def grouped_bars(title: str, groups: Sequence[str], series: dict[str, Sequence[Number]], ylabel: str) -> bytes:
    """Bars of several series per group (e.g. PSNR per component, one bar per precision)."""
    fig, ax = plt.subplots(figsize=(6.5, 3.6))
    width = 0.8 / max(len(series), 1)
    for i, (name, values) in enumerate(series.items()):
        ax.bar([g + i * width for g in range(len(groups))], _finite(values), width, label=name)
    ax.set_xticks([g + width * (len(series) - 1) / 2 for g in range(len(groups))], groups)
    ax.set_ylabel(ylabel)
    ax.legend(fontsize=8)
    ax.grid(axis="y", alpha=0.3)
    ax.set_title(title, fontsize=10)
    return _png(fig)


def lines(title: str, x: Sequence[float], series: dict[str, Sequence[Number]], xlabel: str, ylabel: str,
          logx: bool = False, logy: bool = False) -> bytes:
    """One line per series over the same x; on a log y axis values <= 0 are gaps."""
    fig, ax = plt.subplots(figsize=(6, 3.6))
    for name, values in series.items():
        drawn = [v if not logy or v > 0 else math.nan for v in _finite(values)]
        ax.plot(x, drawn, marker="o", label=name)
    if logx:
        ax.set_xscale("log")
    if logy:
        ax.set_yscale("log")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    ax.set_title(title, fontsize=10)
    return _png(fig)


def boxes(title: str, labels: Sequence[str], samples: Sequence[Sequence[float]], ylabel: str) -> bytes:
    """One box per label over its raw samples (e.g. a component's timed iterations)."""
    fig, ax = plt.subplots(figsize=(6, 3.6))
    ax.boxplot([list(s) for s in samples], tick_labels=list(labels))
    ax.set_yscale("log")  # components differ by orders of magnitude
    ax.set_ylabel(ylabel)
    ax.grid(axis="y", alpha=0.3)
    ax.set_title(title, fontsize=10)
    return _png(fig)
