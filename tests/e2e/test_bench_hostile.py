"""`mi2v bench` with hostile folders and unwritable outputs (issue 22): one integrity policy, manifest names that
cannot leave the artifacts folder or the phone's staging folder, destinations checked before any timing, a report
kept when it cannot be written, one line and no report when no device answers, report paths read back contained.

Everything runs through the installed `mi2v` (tests/conftest.py `run_cli`), the real adb client and server with
the simulated phone, and real files; read-only and full destinations are real tmpfs mounts (the tests run as root,
where permission bits stop nothing), skipped where mounting is not allowed.
"""

from __future__ import annotations

import hashlib
import inspect
import json
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

from mi2v_export.devices.bench import BenchOptions, run_bench
from mi2v_export.devices.report import BenchReport, ComponentResult, RunResult, validate
from mi2v_export.errors import BadInputError

from tests.conftest import private_adb, run_cli
from tests import cache
from .test_bench import _adb_args, _one_error_line, _standin_specs, derive, export_artifacts

FAST = ["--iterations", "2", "--warmup", "0", "--cooldown", "0"]


@pytest.fixture(scope="session")
def standin(request) -> Path:
    """The stand-in artifacts of tests/test_bench.py (same sources, so the same folder in pytest's cache)."""
    sources = [inspect.getsource(_standin_specs), inspect.getsource(export_artifacts)]
    return cache.cached(request.config, "standin", lambda out: export_artifacts(_standin_specs(), out), *sources)


def _no_traceback(proc) -> None:
    assert "Traceback" not in proc.stderr and "Traceback" not in proc.stdout, proc.stderr


def _tree(root: Path) -> dict[str, bytes]:
    """Every file under `root` with its content (a phone's storage, a folder), to see what a run changed."""
    return {str(p.relative_to(root)): p.read_bytes() for p in root.rglob("*") if p.is_file() and not p.is_symlink()}


@pytest.fixture
def mount(tmp_path):
    """mount(name, *options) → a fresh tmpfs at tmp_path/name (read-only with "ro", small with "size=…");
    unmounted at the end. Skips the test where this process may not mount."""
    made = []

    def make(name: str, *options: str) -> Path:
        where = tmp_path / name
        where.mkdir()
        opts = ",".join(options) or "size=1m"
        proc = subprocess.run(["mount", "-t", "tmpfs", "-o", opts, "mi2v-test", str(where)], capture_output=True,
                              text=True)
        if proc.returncode != 0:
            pytest.skip(f"cannot mount a tmpfs here: {proc.stderr.strip()}")
        made.append(where)
        return where

    yield make
    for where in reversed(made):
        subprocess.run(["umount", str(where)], capture_output=True)


def _full_tmpfs(mount) -> Path:
    """A tmpfs of 64 KiB with no room left: new (empty) files can still be made, their contents cannot."""
    where = mount("full", "size=64k")
    with open(where / "filler", "wb") as fh:
        try:
            fh.write(b"\0" * (1 << 20))
        except OSError:
            pass
    return where


# ---- 1. one integrity policy -------------------------------------------------------------------------------------


def _grow_external_data(folder: Path, name: str) -> int:
    """Append bytes to an ONNX external-data file: the model reads its tensors by offset, so it runs the same,
    but the file no longer matches its manifest size and sha256. Returns the new size."""
    with open(folder / name, "ab") as fh:
        fh.write(b"\0" * 64)
    return (folder / name).stat().st_size


def test_a_modified_file_is_refused_unless_allow_modified_which_records_it(standin, tmp_path):
    folder = derive(standin, tmp_path / "art", keep=lambda e: e.target == "onnx")
    expected = (folder / "denoiser.onnx.data").stat().st_size
    size = _grow_external_data(folder, "denoiser.onnx.data")
    out = tmp_path / "refused.json"
    proc = run_cli("bench", "--artifacts", folder, "--runtime", "onnxruntime", *FAST, "--report", out)
    _no_traceback(proc)
    line = _one_error_line(proc)
    assert proc.returncode == 2 and "denoiser.onnx.data" in line and "--allow-modified" in line
    rep = json.loads(out.read_text())
    assert {c["component"]: c["status"] for c in rep["components"]}["denoiser"] == "failed"
    assert "modified_files" not in rep

    out = tmp_path / "allowed.json"
    proc = run_cli("bench", "--artifacts", folder, "--runtime", "onnxruntime", *FAST, "--report", out,
                   "--allow-modified")
    assert proc.returncode == 0, proc.stderr
    assert "warning:" in proc.stderr and "denoiser.onnx.data" in proc.stderr and "--allow-modified" in proc.stderr
    rep = json.loads(out.read_text())
    validate(rep)
    assert all(c["status"] == "ok" for c in rep["components"])
    [changed] = rep["modified_files"]
    assert changed["component"] == "denoiser" and changed["file"] == "denoiser.onnx.data"
    assert changed["bytes"] == size and changed["expected_bytes"] == expected
    assert changed["sha256"] == hashlib.sha256((folder / "denoiser.onnx.data").read_bytes()).hexdigest()
    assert changed["sha256"] != changed["expected_sha256"]
    assert any("denoiser.onnx.data differs from manifest.json" in w for w in rep["warnings"])
    assert BenchReport.load(out).modified_files == [changed]


