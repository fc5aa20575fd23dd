"""The one job function every executor runs: build one job's folder with `mi2v export`, atomically.

`run_job(spec, out_root)` runs `mi2v export` in a child process into `OUT_ROOT/.partial-<name>`, checks the folder
(`verify_job_folder`), writes `job.json` and renames the folder to `OUT_ROOT/<name>`. A folder that already holds a
verified build of the same job id is left alone ("skipped"). It returns a plain dict (status done | skipped |
failed | cancelled, a one-line reason, wall time, peak memory) and never raises for a failed export, so one bad job
cannot stop the others; a KeyboardInterrupt (Ctrl-C, or `ray.cancel`) stops the child and removes the partial
folder before it propagates.

The export child runs in a process group of its own (stopping a job signals the whole group, so nothing the export
started survives it) and, on Linux, asks the kernel to SIGKILL it when its parent dies (PR_SET_PDEATHSIG): a
`kill -9` of `mi2v plan` or of a Ray worker leaves no orphaned export running (its `.partial-` folder is removed
by the next run of that job). The kernel sends that signal when the *thread* that started the child ends; the job
thread waits for its child, so it always outlives it.

Job folders are downloaded CI artifacts: `verify_job_folder` and `load_job_record` check that nothing they name
(manifest.json, job.json, artifact files, files inside artifact folders) leads out of the folder before any of it
is read (mi2v_export/safepath.py).
"""

from __future__ import annotations

import ctypes
import datetime as _dt
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from ..errors import BadInputError, Mi2vError
from ..interrupts import Interrupts, cleanup_on_forced_exit, recorded_interrupts
from ..manifest import STAGING_PREFIX, read_manifest
from ..integrity import check_entries
from ..safepath import contained, safe_name
from .plan import Job

JOB_FILE = "job.json"
JOB_SCHEMA = "mi2v-release-job"
LOG_FILE = "export.log"
PARTIAL_PREFIX = ".partial-"
JOB_ID = re.compile(r"^[0-9a-f]{16}$")  # Job.with_id: the first 16 hex digits of a sha256
PR_SET_PDEATHSIG = 1  # linux/prctl.h
# resolved here, in the parent: the child between fork and exec only calls it (no dlopen, no import there)
_PRCTL = getattr(ctypes.CDLL(None, use_errno=True), "prctl", None) if sys.platform.startswith("linux") else None


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).replace(microsecond=0).isoformat().replace("+00:00", "Z")


def verify_job_folder(folder: Path) -> list[str]:
    """Why `folder` is not a finished, verified build (empty list: it is): manifest.json present, every artifact
    file present with the sha256 the manifest records, no artifact whose parity gate failed, and no recorded run
    against its test vectors (export time, `mi2v verify`) that failed. The one place that decides "finished and
    verified" for skipping; `mi2v release merge` also runs the vectors again (`mi2v verify`). Nothing outside
    `folder` is read: a manifest, artifact or file inside an artifact folder that leads out is a problem, found
    before that file is hashed."""
    try:
        manifest = read_manifest(folder)  # manifest.json itself inside `folder` (mi2v_export/manifest.py)
        # Manifest.file_path refuses '..', absolute paths and symlinks out (inside folder artifacts too) before
        # each file is hashed; a release takes no modified file
        check_entries(manifest, manifest.components, allow_modified=False, remedy="rebuild the job")
    except Mi2vError as exc:
        return [str(exc)]
    problems = []
    if not manifest.components:
        problems.append(f"{folder}: the manifest lists no artifacts")
    for e in manifest.components:
        gate = e.parity.get("gate") or {}
        if gate and not gate.get("passed"):
            problems.append(f"{e.file}: parity gate failed ({gate.get('metric')} {gate.get('op')} "
                            f"{gate.get('threshold')})")
        failed = [r.get("runtime", "?") for r in e.verified_on if not r.get("passed")]
        if failed:
            problems.append(f"{e.file}: failed its test vectors on {', '.join(failed)}")
    return problems


def read_job_record(folder: Path) -> dict | None:
    """The job record of `folder`, or None when there is none (or it is not one): for skipping finished jobs."""
    try:
        return load_job_record(folder)
    except Mi2vError:
        return None


