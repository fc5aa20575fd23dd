"""Release plans: expansion and job ids, the GitHub matrix, a real local Ray cluster on loopback vs the local
process pool (byte-identical artifacts), skipping finished jobs, a failing job next to good ones, Ctrl-C, and
`mi2v release merge`.

The export jobs are tiny-preset ONNX encoders/decoders (about 30 s each here); the .pte determinism check is slow.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import save_file

from mi2v_export.release import memory
from mi2v_export.release.jobs import finished, verify_job_folder
from mi2v_export.release.plan import Job, jobs_from_matrix, load_plan
from tests.conftest import MI2V_EXE, REPO, free_port, run_cli

TWO_JOBS = """
schema_version = 1
name = "two"
[defaults]
preset = "tiny"
[[cells]]
component = ["encoder", "decoder"]
target = "onnx"
"""


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def tiny_vae_checkpoint(path: Path, seed: int) -> Path:
    """A diffusers-layout LTX VAE file of the tiny preset (serves the encoder), weights from `seed`."""
    from mi2v_export.models.ltx_vae import build_ltx_vae
    from mi2v_export.presets import get_preset

    vae = build_ltx_vae(get_preset("tiny").ltx_vae)
    torch.manual_seed(seed)
    for p in vae.parameters():
        p.data.normal_(0, 0.05)
    save_file({k: v.contiguous() for k, v in vae.state_dict().items()}, path)
    return path


def artifact_digests(root: Path) -> dict[str, str]:
    """{job folder/artifact file: sha256} of every artifact the job folders' manifests list."""
    from mi2v_export.manifest import read_manifest

    out = {}
    for folder in sorted(p for p in root.iterdir() if (p / "job.json").is_file()):
        for e in read_manifest(folder).components:
            out[f"{folder.name}/{e.file}"] = e.sha256
    return out


@pytest.fixture()
def table(tmp_path, monkeypatch) -> Path:
    path = tmp_path / "memory-table.json"
    monkeypatch.setenv("MI2V_MEMORY_TABLE", str(path))
    return path


# ---- plan files -------------------------------------------------------------------------------------------------


def test_plan_expands_cells_into_stable_deduplicated_jobs(tmp_path):
    plan = write(tmp_path / "p.toml", """
schema_version = 1
[defaults]
preset = "tiny"
component = ["encoder", "decoder"]
[[cells]]
target = "onnx"
frames = [9, 17]
[[cells]]
target = "onnx"          # the same as the first cell's 9-frame jobs: built once
component = "encoder"
[[cells]]
target = "executorch"
delegate = "xnnpack"
precision = ["fp32", "w8a8"]
soc = "SM8650"
""")
    jobs = load_plan(plan).jobs
    assert len(jobs) == 4 + 4
    assert len({j.id for j in jobs}) == len(jobs)
    assert [j.id for j in load_plan(plan).jobs] == [j.id for j in jobs]  # stable
    enc9 = next(j for j in jobs if (j.component, j.target, j.frames) == ("encoder", "onnx", 9))
    assert enc9.resolution == "128x192" and enc9.name.endswith(enc9.id)
    argv = next(j for j in jobs if j.precision == "w8a8").export_args("OUT")
    assert argv[argv.index("--precision") + 1] == "w8a8"
    assert "--soc" not in argv  # the SoC changes only a QNN build: not part of an XNNPACK job (nor of its id)
    assert {j.precision for j in jobs} == {"fp32", "w8a8"}  # the default precision spelled out (one id per export)
    assert argv[-3:] == ["--out", "OUT", "--json"]
    # the id covers the tool version and the checkpoints' bytes, not their paths
    from dataclasses import replace
    assert replace(enc9, tool_version="9.9").with_id().id != enc9.id
    assert replace(enc9, checkpoints=(("a", "1" * 64),)).with_id().id != enc9.id
    assert replace(enc9, checkpoints=(("b", "1" * 64),)).with_id().id == \
        replace(enc9, checkpoints=(("a", "1" * 64),)).with_id().id


