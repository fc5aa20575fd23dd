"""`mi2v verify`: run every artifact of a folder on each runtime this machine has, against its stored test vectors.

No model, no checkpoint: the inputs and the PyTorch fp32 outputs travel with the artifacts (mi2v_export.testvectors),
so the folder can be copied to a Mac or an ARM board and checked there. ONNX and Core ML never import torch here;
the ExecuTorch runtime does (its pybindings link libtorch).

The runtimes are mi2v_export.runtimes' registry: every runtime that loads artifact files, each with `accepts`
(which manifest entries it runs), `available` (None when usable on this machine, else why not), `version` and
`run`; their names are the `--runtime` values. Adding one (e.g. a new target's) is a module in mi2v_export/runtimes/.

Each run's result is a record appended to the entry's `parity.verified_on` list (manifest.append_verifications):
{where, when, runtime, runtime_version, psnr_db, rel_l2, max_abs, passed, by: "verify", sets, gate[, error]}.
The gate is the one the export recorded for the entry, else the precision's (parity.gate_for).
"""

from __future__ import annotations

import os
import platform
from dataclasses import dataclass, field
from pathlib import Path

from . import parity, testvectors
from .contract import cpu_model
from .errors import BadInputError
from .integrity import check_entry
from .manifest import ArtifactEntry, Manifest, append_verifications, now_iso, read_manifest
from .outputs import check_folder
from .runtimes import Runtime, register
from .runtimes import all as all_runtimes
from .runtimes.sessions import run_sets

# the runtimes `mi2v verify` may pick: those that load artifact files (not the PyTorch stand-ins)
RUNTIMES: list[Runtime] = [r for r in all_runtimes() if r.suffix]
__all__ = ["RUNTIMES", "Runtime", "register", "verify_folder", "check_artifact", "run_record", "gate_of", "where",
           "select_runtimes", "ArtifactCheck"]


# ---------------------------------------------------------------------------------------------------------------
# Running a folder


def where() -> dict:
    """The machine a run happened on (recorded with each verified_on entry)."""
    cpu = cpu_model()
    return {"host": platform.node(), "os": f"{platform.system()} {platform.release()}", "machine": platform.machine(),
            "cpu": cpu, "cores": os.cpu_count(), "python": platform.python_version()}


def run_record(runtime: str, runtime_version: str | None, metrics: parity.Metrics | None, gate: parity.Gate,
               by: str, sets: int, error: str | None = None) -> dict:
    """One verified_on entry (JSON-safe)."""
    rec = {"where": where(), "when": now_iso(), "runtime": runtime, "runtime_version": runtime_version,
           "psnr_db": None, "rel_l2": None, "max_abs": None, "passed": False, "by": by, "sets": sets,
           "gate": gate.describe()}
    if metrics is not None:
        rec.update({k: v for k, v in metrics.to_dict().items() if k != "finite"})
        rec["passed"] = gate.passes(metrics)
    if error:
        rec["error"] = error
    return rec


def gate_of(entry: ArtifactEntry) -> parity.Gate:
    """The gate the export recorded for the entry, else the one of its precision."""
    g = (entry.parity or {}).get("gate") or {}
    if g.get("metric") and g.get("op") and g.get("threshold") is not None:
        return parity.Gate(str(g["metric"]), str(g["op"]), float(g["threshold"]))
    return parity.gate_for(entry.dtype)


@dataclass
class ArtifactCheck:
    """What `mi2v verify` did with one artifact: the run records it added, and the runtimes it skipped and why."""

    component: str
    file: str
    target: str
    delegate: str | None
    dtype: str
    sha256_ok: bool
    runs: list[dict] = field(default_factory=list)
    skipped: dict[str, str] = field(default_factory=dict)  # runtime (or "vectors") → reason
    modified: list[dict] = field(default_factory=list)  # integrity.Modified records (--allow-modified only)

    @property
    def failed(self) -> bool:
        """The outputs missed the gate on a runtime (for a modified file: its outputs, which the record keeps
        apart from `passed`)."""
        return any(not r.get("outputs_passed", r["passed"]) for r in self.runs)

    def to_dict(self) -> dict:
        return {"component": self.component, "file": self.file, "target": self.target, "delegate": self.delegate,
                "dtype": self.dtype, "sha256_ok": self.sha256_ok,
                "passed": (self.sha256_ok and not self.failed) if self.runs else None,
                "runs": self.runs, "skipped": self.skipped, "modified": self.modified}