def load_job_record(folder: Path) -> dict:
    """`folder/job.json`, checked before anything trusts it: inside the folder (not a symlink out), a job record,
    its id 16 hex digits, and the fields `mi2v release merge` builds paths from (name, spec target and delegate)
    plain names (mi2v_export/safepath.py). BadInputError naming the field otherwise."""
    where = folder / JOB_FILE
    path = contained(folder, JOB_FILE, str(where))
    try:
        record = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise BadInputError(f"{where}: cannot read a job record ({type(exc).__name__})") from None
    if not isinstance(record, dict) or record.get("schema") != JOB_SCHEMA:
        raise BadInputError(f"{where}: not a release job record (schema {JOB_SCHEMA})")
    if not isinstance(record.get("id"), str) or not JOB_ID.match(record["id"]):
        raise BadInputError(f"{where}: id {record.get('id')!r} is not a job id (16 hex digits)")
    spec = record.get("spec")
    if not isinstance(spec, dict):
        raise BadInputError(f"{where}: spec is missing")
    safe_name(record.get("name"), f"{where}: name")
    safe_name(spec.get("target"), f"{where}: spec.target")
    if spec.get("delegate") is not None:
        safe_name(spec["delegate"], f"{where}: spec.delegate")
    return record


def finished(job: Job, folder: Path) -> bool:
    """A folder holding a verified build of exactly this job."""
    record = read_job_record(folder)
    return bool(record) and record.get("id") == job.id and not verify_job_folder(folder)


def run_job(spec: dict, out_root: str, on_start: Callable[[subprocess.Popen], None] | None = None) -> dict:
    """Build one job (see the module docstring). `spec` is Job.to_dict(); `on_start` receives the child process
    (the local executor keeps it to stop it on Ctrl-C)."""
    job = Job.from_dict(spec)
    safe_name(job.name, "job folder name")  # a spec from a matrix file: its folder stays inside out_root
    root = Path(out_root)
    final = root / job.name
    result = {"id": job.id, "name": job.name, "folder": str(final), "host": socket.gethostname(),
              "status": "failed", "reason": None, "wall_s": 0.0, "peak_rss_bytes": None}
    if finished(job, final):
        return dict(result, status="skipped", reason="already built and verified",
                    peak_rss_bytes=(read_job_record(final) or {}).get("peak_rss_bytes"))
    why = _checkpoints_changed(job)
    if why:
        return dict(result, reason=why)
    partial = root / f"{PARTIAL_PREFIX}{job.name}"
    shutil.rmtree(partial, ignore_errors=True)  # left by a killed run of this same job
    partial.mkdir(parents=True)
    # removed by the CLI's signal watchdog too, should `mi2v plan` have to be ended (mi2v_export/interrupts.py)
    with cleanup_on_forced_exit(partial):
        try:
            result.update(_export(job, partial, on_start))
            if result["status"] == "done":
                problems = verify_job_folder(partial)
                if problems:
                    result.update(status="failed", reason=f"built but does not verify: {problems[0]}")
                else:
                    _write_record(job, partial, result)
                    _install(partial, final)
        finally:
            shutil.rmtree(partial, ignore_errors=True)
    return result


def remove_leftovers(job: Job, out_root: Path) -> None:
    """The partial folder of a job whose process was killed (a force-cancelled Ray task), and the staging folder
    its export made beside it (`.mi2v-export-<partial folder name>-<pid>-…`, manifest.Staging): only this job's."""
    partial = Path(out_root) / f"{PARTIAL_PREFIX}{job.name}"
    for leftover in [partial, *Path(out_root).glob(f"{STAGING_PREFIX}{partial.name}-*")]:
        shutil.rmtree(leftover, ignore_errors=True)


def _checkpoints_changed(job: Job) -> str | None:
    """Jobs read checkpoints from a path every node sees; a file there that is not the one planned fails early."""
    from ..files import sha256_file

    for path, sha in job.checkpoints:
        p = Path(path)
        if not p.is_file():
            return f"checkpoint {path} not found on {socket.gethostname()}"
        if sha256_file(p) != sha:
            return f"checkpoint {path} on {socket.gethostname()} is not the file the plan was made from (sha256)"
    return None


