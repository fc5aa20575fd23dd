"""A pipeline stage on a device this process drives (`mi2v bench --pipeline` on a phone, devices/pipeline_bench.py):
the sampler runs here, each component runs there, and the device's own time is kept apart from the transfers."""

from __future__ import annotations

import time
from collections.abc import Callable

import numpy as np
import torch

from ..pipeline import Stage
from .selection import Selection


class RemoteStage(Stage):
    """A component that runs somewhere this process drives (a phone's runner, a stage process of its own):
    `call(inputs)` takes the inputs in the artifact's order and dtypes and returns (outputs by name, what the device
    measured: {"run_ms", "load_ms", "peak_rss_kb"}). The time around the call that the device did not report is
    the transfers (push, pull, process start)."""

    def __init__(self, sel: Selection, call: Callable[[dict[str, np.ndarray]], tuple[dict[str, np.ndarray], dict]],
                 where: str):
        self.component, self.entry, self.call = sel.component, sel.entry, call
        self.backend, self.source = where, sel.entry.file
        self.precision = sel.entry.precision or sel.entry.dtype
        self.gate_db = (sel.entry.trajectory or {}).get("gate_db")
        self.device_ms = self.load_ms = self.wall_ms = 0.0
        self.peak_kb: int | None = None

    def run(self, **inputs: torch.Tensor) -> dict[str, torch.Tensor]:
        feeds = {t.name: inputs[t.name].detach().cpu().numpy().astype(t.dtype) for t in self.entry.inputs}
        t0 = time.perf_counter()
        outputs, told = self.call(feeds)
        self.wall_ms += (time.perf_counter() - t0) * 1000
        self.device_ms += told["run_ms"]
        self.load_ms += told.get("load_ms") or 0.0
        if told.get("peak_rss_kb"):
            self.peak_kb = max(self.peak_kb or 0, int(told["peak_rss_kb"]))
        return {name: torch.from_numpy(np.array(v, dtype=np.float32)) for name, v in outputs.items()}

    def take_times(self) -> dict[str, float | int | None]:
        """The device's own run and model-load times, the transfers and the device process's peak memory since the
        last call (then they start again)."""
        rest = self.wall_ms - self.device_ms - self.load_ms
        times = {"device_ms": self.device_ms, "device_load_ms": self.load_ms, "transfer_ms": max(rest, 0.0),
                 "peak_rss_kb": self.peak_kb}
        self.device_ms = self.load_ms = self.wall_ms = 0.0
        self.peak_kb = None
        return times
