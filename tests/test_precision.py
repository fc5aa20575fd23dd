"""--precision: names, the per-component parser, the (target, delegate) support table, one-line errors."""

from __future__ import annotations

import pytest

from .conftest import run_cli
from mi2v_export import precision as P
from mi2v_export.errors import BadInputError
from mi2v_export.exporters.orchestrate import ExportRequest, prepare


def error_line(proc) -> str:
    lines = [ln for ln in proc.stderr.splitlines() if ln.startswith("error:")]
    assert len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr[-2000:]
    return lines[0]


def test_names_are_the_contract():
    assert [p.value for p in P.Precision] == ["fp32", "fp16", "w8a8", "w8", "w4", "w8a16", "mixed"]
    assert P.Precision.FP16.float_dtype == "fp16" and P.Precision.W8A8.float_dtype == "fp32"
    assert P.Precision.W8A8.quantized and not P.Precision.FP16.quantized


def test_parse_one_and_per_component():
    assert P.parse("W8A8") is P.Precision.W8A8
    assert P.parse("denoiser=w8a8, decoder=fp16") == {"denoiser": P.Precision.W8A8, "decoder": P.Precision.FP16}
    assert P.parse(None) is None


@pytest.mark.parametrize("text,match", [
    ("int3", "unknown precision 'int3'; choose one of: fp32, fp16, w8a8, w8, w4, w8a16"),
    ("vae=fp16", "expected COMPONENT=PRECISION pairs"),
    ("denoiser=fp16,denoiser=fp32", "denoiser is named twice"),
    ("mixed", "pass --recipe FILE"),
])
def test_parse_errors(text, match):
    with pytest.raises(BadInputError, match=match):
        P.parse(text)


def test_resolve_defaults_alias_and_components():
    comps = ["encoder", "denoiser", "decoder"]
    got = P.resolve("denoiser=fp16", None, comps, "onnx", None, "fp32")
    assert got == {"encoder": P.Precision.FP32, "denoiser": P.Precision.FP16, "decoder": P.Precision.FP32}
    assert set(P.resolve(None, "fp16", comps, "onnx", None, "fp32").values()) == {P.Precision.FP16}
    assert set(P.resolve(None, None, comps, "coreml", None, "fp16").values()) == {P.Precision.FP16}
    with pytest.raises(BadInputError, match="disagree"):
        P.resolve("fp32", "fp16", comps, "onnx", None, "fp32")
    with pytest.raises(BadInputError, match="does not include"):
        P.resolve("decoder=fp16", None, ["denoiser"], "onnx", None, "fp32")


def test_unsupported_cell_is_one_line_naming_what_is_supported(tmp_path):
    with pytest.raises(BadInputError) as info:
        prepare(ExportRequest(target="executorch", delegate="qnn", out_dir=tmp_path / "o", preset="tiny",
                              precision="fp32"))
    text = str(info.value)
    assert "\n" not in text and "--delegate qnn does not support --precision fp32" in text and "fp16" in text
    assert not (tmp_path / "o").exists()


def test_cli_precision_errors_exit_2(tmp_path):
    proc = run_cli("export", "--target", "onnx", "--preset", "tiny", "--precision", "int3", "--out", tmp_path / "o")
    assert proc.returncode == 2 and "unknown precision 'int3'" in error_line(proc)
    proc = run_cli("export", "--target", "onnx", "--preset", "tiny", "--calibration", tmp_path / "none",
                   "--precision", "fp16", "--out", tmp_path / "o")
    assert proc.returncode == 2 and "--calibration" in error_line(proc)
    assert not (tmp_path / "o").exists()
