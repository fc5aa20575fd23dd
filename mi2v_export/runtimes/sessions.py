"""Opening a manifest entry on a runtime: the one place that knows a tiled artifact is several stage models run
window by window (mi2v_export/tiling.py) and stitched, so every consumer (verify, bench, generate, the output
checks) sees the component's whole-frame inputs and outputs either way.

A tiled entry's `tiling` record lists its stages in order, each with its own file and plan; `TiledSession` loads
every stage once and runs them one after another, keeping only the whole tensors between stages (small by
construction, mi2v_export/models/stages.py). Torch-free, like the rest of the runtime layer.
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np

from .. import tiling
from ..errors import BadInputError
from . import dtypes
from .base import Inputs, Runtime, Session, TensorSpec

TILING_FORMAT = 1  # the `tiling` record's layout; a reader refuses records of a later one
STAGE_INPUT, STAGE_OUTPUT = "x", "y"  # every stage model's I/O names


def is_tiled(entry: Any) -> bool:
    return bool(getattr(entry, "tiling", None))


def check_record(entry: Any) -> None:
    """BadInputError for a tiling record this version cannot run (a later format, no stages), or whose stage files
    are not the entry's own (its `file`, then its `tile_stage_<k>` extra files): the files the integrity check
    hashes and the bench pushes are the ones that run."""
    record = entry.tiling
    fmt = record.get("format")
    if fmt != TILING_FORMAT:
        raise BadInputError(f"tiling record format {fmt} is not supported (this mi2v runs format {TILING_FORMAT}); "
                            "upgrade mi2v")
    stages = record.get("stages") or []
    if not stages:
        raise BadInputError("the tiling record lists no stages")
    roles = {f.role: f.file for f in getattr(entry, "extra_files", None) or ()}
    listed = [entry.file] + [roles.get(f"tile_stage_{k}") for k in range(1, len(stages))]
    if [s.get("file") for s in stages] != listed:
        raise BadInputError(f"{entry.file}: the tiling record's stage files are not the entry's own files")


def stage_entry(entry: Any, stage: Mapping) -> SimpleNamespace:
    """What a runtime adapter reads from an entry, for one stage model (its I/O names are "x" and "y")."""
    shape_in, shape_out = tuple(stage["input_window"]), tuple(stage["output_window"])
    io = SimpleNamespace
    return SimpleNamespace(target=entry.target, delegate=entry.delegate, precision=entry.precision,
                           target_info=getattr(entry, "target_info", None), flags=getattr(entry, "flags", None),
                           inputs=[io(name=STAGE_INPUT, shape=shape_in, dtype=entry.inputs[0].dtype)],
                           outputs=[io(name=STAGE_OUTPUT, shape=shape_out, dtype=entry.outputs[0].dtype)])


class TiledSession(Session):
    """A tiled component: its stage sessions, run window by window and stitched. Every stage stays loaded (a
    benchmark repeats calls) but asks its runtime for low memory (`low_memory`: each adapter takes what it can),
    since several sessions live at once."""

    def __init__(self, runtime: Runtime, folder: Path, entry: Any, **options: Any):
        record = entry.tiling
        check_record(entry)
        self.runtime, self.path, self.record = runtime.name, folder / entry.file, record
        self.inputs = [TensorSpec(t.name, tuple(t.shape), t.dtype) for t in entry.inputs]
        self.outputs = [TensorSpec(t.name, tuple(t.shape), t.dtype) for t in entry.outputs]
        self.tile_ms: list[list[float]] = []
        self.stages: list[Session] = []
        try:
            for stage in record["stages"]:
                path = _contained(folder, stage["file"])
                options = {**options, "low_memory": True}
                self.stages.append(runtime.load(path, stage_entry(entry, stage), **options))
        except BaseException:
            self.close()
            raise
        self.backend, self.threads = self.stages[0].backend, self.stages[0].threads

    def prepare(self, inputs: Mapping[str, np.ndarray]) -> np.ndarray:
        spec = self.inputs[0]
        x = np.asarray(inputs[spec.name], dtype=dtypes.numpy_dtype(spec.dtype))
        if x.shape != tuple(spec.shape):
            raise BadInputError(f"{self.path.name}: input {spec.name} has shape {list(x.shape)}; the tiled artifact "
                                f"was exported for {list(spec.shape)}")
        return x

    def execute(self, prepared: np.ndarray) -> np.ndarray:
        """Every stage over its windows; `tile_ms` keeps each stage's per-window times of this call."""
        x = prepared
        self.tile_ms = []
        for session, stage in zip(self.stages, self.record["stages"]):
            plan = tiling.stage_from_record(stage["plan"], x.shape[-2:])
            times: list[float] = []
            self.tile_ms.append(times)
            x = tiling.run_tiled(lambda w, s=session, t=times: _timed_run(s, w, t), x, plan.grid,
                                 plan.scale_in, plan.scale_out)
        return x

    def tile_summary(self) -> list[dict]:
        """Per stage: its file, windows per call and median window time (ms) of the last call."""
        return [{"stage": k, "file": stage["file"], "tiles": len(times),
                 "median_tile_ms": round(float(np.median(times)), 3) if times else None}
                for k, (stage, times) in enumerate(zip(self.record["stages"], self.tile_ms))]

    def collect(self, raw: np.ndarray) -> Inputs:
        return {self.outputs[0].name: raw}

    def close(self) -> None:
        for session in self.stages:
            session.close()
        self.stages = []


def _timed_run(session: Session, window: np.ndarray, times: list[float]) -> np.ndarray:
    t0 = time.perf_counter()
    out = session.run({STAGE_INPUT: window})[STAGE_OUTPUT]
    times.append((time.perf_counter() - t0) * 1000)
    return out


def _contained(folder: Path, name: str) -> Path:
    """A stage file named by the manifest, refused when it leaves the artifact's folder."""
    path = (folder / name).resolve()
    if folder.resolve() not in path.parents:
        raise BadInputError(f"the tiling record names {name!r}, outside the artifact's folder")
    return path


def open_session(runtime: Runtime, path: str | os.PathLike | None, entry: Any = None, **options: Any) -> Session:
    """Load an artifact: a tiled entry's stages (its folder is `path`'s), any other file as the runtime loads it."""
    if is_tiled(entry):
        return TiledSession(runtime, Path(path).parent, entry, **options)
    return runtime.load(path, entry, **options)


def run_sets(runtime: Runtime, path: str | os.PathLike, entry: Any, sets: list[Inputs]) -> list[Inputs]:
    """Load once and run each input set; one output dict per set."""
    with open_session(runtime, path, entry) as session:
        return [session.run(feeds) for feeds in sets]


__all__ = ["TILING_FORMAT", "TiledSession", "check_record", "is_tiled", "open_session", "run_sets", "stage_entry"]