def test_checkpoints_go_to_the_jobs_whose_model_they_hold(tmp_path):
    ckpt = tiny_vae_checkpoint(tmp_path / "vae.safetensors", seed=1)
    plan = write(tmp_path / "p.toml", TWO_JOBS.replace('[defaults]', 'checkpoints = ["vae.safetensors"]\n[defaults]')
                 .replace('"encoder", "decoder"', '"encoder", "denoiser"'))
    jobs = {j.component: j for j in load_plan(plan).jobs}
    assert [p for p, _ in jobs["encoder"].checkpoints] == [str(ckpt)]
    # nothing in the file holds the denoiser: it gets every file and its export fails with its own message
    assert [p for p, _ in jobs["denoiser"].checkpoints] == [str(ckpt)]
    other = tiny_vae_checkpoint(tmp_path / "vae.safetensors", seed=2)  # same path, other bytes: another job id
    assert load_plan(plan).jobs[0].id != jobs["encoder"].id and other.exists()


@pytest.mark.parametrize("text, message", [
    ("schema_version = 1\n", "'cells' is a required property"),
    ("schema_version = 1\n[[cells]]\ncomponent = 'encoder'\ntarget = 'onnx'\nframes = 'nine'\n", "cells[0].frames"),
    ("schema_version = 1\n[[cells]]\ncomponent = 'encoder'\ntarget = 'onnx'\ncolour = 'red'\n", "colour"),
    ("schema_version = 1\n[[cells]]\ncomponent = 'encoder'\n", "no target"),
    ("schema_version = [\n", "not valid TOML"),
    ("schema_version = 1\ncheckpoints = ['missing.pth']\n[[cells]]\ncomponent = 'encoder'\ntarget = 'onnx'\n",
     "no such file"),
])
def test_bad_plans_fail_with_one_line(tmp_path, text, message):
    proc = run_cli("plan", write(tmp_path / "bad.toml", text), "--list")
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.startswith("error:") and message in proc.stderr and "Traceback" not in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1


def test_github_matrix_round_trips_into_the_same_jobs(tmp_path):
    ckpt = tiny_vae_checkpoint(tmp_path / "vae.safetensors", seed=1)
    plan = write(tmp_path / "p.toml", TWO_JOBS.replace('[defaults]', 'checkpoints = ["vae.safetensors"]\n[defaults]')
                 .replace('"encoder", "decoder"', '"encoder"') + '[[cells]]\ncomponent = "encoder"\n'
                 'target = "onnx"\ndelegate = "qnn"\nprecision = ["w8a8", "w8a16"]\nsoc = ["SM8650", "SM8750"]\n')
    proc = run_cli("plan", plan, "--matrix", "github")
    assert proc.returncode == 0, proc.stderr
    matrix = json.loads(proc.stdout)
    assert len(matrix["include"]) == 5
    assert all(e["spec"]["checkpoints"] == [{"path": "vae.safetensors", "sha256": e["spec"]["checkpoints"][0]["sha256"]}]
               for e in matrix["include"])  # relative to the plan: valid on any runner's checkout
    jobs = jobs_from_matrix(matrix, tmp_path)
    assert jobs == load_plan(plan).jobs
    assert [j.id for j in jobs] == [e["job"] for e in matrix["include"]] == [j.id for j in load_plan(plan).jobs]
    assert jobs[0].checkpoints[0][0] == str(ckpt)
    edited = dict(matrix["include"][0]["spec"], frames=17)
    with pytest.raises(Exception, match="hash to"):
        Job.from_dict(edited)


def test_release_workflow_runs_one_runner_per_matrix_job_then_merges():
    wf = yaml.safe_load((REPO / ".github/workflows/release.yml").read_text())
    jobs = wf["jobs"]
    assert "--matrix github" in " ".join(s.get("run", "") for s in jobs["plan"]["steps"])
    assert jobs["build"]["strategy"]["matrix"] == "${{ fromJSON(needs.plan.outputs.matrix) }}"
    assert jobs["build"]["strategy"]["fail-fast"] is False
    build = " ".join(s.get("run", "") for s in jobs["build"]["steps"])
    assert '--only "${{ matrix.job }}"' in build
    assert any(s.get("uses", "").startswith("actions/upload-artifact") for s in jobs["build"]["steps"])
    assert jobs["merge"]["needs"] == "build"
    assert "mi2v release merge jobs --out release" in " ".join(s.get("run", "") for s in jobs["merge"]["steps"])


