"""The bench's output check: what an artifact computed on the benchmarked runtime, compared with its test vectors.

One function, `output_check`, turns the outputs a runner produced for the stored input sets into the report's
per-component `output_check: {psnr_db, rel_l2, passed, …}`; `host_outputs` produces those outputs in this process
(the host bench, and the host stand-ins the simulated phone runs) through `mi2v verify`'s runtime registry, so the
bench and `mi2v verify` compare the same way, with the same gate.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from .. import parity, testvectors
from ..verify import RUNTIMES, gate_of

# the bench's runtime name → mi2v verify's runtime name for an artifact of that delegate
_VERIFY_RUNTIME = {"onnxruntime": lambda e: "onnxruntime",
                   "executorch": lambda e: f"executorch-{e.delegate or 'portable'}"}


def output_check(entry: Any, sets: list[testvectors.VectorSet], outputs: list[dict[str, np.ndarray]],
                 runtime: str) -> dict:
    """{psnr_db, rel_l2, max_abs, passed, sets, gate, runtime} of `outputs` (one dict per set) against the stored
    expected outputs, with the artifact's gate (the one `mi2v verify` uses)."""
    gate = gate_of(entry)
    expected = [a for s in sets for a in s.outputs.values()]
    got = [np.asarray(o[name]) for o, s in zip(outputs, sets) for name in s.outputs]
    if len(outputs) != len(sets):
        raise ValueError(f"{len(outputs)} output sets for {len(sets)} stored input sets")
    metrics = parity.compare(got, expected)
    record = {k: v for k, v in metrics.to_dict().items() if k != "finite"}
    record.update(passed=gate.passes(metrics), finite=metrics.finite, sets=len(sets), gate=gate.describe(),
                  runtime=runtime)
    return record


def host_outputs(folder: Path, entry: Any, bench_runtime: str) -> tuple[list[testvectors.VectorSet], list[dict], str]:
    """Run the artifact's stored input sets on this host's runtime for it: (sets, outputs, runtime name)."""
    sets = testvectors.read(folder, entry)
    if not sets:
        raise LookupError(f"{entry.file} has no test vectors (exported with --no-test-vectors); re-export it")
    name = _VERIFY_RUNTIME[bench_runtime](entry)
    runtime = next(r for r in RUNTIMES if r.name == name)
    why = runtime.available()
    if why:
        raise LookupError(f"cannot check the outputs of {entry.file} here: {why}")
    return sets, runtime.run(folder / entry.file, entry, [s.inputs for s in sets]), name
