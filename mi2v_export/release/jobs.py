"""The one job function every executor runs: build one job's folder with `mi2v export`, atomically.

`run_job(spec, out_root)` runs `mi2v export` in a child process into `OUT_ROOT/.partial-<name>`, checks the folder
(`verify_job_folder`), writes `job.json` and renames the folder to `OUT_ROOT/<name>`. A folder that already holds a
verified build of the same job id is left alone ("skipped"). It returns a plain dict (status done | skipped |
failed | cancelled, a one-line reason, wall time, peak memory) and never raises for a failed export, so one bad job
cannot stop the others; a KeyboardInterrupt (Ctrl-C, or `ray.cancel`) stops the child and removes the partial
folder before it propagates.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from ..interrupts import Interrupts, recorded_interrupts
from .plan import Job

JOB_FILE = "job.json"
JOB_SCHEMA = "mi2v-release-job"
LOG_FILE = "export.log"
PARTIAL_PREFIX = ".partial-"


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).replace(microsecond=0).isoformat().replace("+00:00", "Z")


def verify_job_folder(folder: Path) -> list[str]:
    """Why `folder` is not a finished, verified build (empty list: it is): manifest.json present, every artifact
    file present with the sha256 the manifest records, no artifact whose parity gate failed, and no recorded run
    against its test vectors (export time, `mi2v verify`) that failed. The one place that decides "finished and
    verified" for skipping; `mi2v release merge` also runs the vectors again (`mi2v verify`)."""
    from ..errors import Mi2vError
    from ..manifest import read_manifest

    try:
        manifest = read_manifest(folder)
        manifest.check_files(digests=True)
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
    try:
        record = json.loads((folder / JOB_FILE).read_text())
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) and record.get("schema") == JOB_SCHEMA else None


def finished(job: Job, folder: Path) -> bool:
    """A folder holding a verified build of exactly this job."""
    record = read_job_record(folder)
    return bool(record) and record.get("id") == job.id and not verify_job_folder(folder)


def run_job(spec: dict, out_root: str, on_start: Callable[[subprocess.Popen], None] | None = None) -> dict:
    """Build one job (see the module docstring). `spec` is Job.to_dict(); `on_start` receives the child process
    (the local executor keeps it to stop it on Ctrl-C)."""
    job = Job.from_dict(spec)
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
        child = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=log, stdin=subprocess.DEVNULL, env=env)
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


def _stop(child: subprocess.Popen) -> None:
    """SIGTERM first (the export removes its staging folder and exits 130), SIGKILL if it does not."""
    try:
        child.send_signal(signal.SIGTERM)
        child.wait(timeout=60)
    except subprocess.TimeoutExpired:
        child.kill()
        child.wait()
    except ProcessLookupError:
        pass


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
