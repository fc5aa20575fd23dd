"""The apps' output check: one test-vector set as raw files the Kotlin and Swift code can read without a parser.

The exported test vectors (`testvectors.py`: a BundledProgram, an .npz, ONNX .pb files) need ExecuTorch, numpy or
protobuf to read; the apps get the first set as plain bytes instead, described by the plan they already read:

    plan component "check": {"set": 0, "sets": N, "gate": {"metric", "op", "threshold"},
                              "inputs":   [{"name", "path", "shape", "dtype"}],   raw little-endian, the artifact's dtype
                              "expected": [{"name", "path", "shape", "dtype": "float32"}]}  raw little-endian float32

The app runs the artifact once on those inputs, compares each output with the expected one (PSNR = 20·log10(
max|ref| / RMSE) and rel L2 = ||y - ref|| / ||ref|| over all outputs together, parity.py's definitions) and
writes `output_check: {psnr_db, rel_l2, passed, finite, gate, runtime, sets}` in its report; the host gates on
`passed` (devices/output_check.py).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from .. import testvectors
from ..verify import gate_of

CHECK_DIR = "check"  # beside the artifacts on the phone / in the iOS payload


def read_sets(folder: Path, entry: Any) -> list[testvectors.VectorSet] | str:
    """The entry's stored test vectors, or why the app cannot check this artifact."""
    try:
        sets = testvectors.read(folder, entry)
    except Exception as exc:  # noqa: BLE001 - any reader failure (missing ExecuTorch devtools, bad file) is a reason
        return f"cannot read the test vectors on the host: {type(exc).__name__}: {exc}".splitlines()[0]
    return sets or "no test vectors (exported with --no-test-vectors)"


def write_check(component: str, entry: Any, sets: list[testvectors.VectorSet], out_dir: Path,
                device_dir: str) -> dict[str, Any]:
    """Write the first set's inputs and expected outputs as raw files into `out_dir`; returns the plan's `check`
    block with the paths the files will have under `device_dir` (the files are copied there as they are named)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    first = sets[0]

    def put(kind: str, k: int, name: str, array: np.ndarray, dtype: np.dtype) -> dict[str, Any]:
        file = f"{component}.{kind}{k}.bin"
        a = np.ascontiguousarray(array, dtype=dtype.newbyteorder("<"))
        (out_dir / file).write_bytes(a.tobytes())
        return {"name": name, "path": f"{device_dir}/{file}", "shape": list(a.shape), "dtype": dtype.name}

    inputs = [put("in", k, n, a, np.asarray(a).dtype) for k, (n, a) in enumerate(first.inputs.items())]
    expected = [put("out", k, n, a, np.dtype(np.float32)) for k, (n, a) in enumerate(first.outputs.items())]
    return {"set": 0, "sets": len(sets), "gate": gate_of(entry).to_dict(), "inputs": inputs, "expected": expected}


def read_raw(path: Path, spec: dict[str, Any]) -> np.ndarray:
    """A staged raw file back as an array (what the apps read; for tests and debugging)."""
    return np.frombuffer(Path(path).read_bytes(), dtype=np.dtype(spec["dtype"]).newbyteorder("<")).reshape(spec["shape"])
