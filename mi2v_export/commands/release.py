"""`mi2v plan FILE` (list, run on this machine or a Ray cluster, or write a GitHub Actions matrix) and
`mi2v release merge DIRS... --out RELEASE`. The work is in `mi2v_export.release`; this module parses flags and
renders tables."""

from __future__ import annotations

import json
import signal
from enum import Enum
from pathlib import Path

import typer
from rich.table import Table

from ..errors import BadInputError
from ..files import write_json_atomic
from ..interrupts import recorded_interrupts
from ..outputs import check_folder
from ._options import Json, MemoryBudget, Out, refine
from ._render import console, err_console, human_bytes, is_quiet, print_json

release_app = typer.Typer(name="release", help="Assemble a release from the job folders a plan built.",
                          no_args_is_help=True)


class Executor(str, Enum):
    local = "local"
    ray = "ray"


class Matrix(str, Enum):
    github = "github"


def plan(
    file: Path = typer.Argument(..., help="release plan (TOML; schema: "
                                "mi2v_export/schemas/release-plan.schema.json)"),
    list_jobs: bool = typer.Option(False, "--list", help="print the jobs the plan expands into and exit"),
    json_out: refine(Json, help="with --list: the jobs as JSON on stdout") = False,
    executor: Executor = typer.Option(Executor.local, "--executor", help="local (a process pool here) | ray"),
    jobs: int = typer.Option(1, "--jobs", "-j", min=1, help="local: exports at once (memory permitting)"),
    memory_budget: refine(MemoryBudget, help="local: GiB the running exports may use together (default: 90% of "
                          "available memory)") = None,
    address: str | None = typer.Option(None, "--address", envvar="RAY_ADDRESS", help="ray: the cluster, "
                                       "e.g. 10.0.0.5:6379 (ray start --head prints it)"),
    matrix: Matrix | None = typer.Option(None, "--matrix", help="github: print the jobs as a GitHub Actions "
                                         "matrix (JSON for fromJSON) and exit"),
    only: list[str] = typer.Option([], "--only", help="run just this job (id, or folder name); repeatable"),
    out: refine(Out, help="folder for the job folders (default: the plan's `out`)") = None,
) -> None:
    """Expand a release plan into independent `mi2v export` jobs and build them: each job gets its own folder
    (OUT/<name>), a job whose folder already holds a verified build is skipped, a failed job never stops the others.
    Exit code 0 when every job is done or skipped, 1 when any failed, 130 on Ctrl-C."""
    from ..release.plan import load_plan  # torch: not at `mi2v --help`

    the_plan = load_plan(file, out)
    selected = _select(the_plan.jobs, only)
    if matrix is not None:
        from ..release.plan import github_matrix

        the_plan.jobs = selected
        print(json.dumps(github_matrix(the_plan), separators=(",", ":")))
        return
    if list_jobs:
        _list(the_plan, selected, json_out)
        return
    if executor is Executor.ray and not address:
        raise BadInputError("--executor ray needs --address HOST:PORT (or RAY_ADDRESS)")
    budget = int(memory_budget * 2**30) if memory_budget else None
    raise typer.Exit(_run(the_plan, selected, executor, jobs, budget, address))


def _select(all_jobs, only: list[str]):
    if not only:
        return list(all_jobs)
    picked = [j for j in all_jobs if j.id in only or j.name in only]
    unknown = set(only) - {j.id for j in picked} - {j.name for j in picked}
    if unknown:
        raise BadInputError(f"--only {sorted(unknown)[0]}: no such job in the plan (see `mi2v plan FILE --list`)")
    return picked


def _list(the_plan, jobs, json_out: bool) -> None:
    from ..release import memory
    from ..release.jobs import finished

    table_data = memory.load_table()
    rows = []
    for job in jobs:
        need, source = memory.estimate(job, table_data)
        rows.append({"id": job.id, "name": job.name, "folder": str(the_plan.out / job.name),
                     "argv": ["mi2v", *job.export_args(the_plan.out / job.name)], "spec": job.to_dict(),
                     "expected_peak_bytes": need, "estimate": source,
                     "built": finished(job, the_plan.out / job.name)})
    if json_out:
        print_json({"plan": str(the_plan.path), "name": the_plan.name, "out": str(the_plan.out), "jobs": rows})
        return
    table = Table(title=f"{the_plan.name}: {len(rows)} job(s) → {the_plan.out}")
    for col in ("id", "component", "target", "precision", "soc", "video", "expected peak", "built"):
        table.add_column(col, no_wrap=True)
    for job, r in zip(jobs, rows):
        tgt = job.target + (f"/{job.delegate}" if job.delegate else "")
        table.add_row(job.id, job.component, tgt, job.precision_label, job.soc or "—",
                      f"{job.preset} {job.resolution}x{job.frames}",
                      f"{human_bytes(r['expected_peak_bytes'])} ({r['estimate']})", "yes" if r["built"] else "no")
    console.print(table)


