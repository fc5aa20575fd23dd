"""The bench's output check: what an artifact computed where it was timed, compared with its test vectors.

`check_outputs` (called by the bench loop after each component ran) asks the device for the artifact's outputs on
the stored test-vector inputs (`BenchDevice.outputs`: in this process on the host, through the native runner's
`--inputs` / `--output_file` on a phone, simulated or real) and records the report's per-component
`output_check: {psnr_db, rel_l2, max_abs, passed, finite, sets, gate, runtime}` — or `{passed: null, reason}` when
the device cannot return outputs. A failed check raises VerificationError: the component is failed, the run exits
non-zero and names it, the report is still written. The comparison and the gate are `mi2v verify`'s; on the host
the outputs come from the runtime mi2v_export.runtimes picks for the entry (the one `mi2v verify` runs).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from .. import parity, runtimes, testvectors
from ..errors import BadInputError, VerificationError
from ..runtimes import dtypes
from ..runtimes.sessions import run_sets
from ..verify import gate_of


def check_outputs(device: Any, folder: Path, sel: Any, comp: Any) -> None:
    """Set `comp.output_check`; VerificationError (naming the component) when the outputs miss the gate. A check
    the device made itself (the Android app and the iOS XCTest compare on the phone) is kept and gated here."""
    if comp.output_check is not None:
        _raise_if_failed(comp.output_check)
        return
    sets = testvectors.read(folder, sel.entry)
    if not sets:
        comp.output_check = {"passed": None, "reason": "no test vectors (exported with --no-test-vectors)"}
        return
    got = device.outputs(sel, sets)
    if isinstance(got, str):
        comp.output_check = {"passed": None, "reason": got}
        return
    outputs, runtime = got
    comp.output_check = check = output_check(sel.entry, sets, outputs, runtime)
    _raise_if_failed(check)


def _raise_if_failed(check: dict) -> None:
    """VerificationError when a check ran and missed its gate (`passed: false`); null (not checked) passes."""
    if check.get("passed") is False:
        raise VerificationError(f"output check failed on {check.get('runtime', 'the device')}: {check.get('gate')} "
                                f"not met (PSNR {check.get('psnr_db')} dB, rel_l2 {check.get('rel_l2')}) against "
                                "the stored PyTorch outputs")


def output_check(entry: Any, sets: list[testvectors.VectorSet], outputs: list[dict[str, np.ndarray]],
                 runtime: str) -> dict:
    """{psnr_db, rel_l2, max_abs, passed, finite, sets, gate, runtime} of `outputs` (one dict per set) against the
    stored expected outputs, with the artifact's gate."""
    if len(outputs) != len(sets):
        raise VerificationError(f"{len(outputs)} output sets came back for {len(sets)} stored input sets")
    gate = gate_of(entry)
    expected = [a for s in sets for a in s.outputs.values()]
    got = [np.asarray(o[name]) for o, s in zip(outputs, sets) for name in s.outputs]
    metrics = parity.compare(got, expected)
    record = {k: v for k, v in metrics.to_dict().items() if k != "finite"}
    record.update(passed=gate.passes(metrics), finite=metrics.finite, sets=len(sets), gate=gate.describe(),
                  runtime=runtime)
    return record


def host_outputs(path: Path, entry: Any, bench_runtime: str,
                 sets: list[testvectors.VectorSet]) -> tuple[list[dict], str] | str:
    """The input sets run in this process on the runtime of the timed family (`bench_runtime`) that accepts the
    entry (mi2v_export.runtimes, as `mi2v verify` picks it) for the artifact at `path` (from `Manifest.path_of`, so
    inside the artifacts folder), or why not."""
    runtime = next((r for r in runtimes.for_entry(entry) if r.family == bench_runtime), None)
    if runtime is None:
        return f"no {bench_runtime} runtime runs {entry.file}"
    why = runtime.available()
    if why:
        return why
    return run_sets(runtime, path, entry, [s.inputs for s in sets]), runtime.name


def raw_outputs(files: list[Path], entry: Any) -> dict[str, np.ndarray]:
    """executor_runner's `--output_file` files (<base>-<i>.bin: raw bytes) as the entry's named outputs, in the
    numpy dtype of each output's manifest dtype (runtimes.dtypes; bfloat16 widened to float32, as the runtimes do)."""
    out = {}
    for path, info in zip(files, entry.outputs):
        out[info.name] = _from_raw(path.read_bytes(), info.name, info.dtype).reshape(info.shape)
    return out


def _from_raw(data: bytes, name: str, dtype: str) -> np.ndarray:
    d = dtypes.by_name(dtype)
    if d is None:
        raise BadInputError(f"manifest.json: output {name!r} has dtype {dtype!r}, which mi2v does not know")
    if d.numpy is None:  # bfloat16: the high half of a float32
        return (np.frombuffer(data, dtype=np.uint16).astype(np.uint32) << 16).view(np.float32)
    return np.frombuffer(data, dtype=np.dtype(d.numpy))
