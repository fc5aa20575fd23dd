"""Executors: run a plan's jobs on this machine (a memory-aware process pool) or on a Ray cluster. Both call the
same job function (`jobs.run_job`) and report through one `PlanProgress`.

Local: each job is an `mi2v export` child process; a job starts only when its expected peak memory (memory.py)
fits in what the running ones leave of the budget (default: 90% of MemAvailable at start), so `--jobs N` never
runs N 720p exports that together exceed the machine. A job bigger than the whole budget runs alone.

Ray: each job is a Ray task declaring its expected peak as Ray's `memory` resource (the scheduler then never puts
more on a node than its memory), one CPU, no retries. Checkpoints and job folders live on a path every node sees.
"""

from __future__ import annotations

import signal
import threading
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import TextIO

from ..interrupts import GRACE_S, Interrupts
from ..manifest import clean_stale_staging
from . import memory
from .jobs import PARTIAL_PREFIX, finished, remove_leftovers, run_job, signal_group
from .plan import Job

STATES = ("queued", "running", "done", "skipped", "failed", "cancelled")
# On Ctrl-C / SIGTERM the running exports get this long to unwind (remove their staging folder, exit 130), then
# SIGKILL: the whole cancellation fits in the CLI watchdog's GRACE_S (mi2v_export/interrupts.py), which would
# otherwise end `mi2v plan` before it had stopped its exports and written plan-run.json.
STOP_GRACE_S = GRACE_S / 2


class PlanCancelled(Exception):
    """Ctrl-C: running jobs were stopped (their partial folders removed), queued ones never started."""


@dataclass
class PlanProgress:
    """Per-job state for the whole plan; prints one line per change (CI logs and terminals alike)."""

    jobs: list[Job]
    stream: TextIO | None = None
    state: dict[str, str] = field(default_factory=dict)
    results: dict[str, dict] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def __post_init__(self):
        self.state = {j.id: "queued" for j in self.jobs}
        self.by_id = {j.id: j for j in self.jobs}

    def counts(self) -> str:
        n = {s: 0 for s in STATES}
        for s in self.state.values():
            n[s] += 1
        return " · ".join(f"{s} {n[s]}" for s in STATES if n[s] or s in ("queued", "running", "done", "failed"))

    def set(self, job_id: str, state: str, result: dict | None = None, note: str = "") -> None:
        with self.lock:
            if self.state.get(job_id) == state and result is None and not note:
                return
            self.state[job_id] = state
            if result is not None:
                self.results[job_id] = result
            self._print(job_id, state, result, note)

    def _print(self, job_id: str, state: str, result: dict | None, note: str) -> None:
        if self.stream is None:
            return
        mark = {"queued": "·", "running": "▶", "done": "✓", "skipped": "–", "failed": "✗", "cancelled": "■"}[state]
        detail = note
        if result is not None:
            peak = result.get("peak_rss_bytes")
            detail = f"{result.get('wall_s') or 0:.1f}s" + (f", peak {peak / 2**30:.2f} GiB" if peak else "")
            if result.get("reason") and state != "done":
                detail += f" — {result['reason']}"
        print(f"[{self.counts()}] {mark} {state} {self.by_id[job_id].name}" + (f"  {detail}" if detail else ""),
              file=self.stream, flush=True)

    def summary(self) -> list[dict]:
        out = []
        for job in self.jobs:
            r = dict(self.results.get(job.id) or {"id": job.id, "name": job.name, "reason": None})
            r["status"] = self.state[job.id]
            out.append(r)
        return out


def skip_finished(jobs: list[Job], out_root: Path, progress: PlanProgress) -> list[Job]:
    """Mark jobs whose folder already holds a verified build as skipped; the rest still have to run."""
    todo = []
    for job in jobs:
        if finished(job, out_root / job.name):
            progress.set(job.id, "skipped", {"id": job.id, "name": job.name, "folder": str(out_root / job.name),
                                             "status": "skipped", "reason": "already built and verified",
                                             "wall_s": 0.0})
        else:
            todo.append(job)
    return todo


def _learn(job: Job, result: dict) -> None:
    if result.get("status") == "done" and result.get("peak_rss_bytes"):
        memory.record(job, int(result["peak_rss_bytes"]))


# ---------------------------------------------------------------------------------------------------------------
# Local process pool