def test_memory_table_learns_and_scales(tmp_path):
    path = tmp_path / "t.json"
    job = Job(component="denoiser", target="onnx", preset="mobilei2v-270m", resolution="720x1280", frames=17)
    assert memory.estimate(job, memory.load_table(path)) == (memory.DEFAULT_FULL, "default")
    small = Job(component="denoiser", target="onnx", preset="mobilei2v-270m", resolution="360x640", frames=17)
    memory.record(small, 1 << 30, path)
    need, source = memory.estimate(job, memory.load_table(path))
    assert source.startswith("scaled from") and need == int(4 * (1 << 30) * memory.MARGIN)
    memory.record(job, 3 << 30, path)
    memory.record(job, 2 << 30, path)  # the table keeps the largest peak seen
    entry = memory.load_table(path)[memory.job_key(job)]
    assert entry["peak_rss_bytes"] == 3 << 30 and entry["last_rss_bytes"] == 2 << 30 and entry["samples"] == 2
    assert memory.estimate(job, memory.load_table(path)) == (int((3 << 30) * memory.MARGIN), "measured")


# ---- a real Ray cluster on loopback and the local executor --------------------------------------------------------


@pytest.fixture(scope="module")
def ray_cluster():
    """`ray start --head` on 127.0.0.1 (2 CPUs, 6 GiB of schedulable memory), stopped after the module."""
    ray_exe = Path(os.sys.executable).with_name("ray")
    temp = Path(tempfile.mkdtemp(prefix="ray", dir="/tmp"))  # short: Ray's socket paths must fit 107 bytes
    port = free_port()
    # Ray starts its workers at nice 15; on this shared test machine they would crawl behind everything else
    env = dict(os.environ, RAY_USAGE_STATS_ENABLED="0", RAY_worker_niceness="0")
    start = [str(ray_exe), "start", "--head", "--port", str(port), "--node-ip-address", "127.0.0.1",
             "--num-cpus", "2", "--memory", str(6 << 30), "--object-store-memory", str(200 << 20),
             "--temp-dir", str(temp), "--include-dashboard", "false", "--disable-usage-stats"]
    proc = subprocess.run(start, capture_output=True, text=True, env=env, timeout=180)
    if proc.returncode:
        pytest.fail(f"ray start failed: {proc.stderr[-2000:]}")
    try:
        yield f"127.0.0.1:{port}"
    finally:
        subprocess.run([str(ray_exe), "stop", "--force"], capture_output=True, env=env, timeout=120)
        shutil.rmtree(temp, ignore_errors=True)


@pytest.fixture(scope="module")
def local_build(tmp_path_factory):
    """The two-job plan built once by the local executor (2 at once), with its own memory table."""
    root = tmp_path_factory.mktemp("local-build")
    plan = write(root / "two.toml", TWO_JOBS)
    env = dict(os.environ, MI2V_MEMORY_TABLE=str(root / "memory-table.json"))
    proc = run_cli("plan", plan, "--executor", "local", "--jobs", "2", "--out", root / "jobs", env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return {"plan": plan, "jobs": root / "jobs", "table": root / "memory-table.json", "stderr": proc.stderr}


def test_local_executor_builds_verified_job_folders_learns_memory_and_reruns_skip(local_build, table):
    jobs = local_build["jobs"]
    assert "done 2" in local_build["stderr"] and "expects 1.50 GiB" in local_build["stderr"]  # fresh table: default
    for folder in (p for p in jobs.iterdir() if p.is_dir()):
        assert verify_job_folder(folder) == []
        record = json.loads((folder / "job.json").read_text())
        assert record["id"] in folder.name and record["peak_rss_bytes"] > 100 << 20
    assert not [p for p in jobs.iterdir() if p.name.startswith(".")]  # no partial / staging folder left
    learned = memory.load_table(local_build["table"])
    assert sorted(k.split("/")[0] for k in learned) == ["decoder", "encoder"]
    assert all(e["samples"] == 1 and e["peak_rss_bytes"] > 100 << 20 for e in learned.values())
    # a re-run builds nothing: every job is skipped and the artifacts are untouched
    mtimes = {p: p.stat().st_mtime_ns for p in jobs.rglob("*.onnx")}
    proc = run_cli("plan", local_build["plan"], "--out", jobs, "--jobs", "2")
    assert proc.returncode == 0 and proc.stderr.count("skipped") >= 2, proc.stderr
    assert {p: p.stat().st_mtime_ns for p in jobs.rglob("*.onnx")} == mtimes
    run = json.loads((jobs / "plan-run.json").read_text())
    assert [j["status"] for j in run["jobs"]] == ["skipped", "skipped"]
    assert memory.load_table(table) == {}  # nothing was built, nothing learned


@pytest.mark.heavy  # a Ray cluster on loopback and two builds: 25 s; the local executor's tests stay
def test_ray_cluster_builds_the_same_bytes_as_the_local_executor(tmp_path, ray_cluster, local_build, table):
    proc = run_cli("plan", local_build["plan"], "--executor", "ray", "--address", ray_cluster,
                   "--out", tmp_path / "ray")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "done 2" in proc.stderr and "submitted, memory 1.50 GiB (default)" in proc.stderr
    ray_files = artifact_digests(tmp_path / "ray")
    assert len(ray_files) == 2 and ray_files == artifact_digests(local_build["jobs"])
    assert not [p for p in (tmp_path / "ray").iterdir() if p.name.startswith(".")]
    assert len(memory.load_table(table)) == 2  # the driver learned from the Ray jobs too
    # the merged release of the Ray build
    proc = run_cli("release", "merge", tmp_path / "ray", "--out", tmp_path / "release", "--json")
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)
    assert json.loads((tmp_path / "release" / "release.json").read_text()) == doc
    assert len(doc["artifacts"]) == 2 and len(doc["jobs"]) == 2 and not doc["mixed"]
    for a in doc["artifacts"]:
        assert a["file"].startswith("onnx/") and (tmp_path / "release" / a["file"]).is_file()
        assert a["sha256"] == ray_files[a["file"].split("/", 1)[1]]
        assert a["gates"]["parity"]["passed"] and a["precision"] == "fp32" and a["job_id"] in a["file"]
        assert [v["check"] for v in a["verification"]] == ["parity", "test-vectors", "sha256"]
        assert a["verification"][1]["by"] == "mi2v release merge" and a["verification"][1]["on"] == "onnxruntime"
        assert all(v["passed"] for v in a["verification"])


