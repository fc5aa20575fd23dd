"""Fixtures the end-to-end files share."""

from __future__ import annotations

from pathlib import Path

import pytest

from mi2v_export.exporters.orchestrate import ExportRequest, run_export
from tests import cache


def _tiny_tiled(out: Path) -> None:
    for target, delegate in (("onnx", None), ("executorch", "xnnpack")):
        run_export(ExportRequest(target=target, delegate=delegate, out_dir=out, preset="tiny", components="all",
                                 tile="64x64"))


@pytest.fixture(scope="session")
def tiny_tiled(request) -> Path:
    """The real tiny preset, every component, fp32, for onnxruntime and ExecuTorch XNNPACK, the encoder and decoder
    tiled 64x64 (4 stages each), exported by the project's exporters with seeded weights. Built once for every
    test worker and kept in pytest's cache, keyed by the sources and library versions (tests/cache.py)."""
    return cache.cached(request.config, "tiny-tiled", _tiny_tiled)