@dataclass
class _Running:
    job: Job
    need: int
    child: object = None  # the export's Popen, once started


def run_local(jobs: list[Job], out_root: Path, progress: PlanProgress, workers: int,
              budget: int | None, interrupts: Interrupts) -> None:
    """Run `jobs` with at most `workers` at once and their expected peaks within `budget` bytes; a seen interrupt
    cancels them (PlanCancelled)."""
    budget = budget or int(memory.available_memory() * 0.9)
    table = memory.load_table()
    queue = [(job, memory.estimate(job, table)[0]) for job in jobs]
    running: dict[Future, _Running] = {}
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="mi2v-job") as pool:
        try:
            while queue or running:
                interrupts.raise_if_seen()
                _start_fitting(queue, running, pool, out_root, progress, workers, budget)
                done, _ = wait(list(running), timeout=0.5, return_when=FIRST_COMPLETED)
                for fut in done:
                    _finish(running.pop(fut), fut, progress)
        except KeyboardInterrupt:
            _cancel_local(queue, running, progress, out_root)
            raise PlanCancelled from None


def _start_fitting(queue, running, pool, out_root, progress, workers, budget) -> None:
    """Start queued jobs, in plan order, while a worker is free and the next job's peak fits the budget left."""
    i = 0
    while i < len(queue) and len(running) < workers:
        job, need = queue[i]
        used = sum(r.need for r in running.values())
        if running and used + need > budget:
            i += 1  # a smaller job further down may still fit
            continue
        queue.pop(i)
        slot = _Running(job, need)
        note = f"expects {need / 2**30:.2f} GiB" + (" (more than the budget: runs alone)" if need > budget else "")
        progress.set(job.id, "running", note=note)
        fut = pool.submit(run_job, job.to_dict(), str(out_root), lambda child, s=slot: setattr(s, "child", child))
        running[fut] = slot
        if need > budget:
            return


def _finish(slot: _Running, fut: Future, progress: PlanProgress) -> None:
    try:
        result = fut.result()
    except Exception as exc:  # the job function itself broke (disk full, permissions): still one job's failure
        result = {"id": slot.job.id, "name": slot.job.name, "status": "failed",
                  "reason": f"{type(exc).__name__}: {exc}".splitlines()[0], "wall_s": 0.0}
    _learn(slot.job, result)
    progress.set(slot.job.id, result["status"], result)


def _cancel_local(queue, running, progress: PlanProgress, out_root: Path) -> None:
    """SIGTERM every running export (each removes its staging folder and exits 130), wait for the job threads
    (each removes its partial folder), SIGKILL what is still alive after STOP_GRACE_S and remove the staging
    folders those left; queued jobs are marked cancelled."""
    for job, _ in queue:
        progress.set(job.id, "cancelled", {"id": job.id, "name": job.name, "reason": "not started", "wall_s": 0.0})
    queue.clear()
    _signal_children(running.values(), signal.SIGTERM)
    done, _ = wait(list(running), timeout=STOP_GRACE_S)
    if len(done) < len(running):
        _signal_children(running.values(), signal.SIGKILL)
        wait(list(running))
        clean_stale_staging(out_root)  # only folders of exports no longer running (manifest.py)
    for fut, slot in running.items():
        result = fut.result() if not fut.exception() else {"status": "cancelled", "reason": "interrupted"}
        state = "done" if result.get("status") == "done" else "cancelled"
        progress.set(slot.job.id, state, dict(result, status=state, reason=result.get("reason") or "interrupted"))


def _signal_children(slots, sig) -> None:
    """`sig` to each running export's process group (jobs.py: each export leads a group of its own, so a Ctrl-C
    at the terminal reaches `mi2v plan` only, and this is how it reaches the exports and what they started)."""
    for slot in slots:
        if slot.child is not None:
            signal_group(slot.child.pid, sig)


# ---------------------------------------------------------------------------------------------------------------
# Ray


