"""Tiled artifacts (issue 24) through `mi2v bench` on the host and on the simulated phone (real adb client and
server, the phone's runners): every tile of every stage is timed, the report lists the stages, and the output
check of the phone stitches the windows the phone computed."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.conftest import run_cli


@pytest.fixture(scope="module")
def tiled(tiny_tiled) -> Path:
    """The tiny preset tiled 128x96 for ExecuTorch XNNPACK and ONNX (tests/e2e/conftest.py)."""
    return tiny_tiled


def _stages(folder: Path, component: str, suffix: str) -> list[str]:
    manifest = json.loads((folder / "manifest.json").read_text())
    entry = next(e for e in manifest["components"] if e["component"] == component and e["file"].endswith(suffix))
    return [s["file"] for s in entry["tiling"]["stages"]]


@pytest.mark.heavy  # the tiled tiny artifacts: 100 s to build (tests/e2e/conftest.py); test_tiled_export.py in make test
@pytest.mark.parametrize("where", ["host", pytest.param("phone", marks=pytest.mark.slow)])  # the phone's runners run
# tiled stages in the default run too (tests/e2e/test_pipeline_bench.py)
def test_tiled_components_are_timed_per_tile_and_checked_whole(where, tiled, adb, phone, tmp_path):
    device = "host" if where == "host" else f"adb:{phone.serial}"
    out = tmp_path / "report.json"
    proc = run_cli("bench", "--artifacts", tiled, "--device", device, "--adb", adb.path, "--adb-port",
                   str(adb.server_port), "--runtime", "executorch", "--iterations", "2", "--warmup", "1",
                   "--cooldown", "0", "--report", out, env=adb.env)
    assert proc.returncode == 0, proc.stderr
    report = json.loads(out.read_text())
    timed = [c for c in report["components"] if c["component"] in ("encoder", "decoder")]
    assert len(timed) == 2
    for comp in timed:
        stages = _stages(tiled, comp["component"], ".pte")
        run = comp["runs"][0]
        assert [t["file"] for t in run["tiles"]] == stages
        assert sum(t["tiles"] for t in run["tiles"]) > len(stages)  # some stage really runs several windows
        assert all(t["median_tile_ms"] > 0 for t in run["tiles"])
        assert len(run["samples_ms"]) == 2 and all(s > 0 for s in run["samples_ms"])
        check = comp["output_check"]
        assert check["passed"] is True and check["rel_l2"] <= 1e-4, check
        if where == "phone":
            assert check["runtime"] == "executor_runner/xnnpack"
            assert set(stages) <= set(report["staging"]["pushed"])


@pytest.mark.heavy  # the tiled tiny artifacts
def test_a_tiled_folder_with_a_stage_missing_is_refused(tiled, tmp_path):
    import shutil

    broken = tmp_path / "broken"
    shutil.copytree(tiled, broken)
    (broken / _stages(broken, "decoder", ".onnx")[-1]).unlink()
    proc = run_cli("bench", "--artifacts", broken, "--device", "host", "--runtime", "onnxruntime",
                   "--iterations", "1", "--warmup", "0")
    assert proc.returncode != 0
    assert "Traceback" not in proc.stderr and "decoder" in proc.stderr
