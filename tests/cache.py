"""Artifacts the tests build once and share: kept in pytest's cache folder under a key of everything they depend on.

Why: a tiny export takes 5-25 s on 2 cores and several test files need the same one (the tiny ONNX folder, the
tiled decoder), so `make test` would export it once per file. The key covers the package's and the exporters'
sources, the versions of the export and runtime stack, and what the caller adds (its arguments, its builder's
source), so a change to any of them builds again; `pytest --cache-clear` drops them all. A lock per entry lets the
test workers wait for one build instead of racing. Callers must not change a cached folder: `exported` hands out a
copy.
"""

from __future__ import annotations

import fcntl
import functools
import hashlib
import inspect
import os
import shutil
import subprocess
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Callable

REPO = Path(__file__).resolve().parents[1]
LIBRARIES = ("torch", "executorch", "onnx", "onnxscript", "onnxsim", "onnxruntime", "onnxruntime-qnn", "diffusers",
             "numpy")


@functools.cache
def _sources_hash() -> bytes:
    """The package's and the exporters' sources and the library versions: read once per test process."""
    h = hashlib.sha256()
    for path in sorted([*(REPO / "exporters").rglob("*.py"), *(REPO / "mi2v_export").rglob("*.py")]):
        h.update(path.relative_to(REPO).as_posix().encode() + b"\0" + path.read_bytes())
    for dist in LIBRARIES:
        try:
            h.update(f"{dist}={version(dist)};".encode())
        except PackageNotFoundError:
            h.update(f"{dist}=-;".encode())
    return h.digest()


def sources_key(*extra: str) -> str:
    """A short hash of the sources and library versions an export depends on, and of `extra`."""
    h = hashlib.sha256(_sources_hash())
    for text in extra:
        h.update(b"\0" + text.encode())
    return h.hexdigest()[:12]


def _source_of(build: Callable) -> str:
    """The builder's own code, so that changing what a fixture exports builds again (empty when not found)."""
    try:
        return inspect.getsource(build)
    except (OSError, TypeError):
        return ""


def cached(config, name: str, build: Callable[[Path], None], *extra: str) -> Path:
    """The folder `build(folder)` writes, built once per key into pytest's cache (`config`: pytest's config)."""
    root = Path(config.cache.mkdir("mi2v-artifacts"))
    folder = root / f"{name}-{sources_key(_source_of(build), *extra)}"
    with open(root / f".{folder.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (folder / ".complete").is_file():
            tmp = root / f".{folder.name}-{os.getpid()}"
            shutil.rmtree(tmp, ignore_errors=True)
            build(tmp)
            (tmp / ".complete").write_text("ok\n")
            shutil.rmtree(folder, ignore_errors=True)
            os.replace(tmp, folder)
    return folder


def export_cli(exe: Path, args: tuple[str, ...], env: dict[str, str]) -> Callable[[Path], None]:
    """A builder running `mi2v export *args --out <folder>` that keeps its stdout beside the artifacts (`.stdout`),
    for the tests that check what the command printed."""
    def build(out: Path) -> None:
        proc = subprocess.run([str(exe), "export", *args, "--out", str(out)], capture_output=True, text=True,
                              timeout=1800, env=env, cwd=REPO)
        assert proc.returncode == 0, proc.stderr[-3000:]
        (out / ".stdout").write_text(proc.stdout)
    return build


def copy_export(folder: Path, dst: Path) -> tuple[Path, str]:
    """A private copy of a cached export at `dst` and what its command printed on stdout."""
    shutil.copytree(folder, dst, ignore=shutil.ignore_patterns(".complete", ".stdout"))
    return dst, (folder / ".stdout").read_text()
