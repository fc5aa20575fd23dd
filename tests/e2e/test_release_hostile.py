"""Hostile folders for `mi2v plan` and `mi2v release merge` (issue 22): plans whose `out` / `name` lead out of the
plan's folder, job folders (downloaded CI artifacts) whose manifest or job.json name paths outside them, release
indexes that do, and a plan cell that cannot be exported. Each is refused by the real `mi2v` CLI with exit 2 and one
`error:` line, and nothing outside the intended folder is read or written. Also: releases are world-readable
whatever the umask, one export has one job id, and `kill -9` of `mi2v plan` leaves no export running.

The job folders here are written by hand the way `mi2v plan` writes them (manifest.json, job.json, an artifact),
so a merge takes a second: the attacks are refused before any export or test vector would run.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from mi2v_export import contract, precision, presets, qnn, schemas
from mi2v_export.exporters import base as exporters
from mi2v_export.release.merge import RELEASE, read_release
from mi2v_export.safepath import RELATIVE_PATH_PATTERN
from tests.conftest import MI2V_EXE, run_cli

JOB_ID = "0123456789abcdef"
JOB_NAME = f"encoder-onnx-fp32-128x192x9-{JOB_ID}"
PAYLOAD = b"secret bytes outside every job folder\n"


# ---- helpers ----------------------------------------------------------------------------------------------------


def snapshot(root: Path) -> dict[str, tuple]:
    """Every entry under `root` (symlinks not followed) with its mtime, size and mode: a created, removed or
    rewritten file or folder anywhere changes it (a folder's mtime changes when an entry comes or goes)."""
    out = {}
    for below, dirs, files in os.walk(root):
        for name in dirs + files:
            st = (Path(below) / name).lstat()
            out[str((Path(below) / name).relative_to(root))] = (st.st_mtime_ns, st.st_size, st.st_mode)
    return out


def age_atime(path: Path) -> int:
    """Set `path`'s access time an hour before its mtime (relatime then records the next read); the new atime."""
    st = path.stat()
    os.utime(path, ns=(st.st_mtime_ns - 3600 * 10**9, st.st_mtime_ns))
    return path.stat().st_atime_ns


def reads_are_recorded(folder: Path) -> bool:
    """Whether this file system records reads in atime (not mounted noatime): else only writes can be checked."""
    probe = folder / "atime-probe"
    probe.write_bytes(b"x")
    before = age_atime(probe)
    probe.read_bytes()
    recorded = probe.stat().st_atime_ns != before
    probe.unlink()
    return recorded


def assert_one_line_refusal(proc: subprocess.CompletedProcess, *needles: str) -> None:
    assert proc.returncode == 2, (proc.returncode, proc.stderr[-3000:])
    assert "Traceback" not in proc.stderr
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:"), proc.stderr
    for needle in needles:
        assert needle in lines[0], lines[0]


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def write_json(path: Path, data) -> Path:
    path.write_text(json.dumps(data, indent=2))
    return path


def manifest_doc(file: str, digest: str, size: int, target: str = "onnx", extra: list | None = None) -> dict:
    entry = {"component": "encoder", "model": "ltx-encoder", "target": target, "delegate": None, "dtype": "fp32",
             "precision": "fp32", "file": file, "sha256": digest, "bytes": size, "extra_files": extra or [],
             "inputs": [{"name": "image", "shape": [1, 3, 128, 192], "dtype": "float32"}],
             "outputs": [{"name": "latent", "shape": [1, 128, 2, 4, 6], "dtype": "float32"}],
             "export": {}, "parity": {}}
    return {"schema": "mi2v-export-manifest", "schema_version": 1, "tool": {"name": "mi2v-export", "version": "0"},
            "preset": "tiny", "resolution": [128, 192], "frames": 9, "latent_shape": [1, 128, 2, 4, 6],
            "source": {"weights": "seeded", "seed": 0}, "components": [entry]}


def job_doc(name: str = JOB_NAME, target: str = "onnx", delegate: str | None = None) -> dict:
    spec = {"component": "encoder", "target": target, "delegate": delegate, "preset": "tiny",
            "resolution": "128x192", "frames": 9, "precision": "fp32"}
    return {"schema": "mi2v-release-job", "schema_version": 1, "id": JOB_ID, "name": name, "spec": spec,
            "argv": ["mi2v", "export"], "host": "ci", "finished_at": "2025-01-01T00:00:00Z", "wall_s": 1.0,
            "peak_rss_bytes": 1}


def make_job(folder: Path, data: bytes = b"an onnx file", file: str = "encoder.onnx") -> Path:
    """A finished job folder as `mi2v plan` leaves it: the artifact, manifest.json and job.json."""
    folder.mkdir(parents=True)
    (folder / file).write_bytes(data)
    write_json(folder / "manifest.json", manifest_doc(file, sha(data), len(data)))
    write_json(folder / "job.json", job_doc())
    return folder


@pytest.fixture()
def area(tmp_path) -> dict:
    """tmp/work/jobs/<job> (the merge's input), tmp/work/rel (its output), and a payload outside both."""
    payload = tmp_path / "payload.bin"
    payload.write_bytes(PAYLOAD)
    jobs = tmp_path / "work" / "jobs"
    return {"root": tmp_path, "jobs": jobs, "job": jobs / JOB_NAME, "out": tmp_path / "work" / "rel",
            "payload": payload}


def merge_refused(area: dict, *needles: str, inputs: list[Path] | None = None) -> None:
    """`mi2v release merge` of the area's jobs: one line, exit 2, nothing anywhere written, the payload not read."""
    watch_reads = reads_are_recorded(area["root"])
    atime = age_atime(area["payload"])
    before = snapshot(area["root"])
    passwd = os.stat("/etc/passwd").st_mtime_ns
    proc = run_cli("release", "merge", *(inputs or [area["jobs"]]), "--out", area["out"], timeout=300)
    assert_one_line_refusal(proc, *needles)
    assert snapshot(area["root"]) == before  # no release, no staging folder, nothing outside written
    assert os.stat("/etc/passwd").st_mtime_ns == passwd
    if watch_reads:
        assert area["payload"].stat().st_atime_ns == atime, "the payload outside the job folder was read"


# ---- mi2v release merge: job folders that lead out ---------------------------------------------------------------


def test_manifest_file_with_dotdot_is_refused_without_reading_it(area):
    job = make_job(area["job"])
    # the payload really is at ../../../payload.bin from the job folder, with the matching sha256 and size
    assert (job / "../../../payload.bin").resolve() == area["payload"]
    write_json(job / "manifest.json", manifest_doc("../../../payload.bin", sha(PAYLOAD), len(PAYLOAD)))
    merge_refused(area, "does not verify", "../../../payload.bin")


def test_manifest_file_with_absolute_path_is_refused(area):
    job = make_job(area["job"])
    passwd = Path("/etc/passwd").read_bytes()
    write_json(job / "manifest.json", manifest_doc("/etc/passwd", sha(passwd), len(passwd)))
    merge_refused(area, "does not verify", "/etc/passwd")


def test_artifact_that_is_a_symlink_leading_out_is_refused(area):
    job = make_job(area["job"])
    (job / "encoder.onnx").unlink()
    (job / "encoder.onnx").symlink_to(area["payload"])
    write_json(job / "manifest.json", manifest_doc("encoder.onnx", sha(PAYLOAD), len(PAYLOAD)))
    merge_refused(area, "leads outside")


def test_symlink_inside_an_artifact_folder_is_refused(area):
    """An .mlpackage (a folder artifact) holding a symlink to a file outside: hashing or copying it would follow."""
    job = make_job(area["job"])
    package = job / "encoder.mlpackage"
    (package / "Data").mkdir(parents=True)
    (package / "Data" / "weight.bin").symlink_to(area["payload"])
    write_json(job / "manifest.json", manifest_doc("encoder.mlpackage", "0" * 64, len(PAYLOAD), target="coreml"))
    merge_refused(area, "symlink leading outside", "encoder.mlpackage/Data/weight.bin")


def test_symlinked_folder_inside_test_vectors_is_refused(area):
    job = make_job(area["job"])
    (job / "testdata" / "encoder").mkdir(parents=True)
    outside = area["root"] / "elsewhere"
    outside.mkdir()
    (outside / "input_0.pb").write_bytes(PAYLOAD)
    (job / "testdata" / "encoder" / "test_data_set_0").symlink_to(outside, target_is_directory=True)
    data = (job / "encoder.onnx").read_bytes()
    extra = [{"role": "test_vectors", "file": "testdata/encoder", "sha256": "0" * 64, "bytes": 1}]
    write_json(job / "manifest.json", manifest_doc("encoder.onnx", sha(data), len(data), extra=extra))
    merge_refused(area, "symlink leading outside")


def test_manifest_json_that_is_a_symlink_leading_out_is_refused(area):
    job = make_job(area["job"])
    outside = write_json(area["root"] / "manifest-outside.json",
                         manifest_doc("encoder.onnx", sha(b"an onnx file"), len(b"an onnx file")))
    (job / "manifest.json").unlink()
    (job / "manifest.json").symlink_to(outside)
    merge_refused(area, "manifest.json", "leads outside")


@pytest.mark.parametrize("record, needle", [
    (job_doc(name="../../../evil"), "name"),
    (job_doc(name="/tmp/evil"), "name"),
    (job_doc(target="../../../evil"), "spec.target"),
    (job_doc(delegate="../evil"), "spec.delegate"),
    (dict(job_doc(), id="../x"), "not a job id"),
], ids=["name-dotdot", "name-absolute", "target-dotdot", "delegate-dotdot", "id"])
def test_job_record_fields_naming_paths_must_be_plain_names(area, record, needle):
    job = make_job(area["job"])
    write_json(job / "job.json", record)
    merge_refused(area, "job.json", needle)
    assert not (area["root"] / "evil").exists() and not Path("/tmp/evil").exists()


def test_job_record_that_is_a_symlink_leading_out_is_refused(area):
    job = make_job(area["job"])
    outside = write_json(area["root"] / "job-outside.json", job_doc())
    (job / "job.json").unlink()
    (job / "job.json").symlink_to(outside)
    merge_refused(area, "job.json", "leads outside")


def test_job_folder_that_is_a_symlink_leading_out_is_refused(area):
    elsewhere = make_job(area["root"] / "elsewhere" / JOB_NAME)
    area["jobs"].mkdir(parents=True)
    (area["jobs"] / JOB_NAME).symlink_to(elsewhere, target_is_directory=True)
    merge_refused(area, "symlink leading outside")


# ---- release.json: written valid, read back checked ------------------------------------------------------------


def test_release_is_world_readable_with_relative_paths_whatever_the_umask(area):
    make_job(area["job"])
    old = os.umask(0o077)  # the child inherits it: mkdtemp's 0700 and umask-made 0600 files would stay private
    try:
        proc = run_cli("release", "merge", area["jobs"], "--out", area["out"], "--no-vectors", "--json")
    finally:
        os.umask(old)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = area["out"]
    modes = {p.relative_to(out).as_posix(): p.stat().st_mode & 0o777 for p in [out, *out.rglob("*")]}
    assert modes["."] == 0o755
    assert {m for p, m in modes.items() if (out / p).is_dir()} == {0o755}
    assert {m for p, m in modes.items() if (out / p).is_file()} == {0o644}
    assert f"onnx/{JOB_NAME}/encoder.onnx" in modes and "release.json" in modes
    doc = read_release(out)  # validates against release.schema.json and checks every path stays inside
    assert doc == json.loads(proc.stdout)
    assert [a["file"] for a in doc["artifacts"]] == [f"onnx/{JOB_NAME}/encoder.onnx"]
    assert [j["folder"] for j in doc["jobs"]] == [f"onnx/{JOB_NAME}"]
    assert not list(area["root"].glob("work/.mi2v-release-*"))


@pytest.mark.parametrize("bad", ["../../payload.bin", "/etc/passwd"])
def test_an_existing_release_index_naming_paths_outside_is_not_replaced(area, bad):
    make_job(area["job"])
    assert run_cli("release", "merge", area["jobs"], "--out", area["out"], "--no-vectors").returncode == 0
    index = area["out"] / "release.json"
    doc = json.loads(index.read_text())
    doc["artifacts"][0]["file"] = bad
    write_json(index, doc)
    merge_refused(area, "release.json", "artifacts[0].file", "relative path inside the release folder")


def test_an_existing_release_index_that_is_a_symlink_leading_out_is_not_replaced(area):
    make_job(area["job"])
    area["out"].mkdir(parents=True)
    outside = write_json(area["root"] / "release-outside.json", {"schema": "mi2v-release"})
    (area["out"] / "release.json").symlink_to(outside)
    merge_refused(area, "release.json", "leads outside")


def test_release_schema_paths_use_the_relative_path_rule():
    schemas._validator(RELEASE)  # a valid draft 2020-12 schema
    doc = json.loads(schemas.schema_path(RELEASE).read_text())
    assert doc["$defs"]["path"]["pattern"] == RELATIVE_PATH_PATTERN and doc["$defs"]["path"]["description"]
    plan = json.loads(schemas.schema_path("release-plan").read_text())
    assert plan["$defs"]["path"]["pattern"] == RELATIVE_PATH_PATTERN


# ---- plans: out and names confined to the plan's folder -----------------------------------------------------------


PLAN = """schema_version = 1
{top}
[defaults]
preset = "tiny"
[[cells]]
{cell}
component = "encoder"
target = "onnx"
"""


@pytest.fixture()
def plan_area(tmp_path) -> dict:
    work = tmp_path / "work"
    work.mkdir()
    (tmp_path / "outside").mkdir()
    (work / "link").symlink_to(tmp_path / "outside", target_is_directory=True)
    return {"root": tmp_path, "work": work, "outside": tmp_path / "outside"}


BUILT_TOO = {"abs-etc", "symlink", "name-dotdot", "cell-name", "ckpt-symlink", "args-checkpoint"}


@pytest.mark.parametrize("top, cell, needle", [
    ('out = "/etc"', "", "out: '/etc' is not a relative path"),
    ('out = "/tmp/evil"', "", "out: '/tmp/evil' is not a relative path"),
    ('out = "../outside"', "", "out: '../outside' is not a relative path"),
    ('out = "jobs/../../outside"', "", "is not a relative path"),
    ('out = "link"', "", "leads outside"),
    ('out = "link/jobs"', "", "leads outside"),
    ('name = "../../../tmp/evil"', "", "name: '../../../tmp/evil' is not a plain name"),
    ('name = "../outside/evil"', "", "is not a plain name"),
    ('name = "/tmp/evil"', "", "is not a plain name"),
    ("", 'name = "../../outside"', "cells[0].name: '../../outside' is not a plain name"),
    ('checkpoints = ["../outside/w.pth"]', "", "checkpoints[0]: '../outside/w.pth' is not a relative path"),
    ('checkpoints = ["/etc/passwd"]', "", "checkpoints[0]: '/etc/passwd' is not a relative path"),
    ('checkpoints = ["link/w.pth"]', "", "leads outside"),
    ("", 'args = ["--checkpoint=/etc/passwd"]', "--checkpoint takes a path"),
    ("", 'args = ["--recipe", "/tmp/r.json"]', "--recipe takes a path"),
], ids=["abs-etc", "abs-tmp", "dotdot", "inner-dotdot", "symlink", "below-symlink", "name-dotdot",
        "name-dotdot-2", "name-abs", "cell-name", "ckpt-dotdot", "ckpt-abs", "ckpt-symlink", "args-checkpoint",
        "args-recipe"])
def test_plan_out_and_names_stay_in_the_plans_folder(plan_area, top, cell, needle, request):
    plan = plan_area["work"] / "p.toml"
    plan.write_text(PLAN.format(top=top, cell=cell))
    before = snapshot(plan_area["root"])
    # listing and building read the plan through the same function (the CI matrix reads it the same way): every
    # case is listed, and one case per field is also built
    modes = (["--list"], []) if request.node.callspec.id in BUILT_TOO else (["--list"],)
    for extra in modes:
        proc = run_cli("plan", plan, *extra, cwd=plan_area["work"])
        assert_one_line_refusal(proc, needle)
        assert snapshot(plan_area["root"]) == before  # nothing written, inside or outside
    assert not Path("/tmp/evil").exists() and not Path("/tmp/evil-jobs").exists()


def test_a_release_into_a_mount_point_is_refused_in_one_line(area, tmp_path):
    """A release replaces its folder by a rename, which cannot replace a mount point (EBUSY / EXDEV)."""
    vol = tmp_path / "vol"
    vol.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=8m", "tmpfs", str(vol)]).returncode != 0:
        pytest.skip("cannot mount a tmpfs here")
    try:
        proc = run_cli("release", "merge", make_job(area["jobs"] / JOB_NAME), "--out", vol, "--no-vectors")
        assert_one_line_refusal(proc, "is a mount point")
        assert list(vol.iterdir()) == []
    finally:
        subprocess.run(["umount", "-l", str(vol)])


def test_plan_out_given_on_the_command_line_is_used_as_given(plan_area):
    plan = plan_area["work"] / "p.toml"
    plan.write_text(PLAN.format(top='out = "jobs"', cell=""))
    proc = run_cli("plan", plan, "--list", "--json")
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["out"] == str(plan_area["work"] / "jobs")
    proc = run_cli("plan", plan, "--list", "--json", "--out", plan_area["outside"] / "jobs")
    assert proc.returncode == 0, proc.stderr
    listed = json.loads(proc.stdout)
    assert listed["out"] == str(plan_area["outside"] / "jobs")
    assert all(j["folder"].startswith(str(plan_area["outside"] / "jobs") + "/") for j in listed["jobs"])


# ---- plans: cells checked at --list, one id per export ------------------------------------------------------------


@pytest.mark.parametrize("cell, needle", [
    ('target = "tflite"', "cells[0].target: 'tflite' is not one of"),
    ('target = ["onnx", "tflite"]', "cells[0].target[1]: 'tflite' is not one of"),
    ('target = "onnx"\nframes = 10', "frames 10 is not 8k+1"),
    ('target = "onnx"\nframes = [9, 10]', "frames 10 is not 8k+1"),
    ('target = "onnx"\nresolution = "130x192"', "height 130 is not a multiple of 4"),
    ('target = "onnx"\nresolution = "100000x100000"', "cap"),
    ('target = "executorch"\ndelegate = "qnn"\nprecision = "w8a8"', "does not support --precision w8a8"),
    ('target = "coreml"\ndelegate = "xnnpack"', "--delegate does not apply to --target coreml"),
    ('target = "onnx"\nprecision = "fp64"', "cells[0].precision: 'fp64' is not one of"),
    ('target = "onnx"\ndtype = "fp16"\nprecision = "fp32"', "disagree"),
    ('target = "onnx"\ndelegate = "qnn"\nsoc = "SM0000"', "cells[0].soc: 'SM0000' is not one of"),
    ('target = "onnx"\npreset = "huge"', "cells[0].preset: 'huge' is not one of"),
    ('target = "onnx"\nattention = "fast"', "cells[0].attention: 'fast' is not one of"),
], ids=["target", "target-list", "frames", "frames-list", "resolution", "huge", "precision-for-target", "delegate",
        "precision-name", "dtype-vs-precision", "soc", "preset", "attention"])
def test_bad_cells_are_refused_at_list(tmp_path, cell, needle):
    plan = tmp_path / "p.toml"
    plan.write_text(f'schema_version = 1\n[defaults]\npreset = "tiny"\n[[cells]]\ncomponent = "encoder"\n{cell}\n')
    proc = run_cli("plan", plan, "--list")
    assert_one_line_refusal(proc, needle)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["p.toml"]


def listed(tmp_path: Path, cells: list[str]) -> list[dict]:
    plan = tmp_path / "p.toml"
    plan.write_text('schema_version = 1\n[defaults]\npreset = "tiny"\ncomponent = "encoder"\n'
                    + "".join(f"[[cells]]\n{c}\n" for c in cells))
    proc = run_cli("plan", plan, "--list", "--json")
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)["jobs"]


