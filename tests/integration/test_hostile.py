"""Hostile folders, huge sizes, unwritable outputs, modified artifacts and signals (issue 22), through the real CLI.

Every refusal is checked the same way: the exit code, exactly one `error:` line, no traceback, and nothing read or
written outside the intended folder. "Nothing read" is made observable with a FIFO as the outside target: a reader
that opens it blocks, so the command would hang instead of answering at once. Read-only, full and separate file
systems are real tmpfs mounts (the tests run as root, for whom permission bits do not stop a write); where mounting
is not allowed the test skips.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from mi2v_export.manifest import read_manifest

from tests.conftest import MI2V_EXE, REPO, run_cli

IMAGE = REPO / "mi2v_export" / "data" / "validation" / "chelsea.png"


def one_error(proc: subprocess.CompletedProcess, code: int = 2) -> str:
    """The single `error:` line of a refused command (asserting the exit code and that no traceback showed)."""
    assert proc.returncode == code, (proc.returncode, proc.stderr[-2000:])
    assert "Traceback" not in proc.stderr + proc.stdout, proc.stderr[-3000:]
    errors = [ln for ln in proc.stderr.splitlines() if ln.startswith("error:")]
    assert len(errors) == 1, proc.stderr[-2000:]
    return errors[0]


@contextlib.contextmanager
def tmpfs(path: Path, *options: str):
    """A real tmpfs mounted at `path` (created), unmounted afterwards; skips where mounting is not allowed."""
    path.mkdir(parents=True, exist_ok=True)
    opts = ",".join(("size=64m",) + options)
    proc = subprocess.run(["mount", "-t", "tmpfs", "-o", opts, "tmpfs", str(path)], capture_output=True, text=True)
    if proc.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {proc.stderr.strip()}")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], capture_output=True)


@pytest.fixture(scope="module")
def art(tmp_path_factory, exported):
    """Tiny ONNX encoder + denoiser + decoder with test vectors (seeded weights)."""
    return exported(tmp_path_factory.mktemp("hostile") / "art", "--target", "onnx", "--preset", "tiny", "--json")[0]


def _copy(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


def _fifo(path: Path) -> Path:
    os.mkfifo(path)
    return path


def _point_entry_at(folder: Path, component: str, key: str, value: str) -> None:
    """Rewrite one file name of the manifest (`file`, the first extra file, or the test vectors)."""
    m = json.loads((folder / "manifest.json").read_text())
    entry = next(e for e in m["components"] if e["component"] == component)
    if key == "file":
        entry["file"] = value
    elif key == "extra":
        entry["extra_files"][0]["file"] = value
    else:
        entry["test_vectors"]["file"] = value
    (folder / "manifest.json").write_text(json.dumps(m))


# ---- containment ------------------------------------------------------------------------------------------------

ESCAPES = ["dotdot", "absolute", "symlink"]


def _escape(kind: str, folder: Path, outside: Path) -> str:
    """A file name that leads to `outside` by `..`, by an absolute path, or through a symlink in the folder."""
    if kind == "dotdot":
        return os.path.relpath(outside, folder)
    if kind == "absolute":
        return str(outside)
    (folder / "innocent.onnx").symlink_to(outside)
    return "innocent.onnx"


@pytest.mark.parametrize("kind", ESCAPES)
@pytest.mark.parametrize("key", ["file", "extra", "vectors"])
def test_verify_refuses_manifest_paths_that_escape(art, tmp_path, kind, key):
    folder = _copy(art, tmp_path / "job" / "art")
    outside = _fifo(tmp_path / "payload.bin")  # opening it would block: the command must not touch it
    _point_entry_at(folder, "encoder", key, _escape(kind, folder, outside))
    before = (folder / "manifest.json").read_bytes()
    proc = run_cli("verify", folder, timeout=120)
    line = one_error(proc)
    assert "manifest.json" in line and ("outside" in line or "relative path" in line), line
    assert (folder / "manifest.json").read_bytes() == before


@pytest.mark.parametrize("kind", ESCAPES)
def test_generate_refuses_manifest_paths_that_escape(art, tmp_path, kind):
    folder = _copy(art, tmp_path / "art")
    outside = _fifo(tmp_path / "denoiser.onnx")
    _point_entry_at(folder, "denoiser", "file", _escape(kind, folder, outside))
    video = tmp_path / "out" / "v.mp4"
    proc = run_cli("generate", "--image", IMAGE, "--artifacts", folder, "--out", video, timeout=120)
    one_error(proc)
    assert not video.parent.exists()


def test_test_vector_files_that_are_symlinks_out_are_refused(art, tmp_path):
    folder = _copy(art, tmp_path / "art")
    pb = next((folder / "testdata" / "encoder").glob("test_data_set_0/input_0.pb"))
    pb.unlink()
    pb.symlink_to(_fifo(tmp_path / "secret.pb"))
    line = one_error(run_cli("verify", folder, "--no-record", "--allow-modified", timeout=120))
    assert "outside" in line


def test_a_manifest_that_is_a_symlink_out_is_refused(art, tmp_path):
    folder = _copy(art, tmp_path / "art")
    real = tmp_path / "elsewhere.json"
    (folder / "manifest.json").rename(real)
    (folder / "manifest.json").symlink_to(real)
    line = one_error(run_cli("verify", folder, "--no-record"))
    assert "outside" in line


def test_crafted_test_vectors_are_one_line(art, tmp_path):
    """Vectors whose sha256 the manifest records (a hostile folder can be consistent) but which no reader can
    parse: a refusal in one line, not a protobuf or numpy traceback."""
    from mi2v_export.files import tree_digest

    folder = _copy(art, tmp_path / "art")
    pb = folder / "testdata" / "encoder" / "test_data_set_0" / "output_0.pb"
    pb.write_bytes(b"\xff" * 64)
    m = json.loads((folder / "manifest.json").read_text())
    entry = next(e for e in m["components"] if e["component"] == "encoder")
    for f in entry["extra_files"]:
        if f["file"] == "testdata/encoder":
            f["sha256"], f["bytes"] = tree_digest(folder / "testdata" / "encoder")
    (folder / "manifest.json").write_text(json.dumps(m))
    line = one_error(run_cli("verify", folder, "--component", "encoder", "--no-record"))
    assert "unreadable test vectors" in line


# ---- integrity: one policy for every reader ---------------------------------------------------------------------


def _edit_metadata(path: Path) -> None:
    """Change the ONNX producer name: other bytes, the same graph and outputs."""
    import onnx

    model = onnx.load(str(path))
    model.producer_name = "edited-by-hand"
    onnx.save(model, str(path))


def test_generate_refuses_a_modified_artifact_unless_allowed(art, tmp_path):
    folder = _copy(art, tmp_path / "art")
    _edit_metadata(folder / "decoder.onnx")
    video = tmp_path / "v.mp4"
    line = one_error(run_cli("generate", "--image", IMAGE, "--artifacts", folder, "--out", video, timeout=300))
    assert "decoder.onnx" in line and "--allow-modified" in line
    assert not video.exists()
    proc = run_cli("generate", "--image", IMAGE, "--artifacts", folder, "--out", video, "--allow-modified",
                   timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "warning:" in proc.stderr and "decoder.onnx differs from manifest.json" in proc.stderr
    assert video.is_file()


def test_verify_records_no_pass_for_a_modified_file(art, tmp_path):
    """A byte flipped in a place the outputs do not feel (ONNX metadata): the outputs still pass, yet the record
    the manifest keeps is not a pass, and the file's real sha256 is in it."""
    folder = _copy(art, tmp_path / "art")
    _edit_metadata(folder / "encoder.onnx")
    one_error(run_cli("verify", folder, "--component", "encoder"))
    proc = run_cli("verify", folder, "--component", "encoder", "--allow-modified", "--json")
    assert proc.returncode == 0, proc.stderr[-2000:]
    run = read_manifest(folder).find("encoder").verified_on[-1]
    assert run["passed"] is False and run["outputs_passed"] is True
    assert run["modified"][0]["file"] == "encoder.onnx" and run["modified"][0]["sha256"] != run["modified"][0][
        "expected_sha256"]


