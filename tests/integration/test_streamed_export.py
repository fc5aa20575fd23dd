"""Streamed VAE exports (issue 24: `mi2v export --stream-rows PX`, and what `--memory-budget` picks for a stage too
large to run whole) at the tiny preset: every step's band model, run band by band, gives the whole-frame output on
onnxruntime and on ExecuTorch XNNPACK; the record says so in a format older readers refuse. (Bad
--stream-rows flags are tested with the other tiling flags, tests/integration/test_tiled_export.py.)"""

from __future__ import annotations

import json

import pytest

from mi2v_export.runtimes.sessions import FORMATS, STREAMED_FORMAT, stream_groups
from tests.conftest import run_cli

TINY = ["--preset", "tiny"]


STREAMED = ("--component", "encoder,decoder", "--stream-rows", "32", "--json")


@pytest.mark.parametrize("target", [
    pytest.param(["--target", "onnx"], marks=pytest.mark.heavy),  # 40 s; tests/unit/test_streaming.py in make test
    pytest.param(["--target", "executorch", "--delegate", "xnnpack"], marks=pytest.mark.slow)])
def test_streamed_export_is_exact_and_verifies(target, tmp_path, exported):
    out, stdout = exported(tmp_path / "streamed", *target, *TINY, *STREAMED)
    for e in json.loads(stdout)["artifacts"]:
        t = e["tiling"]
        assert t["format"] == STREAMED_FORMAT and t["exact"] and t["blending"] == "none", t
        assert all("stream" in s for s in t["stages"])
        groups = stream_groups(t["stages"])
        assert len(groups) < len(t["stages"])  # steps run together, band by band
        assert any(s["plan"]["grid"][0] > 1 for s in t["stages"])  # bands, not whole frames
        assert all(s["plan"]["grid"][1] == 1 for s in t["stages"])  # full width
        assert e["parity"]["rel_l2"] <= 1e-5, (e["component"], e["parity"])  # the stitched run against PyTorch
    proc = run_cli("verify", out, "--json")
    assert proc.returncode == 0, proc.stderr


@pytest.mark.parametrize("fmt, says", [(max(FORMATS) + 1, f"format {max(FORMATS) + 1} is not supported"),
                                        (1, "streams stages but says format 1")])
def test_a_streamed_record_of_another_format_is_refused_naming_it(fmt, says, tmp_path, exported):
    older, _ = exported(tmp_path / "older", "--target", "onnx", *TINY, *STREAMED)
    data = json.loads((older / "manifest.json").read_text())
    data["components"][0]["tiling"]["format"] = fmt
    (older / "manifest.json").write_text(json.dumps(data))
    proc = run_cli("verify", older, "--no-record", "--allow-modified")
    assert proc.returncode != 0 and says in proc.stderr, proc.stderr