def _export(job: Job, partial: Path, on_start) -> dict:
    """Run `mi2v export` for the job into `partial`; its status, one-line reason, wall time and peak RSS."""
    argv = [sys.executable, "-m", "mi2v_export.cli", *job.export_args(partial)]
    env = dict(os.environ, TQDM_DISABLE="1", COLUMNS="160")
    t0 = time.perf_counter()
    with open(partial / LOG_FILE, "w") as log:
        log.write("$ mi2v " + " ".join(argv[3:]) + "\n")
        log.flush()
        child = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=log, stdin=subprocess.DEVNULL, env=env,
                                 process_group=0, preexec_fn=_die_with(os.getpid()))
        if on_start is not None:
            on_start(child)
        try:
            with recorded_interrupts(signal.SIGINT) as interrupts:  # Ray's cancel simulates a SIGINT
                status, usage = _wait(child, interrupts)
        except KeyboardInterrupt:
            _stop(child)
            raise
        child.returncode = os.waitstatus_to_exitcode(status)
    wall = time.perf_counter() - t0
    peak = usage.ru_maxrss * 1024  # kB on Linux
    if child.returncode == 0:
        return {"status": "done", "wall_s": wall, "peak_rss_bytes": max(peak, _manifest_peak(partial))}
    if child.returncode in (130, -signal.SIGINT, -signal.SIGTERM):
        return {"status": "cancelled", "wall_s": wall, "peak_rss_bytes": peak, "reason": "interrupted"}
    return {"status": "failed", "wall_s": wall, "peak_rss_bytes": peak,
            "reason": _last_error(partial / LOG_FILE, child.returncode)}


def _wait(child: subprocess.Popen, interrupts: Interrupts) -> tuple[int, object]:
    """(wait status, rusage) of `child`, waited for in short polls: Ray's cancel raises KeyboardInterrupt between
    bytecodes (it sends no signal), which a blocking os.wait4 held back until the export had finished; and a
    KeyboardInterrupt Python dropped (see mi2v_export.interrupts) is still seen at the next poll."""
    while True:
        interrupts.raise_if_seen()
        pid, status, usage = os.wait4(child.pid, os.WNOHANG)
        if pid:
            return status, usage
        time.sleep(0.2)


def _die_with(parent: int) -> Callable[[], None]:
    """The child's preexec: SIGKILL when the parent dies (Linux), and exit at once when it already died between
    fork and prctl (nothing would signal it then)."""
    def preexec() -> None:
        if _PRCTL is not None:
            _PRCTL(PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0)
        if os.getppid() != parent:
            os._exit(1)
    return preexec


def signal_group(pid: int, sig: int) -> None:
    """`sig` to a job child's process group (the export and anything it started); not Popen.send_signal, whose
    poll() could reap a child another thread waits for. A group already gone is fine."""
    try:
        os.killpg(pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def _stop(child: subprocess.Popen) -> None:
    """SIGTERM first (the export removes its staging folder and exits 130), SIGKILL if it does not."""
    signal_group(child.pid, signal.SIGTERM)
    try:
        child.wait(timeout=60)
    except subprocess.TimeoutExpired:
        signal_group(child.pid, signal.SIGKILL)
        child.wait()


def _manifest_peak(folder: Path) -> int:
    from ..manifest import read_manifest_if_any

    manifest = read_manifest_if_any(folder)
    peaks = [int(e.export.get("peak_rss_bytes") or 0) for e in (manifest.components if manifest else ())]
    return max(peaks, default=0)


def _last_error(log: Path, code: int) -> str:
    """The export's own `error:` line, else its last line, else the exit code."""
    try:
        lines = [ln.strip() for ln in log.read_text(errors="replace").splitlines() if ln.strip()]
    except OSError:
        lines = []
    errors = [ln for ln in lines[1:] if ln.startswith("error:")]
    if errors:
        return errors[-1][len("error:"):].strip()
    return f"export exited with code {code}" + (f": {lines[-1][:200]}" if len(lines) > 1 else "")


def _write_record(job: Job, folder: Path, result: dict) -> None:
    from ..files import write_json_atomic

    record = {"schema": JOB_SCHEMA, "schema_version": 1, "id": job.id, "name": job.name, "spec": job.to_dict(),
              "argv": ["mi2v", *job.export_args(job.name)], "host": result["host"], "finished_at": _now(),
              "wall_s": round(result["wall_s"], 3), "peak_rss_bytes": result["peak_rss_bytes"]}
    write_json_atomic(folder / JOB_FILE, record)


def _install(partial: Path, final: Path) -> None:
    """Rename the finished folder into place; an older (stale or unverifiable) folder of that name goes away."""
    from ..files import replace_folder

    replace_folder(partial, final, aside_prefix=PARTIAL_PREFIX)