# ---- bounds ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("args", [
    ("info", "--preset", "tiny", "--resolution", "100000x100000"),
    ("export", "--preset", "tiny", "--component", "denoiser", "--target", "onnx", "--resolution", "100000x100000"),
    ("export", "--component", "decoder", "--target", "onnx", "--resolution", "65536x65536"),
    ("export", "--preset", "tiny", "--component", "decoder", "--target", "onnx", "--frames", "100001"),
    ("generate", "--image", str(IMAGE), "--preset", "tiny", "--resolution", "20000x20000"),
    ("quantize", "analyze", "--preset", "tiny", "--resolution", "100000x100000"),
])
def test_huge_sizes_are_refused_at_once(tmp_path, args):
    extra = {"export": ["--out", tmp_path / "o"], "generate": ["--out", tmp_path / "o" / "v.mp4"],
             "quantize": ["--out", tmp_path / "o" / "r.json"]}.get(args[0], [])
    t0 = time.monotonic()
    line = one_error(run_cli(*args, *extra, timeout=120))
    assert time.monotonic() - t0 < 60
    assert "cap" in line, line
    assert not (tmp_path / "o").exists()


def test_a_size_under_the_cap_that_cannot_fit_in_memory_names_both_figures(tmp_path):
    line = one_error(run_cli("export", "--preset", "tiny", "--component", "decoder", "--target", "onnx",
                             "--resolution", "2048x2048", "--frames", "121", "--out", tmp_path / "o"))
    assert "needs ~" in line and "GiB available" in line
    assert not (tmp_path / "o").exists()