def test_ray_executor_needs_a_reachable_cluster(tmp_path):
    plan = write(tmp_path / "two.toml", TWO_JOBS)
    proc = run_cli("plan", plan, "--executor", "ray")
    assert proc.returncode == 2 and "needs --address" in proc.stderr
    proc = run_cli("plan", plan, "--executor", "ray", "--address", f"127.0.0.1:{free_port()}", timeout=300)
    assert proc.returncode == 2 and "cannot connect to a Ray cluster" in proc.stderr, proc.stderr[-2000:]


def test_a_failing_job_is_reported_and_the_others_complete(tmp_path, local_build, table):
    tiny_vae_checkpoint(tmp_path / "vae.safetensors", seed=3)
    plan = write(tmp_path / "mixed.toml", """
schema_version = 1
checkpoints = ["vae.safetensors"]
[defaults]
preset = "tiny"
[[cells]]
component = "encoder"
target = "onnx"
[[cells]]
name = "broken-no-denoiser-weights"  # valid flags (checked at --list); the export finds no denoiser in the file
component = "denoiser"
target = "onnx"
""")
    proc = run_cli("plan", plan, "--jobs", "2", "--out", tmp_path / "jobs")
    assert proc.returncode == 1, proc.stderr[-3000:]
    run = json.loads((tmp_path / "jobs" / "plan-run.json").read_text())
    by_component = {j["name"].split("-")[0]: j for j in run["jobs"]}
    assert by_component["encoder"]["status"] == "done" and by_component["denoiser"]["status"] == "failed"
    assert "holds the denoiser" in by_component["denoiser"]["reason"]
    assert "\n" not in by_component["denoiser"]["reason"]
    assert f"failed {by_component['denoiser']['name']}" in proc.stderr
    good = tmp_path / "jobs" / by_component["encoder"]["name"]
    assert verify_job_folder(good) == [] and not (tmp_path / "jobs" / by_component["denoiser"]["name"]).exists()
    # merge: these weights and the seeded ones of the other build are refused together unless --allow-mixed
    seeded = next(p for p in local_build["jobs"].iterdir() if p.name.startswith("encoder-"))
    proc = run_cli("release", "merge", good, seeded, "--out", tmp_path / "rel")
    assert proc.returncode == 2 and "different weights" in proc.stderr and "--allow-mixed" in proc.stderr
    assert not (tmp_path / "rel").exists() and not list(tmp_path.glob(".mi2v-release-*"))
    proc = run_cli("release", "merge", good, seeded, "--out", tmp_path / "rel", "--allow-mixed", "--json")
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["mixed"] is True


