"""Opening a manifest entry on a runtime: the one place that knows a tiled artifact is several stage models run
window by window (mi2v_export/tiling.py) and stitched, so every consumer (verify, bench, generate, the output
checks) sees the component's whole-frame inputs and outputs either way.

A tiled entry's `tiling` record lists its stages in order, each with its own file and plan; `TiledSession` runs
them one after another, keeping only the whole tensors between stages (small by construction,
mi2v_export/models/stages.py). Its `residency` says how many stage models are resident at once: "stage" (one: each
is loaded just before its windows run and released after, as a phone runner runs a stage per call, so a call's
peak is its largest stage's, not the sum; exports since per-stage tiling write it) or "all" (every stage loaded once
and kept; records without the field). Torch-free, like the rest of the runtime layer.
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np

from .. import chunking, streaming, tiling
from ..errors import BadInputError
from . import dtypes, memory
from .base import Inputs, Runtime, Session, TensorSpec

TILING_FORMAT = 1  # the `tiling` record's layout without streamed stages
STREAMED_FORMAT = 2  # with streamed stages (a `stream` group on consecutive stages): older readers refuse it
TIMED_FORMAT = 3  # with stages chunked in time (a `time` plan, mi2v_export/chunking.py): older readers refuse it
FORMATS = (TILING_FORMAT, STREAMED_FORMAT, TIMED_FORMAT)  # what this reader runs; a later format is refused
RESIDENCIES = ("stage", "all")  # stage models resident at once: one, or every one (records without the field)
STAGE_INPUT, STAGE_OUTPUT = "x", "y"  # every stage model's I/O names


def is_tiled(entry: Any) -> bool:
    return bool(getattr(entry, "tiling", None))


def check_record(entry: Any) -> None:
    """BadInputError for a tiling record this version cannot run (a later format, no stages), or whose stage files
    are not the entry's own (its `file`, then its `tile_stage_<k>` extra files): the files the integrity check
    hashes and the bench pushes are the ones that run."""
    record = entry.tiling
    fmt = record.get("format")
    if fmt not in FORMATS:
        raise BadInputError(f"tiling record format {fmt} is not supported (this mi2v runs formats "
                            f"{', '.join(map(str, FORMATS))}); upgrade mi2v")
    stages = record.get("stages") or []
    if not stages:
        raise BadInputError("the tiling record lists no stages")
    if fmt != STREAMED_FORMAT and any("stream" in s for s in stages):
        raise BadInputError(f"the tiling record streams stages but says format {fmt} (streamed stages are format "
                            f"{STREAMED_FORMAT})")
    if fmt != TIMED_FORMAT and any("time" in s for s in stages):
        raise BadInputError(f"the tiling record chunks stages in time but says format {fmt} (time chunks are format "
                            f"{TIMED_FORMAT})")
    if record.get("residency", "all") not in RESIDENCIES:
        raise BadInputError(f"tiling record residency {record.get('residency')!r} is not supported "
                            f"(this mi2v runs {', '.join(RESIDENCIES)}); upgrade mi2v")
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
    """A tiled component: its stage models, run window by window and stitched. Each stage asks its runtime for
    low memory (`low_memory`: each adapter takes what it can). With residency "stage" only one stage model is
    loaded at a time (its load time is part of the call, in `load_ms`); with "all" every stage stays loaded."""

    def __init__(self, runtime: Runtime, folder: Path, entry: Any, **options: Any):
        record = entry.tiling
        check_record(entry)
        self.runtime, self.path, self.record = runtime.name, folder / entry.file, record
        self._rt, self._folder, self._entry = runtime, folder, entry
        self._options = {**options, "low_memory": True}
        self.one_at_a_time = record.get("residency", "all") == "stage"
        self.inputs = [TensorSpec(t.name, tuple(t.shape), t.dtype) for t in entry.inputs]
        self.outputs = [TensorSpec(t.name, tuple(t.shape), t.dtype) for t in entry.outputs]
        self.tile_ms: list[list[float]] = []
        self.load_ms: list[float | None] = [None] * len(record["stages"])
        self.stages: list[Session | None] = [None] * len(record["stages"])
        try:  # the first stage is loaded now (a bad file fails at load, as an untiled artifact does)
            for k in range(1 if self.one_at_a_time else len(self.stages)):
                self._stage(k)
        except BaseException:
            self.close()
            raise
        self.backend, self.threads = self.stages[0].backend, self.stages[0].threads

    def _stage(self, k: int) -> Session:
        """Stage k's session, loaded now unless it is resident."""
        if self.stages[k] is None:
            stage = self.record["stages"][k]
            t0 = time.perf_counter()
            self.stages[k] = self._rt.load(_contained(self._folder, stage["file"]), stage_entry(self._entry, stage),
                                           **self._options)
            self.load_ms[k] = (time.perf_counter() - t0) * 1000
        return self.stages[k]

    def prepare(self, inputs: Mapping[str, np.ndarray]) -> np.ndarray:
        spec = self.inputs[0]
        x = np.asarray(inputs[spec.name], dtype=dtypes.numpy_dtype(spec.dtype))
        if x.shape != tuple(spec.shape):
            raise BadInputError(f"{self.path.name}: input {spec.name} has shape {list(x.shape)}; the tiled artifact "
                                f"was exported for {list(spec.shape)}")
        return x

    def execute(self, prepared: np.ndarray) -> np.ndarray:
        """Every stage over its windows, a streamed group's stages band by band together (mi2v_export/streaming.py);
        `tile_ms` keeps each stage's per-window times of this call, `load_ms` the load of each stage this call loaded
        (None: it was resident)."""
        x = prepared
        stages = self.record["stages"]
        self.tile_ms = [[] for _ in stages]
        self.load_ms = [None] * len(self.stages)
        for group in stream_groups(stages):
            runs = [lambda w, s=self._stage(k), t=self.tile_ms[k]: _timed_run(s, w, t) for k in group]
            plans = group_plans([stages[k] for k in group], x.shape[-2:])
            if "stream" in stages[group[0]]:
                x = streaming.run_streamed(runs, x, plans)
            else:
                x = run_stage(runs[0], x, stages[group[0]], plans[0])
            if self.one_at_a_time:
                del runs
                for k in group:
                    self.stages[k].close()
                    self.stages[k] = None
                memory.return_freed()
        return x

    def tile_summary(self) -> list[dict]:
        """Per stage: its file, windows per call, median window time (ms) and load time (ms; None when it stayed
        loaded) of the last call."""
        return [{"stage": k, "file": stage["file"], "tiles": len(times),
                 "median_tile_ms": round(float(np.median(times)), 3) if times else None,
                 "load_ms": None if load is None else round(load, 3)}
                for k, (stage, times, load) in enumerate(zip(self.record["stages"], self.tile_ms, self.load_ms))]

    def collect(self, raw: np.ndarray) -> Inputs:
        return {self.outputs[0].name: raw}

    def close(self) -> None:
        for session in self.stages:
            if session is not None:
                session.close()
        self.stages = [None] * len(self.stages)


