"""The apps' Android-free Kotlin compiled with a real kotlinc and run on the JVM, with raw files the host wrote as
its oracle: the helpers test_app_tile_loop.py and test_app_pipeline_loop.py share."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[2]
SRC = REPO / "apps" / "android" / "app" / "src"
MAIN = SRC / "main" / "kotlin" / "org" / "mi2v" / "bench"
TEST = SRC / "test" / "kotlin" / "org" / "mi2v" / "bench"


def require_kotlin() -> str:
    """kotlinc's path; skips the test when kotlinc or java is missing."""
    kotlinc = shutil.which("kotlinc")
    if kotlinc is None or shutil.which("java") is None:
        pytest.skip("kotlinc/java not installed (Debian: apt-get install kotlin)")
    return kotlinc


def compile_kotlin(kotlinc: str, sources: list[Path], out: Path) -> str:
    """`sources` → classes in `out`; the class path (with the Kotlin standard library) to run them."""
    proc = subprocess.run([kotlinc, *map(str, sources), "-d", str(out)], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    stdlib = next((str(p) for p in (Path(kotlinc).resolve().parents[1] / "lib" / "kotlin-stdlib.jar",
                                    Path("/usr/share/java/kotlin-stdlib.jar")) if p.is_file()), None)
    assert stdlib, "kotlin-stdlib.jar not found next to kotlinc"
    return os.pathsep.join([str(out), stdlib])


def run_java(cp: str, main: str, args: list, timeout: int = 300) -> subprocess.CompletedProcess:
    return subprocess.run(["java", "-cp", cp, main, *map(str, args)], capture_output=True, text=True,
                          timeout=timeout)


def write_raw(folder: Path, name: str, array: np.ndarray) -> dict:
    """A float32 (little-endian) or uint8 array as a raw file in `folder`; its {file, shape} for a case.json."""
    assert array.dtype in (np.float32, np.uint8), (name, array.dtype)
    dtype = "<f4" if array.dtype == np.float32 else "u1"
    (folder / name).write_bytes(np.ascontiguousarray(array, dtype=dtype).tobytes())
    return {"file": name, "shape": list(array.shape)}