# ---- destinations checked before the work ------------------------------------------------------------------


def test_export_to_a_read_only_folder_fails_before_exporting(tmp_path):
    with tmpfs(tmp_path / "ro", "ro"):
        t0 = time.monotonic()
        line = one_error(run_cli("export", "--preset", "tiny", "--component", "encoder", "--target", "onnx",
                                 "--out", tmp_path / "ro" / "art"))
        assert "read-only" in line and time.monotonic() - t0 < 60


def test_other_writers_check_read_only_destinations_first(art, tmp_path):
    with tmpfs(tmp_path / "ro", "ro"):
        ro = tmp_path / "ro"
        line = one_error(run_cli("generate", "--image", IMAGE, "--artifacts", art, "--out", ro / "v.mp4"))
        assert "read-only" in line
        line = one_error(run_cli("quantize", "analyze", "--preset", "tiny", "--out", ro / "r.json"))
        assert "read-only" in line
        (tmp_path / "w.pth").write_bytes(b"not read: the destination is checked first")
        line = one_error(run_cli("convert", tmp_path / "w.pth", "--out", ro / "w.safetensors"))
        assert "read-only" in line
    copy = _copy(art, tmp_path / "copy")
    with tmpfs(tmp_path / "ro2"):
        shutil.copytree(copy, tmp_path / "ro2" / "art")
        subprocess.run(["mount", "-o", "remount,ro", str(tmp_path / "ro2")], check=True)
        line = one_error(run_cli("verify", tmp_path / "ro2" / "art"))
        assert "read-only" in line and "--no-record" in line
        proc = run_cli("verify", tmp_path / "ro2" / "art", "--no-record")
        assert proc.returncode == 0, proc.stderr[-2000:]


def test_export_into_a_mount_point_stages_inside_it(tmp_path):
    """--out is itself a mount point (a Docker volume): the staging folder cannot be in the parent (EXDEV)."""
    with tmpfs(tmp_path / "vol") as vol:
        proc = run_cli("export", "--preset", "tiny", "--component", "encoder", "--target", "onnx", "--no-verify",
                       "--no-test-vectors", "--out", vol)
        assert proc.returncode == 0, proc.stderr[-3000:]
        assert (vol / "encoder.onnx").is_file() and read_manifest(vol).find("encoder")
        assert not [p for p in vol.iterdir() if p.name.startswith(".mi2v")]
        assert oct((vol / "encoder.onnx").stat().st_mode & 0o777) == "0o644"
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".mi2v")]


def test_a_parent_that_is_a_file_and_a_full_disk_are_refused_before_work(tmp_path):
    (tmp_path / "f").write_text("x")
    line = one_error(run_cli("export", "--preset", "tiny", "--component", "encoder", "--target", "onnx",
                             "--out", tmp_path / "f" / "art"))
    assert "is a file" in line
    line = one_error(run_cli("generate", "--image", IMAGE, "--preset", "tiny", "--out", tmp_path / "f" / "v.mp4"))
    assert "is a file" in line
    with tmpfs(tmp_path / "full") as full:
        subprocess.run(["mount", "-o", "remount,size=256k", str(full)], check=True)
        line = one_error(run_cli("export", "--preset", "tiny", "--component", "denoiser", "--target", "onnx",
                                 "--out", full / "art"))
        assert "MiB free" in line
        assert list(full.iterdir()) == []


# ---- signals --------------------------------------------------------------------------------------------------