def run_stage(run: tiling.RunTile, x: np.ndarray, stage: Mapping, plan: tiling.StagePlan | None = None
              ) -> np.ndarray:
    """One (not streamed) stage over the whole input: its time windows (mi2v_export/chunking.py) where it has a
    `time` plan, each over its spatial windows (mi2v_export/tiling.py). `plan`: the stage's spatial plan when the
    caller has it (a group's plans are chained from the first stage's input)."""
    plan = plan or tiling.stage_from_record(stage["plan"], x.shape[-2:])
    time_plan = chunking.time_from_record(stage.get("time"), x.shape[chunking.TIME_AXIS])
    def spatial(window: np.ndarray) -> np.ndarray:
        return tiling.run_tiled(run, window, plan.grid, plan.scale_in, plan.scale_out)
    return spatial(x) if time_plan is None else chunking.run_chunked(spatial, x, time_plan)


def stage_windows(stage: Mapping) -> int:
    """Windows per call of a stage: its spatial windows times its time chunks."""
    return tiling.tile_count(stage["plan"]) * int((stage.get("time") or {}).get("chunks", 1))


def stream_groups(stages: list[Mapping]) -> list[list[int]]:
    """Stage indices grouped as they run: consecutive stages of one `stream` group together, any other alone."""
    groups: list[list[int]] = []
    for k, stage in enumerate(stages):
        group = stage.get("stream")
        if group is not None and groups and stages[groups[-1][0]].get("stream") == group:
            groups[-1].append(k)
        else:
            groups.append([k])
    return groups


def group_plans(stages: list[Mapping], in_hw: tuple[int, int]) -> list[tiling.StagePlan]:
    """Each stage's plan for a group whose first stage reads `in_hw`; a streamed stage reads its predecessor's
    whole output (a one-window axis keeps the tile model's own size, as tiling.run_tiled does)."""
    plans = []
    for stage in stages:
        plan = tiling.stage_from_record(stage["plan"], in_hw)
        plans.append(plan)
        g, out = plan.grid, stage["output_window"]
        in_hw = tuple(int(o) if a.count == 1 else a.frame * plan.scale_out
                      for a, o in zip((g.rows, g.cols), out[-2:]))
    return plans


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
    """Load an artifact: a tiled entry's stages (its folder is `path`'s), any other file as the runtime loads it. A
    tiled entry or `low_memory` also maps this process's large buffers apart (memory.map_large_buffers)."""
    if is_tiled(entry) or options.get("low_memory"):
        memory.map_large_buffers()
    if is_tiled(entry):
        return TiledSession(runtime, Path(path).parent, entry, **options)
    return runtime.load(path, entry, **options)


def run_sets(runtime: Runtime, path: str | os.PathLike, entry: Any, sets: list[Inputs]) -> list[Inputs]:
    """Load once and run each input set; one output dict per set."""
    with open_session(runtime, path, entry) as session:
        return [session.run(feeds) for feeds in sets]


__all__ = ["FORMATS", "RESIDENCIES", "STREAMED_FORMAT", "TILING_FORMAT", "TIMED_FORMAT", "group_plans",
           "run_stage", "stage_windows", "stream_groups", "TiledSession", "check_record", "is_tiled",
           "open_session", "run_sets", "stage_entry"]
