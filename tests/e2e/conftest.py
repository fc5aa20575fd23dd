"""Fixtures the end-to-end files share."""

from __future__ import annotations

import fcntl
import hashlib
import os
import shutil
from importlib.metadata import version
from pathlib import Path

import pytest

from tests.conftest import REPO


def _sources_key() -> str:
    """What the exported artifacts depend on: the exporters' and the package's sources and the library versions."""
    h = hashlib.sha256()
    for path in sorted([*(REPO / "exporters").rglob("*.py"), *(REPO / "mi2v_export").rglob("*.py")]):
        h.update(path.relative_to(REPO).as_posix().encode() + b"\0" + path.read_bytes())
    for dist in ("torch", "executorch", "onnx", "onnxscript", "onnxruntime"):
        h.update(f"{dist}={version(dist)};".encode())
    return h.hexdigest()[:12]


@pytest.fixture(scope="session")
def tiny_tiled(request) -> Path:
    """The real tiny preset, every component, fp32, for onnxruntime and ExecuTorch XNNPACK, the encoder and decoder
    tiled 64x64 (4 stages each), exported by the project's exporters with seeded weights. Built once for every
    test worker (a lock in pytest's cache folder) and kept there, keyed by the sources and library versions."""
    from mi2v_export.exporters.orchestrate import ExportRequest, run_export

    root = Path(request.config.cache.mkdir("mi2v-e2e-artifacts"))
    folder = root / f"tiny-tiled-{_sources_key()}"
    with open(root / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (folder / "manifest.json").is_file():
            tmp = root / f".tiny-tiled-{os.getpid()}"
            shutil.rmtree(tmp, ignore_errors=True)
            for target, delegate in (("onnx", None), ("executorch", "xnnpack")):
                run_export(ExportRequest(target=target, delegate=delegate, out_dir=tmp, preset="tiny",
                                         components="all", tile="64x64"))
            os.replace(tmp, folder)
    return folder