def run_ray(jobs: list[Job], out_root: Path, progress: PlanProgress, address: str, interrupts: Interrupts) -> None:
    """Submit every job as a Ray task on the cluster at `address`; collect results as they finish; a seen interrupt
    cancels the tasks (PlanCancelled)."""
    import logging

    import ray

    from ..errors import BadInputError

    _check_reachable(address)
    try:
        ray.init(address=address, logging_level=logging.ERROR, log_to_driver=False, configure_logging=False)
    except (ConnectionError, RuntimeError, ValueError) as exc:
        raise BadInputError(f"--address {address}: cannot connect to a Ray cluster "
                            f"({str(exc).splitlines()[0]})") from None
    try:
        refs = _submit_ray(ray, jobs, out_root, progress)
        try:
            _collect_ray(ray, refs, out_root, progress, interrupts)
        except KeyboardInterrupt:
            _cancel_ray(ray, refs, progress, out_root)
            raise PlanCancelled from None
    finally:
        ray.shutdown()


def _check_reachable(address: str) -> None:
    """A HOST:PORT nobody listens on makes ray.init retry for minutes: fail at once with one line instead."""
    import socket

    from ..errors import BadInputError

    host, sep, port = address.rpartition(":")
    if not sep or "://" in address or not port.isdigit():
        return  # "auto", ray://… : left to Ray
    try:
        socket.create_connection((host, int(port)), timeout=10).close()
    except OSError as exc:
        raise BadInputError(f"--address {address}: cannot connect to a Ray cluster ({exc.strerror or exc}); "
                            "is `ray start --head` running there?") from None


def _submit_ray(ray, jobs: list[Job], out_root: Path, progress: PlanProgress) -> dict:
    table = memory.load_table()
    largest = max((float(n.get("Resources", {}).get("memory", 0)) for n in ray.nodes() if n.get("Alive")),
                  default=0.0)
    task = ray.remote(num_cpus=1, max_retries=0)(run_job)
    refs = {}
    for job in jobs:
        need, source = memory.estimate(job, table)
        if largest and need > largest:  # would never be scheduled: ask for the biggest node instead
            need = int(largest)
        ref = task.options(memory=need, name=f"mi2v-export:{job.name}").remote(job.to_dict(), str(out_root))
        refs[ref] = job
        progress.set(job.id, "queued", note=f"submitted, memory {need / 2**30:.2f} GiB ({source})")
    return refs


def _collect_ray(ray, refs: dict, out_root: Path, progress: PlanProgress, interrupts: Interrupts) -> None:
    while refs:
        interrupts.raise_if_seen()
        done, pending = ray.wait(list(refs), num_returns=1, timeout=1.0)
        for ref in pending:  # a task that started has created its partial folder (the path every node sees)
            job = refs[ref]
            if progress.state[job.id] == "queued" and (out_root / f"{PARTIAL_PREFIX}{job.name}").exists():
                progress.set(job.id, "running")
        for ref in done:
            job = refs.pop(ref)
            try:
                result = ray.get(ref)
            except ray.exceptions.RayError as exc:
                result = {"id": job.id, "name": job.name, "status": "failed", "wall_s": 0.0,
                          "reason": f"ray: {type(exc).__name__}: {str(exc).strip().splitlines()[0][:200]}"}
            _learn(job, result)
            progress.set(job.id, result["status"], result)


def _cancel_ray(ray, refs: dict, progress: PlanProgress, out_root: Path) -> None:
    """ray.cancel raises KeyboardInterrupt in running tasks (the job stops its export and removes its partial
    folder) and drops queued ones; what has not ended after STOP_GRACE_S is force-killed (its worker, and with it
    the export: PR_SET_PDEATHSIG, jobs.py) and its partial and staging folders are removed here. All of it within
    the CLI watchdog's grace (STOP_GRACE_S)."""
    for ref in refs:
        ray.cancel(ref)
    ended, left = ray.wait(list(refs), num_returns=len(refs), timeout=STOP_GRACE_S)
    for ref in left:
        ray.cancel(ref, force=True)
    if left:
        ray.wait(left, num_returns=len(left), timeout=STOP_GRACE_S / 3)  # the workers are being killed
    for ref, job in refs.items():
        result = {"id": job.id, "name": job.name, "status": "cancelled", "reason": "interrupted"}
        if ref in ended:
            try:
                result = ray.get(ref, timeout=0.2)
            except Exception:  # TaskCancelledError, WorkerCrashedError, GetTimeoutError
                pass
        else:
            remove_leftovers(job, out_root)
        progress.set(job.id, "done" if result.get("status") == "done" else "cancelled", result)

