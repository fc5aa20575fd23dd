"""Measured runtime memory of one artifact: the peak resident memory of a fresh process that loads it and runs it
once, minus the peak of the same process that imports the runtime but loads no model.

Why a fresh process: a process that has already exported or run other models keeps their pages (allocator
arenas, torch's caches), so its high-water mark says nothing about what a phone app needs for this one artifact.
Why the baseline: the interpreter and the runtime's own libraries cost the same with any model; what a model adds
is the difference. Planned bytes (ExecuTorch's memory plan) leave out what a delegate allocates itself; this
figure includes it. The child runs this module (`python -m mi2v_export.runtimes.measure`), so the measurement is
the same for every registered runtime.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from types import SimpleNamespace

from . import memory
from .registry import get
from .sessions import open_session

METHOD = ("peak resident memory (ru_maxrss) of a fresh process that loads the artifact and runs it once on inputs "
          "of ones, minus the same process importing the runtime without a model")


def entry_from_json(data: dict | None) -> SimpleNamespace | None:
    """The manifest entry fields a runtime reads (I/O, target, tiling, extra files), from JSON: what a measuring
    child gets on its command line, and what an exporter has before the entry exists (exporters/tiled.py)."""
    if not data:
        return None
    lists = {k: [SimpleNamespace(**t) for t in data.get(k) or ()] for k in ("inputs", "outputs", "extra_files")}
    return SimpleNamespace(**{**data, **lists})


def _child(runtime: str, path: str | None, options: dict, entry: dict | None = None) -> dict:
    """In the child: import the runtime (always) and, unless `path` is None, load the artifact (a tiled entry's
    stages, runtimes/sessions.py) and run it once on inputs of ones."""
    rt = get(runtime)
    reason = rt.available()
    if reason is not None:
        return {"error": reason}
    rt.warm_import() if hasattr(rt, "warm_import") else None
    if path is not None:
        with open_session(rt, Path(path), entry_from_json(entry), **options) as session:
            session.run(session.ones())
    return {"ok": True}


def measure(runtime: str, path: str | Path, options: dict | None = None, timeout: float = 1800,
            entry: dict | None = None) -> dict:
    """{"bytes", "peak_bytes", "baseline_bytes", "method", "runtime"}; "bytes" is None with an "error" when the
    child failed (the artifact still exports: memory is a measurement, not a gate). `entry`: the manifest entry's
    JSON where the file alone does not say how to run it (a tiled component)."""
    base = [sys.executable, "-m", "mi2v_export.runtimes.measure", runtime, "--options", json.dumps(options or {})]
    baseline = _baseline(tuple(base), timeout)
    run = memory.child_peak([*base, "--path", str(path), "--entry", json.dumps(entry or {})], timeout=timeout)
    record = {"bytes": None, "peak_bytes": run.peak_bytes, "baseline_bytes": baseline.peak_bytes,
              "method": METHOD, "runtime": runtime}
    if run.returncode or baseline.returncode or run.peak_bytes is None or baseline.peak_bytes is None:
        tail = (run.stderr or baseline.stderr).strip().splitlines()
        record["error"] = tail[-1] if tail else f"the measuring process exited {run.returncode}"
        return record
    record["bytes"] = max(run.peak_bytes - baseline.peak_bytes, 0)
    return record


_BASELINES: dict[tuple[str, ...], memory.ChildRun] = {}


def _baseline(command: tuple[str, ...], timeout: float) -> memory.ChildRun:
    """The baseline process's peak, measured once per command in this process: it imports the same runtime the same
    way for every artifact (an ExecuTorch one takes about 4 s to import torch and the runtime, twice per component
    otherwise). A failed baseline is not kept."""
    if command not in _BASELINES:
        got = memory.child_peak([*command, "--baseline"], timeout=timeout)
        if got.returncode or got.peak_bytes is None:
            return got
        _BASELINES[command] = got
    return _BASELINES[command]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="load one artifact in this fresh process and run it once")
    ap.add_argument("runtime")
    ap.add_argument("--path")
    ap.add_argument("--baseline", action="store_true")
    ap.add_argument("--options", default="{}")
    ap.add_argument("--entry", default="{}")
    args = ap.parse_args(argv)
    result = _child(args.runtime, None if args.baseline else args.path, json.loads(args.options),
                    json.loads(args.entry))
    print(json.dumps(result))
    if "error" in result:
        print(result["error"], file=sys.stderr)
        return 3
    return 0


if __name__ == "__main__":
    sys.exit(main())
