"""What the CLI prints besides its result (issue 22): `-q` is quiet (no progress lines, spinners, stage lines or
banner; warnings, errors and the result only), libraries' own output shows only with `-v` (ExecuTorch's
`cpuinfo_utils.cpp` lines, the QNN HTP library's `LIBNATIVE` line, raw Python warnings with file paths), and the
notes a user needs: `export` without --preset says it starts the 720p 270M run, `generate` says when the weights
are seeded (the video is noise).

Budget: one tiny ExecuTorch encoder export (~30 s on 2 cores), one tiny QNN encoder export (~20 s), a tiny
generate and a few verify runs; everything through the installed `mi2v`, as a user runs it.
"""

from __future__ import annotations

import json
import pickle
import re
import subprocess

import pytest
import torch

from tests.conftest import REPO, run_cli

IMAGE = REPO / "mi2v_export" / "data" / "calibration" / "astronaut.png"
# what must not reach a user without -v: native log lines and a raw `path.py:N: SomeWarning: …` pair
NATIVE_CHATTER = ("cpuinfo_utils", "LIBNATIVE")
RAW_WARNING = re.compile(r"\.py:\d+: \w*Warning: ")
PROGRESS = ("✓", "encoder load", "encoder lower", "encoder verify", "done", "━", "mi2v generate", "⠋", "⠙")


def _no_chatter(proc: subprocess.CompletedProcess) -> None:
    for stream in (proc.stdout, proc.stderr):
        assert not any(c in stream for c in NATIVE_CHATTER), stream
        assert not RAW_WARNING.search(stream), stream
    assert "Traceback" not in proc.stderr


@pytest.fixture(scope="module")
def quiet_export(tmp_path_factory):
    """`mi2v -q export` of the tiny encoder to ExecuTorch (seeded weights), kept for the tests below."""
    out = tmp_path_factory.mktemp("quiet") / "et"
    proc = run_cli("-q", "export", "--preset", "tiny", "--component", "encoder", "--target", "executorch",
                   "--out", out)
    assert proc.returncode == 0, proc.stderr
    return out, proc


@pytest.mark.heavy  # an ExecuTorch export or a unit analysis first (see the module's budget)
def test_quiet_export_prints_warnings_and_the_result_only(quiet_export):
    out, proc = quiet_export
    _no_chatter(proc)
    for line in proc.stderr.splitlines():  # the seeded-weights warning, one line, no file path
        assert line.startswith("warning: "), proc.stderr
    assert "warning: LTX-Video encoder: no checkpoint given, using seeded random weights" in proc.stderr
    assert not any(p in proc.stderr for p in PROGRESS), proc.stderr  # (stdout: the result table)
    assert f"manifest: {out / 'manifest.json'}" in proc.stdout and "encoder.pte" in proc.stdout  # the result


@pytest.mark.heavy  # an ExecuTorch export or a unit analysis first (see the module's budget)
def test_verify_shows_executorch_output_only_with_v(quiet_export):
    out, _ = quiet_export
    plain = run_cli("verify", out)
    assert plain.returncode == 0, plain.stderr
    _no_chatter(plain)
    verbose = run_cli("-v", "verify", out)
    assert verbose.returncode == 0, verbose.stderr
    assert "[cpuinfo_utils.cpp:" in verbose.stderr  # ExecuTorch's own lines, shown with -v


@pytest.mark.heavy  # an ExecuTorch export or a unit analysis first (see the module's budget)
def test_quiet_generate_prints_no_progress_and_says_the_video_is_noise(quiet_export, tmp_path):
    """The encoder is the seeded-weights artifact exported above, the rest seeded PyTorch: both are said."""
    out, _ = quiet_export
    video = tmp_path / "clip.mp4"
    proc = run_cli("-q", "generate", "--preset", "tiny", "--artifacts", out, "--fallback", "pytorch",
                   "--image", IMAGE, "--out", video)
    assert proc.returncode == 0, proc.stderr
    _no_chatter(proc)
    assert proc.stderr.strip() == "", proc.stderr
    assert not any(p in proc.stdout for p in PROGRESS) and "per-stage timings" not in proc.stdout, proc.stdout
    notes = [line for line in proc.stdout.splitlines() if line.startswith("note:")]
    assert any(str(out) in n and "seeded random weights" in n and "noise" in n for n in notes), proc.stdout
    assert any("MobileI2V denoiser" in n and "seeded random weights" in n for n in notes), proc.stdout
    assert proc.stdout.strip().splitlines()[-1] == f"wrote {video} and {tmp_path / 'clip_contact.png'}"
    assert video.stat().st_size > 0