def test_one_job_id_per_distinct_export(tmp_path):
    # fp32 named as --precision, as its alias --dtype, and as the onnx default: one export, one job
    jobs = listed(tmp_path, ['target = "onnx"\nprecision = "fp32"', 'target = "onnx"\ndtype = "fp32"',
                             'target = "onnx"'])
    assert len(jobs) == 1 and jobs[0]["spec"]["precision"] == "fp32" and jobs[0]["spec"]["dtype"] is None
    argv = jobs[0]["argv"]
    assert argv[argv.index("--precision") + 1] == "fp32" and "--dtype" not in argv
    # Core ML's default is fp16; ExecuTorch's default delegate is XNNPACK; a SoC matters to QNN only
    assert len(listed(tmp_path, ['target = "coreml"', 'target = "coreml"\nprecision = "fp16"',
                                 'target = "coreml"\ndtype = "fp16"'])) == 1
    assert len(listed(tmp_path, ['target = "executorch"', 'target = "executorch"\ndelegate = "xnnpack"',
                                 'target = "executorch"\ndelegate = "xnnpack"\nsoc = "SM8750"'])) == 1
    qnn_jobs = listed(tmp_path, ['target = "onnx"\ndelegate = "qnn"', 'target = "onnx"\ndelegate = "qnn"\n'
                                 'soc = "SM8650"\nprecision = "fp16"', 'target = "onnx"\ndelegate = "qnn"\n'
                                 'soc = "SM8750"'])
    assert sorted(j["spec"]["soc"] for j in qnn_jobs) == ["SM8650", "SM8750"]  # the default SoC spelled out
    # distinct exports keep distinct ids
    assert len(listed(tmp_path, ['target = "onnx"', 'target = "onnx"\nprecision = "fp16"'])) == 2


