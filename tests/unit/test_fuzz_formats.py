"""Fuzzing the files mi2v reads back (issue 22): the manifest, the bench report, the release index and the release
plan's TOML, with documents generated from their own JSON Schemas (hypothesis-jsonschema) and then loosened —
the `pattern`s are dropped, so file fields take any string, `..` and absolute paths included — plus raw bytes.

The rule: a reader either accepts a document or refuses it with one `Mi2vError` whose message is one line. Any
other exception (a KeyError, a TypeError, a traceback) fails the test, as does a path it would open outside the
folder (every accepted file name must resolve inside it).
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis_jsonschema import from_schema

from mi2v_export.devices.report import BenchReport
from mi2v_export.errors import Mi2vError
from mi2v_export.manifest import MANIFEST_NAME, read_manifest
from mi2v_export.release.merge import RELEASE_FILE, read_release
from mi2v_export.release.plan import load_plan
from mi2v_export.safepath import is_within
from mi2v_export.schemas import schema_path

EXAMPLES = 80
FUZZ = settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
HOSTILE_NAMES = st.sampled_from(["../payload.bin", "/etc/passwd", "a/../../b", "..", ".", "", "x\\..\\y", "C:/x",
                                 "testdata/../../z", "ok.onnx", "testdata/encoder"])


def loosened(name: str) -> dict:
    """The schema without `pattern`s and identifiers: hostile strings are generated too."""
    def strip(x):
        if isinstance(x, dict):
            return {k: strip(v) for k, v in x.items() if k not in ("pattern", "$schema", "$id")}
        if isinstance(x, list):
            return [strip(v) for v in x]
        return x
    return strip(json.loads(schema_path(name).read_text()))


def refused_in_one_line(call) -> object:
    """`call()`'s result, or None when it raised a one-line Mi2vError; anything else propagates (a test failure)."""
    try:
        return call()
    except Mi2vError as exc:
        assert "\n" not in str(exc).strip(), str(exc)
        return None


def _with_hostile_files(doc, name):
    if isinstance(doc, dict):
        for entry in doc.get("components") or ():
            if isinstance(entry, dict) and "file" in entry:
                entry["file"] = name
    return doc


def _check_manifest_document(doc) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "art"
        folder.mkdir()
        (folder / MANIFEST_NAME).write_text(json.dumps(doc))
        manifest = refused_in_one_line(lambda: read_manifest(folder))
        if manifest is None:
            return
        for entry in manifest.components:
            for name in entry.files():
                path = refused_in_one_line(lambda n=name: manifest.file_path(n))
                assert path is None or is_within(path, folder), name
        refused_in_one_line(lambda: manifest.check_files())


@FUZZ
@given(doc=from_schema(loosened("manifest")), hostile=HOSTILE_NAMES, use_hostile=st.booleans())
def test_manifest_reader_accepts_or_refuses_in_one_line(doc, hostile, use_hostile):
    _check_manifest_document(_with_hostile_files(doc, hostile) if use_hostile else doc)


@FUZZ
@given(doc=st.one_of(from_schema(loosened("bench-report")), st.dictionaries(st.text(max_size=8), st.integers())))
def test_bench_report_reader_accepts_or_refuses_in_one_line(doc):
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "report.json"
        path.write_text(json.dumps(doc))
        refused_in_one_line(lambda: BenchReport.load(path))


@FUZZ
@given(raw=st.binary(max_size=400))
@pytest.mark.parametrize("kind", ["manifest", "report"])
def test_raw_bytes_are_refused_in_one_line(kind, raw):
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        if kind == "manifest":
            (folder / MANIFEST_NAME).write_bytes(raw)
            refused_in_one_line(lambda: read_manifest(folder))
        else:
            (folder / "r.json").write_bytes(raw)
            refused_in_one_line(lambda: BenchReport.load(folder / "r.json"))


def toml_value(v) -> str | None:
    """A generated JSON value as TOML (inline tables and arrays; null has no TOML form and is left out)."""
    if v is None:
        return None
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return repr(v) if v == v and abs(v) != float("inf") else ("nan" if v != v else ("inf" if v > 0 else "-inf"))
    if isinstance(v, str):
        return json.dumps(v)
    if isinstance(v, list):
        return "[" + ", ".join(t for t in map(toml_value, v) if t is not None) + "]"
    return "{" + ", ".join(f"{json.dumps(k)} = {t}" for k, x in v.items() if (t := toml_value(x)) is not None) + "}"


def toml_document(doc) -> str:
    if not isinstance(doc, dict):
        return f"value = {toml_value(doc)}\n"
    return "".join(f"{json.dumps(k)} = {t}\n" for k, v in doc.items() if (t := toml_value(v)) is not None)


@FUZZ
@given(doc=from_schema(loosened("release-plan")), hostile=HOSTILE_NAMES)
def test_plan_reader_accepts_or_refuses_in_one_line(doc, hostile):
    if isinstance(doc, dict) and doc.get("out") is not None:
        doc["out"] = hostile
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "plans" / "p.toml"
        path.parent.mkdir()
        path.write_text(toml_document(doc))
        plan = refused_in_one_line(lambda: load_plan(path))
        assert plan is None or is_within(plan.out, path.parent), plan.out


@FUZZ
@given(doc=from_schema(loosened("release")), hostile=HOSTILE_NAMES)
def test_release_index_reader_accepts_or_refuses_in_one_line(doc, hostile):
    for a in (doc.get("artifacts") or []) if isinstance(doc, dict) else []:
        if isinstance(a, dict):
            a["file"] = hostile
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / RELEASE_FILE).write_text(json.dumps(doc))
        refused_in_one_line(lambda: read_release(tmp))


@FUZZ
@given(raw=st.binary(max_size=400))
def test_raw_plan_bytes_are_refused_in_one_line(raw):
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "p.toml").write_bytes(raw)
        refused_in_one_line(lambda: load_plan(Path(tmp) / "p.toml"))