@pytest.mark.heavy  # a QNN export for its quiet output: 17 s; test_qnn.py's w8a16 export stays
def test_qnn_export_has_no_libnative_line_without_v(tmp_path):
    out = tmp_path / "qnn"
    proc = run_cli("export", "--preset", "tiny", "--component", "encoder", "--target", "onnx", "--delegate", "qnn",
                   "--soc", "SM8650", "--out", out)
    if proc.returncode == 3:
        pytest.skip(f"no QNN HTP simulator here: {proc.stderr.strip()}")
    assert proc.returncode == 0, proc.stderr
    _no_chatter(proc)
    assert "✓ encoder verify" in proc.stderr  # not -q: the stage lines stay
    verbose = run_cli("-v", "verify", out)
    assert verbose.returncode == 0, verbose.stderr
    assert "LIBNATIVE" in verbose.stdout + verbose.stderr  # the QNN library's own line, shown with -v


def test_library_python_warnings_are_debug_lines(tmp_path):
    """torch warns (UserWarning, with its file path) on a protocol-4 pickle: not shown without -v, one debug line
    with -v."""
    path = tmp_path / "weights.pth"
    path.write_bytes(pickle.dumps({"w": torch.zeros(2)}, protocol=4))
    plain = run_cli("inspect", path)
    assert plain.returncode == 2 and len(plain.stderr.strip().splitlines()) == 1, plain.stderr
    assert "Warning" not in plain.stderr and plain.stderr.startswith("error: ")
    verbose = run_cli("-v", "inspect", path)
    assert "UserWarning: Detected pickle protocol 4" in verbose.stderr and not RAW_WARNING.search(verbose.stderr)


@pytest.mark.parametrize("before,after,noted", [((), (), True), ((), ("--preset", "mobilei2v-270m"), False),
                                                ((), ("--preset", "tiny"), False), (("-q",), (), False)])
def test_export_without_preset_notes_the_720p_run(tmp_path, before, after, noted):
    """--frames 10 is refused before any model is built: the note comes first, then the one error line."""
    proc = run_cli(*before, "export", "--target", "onnx", "--component", "encoder", "--frames", "10",
                   "--out", tmp_path / "x", *after)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert lines[-1].startswith("error: frames 10"), proc.stderr
    note = "note: no --preset given: this is the full mobilei2v-270m export (720x1280, 10 frames), a multi-GB run"
    assert (lines[0].startswith(note) and len(lines) == 2) if noted else len(lines) == 1, proc.stderr
    assert not (tmp_path / "x").exists()


def test_export_preset_default_is_unchanged():
    """--preset still defaults to the released model (resolved in the command, so the note can tell)."""
    proc = run_cli("export", "--help")
    assert proc.returncode == 0 and "default: mobilei2v-270m" in " ".join(proc.stdout.split())


def test_quiet_json_export_stdout_is_only_json(tmp_path):
    """-q with --json: stdout stays one JSON document (native prints never reach it), stderr warnings only."""
    out = tmp_path / "json"
    proc = run_cli("-q", "export", "--preset", "tiny", "--component", "encoder", "--target", "onnx", "--out", out,
                   "--json")
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["artifacts"][0]["component"] == "encoder"
    assert all(line.startswith("warning: ") for line in proc.stderr.splitlines()), proc.stderr


@pytest.mark.heavy  # an ExecuTorch export or a unit analysis first (see the module's budget)
def test_quiet_quantize_analyze_prints_no_progress(tmp_path):
    recipe = tmp_path / "r.json"
    loud = run_cli("quantize", "analyze", "--preset", "tiny", "--component", "encoder", "--out", recipe)
    units = len(json.loads(recipe.read_text())["units"])  # the encoder's stages
    assert loud.returncode == 0 and units > 1 and f"1/{units}" in loud.stderr, loud.stderr[-2000:]
    quiet = run_cli("-q", "quantize", "analyze", "--preset", "tiny", "--component", "encoder", "--out", recipe)
    assert quiet.returncode == 0, quiet.stderr[-2000:]
    assert f"1/{units}" not in quiet.stderr and recipe.is_file()