def test_allow_modified_on_the_phone_pushes_the_files_as_they_are(adb, phone, standin, tmp_path):
    folder = derive(standin, tmp_path / "art", keep=lambda e: e.target == "onnx" and e.component == "encoder")
    _grow_external_data(folder, "encoder.onnx.data")
    out = tmp_path / "phone.json"
    proc = run_cli("bench", "--artifacts", folder, "--device", f"adb:{phone.serial}", *_adb_args(adb), *FAST,
                   "--report", out, "--allow-modified", env=adb.env)
    assert proc.returncode == 0, proc.stderr
    rep = json.loads(out.read_text())
    assert [m["file"] for m in rep["modified_files"]] == ["encoder.onnx.data"]
    staged = phone.root / rep["staging"]["remote_dir"].lstrip("/") / "encoder.onnx.data"
    assert staged.read_bytes() == (folder / "encoder.onnx.data").read_bytes()


# ---- 2. manifest names cannot leave the artifacts folder or the phone's staging folder -------------------------


def _craft(standin: Path, folder: Path, file: str, payload: Path) -> Path:
    """The encoder's .pte under a crafted manifest name, with the payload's sha256 and size (as an attacker
    would write them)."""
    derive(standin, folder, keep=lambda e: e.target == "executorch" and e.component == "encoder")
    shutil.copyfile(standin / "encoder.pte", payload)
    raw = json.loads((folder / "manifest.json").read_text())
    entry = raw["components"][0]
    entry.update(file=file, sha256=hashlib.sha256(payload.read_bytes()).hexdigest(), bytes=payload.stat().st_size)
    (folder / "manifest.json").write_text(json.dumps(raw))
    return folder


@pytest.mark.parametrize("name", ["../payload.pte", "../../../../../../payload.pte", "/PAYLOAD",
                                  "sub/../../payload.pte"])
def test_a_crafted_manifest_cannot_push_outside_the_remote_folder(adb, phone, standin, tmp_path, name):
    payload = tmp_path / "payload.pte"
    folder = _craft(standin, tmp_path / "art", name.replace("PAYLOAD", str(payload).lstrip("/")), payload)
    before = _tree(phone.root)
    out = tmp_path / "r.json"
    proc = run_cli("bench", "--artifacts", folder, "--device", f"adb:{phone.serial}", *_adb_args(adb), *FAST,
                   "--report", out, env=adb.env)
    _no_traceback(proc)
    line = _one_error_line(proc)
    assert proc.returncode == 2 and "manifest.json" in line and "not a relative path inside" in line, line
    assert _tree(phone.root) == before  # refused at the manifest read: the phone was not even asked
    assert not out.exists()


def test_a_symlink_out_of_the_folder_is_refused_before_the_phone(adb, phone, standin, tmp_path):
    payload = tmp_path / "outside.pte"
    folder = _craft(standin, tmp_path / "art", "encoder.pte", payload)
    (folder / "encoder.pte").unlink()
    (folder / "encoder.pte").symlink_to(payload)
    before = _tree(phone.root)
    proc = run_cli("bench", "--artifacts", folder, "--device", f"adb:{phone.serial}", *_adb_args(adb), *FAST,
                   "--report", tmp_path / "r.json", env=adb.env)
    _no_traceback(proc)
    line = _one_error_line(proc)
    assert proc.returncode == 2 and "leads outside" in line and "encoder.pte" in line
    assert _tree(phone.root) == before and not (tmp_path / "r.json").exists()


def test_a_name_the_phone_shell_would_read_is_not_pushed(adb, phone, standin, tmp_path):
    # a relative name inside the folder (the schema allows it) that is no plain file name: `;` and a space
    name = "enc oder;touch pwned.pte"
    folder = _craft(standin, tmp_path / "art", name, tmp_path / "art-payload.pte")
    shutil.copyfile(standin / "encoder.pte", folder / name)
    out = tmp_path / "r.json"
    proc = run_cli("bench", "--artifacts", folder, "--device", f"adb:{phone.serial}", *_adb_args(adb), *FAST,
                   "--report", out, env=adb.env)
    _no_traceback(proc)
    line = _one_error_line(proc)
    assert proc.returncode == 2 and "is not a plain file or folder name" in line
    assert not [p for p in phone.root.rglob("*") if "pwned" in p.name or "oder;" in p.name]
    rep = json.loads(out.read_text())  # the phone answered: the report says what happened
    assert rep["components"][0]["status"] == "failed" and rep["staging"] == {}


# ---- 3. destinations checked before any timing; a report that cannot be written is kept --------------------------


def _bench_host(standin: Path, *extra, cwd: Path | None = None):
    args = ["bench", "--artifacts", standin, "--runtime", "onnxruntime", "--component", "encoder", *FAST, *extra]
    return run_cli(*args, **({"cwd": cwd} if cwd else {}))