def _run(the_plan, jobs, executor: Executor, workers: int, budget: int | None, address: str | None) -> int:
    from ..release import executors  # torch: not at `mi2v --help`
    from ..release.jobs import _now

    check_folder(the_plan.out, "--out")  # before any export: a read-only or impossible folder is one line
    progress = executors.PlanProgress(jobs, stream=None if is_quiet() else err_console.file)  # a line per change
    the_plan.out.mkdir(parents=True, exist_ok=True)
    todo = executors.skip_finished(jobs, the_plan.out, progress)
    cancelled = False
    try:  # Ctrl-C and SIGTERM cancel the plan; the executors also ask `interrupts.seen` (mi2v_export.interrupts)
        with recorded_interrupts(signal.SIGINT, signal.SIGTERM) as interrupts:
            if executor is Executor.local:
                executors.run_local(todo, the_plan.out, progress, workers, budget, interrupts)
            else:
                executors.run_ray(todo, the_plan.out, progress, address, interrupts)
    except executors.PlanCancelled:
        cancelled = True
    results = progress.summary()
    _write_run_record(the_plan, executor.value, results, _now())
    _render_summary(the_plan, results)
    if cancelled:
        err_console.print("error: interrupted (Ctrl-C); running exports were stopped, finished job folders kept")
        return 130
    return 1 if any(r["status"] not in ("done", "skipped") for r in results) else 0


def _write_run_record(the_plan, executor: str, results: list[dict], at: str) -> None:
    write_json_atomic(the_plan.out / "plan-run.json", {"schema": "mi2v-plan-run", "schema_version": 1,
                                                        "plan": str(the_plan.path), "executor": executor,
                                                        "finished_at": at, "jobs": results})


def _render_summary(the_plan, results: list[dict]) -> None:
    table = Table(title=f"plan {the_plan.name}: job folders in {the_plan.out}")
    for col in ("job", "status", "time", "peak RSS", "reason"):
        table.add_column(col, overflow="fold")
    for r in results:
        peak = r.get("peak_rss_bytes")
        table.add_row(r["name"], r["status"], f"{r.get('wall_s') or 0:.1f}s", human_bytes(peak) if peak else "—",
                      r.get("reason") if r["status"] != "done" else "")
    err_console.print(table)


@release_app.command("merge")
def merge(
    dirs: list[Path] = typer.Argument(..., help="job folders, or folders of job folders (a plan's output)"),
    out: refine(Out, help="the release folder to write (release.json + <target>/<job>/)") = ...,
    allow_mixed: bool = typer.Option(False, "--allow-mixed", help="merge jobs built from different checkpoints "
                                     "or tool versions (recorded in release.json)"),
    no_vectors: bool = typer.Option(False, "--no-vectors", help="do not run the artifacts against their test "
                                    "vectors here (only sha256 and the recorded gates are checked)"),
    json_out: refine(Json, help="print release.json on stdout") = False,
) -> None:
    """Merge finished, verified job folders into one release: release.json lists every artifact with its job id,
    target, precision, SoC, sha256, gates and verification records. Written to a temporary folder and renamed."""
    from ..release.merge import merge_release  # torch: not at `mi2v --help`

    doc = merge_release(dirs, out, allow_mixed=allow_mixed, run_vectors=not no_vectors)
    if json_out:
        print_json(doc)
        return
    table = Table(title=f"release {out} ({len(doc['jobs'])} job(s))")
    for col in ("file", "precision", "soc", "bytes", "parity", "sha256"):
        table.add_column(col, no_wrap=col != "file", overflow="fold")
    for a in doc["artifacts"]:
        gate = a["gates"]["parity"] or {}
        parity = "—" if not gate else ("pass" if gate.get("passed") else "FAIL")
        table.add_row(a["file"], a["precision"], a["soc"] or "—", human_bytes(a["bytes"]), parity, a["sha256"][:12])
    console.print(table)
    if doc["mixed"]:
        console.print("[yellow]mixed release:[/] " + "; ".join(doc["mixed_reasons"]))
    console.print(f"release index: {Path(out) / 'release.json'}")


def register(app: typer.Typer) -> None:
    app.command("plan")(plan)
    app.add_typer(release_app, name="release")
