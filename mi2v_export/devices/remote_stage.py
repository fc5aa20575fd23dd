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
    """A component that runs on a device this process drives (a phone's runner): `call(inputs)` takes the inputs
    in the artifact's order and dtypes and returns (outputs by name, the device's own run milliseconds, its model
    load milliseconds). The time around the call that the device did not report is the transfers (push, pull,
    process start)."""

    def __init__(self, sel: Selection, call: Callable[[dict[str, np.ndarray]], tuple[dict[str, np.ndarray], float,
                                                                                       float]], where: str):
        self.component, self.entry, self.call = sel.component, sel.entry, call
        self.backend, self.source = where, sel.entry.file
        self.precision = sel.entry.precision or sel.entry.dtype
        self.gate_db = (sel.entry.trajectory or {}).get("gate_db")
        self.device_ms = self.load_ms = self.wall_ms = 0.0

    def run(self, **inputs: torch.Tensor) -> dict[str, torch.Tensor]:
        feeds = {t.name: inputs[t.name].detach().cpu().numpy().astype(t.dtype) for t in self.entry.inputs}
        t0 = time.perf_counter()
        outputs, device_ms, load_ms = self.call(feeds)
        self.wall_ms += (time.perf_counter() - t0) * 1000
        self.device_ms += device_ms
        self.load_ms += load_ms
        return {name: torch.from_numpy(np.array(v, dtype=np.float32)) for name, v in outputs.items()}

    def take_times(self) -> dict[str, float]:
        """The device's own run and model-load times and the transfers since the last call (then all three start
        again from zero)."""
        rest = self.wall_ms - self.device_ms - self.load_ms
        times = {"device_ms": self.device_ms, "device_load_ms": self.load_ms, "transfer_ms": max(rest, 0.0)}
        self.device_ms = self.load_ms = self.wall_ms = 0.0
        return times
