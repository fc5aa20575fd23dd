"""One pipeline stage in a process of its own (`mi2v bench --pipeline --stage-processes`, devices/host.py): load the
component's artifact, run it once on the inputs of an .npz file, write the outputs to another and print what it
measured as one JSON line: {"load_ms", "run_ms", "peak_rss_kb"}. A fresh process per call is how an app that keeps
no model between stages pays for them: every load, first run and weight packing, each with its own peak memory.

    python -m mi2v_export.devices.stage_child FOLDER COMPONENT FILE INPUTS.npz OUTPUTS.npz [THREADS]
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import numpy as np

from .. import runtimes
from ..manifest import read_manifest
from ..runtimes import memory
from ..runtimes.sessions import open_session


def main(argv: list[str]) -> int:
    folder, component, file, inputs, outputs = argv[:5]
    threads = int(argv[5]) if len(argv) > 5 else None
    manifest = read_manifest(Path(folder))
    entry = next(e for e in manifest.components if e.component == component and e.file == file)
    # the parent checked the files against the manifest (mi2v_export/integrity.py) before the first clip
    runtime = runtimes.runnable(entry)
    with np.load(inputs) as data:
        feeds = {name: data[name] for name in data.files}
    t0 = time.perf_counter()
    with open_session(runtime, manifest.path_of(entry), entry, threads=threads, low_memory=True) as session:
        load_ms = (time.perf_counter() - t0) * 1000
        t0 = time.perf_counter()
        result = session.run({name: feeds[name] for name in session.input_names})
        run_ms = (time.perf_counter() - t0) * 1000
    np.savez(outputs, **result)
    print(json.dumps({"load_ms": load_ms, "run_ms": run_ms, "peak_rss_kb": memory.peak_rss_kb()}))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
