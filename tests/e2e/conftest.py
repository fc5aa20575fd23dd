"""Fixtures the end-to-end files share."""

from __future__ import annotations

from pathlib import Path

import pytest

from mi2v_export.exporters.orchestrate import ExportRequest, run_export
from tests import cache


def _tiny_tiled(out: Path) -> None:
    for target, delegate in (("onnx", None), ("executorch", "xnnpack")):
        run_export(ExportRequest(target=target, delegate=delegate, out_dir=out, preset="tiny", components="all",
                                 tile="128x96", verify=False))


@pytest.fixture(scope="session")
def tiny_tiled(request) -> Path:
    """The real tiny preset, every component, fp32, for onnxruntime and ExecuTorch XNNPACK, the encoder and decoder
    tiled 128x96 (4 stages each, two or more windows in most), exported by the project's exporters with seeded
    weights, unverified (the tests here check what runs them, not the export). Built once for every
    test worker and kept in pytest's cache, keyed by the sources and library versions (tests/cache.py)."""
    return cache.cached(request.config, "tiny-tiled", _tiny_tiled)