def _wait_for(path: Path, text: str, timeout: float) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if text in path.read_text(errors="replace"):
            return
        time.sleep(0.2)
    raise AssertionError(f"{text!r} never appeared in {path}: {path.read_text()[-2000:]}")


@pytest.mark.heavy  # timing-dependent: it waits for a long 720p stage to start
def test_sigterm_in_the_middle_of_a_long_stage_stops_within_seconds(tmp_path):
    log = tmp_path / "log"
    out = tmp_path / "art"
    env = dict(os.environ, COLUMNS="200", TERM="dumb", NO_COLOR="1")
    with open(log, "w") as f:
        child = subprocess.Popen([str(MI2V_EXE), "export", "--preset", "tiny", "--component", "decoder", "--target",
                                  "onnx", "--resolution", "720x1280", "--frames", "17", "--out", str(out)],
                                 stdout=f, stderr=subprocess.STDOUT, env=env)
        try:
            _wait_for(log, "decoder load", 120)
            time.sleep(4)  # inside the long reference / trace stage
            t0 = time.monotonic()
            child.send_signal(signal.SIGTERM)
            rc = child.wait(timeout=30)
        finally:
            child.kill()
    assert time.monotonic() - t0 < 10
    assert rc == 130, log.read_text()[-2000:]
    assert "Traceback" not in log.read_text()
    assert not out.exists() and not [p for p in tmp_path.iterdir() if p.name.startswith(".mi2v")]


WEDGED = """
import signal, sys, time
from pathlib import Path
from mi2v_export.interrupts import armed_watchdog, cleanup_on_forced_exit
tmp = Path(sys.argv[1])
tmp.write_text("half")
with armed_watchdog(grace_s=1.0), cleanup_on_forced_exit(tmp):
    signal.signal(signal.SIGTERM, lambda *_: None)  # a stage where the interrupt is lost (as some libraries do)
    print("ready", flush=True)
    while True:
        time.sleep(0.05)
"""


def test_the_watchdog_ends_a_stage_that_swallows_the_interrupt(tmp_path):
    partial = tmp_path / ".video.partial.mp4"
    child = subprocess.Popen([sys.executable, "-c", WEDGED, str(partial)], stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True, cwd=REPO)
    assert child.stdout.readline().strip() == "ready"
    t0 = time.monotonic()
    child.send_signal(signal.SIGTERM)
    rc = child.wait(timeout=20)
    assert rc == 130 and time.monotonic() - t0 < 10
    assert "interrupted" in child.stderr.read()
    assert not partial.exists()


def test_generate_onto_a_disk_that_fills_up_writes_nothing(art, tmp_path):
    with tmpfs(tmp_path / "small") as small:
        subprocess.run(["mount", "-o", "remount,size=48k", str(small)], check=True)
        line = one_error(run_cli("generate", "--image", IMAGE, "--artifacts", art, "--out", small / "v.mp4"))
        assert "No space left" in line and "nothing was written" in line
        assert list(small.iterdir()) == []


def test_running_out_of_memory_is_one_line(tmp_path):
    """Under an address-space limit the estimate cannot see, the allocator fails inside a stage: one line."""
    if not shutil.which("prlimit"):
        pytest.skip("no prlimit")
    env = dict(os.environ, COLUMNS="200", TERM="dumb", NO_COLOR="1")
    proc = subprocess.run(["prlimit", "--as=3000000000", str(MI2V_EXE), "generate", "--image", str(IMAGE),
                           "--preset", "tiny", "--resolution", "1024x1024", "--frames", "33", "--out",
                           str(tmp_path / "v.mp4")], capture_output=True, text=True, timeout=300, env=env)
    line = one_error(proc)
    assert line.startswith("error: out of memory") and not (tmp_path / "v.mp4").exists()


def test_app_stage_refuses_a_modified_core_ml_artifact(tmp_path):
    """`mi2v app stage` copies artifacts into the iOS test bundle: the integrity policy applies there too (and the
    refusal comes before the Payload folder is touched)."""
    out = tmp_path / "coreml"
    proc = run_cli("export", "--preset", "tiny", "--component", "encoder", "--target", "coreml", "--out", out)
    assert proc.returncode == 0, proc.stderr[-2000:]
    weights = next(p for p in (out / "encoder.mlpackage").rglob("*") if p.is_file() and p.stat().st_size > 1000)
    with open(weights, "ab") as f:
        f.write(b"\0")
    line = one_error(run_cli("app", "stage", "--artifacts", out))
    assert "encoder.mlpackage: differs from manifest.json" in line