def _mark_modified(check: ArtifactCheck) -> None:
    """A run of bytes the manifest does not describe is never recorded as a pass (integrity policy,
    mi2v_export/integrity.py): `passed` false, the outputs' own result in `outputs_passed`."""
    for rec in check.runs:
        rec["outputs_passed"] = rec["passed"]
        rec["passed"] = False
        rec["modified"] = check.modified
        rec.setdefault("error", "the file differs from manifest.json (run with --allow-modified)")


def check_artifact(manifest: Manifest, entry: ArtifactEntry, runtimes: list[Runtime],
                   allow_modified: bool = False) -> ArtifactCheck:
    """Run one artifact on every accepting runtime available here against its stored vectors; a file that
    differs from the manifest is refused unless `allow_modified` (then its runs record no pass)."""
    folder, path = manifest.folder, manifest.path_of(entry)
    modified = [m.to_dict() for m in check_entry(manifest, entry, allow_modified=allow_modified)]
    check = ArtifactCheck(entry.component, entry.file, entry.target, entry.delegate, entry.dtype,
                          sha256_ok=not modified, modified=modified)
    _run_on(check, folder, path, entry, runtimes)
    if modified:
        _mark_modified(check)
    return check


def _run_on(check: ArtifactCheck, folder: Path, path: Path, entry: ArtifactEntry, runtimes: list[Runtime]) -> None:
    accepting = [r for r in runtimes if r.accepts(entry)]
    if not accepting:
        check.skipped["runtime"] = f"no runtime in mi2v's registry runs {entry.target} artifacts"
    usable = []
    for rt in accepting:
        why = rt.available()
        if why:
            check.skipped[rt.name] = why
        else:
            usable.append(rt)
    sets = testvectors.read(folder, entry) if usable else None  # a .bpte needs ExecuTorch to be read
    if usable and not sets:
        check.skipped["vectors"] = "no test vectors (exported with --no-test-vectors or by an older mi2v)"
        return
    gate = gate_of(entry)
    expected = [a for s in sets for a in s.outputs.values()] if sets else []
    for rt in usable:
        try:
            outs = run_sets(rt, path, entry, [s.inputs for s in sets])
            got = [o[name] for o, s in zip(outs, sets) for name in s.outputs]
            rec = run_record(rt.name, rt.version(), parity.compare(got, expected), gate, "verify", len(sets))
        except Exception as exc:  # noqa: BLE001 - a runtime that cannot load or run the artifact fails it
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:300]
            rec = run_record(rt.name, rt.version(), None, gate, "verify", len(sets), error=first)
        check.runs.append(rec)


def select_runtimes(names: list[str] | None) -> list[Runtime]:
    known = {r.name: r for r in all_runtimes() if r.suffix}
    if not names:
        return list(known.values())
    bad = [n for n in names if n not in known]
    if bad:
        raise BadInputError(f"unknown runtime {', '.join(bad)}; choose from {', '.join(known)}")
    return [known[n] for n in names]


def verify_folder(folder: str | os.PathLike, component: str | None = None, runtimes: list[str] | None = None,
                  record: bool = True, allow_modified: bool = False) -> list[ArtifactCheck]:
    """Check every artifact (of `component`) in `folder`; append the run records to its manifest atomically.
    Recording needs a writable folder: that is checked first, before any run (a read-only copy on a board fails
    in one line that names --no-record)."""
    folder = Path(folder)
    manifest = read_manifest(folder)
    entries = [e for e in manifest.components if component is None or e.component == component]
    if not entries:
        have = ", ".join(sorted({e.component for e in manifest.components})) or "nothing"
        raise BadInputError(f"{folder}: the manifest has no {component} artifact (it has {have})")
    chosen = select_runtimes(runtimes)
    if record:
        _check_recordable(folder)
    checks = [check_artifact(manifest, e, chosen, allow_modified) for e in entries]
    if record and any(c.runs for c in checks):
        append_verifications(folder, {c.file: c.runs for c in checks if c.runs})
    return checks


def _check_recordable(folder: Path) -> None:
    try:
        check_folder(folder, "verify")
    except BadInputError as exc:
        raise BadInputError(f"{exc}: the results cannot be recorded in manifest.json; pass --no-record to verify "
                            "without recording") from None
