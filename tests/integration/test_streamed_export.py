"""Streamed VAE exports (issue 24: `mi2v export --stream-rows PX`, and what `--memory-budget` picks for a stage too
large to run whole) at the tiny preset: every step's band model, run band by band, gives the whole-frame output on
onnxruntime and on ExecuTorch XNNPACK; the record says so in a format older readers refuse; bad flags are one line."""

from __future__ import annotations

import json

import pytest

from mi2v_export.runtimes.sessions import STREAMED_FORMAT, stream_groups
from tests.conftest import run_cli

TINY = ["--preset", "tiny"]


STREAMED = ("--component", "encoder,decoder", "--stream-rows", "32", "--json")


@pytest.mark.parametrize("target", [
    ["--target", "onnx"], pytest.param(["--target", "executorch", "--delegate", "xnnpack"], marks=pytest.mark.slow)])
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


@pytest.mark.parametrize("fmt, says", [(STREAMED_FORMAT + 1, f"format {STREAMED_FORMAT + 1} is not supported"),
                                        (1, "streams stages but says format 1")])
def test_a_streamed_record_of_another_format_is_refused_naming_it(fmt, says, tmp_path, exported):
    older, _ = exported(tmp_path / "older", "--target", "onnx", *TINY, *STREAMED)
    data = json.loads((older / "manifest.json").read_text())
    data["components"][0]["tiling"]["format"] = fmt
    (older / "manifest.json").write_text(json.dumps(data))
    proc = run_cli("verify", older, "--no-record", "--allow-modified")
    assert proc.returncode != 0 and says in proc.stderr, proc.stderr


@pytest.mark.parametrize("flags, says", [
    (["--stream-rows", "48"], "positive multiple of 32"),
    (["--stream-rows", "0"], "positive multiple of 32"),
    (["--stream-rows", "160"], "more than the frame's 128 rows"),
    (["--stream-rows", "32", "--tile", "64x64"], "--tile and --stream-rows cannot be combined"),
    (["--stream-rows", "32", "--memory-budget", "100"], "--memory-budget and --stream-rows cannot be combined"),
    (["--stream-rows", "32", "--halo", "32"], "streamed bands are exact"),
])
def test_bad_stream_flags_are_one_line_and_write_nothing(flags, says, tmp_path):
    out = tmp_path / "out"
    proc = run_cli("export", "--target", "onnx", *TINY, "--component", "decoder", *flags, "--out", out)
    errors = [ln for ln in proc.stderr.splitlines() if ln.startswith("error: ")]
    assert proc.returncode == 2 and len(errors) == 1 and says in errors[0], proc.stderr
    assert "Traceback" not in proc.stderr and not out.exists()