def test_merge_refuses_unverified_folders_and_leaves_the_old_release(tmp_path, local_build):
    jobs = tmp_path / "jobs"
    shutil.copytree(local_build["jobs"], jobs)
    assert run_cli("release", "merge", jobs, "--out", tmp_path / "rel").returncode == 0
    before = (tmp_path / "rel" / "release.json").read_bytes()
    folder = next(p for p in jobs.iterdir() if p.name.startswith("encoder-"))
    with open(folder / "encoder.onnx", "ab") as f:
        f.write(b"tampered")
    proc = run_cli("release", "merge", jobs, "--out", tmp_path / "rel")
    assert proc.returncode == 2 and "does not verify" in proc.stderr and "sha256" in proc.stderr
    assert (tmp_path / "rel" / "release.json").read_bytes() == before
    assert not list(tmp_path.glob(".mi2v-release-*")) and not list(tmp_path.glob(".rel.*"))
    (tmp_path / "plain").mkdir()
    (tmp_path / "plain" / "x").write_text("x")
    proc = run_cli("release", "merge", tmp_path / "rel" / "onnx", "--out", tmp_path / "plain")
    assert proc.returncode == 2 and "not a release folder" in proc.stderr
    # the tampered job no longer counts as finished: the next run rebuilds it instead of skipping it
    job = next(j for j in load_plan(local_build["plan"], jobs).jobs if j.component == "encoder")
    assert not finished(job, folder)
    assert finished(next(j for j in load_plan(local_build["plan"], jobs).jobs if j.component == "decoder"),
                    jobs / next(p.name for p in jobs.iterdir() if p.name.startswith("decoder-")))


def interrupt_when_both_run(proc: subprocess.Popen, out: Path, timeout: float) -> str:
    """Ctrl-C `proc` once both exports have started (staging folders exist) and the plan shows them running (the
    Ray driver notices a started task within a second); returns its whole stderr after it exits."""
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(proc.stderr), daemon=True)
    reader.start()
    deadline = time.time() + timeout
    while time.time() < deadline and not (len(list(out.glob(".mi2v-export-*"))) == 2
                                           and any("running 2" in line for line in lines)):
        time.sleep(0.2)
    assert len(list(out.glob(".mi2v-export-*"))) == 2, "".join(lines)
    proc.send_signal(signal.SIGINT)
    proc.wait(timeout=timeout + 60)
    reader.join(timeout=30)
    return "".join(lines)


@pytest.mark.heavy  # timing-dependent: Ctrl-C while exports run
def test_ctrl_c_stops_running_exports_and_leaves_no_partial_folders(tmp_path, table):
    plan = write(tmp_path / "two.toml", TWO_JOBS)
    out = tmp_path / "jobs"
    env = dict(os.environ, COLUMNS="200", NO_COLOR="1")
    proc = subprocess.Popen([str(MI2V_EXE), "plan", str(plan), "--jobs", "2", "--out", str(out)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    err = interrupt_when_both_run(proc, out, timeout=60)
    assert proc.returncode == 130, err
    assert "interrupted" in err and "cancelled 2" in err, err
    assert not [p for p in out.iterdir() if p.name != "plan-run.json"]  # nothing half-written
    assert all(j["status"] == "cancelled" for j in json.loads((out / "plan-run.json").read_text())["jobs"])


@pytest.mark.slow  # timing-dependent (signals once both run); once lost a KeyboardInterrupt under load: see README
def test_ctrl_c_cancels_the_ray_tasks_and_leaves_no_partial_folders(tmp_path, ray_cluster, table):
    plan = write(tmp_path / "two.toml", TWO_JOBS)
    out = tmp_path / "jobs"
    env = dict(os.environ, COLUMNS="200", NO_COLOR="1")
    proc = subprocess.Popen([str(MI2V_EXE), "plan", str(plan), "--executor", "ray", "--address", ray_cluster,
                             "--out", str(out)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    err = interrupt_when_both_run(proc, out, timeout=120)
    assert proc.returncode == 130, err[-3000:]
    assert "cancelled 2" in err, err
    assert not [p for p in out.iterdir() if p.name != "plan-run.json"]  # ray.cancel stopped the exports cleanly


@pytest.mark.slow
def test_pte_jobs_are_byte_identical_across_executors(tmp_path, ray_cluster, table):
    plan = write(tmp_path / "pte.toml", TWO_JOBS.replace('target = "onnx"', 'target = "executorch"\n'
                                                         'delegate = "xnnpack"'))
    for executor in ("ray", "local"):
        proc = run_cli("plan", plan, "--executor", executor, "--address", ray_cluster, "--out", tmp_path / executor,
                       "--jobs", "2")
        assert proc.returncode == 0, proc.stderr[-3000:]
    ray_files = artifact_digests(tmp_path / "ray")
    assert len(ray_files) == 2 and ray_files == artifact_digests(tmp_path / "local")
