"""w8a8 you can rely on (issue 25): the same export command gives the same bytes twice, clears its trajectory gate
by the margin (exporters/margin.py keeps the costliest units float when the plain export does not), records that
choice in the manifest, and holds its gate on a photo the export never saw."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mi2v_export.parity import TRAJECTORY_MARGIN_DB

from tests.conftest import REPO, run_cli

HELD_OUT = REPO / "tests" / "data" / "images" / "mobilei2v_test_image.png"


def _export(out: Path, *extra: str) -> dict:
    proc = run_cli("export", "--preset", "tiny", "--component", "all", "--precision", "w8a8", "--out", out, *extra)
    assert proc.returncode == 0, proc.stderr
    return json.loads((out / "manifest.json").read_text())


def _artifact_files(folder: Path) -> list[str]:
    """Every file the export wrote but the manifest (which records times)."""
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file() and p.name != "manifest.json")


def _check(manifest: dict, folder: Path) -> None:
    for entry in manifest["components"]:
        trajectory = entry["trajectory"]
        assert entry["precision"] == "w8a8" and trajectory["gate_db"] == 30.0
        assert trajectory["psnr_db_min"] >= trajectory["gate_db"] + TRAJECTORY_MARGIN_DB
        auto = entry.get("recipe")
        if auto is not None:  # the units kept float, why, and what they cost
            assert auto["origin"] == "auto-margin" and "fp32" in auto["units"].values()
            assert auto["trajectory_db"]["after"] > auto["trajectory_db"]["before"]
            assert auto["cost"]["bytes"] == entry["bytes"] and auto["cost"]["ratio"] > 1
    out = folder / "held_out.mp4"
    proc = run_cli("generate", "--artifacts", folder, "--image", HELD_OUT, "--out", out, "--compare-to",
                   "reference", "--report", folder / "held_out.json", "--steps", "2")
    assert proc.returncode == 0, proc.stderr
    assert json.loads((folder / "held_out.json").read_text())["summary"]["min_psnr_db"] >= 30.0


W8A8_ONNX = ("--preset", "tiny", "--component", "all", "--precision", "w8a8", "--target", "onnx")


def test_onnx_w8a8_clears_its_gate_with_margin_and_holds_it_on_a_held_out_photo(exported, tmp_path):
    out, _ = exported(tmp_path / "a", *W8A8_ONNX)
    _check(json.loads((out / "manifest.json").read_text()), out)


@pytest.mark.heavy  # a second tiny all-component w8a8 export: a minute on 2 cores
def test_onnx_w8a8_is_deterministic(exported, tmp_path):
    """The same command twice gives the same bytes: the shared export (tests/cache.py) against a fresh one."""
    first, _ = exported(tmp_path / "a", *W8A8_ONNX)
    _export(tmp_path / "b", "--target", "onnx")
    files = _artifact_files(first)
    assert files and files == _artifact_files(tmp_path / "b")
    for name in files:
        assert (first / name).read_bytes() == (tmp_path / "b" / name).read_bytes(), name


@pytest.mark.slow
def test_xnnpack_w8a8_is_deterministic_and_clears_its_gate_with_margin(tmp_path):
    first, _ = (_export(tmp_path / name, "--target", "executorch", "--delegate", "xnnpack") for name in ("a", "b"))
    files = _artifact_files(tmp_path / "a")
    assert files and files == _artifact_files(tmp_path / "b")
    for name in files:
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes(), name
    _check(first, tmp_path / "a")