def test_plan_schema_enums_are_the_contracts():
    plan = json.loads(schemas.schema_path("release-plan").read_text())["$defs"]
    assert tuple(plan["component"]["enum"]) == contract.COMPONENTS
    assert tuple(plan["target"]["enum"]) == exporters.target_names()  # the exporter registry
    assert tuple(plan["delegate"]["enum"]) == exporters.delegate_names()
    assert tuple(plan["dtype"]["enum"]) == contract.EXPORT_DTYPES
    assert tuple(plan["soc"]["enum"]) == tuple(qnn.SOCS)
    assert tuple(plan["preset"]["enum"]) == tuple(presets.PRESETS)
    assert plan["precision"]["enum"] == [p.value for p in precision.Precision if p is not precision.Precision.MIXED]
    settings = plan["settings"]["properties"]
    assert tuple(settings["attention"]["enum"]) == contract.ATTENTION_PLANS
    assert tuple(settings["decoder"]["enum"]) == contract.DECODER_KINDS


# ---- kill -9 of mi2v plan ---------------------------------------------------------------------------------------


def children_of(pid: int) -> list[int]:
    """Live processes whose parent is `pid` (from /proc)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            fields = stat.rsplit(")", 1)[1].split()
            if int(fields[1]) == pid and fields[0] != "Z":
                found.append(int(entry.name))
    return found


def alive(pid: int) -> bool:
    """Running (a zombie waiting for a reaper that never comes counts as gone: it runs nothing)."""
    try:
        return (Path("/proc") / str(pid) / "stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def test_kill_9_of_plan_kills_its_running_export(tmp_path):
    """The job (a tiny decoder at 256x384x17) runs about 15 s after its start here; without PR_SET_PDEATHSIG it
    would run on, reparented, for all of that after `mi2v plan` is gone."""
    plan = tmp_path / "p.toml"
    plan.write_text(PLAN.format(top="", cell='resolution = "256x384"\nframes = 17').replace('"encoder"', '"decoder"'))
    env = dict(os.environ, COLUMNS="200", NO_COLOR="1", MI2V_MEMORY_TABLE=str(tmp_path / "table.json"))
    proc = subprocess.Popen([str(MI2V_EXE), "plan", str(plan), "--out", str(tmp_path / "jobs")],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    exports: list[int] = []
    try:
        deadline = time.time() + 120
        while time.time() < deadline and not exports and proc.poll() is None:
            exports = children_of(proc.pid)
            time.sleep(0.2)
        assert exports, "mi2v plan started no export"
        time.sleep(1.0)  # the export is under way (its preexec has run: it is in its own process group)
        assert os.getpgid(exports[0]) == exports[0] != os.getpgid(proc.pid)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
        deadline = time.time() + 5
        while time.time() < deadline and alive(exports[0]):
            time.sleep(0.1)
        assert not alive(exports[0]), "the export outlived mi2v plan (orphaned)"
    finally:
        for pid in exports:  # only the export this test started, should the assertion have failed
            if alive(pid):
                os.kill(pid, signal.SIGKILL)
        if proc.poll() is None:
            proc.kill()
            proc.wait()


# ---- destinations checked before the work --------------------------------------------------------------------------


def test_a_destination_that_cannot_be_a_folder_is_refused_before_any_work(tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    plan = tmp_path / "p.toml"
    plan.write_text(PLAN.format(top="", cell=""))
    before = snapshot(tmp_path)
    proc = run_cli("plan", plan, "--out", blocker / "jobs")
    assert_one_line_refusal(proc, "--out", "is a file")
    assert snapshot(tmp_path) == before  # no export started, no plan-run.json
    make_job(tmp_path / "jobs" / JOB_NAME)
    before = snapshot(tmp_path)
    proc = run_cli("release", "merge", tmp_path / "jobs", "--out", blocker / "release", "--no-vectors")
    assert_one_line_refusal(proc, "--out", "is a file")
    assert snapshot(tmp_path) == before
