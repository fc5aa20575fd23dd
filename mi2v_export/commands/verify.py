"""`mi2v verify DIR`: run the artifacts of a folder on every runtime this machine has against their test vectors,
record the results in DIR/manifest.json (`parity.verified_on`), exit 4 when one fails. The work is in
mi2v_export.verify; this module parses flags and prints a table (or, with --json, the checks)."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.table import Table

from ..errors import VerificationError
from ._options import AllowModified, Json, OneComponent, refine
from ._render import console, print_json, result_notes, stdout_to_stderr


def _fmt(run: dict) -> str:
    psnr, rel = run.get("psnr_db"), run.get("rel_l2")
    if run.get("error") and ("outputs_passed" not in run or psnr is None):  # it did not run at all
        return f"error: {run['error']}"[:80]
    psnr_text = psnr if isinstance(psnr, str) else f"{psnr:.1f}"
    return f"PSNR {psnr_text} dB, rel_l2 {float(rel):.1e}"


def _mark(run: dict) -> str:
    if "outputs_passed" in run:  # a modified file (--allow-modified): recorded as no pass whatever the outputs
        return "[yellow]modified[/] " + ("pass" if run["outputs_passed"] else "[red]FAIL[/]")
    return "[green]pass[/]" if run["passed"] else "[red]FAIL[/]"


def verify(
    folder: Path = typer.Argument(..., help="artifacts folder written by `mi2v export` (with manifest.json)"),
    component: refine(OneComponent, help="one component (default: all)") = None,
    runtime: list[str] = typer.Option([], "--runtime", help="only this runtime (repeatable), e.g. onnxruntime, "
                                      "executorch-xnnpack, coreml-cpu_only (default: every one available here)"),
    no_record: bool = typer.Option(False, "--no-record", help="do not write the results into manifest.json"),
    json_out: refine(Json, help="print the checks as JSON on stdout") = False,
    allow_modified: AllowModified = False,
) -> None:
    """Run every artifact in FOLDER on each runtime this machine has (onnxruntime CPU, ExecuTorch XNNPACK /
    portable, Core ML per compute unit on macOS) against its stored test vectors, with the component's gate.
    Needs no model or checkpoint. Results are appended to the manifest's parity.verified_on; exit 4 on a failure."""
    from ..verify import verify_folder

    with stdout_to_stderr(json_out):  # native runtimes' prints must not reach --json's stdout
        checks = verify_folder(folder, component=component and component.value, runtimes=list(runtime) or None,
                               record=not no_record, allow_modified=allow_modified)
    failed = [c for c in checks if c.failed]
    if json_out:
        print_json({"folder": str(folder), "passed": not failed, "ran": sum(len(c.runs) for c in checks),
                    "artifacts": [c.to_dict() for c in checks]})
    else:
        _print_table(folder, checks)
    if failed:
        names = ", ".join(f"{c.component} ({c.file} on {', '.join(r['runtime'] for r in c.runs if not r['passed'])})"
                          for c in failed)
        errors = [r["error"] for c in failed for r in c.runs if not r["passed"] and r.get("error")]
        raise VerificationError(f"{names}: " + (errors[0] if errors else
                                                "output differs from the stored PyTorch fp32 output beyond the gate"))


def _print_table(folder: Path, checks) -> None:
    table = Table(title=f"verify {folder}")
    for col in ("component", "file", "dtype", "runtime", "result", "gate", ""):
        table.add_column(col, no_wrap=True)
    notes = []
    for c in checks:
        for r in c.runs:
            table.add_row(c.component, c.file, c.dtype, f"{r['runtime']} {r.get('runtime_version') or ''}",
                          _fmt(r), r["gate"], _mark(r))
        notes += [f"{c.file}: {name} not run — {why}" for name, why in c.skipped.items()]
        if not c.sha256_ok:
            notes.append(f"{c.file}: differs from the manifest (--allow-modified): its runs are recorded with "
                         "passed: false")
    console.print(table)
    result_notes(notes)
    if not any(c.runs for c in checks):
        console.print("nothing could be run on this machine (see the notes)")


def register(app: typer.Typer) -> None:
    app.command("verify")(verify)
