"""The JSON Schemas of the manifest and the bench report: what mi2v and the phone apps write passes, a malformed
file is refused in one line that names the field (also through `mi2v bench compare`)."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest

from mi2v_export import contract, schemas
from mi2v_export.devices.report import BenchReport, validate
from mi2v_export.errors import BadInputError
from mi2v_export.manifest import Manifest

pytestmark = pytest.mark.unit

REPO = Path(__file__).resolve().parents[2]
APP_REPORTS = sorted((REPO / "tests/data/app_reports").glob("*.json"))
REPORTS = [p for p in APP_REPORTS + sorted((REPO / "benchmarks/sample_reports").glob("*.json"))
           if str(json.loads(p.read_text()).get("schema", "")).startswith("mi2v.bench/")]


def _report() -> dict:
    return json.loads((REPO / "tests/data/app_reports/android_xnnpack_ok.json").read_text())


def _manifest() -> dict:
    entry = {"component": "denoiser", "model": "mobilei2v-denoiser", "target": "onnx", "delegate": None,
             "dtype": "fp32", "file": "denoiser.onnx", "sha256": "ab" * 32, "bytes": 10,
             "inputs": [{"name": n, "shape": [1], "dtype": "float32"} for n in contract.IO["denoiser"][0]],
             "outputs": [{"name": "velocity", "shape": [1], "dtype": "float32"}], "export": {}, "parity": {}}
    return {"schema": "mi2v-export-manifest", "schema_version": 1, "preset": "tiny", "resolution": [128, 192],
            "frames": 9, "latent_shape": [1, 128, 2, 4, 6], "source": {"weights": "seeded", "seed": 0},
            "components": [entry]}


def test_schema_files_are_valid_and_name_the_contract_components():
    for name in (schemas.MANIFEST, schemas.BENCH_REPORT):
        schemas._validator(name)  # check_schema: a valid draft 2020-12 schema
    report = json.loads(schemas.schema_path(schemas.BENCH_REPORT).read_text())
    manifest = json.loads(schemas.schema_path(schemas.MANIFEST).read_text())
    assert tuple(report["$defs"]["component"]["properties"]["component"]["enum"]) == contract.COMPONENTS
    assert tuple(manifest["$defs"]["entry"]["properties"]["component"]["enum"]) == contract.COMPONENTS


@pytest.mark.parametrize("path", REPORTS, ids=lambda p: p.name)
def test_reports_the_apps_and_the_tool_write_pass(path):
    data = json.loads(path.read_text())
    validate(data)
    assert BenchReport.from_dict(data).to_dict()["schema"] == "mi2v.bench/1"


def test_a_written_report_passes():
    from mi2v_export.devices.report import ComponentResult, RunResult

    report = BenchReport(device={"transport": "host"}, frames=9,
                         components=[ComponentResult("encoder", runs=[RunResult(load_ms=1.0, samples_ms=[2.0])])])
    validate(report.to_dict())


@pytest.mark.parametrize("edit,field", [
    (lambda d: d["components"][0]["runs"][0].__setitem__("samples_ms", "987"), "components[0].runs[0].samples_ms"),
    (lambda d: d["components"][0]["runs"][0]["samples_ms"].__setitem__(2, "18.4"),
     "components[0].runs[0].samples_ms[2]"),
    (lambda d: d["components"][0]["runs"][0]["samples_ms"].__setitem__(0, -1.0),
     "components[0].runs[0].samples_ms[0]"),
    (lambda d: d["components"][1].__setitem__("component", "vae"), "components[1].component"),
    (lambda d: d["components"][1].__setitem__("status", "great"), "components[1].status"),
    (lambda d: d.__setitem__("frames", "17"), "frames"),
    (lambda d: d.pop("device"), "top level"),
    (lambda d: d.__setitem__("components", {}), "components"),
    (lambda d: d["per_frame_ms"].__setitem__("2", "fast"), "per_frame_ms['2']"),
])
def test_malformed_report_is_one_line_naming_the_field(edit, field):
    _assert_refused(BenchReport.from_dict, _report(), edit, f"malformed bench report: {field}: ")


def _assert_refused(read, data: dict, edit, expected: str) -> None:
    read(copy.deepcopy(data))  # the unedited file reads
    edit(data)
    with pytest.raises(BadInputError) as exc:
        read(data)
    message = str(exc.value)
    assert "\n" not in message and expected in message, message


def test_other_schema_versions_are_named():
    data = _report()
    data["schema"] = "mi2v.bench/9"
    with pytest.raises(BadInputError, match="not supported by this mi2v"):
        validate(data)


@pytest.mark.parametrize("edit,field", [
    (lambda d: d.__setitem__("frames", "9"), "frames"),
    (lambda d: d.__setitem__("resolution", [128]), "resolution"),
    (lambda d: d["components"][0].__setitem__("bytes", "10"), "components[0].bytes"),
    (lambda d: d["components"][0].__setitem__("sha256", "xyz"), "components[0].sha256"),
    (lambda d: d["components"][0].pop("file"), "components[0]"),
    (lambda d: d["components"][0]["inputs"][0].__setitem__("shape", "1x2"), "components[0].inputs[0].shape"),
    (lambda d: d["components"][0].__setitem__("component", "vae"), "components[0].component"),
])
def test_malformed_manifest_is_one_line_naming_the_field(edit, field):
    _assert_refused(Manifest.from_dict, _manifest(), edit, f"malformed manifest: {field}: ")


def test_bench_compare_refuses_a_malformed_report(tmp_path, capsys):
    """`mi2v bench compare` with `"samples_ms": "987"`: exit 2, one line naming the file and field."""
    import sys

    from mi2v_export import cli

    good = REPO / "tests/data/app_reports/android_xnnpack_ok.json"
    data = _report()
    data["components"][0]["runs"][0]["samples_ms"] = "987"
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps(data))
    old, sys.argv = sys.argv, ["mi2v", "bench", "compare", str(good), str(bad)]
    try:
        with pytest.raises(SystemExit) as exit_info:
            cli.main()
    finally:
        sys.argv = old
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and "Traceback" not in err
    assert err.strip().splitlines() == [f"error: {bad}: malformed bench report: components[0].runs[0].samples_ms: "
                                        "'987' is not of type 'array'"]
