"""`mi2v bench --profile`: each component's top operators by time, from the runtime's own profiler
(mi2v_export/runtimes/profiling.py), in the report (`components[].profile`) and the table.

On the host the artifact runs again after its timing, with the profiler on (onnxruntime's, or ExecuTorch's ETDump
read through the Inspector with the `<component>.etrecord` the export wrote when asked, `--etrecord`); a tiled
component profiles each stage model on one window and weighs its operators by the stage's windows per call. On a
phone the runner writes the ETDump (devices/android.py) and the host reads it here. The raw trace is kept beside the
report and named relative to it.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from ..runtimes.profiling import Profile, profile_executorch, profile_onnx, read_etdump, weighed
from ..runtimes.sessions import is_tiled, stage_entry, stage_windows

PROFILE_RUNS = 3  # profiled runs after one warm-up (the profiler's own overhead makes them no latency figure)
TOP = 15  # operators kept in the report
PROFILED = ("onnxruntime", "executorch")  # the runtime families whose own profiler `_one` reads


def host_profile(folder: Path, entry: Any, runtime: str, out_dir: Path, report_dir: Path,
                 threads: int | None = None) -> dict[str, Any]:
    """The profile of one artifact on this machine (every stage of a tiled one, weighed by its windows); for a
    runtime whose profiler mi2v does not read, the reason."""
    if runtime not in PROFILED:
        return {"reason": f"mi2v reads the profilers of {' and '.join(PROFILED)} only; {runtime} gives none here"}
    etrecord = etrecord_of(folder, entry)
    if not is_tiled(entry):
        return _record(_one(folder / entry.file, entry, runtime, out_dir, etrecord, threads), report_dir)
    parts = []
    for stage in entry.tiling["stages"]:
        view = stage_entry(entry, stage)
        parts.append((_one(folder / stage["file"], view, runtime, out_dir, None, threads), stage_windows(stage)))
    return _record(weighed(parts), report_dir)


def etrecord_of(folder: Path, entry: Any) -> Path | None:
    """The `<component>.etrecord` the export wrote beside the artifact (`mi2v export --etrecord`), if any."""
    return next((folder / f.file for f in entry.extra_files if f.role == "etrecord"), None)


def phone_profile(etdump: Path, entry: Any, runs: int, report_dir: Path, etrecord: Path | None) -> dict[str, Any]:
    """The profile of the ETDump a phone's runner wrote (`runs` executions, none dropped)."""
    backend = "XnnpackBackend" if entry.delegate == "xnnpack" else None
    profile = read_etdump(etdump, runs, 0, etrecord=etrecord, backends=[backend] if backend else [],
                          runtime=f"executorch-{entry.delegate or 'portable'}")
    return _record(profile, report_dir)


def _one(path: Path, entry: Any, runtime: str, out_dir: Path, etrecord: Path | None,
         threads: int | None) -> Profile:
    inputs = {t.name: np.ones(tuple(t.shape), dtype=t.dtype) for t in entry.inputs}
    if runtime == "onnxruntime":
        return profile_onnx(path, inputs, PROFILE_RUNS, out_dir, threads)
    return profile_executorch(path, list(inputs.values()), PROFILE_RUNS, out_dir, etrecord)


def _record(profile: Profile, report_dir: Path) -> dict[str, Any]:
    data = profile.to_dict(top=TOP)
    if profile.trace:
        data["trace"] = os.path.relpath(profile.trace, report_dir)
    return data