def _refused_before_timing(proc, *words: str) -> str:
    _no_traceback(proc)
    line = _one_error_line(proc)
    assert proc.returncode == 2, proc.stderr
    assert all(w in line for w in words), line
    assert "timed iterations" not in proc.stderr and not proc.stdout  # nothing was run or printed
    return line


def test_report_and_plot_destinations_are_checked_before_timing(standin, tmp_path, mount):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    _refused_before_timing(_bench_host(standin, "--report", blocker / "r.json"), "--report", "is a file")
    _refused_before_timing(_bench_host(standin, "--plot", blocker / "sub" / "p.png"), "--plot", "is a file")
    _refused_before_timing(_bench_host(standin, "--report", tmp_path), "--report", "is a folder")
    ro = mount("ro", "ro", "size=1m")
    _refused_before_timing(_bench_host(standin, "--report", ro / "r.json"), "--report", "read-only file system")
    _refused_before_timing(_bench_host(standin, "--report", tmp_path / "r.json", "--plot", ro / "p.png"),
                           "--plot", "read-only file system")
    assert not (tmp_path / "r.json").exists()
    # the default report folder (mi2v-bench/ in the working folder) is checked too
    _refused_before_timing(_bench_host(standin, cwd=ro), "--report", "read-only file system")
    full = _full_tmpfs(mount)
    _refused_before_timing(_bench_host(standin, "--report", full / "r.json"), "--report", "MiB free")
    assert sorted(p.name for p in full.iterdir()) == ["filler"] and os.listdir(ro) == []


def test_a_report_that_cannot_be_written_is_kept_and_named(standin, tmp_path, mount, monkeypatch):
    # the disk filled up during the run (after the CLI's check): the measurements go to the temporary folder
    keep = tmp_path / "tmp"
    keep.mkdir()
    monkeypatch.setenv("TMPDIR", str(keep))
    monkeypatch.setattr(tempfile, "tempdir", None)  # read TMPDIR again
    full = _full_tmpfs(mount)
    opts = BenchOptions(artifacts=standin, runtime="onnxruntime", iterations=2, warmup=0, components=("encoder",),
                        json_path=full / "r.json")
    with pytest.raises(BadInputError) as err:
        run_bench(opts)
    message = str(err.value)
    assert f"cannot write the bench report {full / 'r.json'}" in message and "it was kept at" in message
    [kept] = keep.glob("mi2v-*-r.json")
    assert str(kept) in message and "\n" not in message
    assert BenchReport.load(kept).component("encoder").status == "ok"
    assert sorted(p.name for p in full.iterdir()) == ["filler"]  # no partial file left there


# ---- 4. no device listening: one line, no table, no report -------------------------------------------------------


def test_no_device_listening_is_one_line_and_no_report(standin, tmp_path):
    server = private_adb(tmp_path / "home")
    try:
        work = tmp_path / "work"
        work.mkdir()
        out = work / "r.json"
        for extra in (["--report", out], []):  # an explicit report, and the default mi2v-bench/ folder
            proc = run_cli("bench", "--artifacts", standin, "--device", "adb:127.0.0.1:1", *_adb_args(server),
                           *extra, env=server.env, cwd=work)
            _no_traceback(proc)
            assert proc.returncode == 5, proc.stderr
            line = _one_error_line(proc)
            assert "127.0.0.1:1" in line and "check that the device" in line and "report" not in line
            assert proc.stdout == ""  # no empty device table
            assert proc.stderr.splitlines() == [line]  # said once, no "not run" line per component
            assert os.listdir(work) == []  # no empty report, no mi2v-bench/
    finally:
        server.kill_server()


# ---- 5. paths read back from a report stay in its folder ---------------------------------------------------------


def _report_with(tmp_path: Path, name: str, **runtime) -> Path:
    report = BenchReport(device={"transport": "host"}, frames=9)
    report.components.append(ComponentResult("encoder", runtime={"name": "executorch", **runtime},
                                             runs=[RunResult(samples_ms=[1.0, 2.0])]))
    return report.save(tmp_path / name)


@pytest.mark.parametrize("value", ["../../etc/passwd", "/etc/passwd", "r.files/../../x.etdump"])
def test_report_paths_that_leave_its_folder_are_refused(tmp_path, value):
    good = _report_with(tmp_path, "good.json", etdump="good.files/encoder.etdump")
    assert run_cli("bench", "compare", good, good).returncode == 0
    bad = _report_with(tmp_path, "bad.json", failure_log=value)
    proc = run_cli("bench", "compare", good, bad)
    _no_traceback(proc)
    line = _one_error_line(proc)
    assert proc.returncode == 2 and "failure_log" in line and "bad.json" in line


def test_a_report_path_through_a_symlink_out_is_refused(tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    reports = tmp_path / "reports"
    reports.mkdir()
    (reports / "r.files").symlink_to(outside)
    bad = _report_with(reports, "r.json", etdump="r.files/encoder.etdump")
    proc = run_cli("bench", "compare", bad, bad)
    _no_traceback(proc)
    line = _one_error_line(proc)
    assert proc.returncode == 2 and "leads outside" in line and "etdump" in line
