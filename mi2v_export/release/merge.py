"""`mi2v release merge`: finished job folders → one release folder with `release.json` and artifacts per target.

Layout: RELEASE/release.json and RELEASE/<target>[-<delegate>]/<job name>/ (the job's artifacts, manifest.json and
job.json, so `mi2v bench --artifacts` works on any of them). Every input folder must verify first; jobs built from
different checkpoints (for the same model part) or by different tool versions are refused unless `allow_mixed`.
The release is assembled in a temporary folder next to RELEASE, re-hashed there, and renamed into place. Releases
are shared between teams: folders get mode 0755 and files 0644 whatever the umask (mkdtemp alone leaves 0700).

Job folders are downloaded CI artifacts, so nothing in them is trusted for a path: their manifest's files and
job.json are checked to stay inside the job folder before anything is read (jobs.verify_job_folder,
jobs.load_job_record), only those contained paths are copied, and release.json, validated against
mi2v_export/schemas/release.schema.json before it is written and whenever it is read back, lists paths relative
to the release folder only.

release.json:

    {"schema": "mi2v-release", "schema_version": 1, "created_at", "tool": {"name", "version"},
     "tool_versions": […], "checkpoints": {part: [sha256, …]}, "mixed": false,
     "jobs": [{"id", "name", "folder", "spec", "argv", "host", "wall_s", "peak_rss_bytes"}],
     "artifacts": [{"job_id", "component", "model", "target", "delegate", "precision", "dtype", "soc", "preset",
                    "resolution", "frames", "file", "sha256", "bytes", "extra_files",
                    "gates": {"parity": {…} | null, "trajectory": {…} | null}, "parity": {…},
                    "verification": [{"check", "by", "at", "passed", …}]}]}
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

from ..errors import BadInputError
from ..files import FILE_MODE, read_json, replace_folder, tree_digest, write_json_atomic
from ..interrupts import forget_temporary, register_temporary
from ..manifest import MANIFEST_NAME, now_iso, read_manifest, tool_version
from ..outputs import check_folder
from ..safepath import contained, is_within
from ..schemas import RELEASE, validate
from .jobs import JOB_FILE, PARTIAL_PREFIX, load_job_record, verify_job_folder

RELEASE_FILE = "release.json"
SCHEMA = "mi2v-release"
DIR_MODE = 0o755  # with files.FILE_MODE (0644): a release is readable by everyone it is shared with


def find_job_folders(dirs: list[Path]) -> list[Path]:
    """Each argument is a job folder (has job.json) or a folder of job folders (a plan's output, a CI download)."""
    found: list[Path] = []
    for d in dirs:
        d = Path(d)
        if not d.is_dir():
            raise BadInputError(f"{d}: no such folder")
        if (d / JOB_FILE).is_file():
            found.append(d)
            continue
        inner = sorted(p for p in d.iterdir() if p.is_dir() and not p.name.startswith(PARTIAL_PREFIX)
                       and (p / JOB_FILE).is_file())
        if not inner:
            raise BadInputError(f"{d}: neither a job folder (no {JOB_FILE}) nor a folder of job folders")
        outside = [p for p in inner if not is_within(p, d)]
        if outside:
            raise BadInputError(f"{outside[0]}: a symlink leading outside {d}; refused (name the job folder itself "
                                "to merge it)")
        found += inner
    return found


def _load_job(folder: Path) -> dict:
    problems = verify_job_folder(folder)  # also: nothing the manifest lists leads out of the folder
    if problems:
        raise BadInputError(f"{folder}: does not verify ({problems[0]}); rebuild it before merging")
    record = load_job_record(folder)  # BadInputError: outside the folder, not a record, names that are not plain
    return {"folder": folder, "record": record, "manifest": read_manifest(folder)}


def _dedupe(jobs: list[dict]) -> list[dict]:
    """The same job id twice (two downloads of one build) is merged once, if the artifacts are the same bytes."""
    by_id: dict[str, dict] = {}
    for j in jobs:
        jid = j["record"]["id"]
        if jid in by_id:
            mine = sorted(e.sha256 for e in by_id[jid]["manifest"].components)
            if mine != sorted(e.sha256 for e in j["manifest"].components):
                raise BadInputError(f"job {jid} appears twice with different artifacts ({by_id[jid]['folder']}, "
                                    f"{j['folder']}); builds are not reproducible or a folder was edited")
            continue
        by_id[jid] = j
    return list(by_id.values())


def consistency(jobs: list[dict]) -> tuple[list[str], dict[str, list[str]], list[str]]:
    """Tool versions, checkpoint sha256 per model part, and the problems that make the set a mixed release."""
    versions = sorted({j["manifest"].tool.get("version") or "?" for j in jobs})
    parts: dict[str, set[str]] = {}
    for j in jobs:
        src = j["manifest"].source
        if src.get("weights") != "checkpoint":
            for e in j["manifest"].components:
                parts.setdefault(e.model, set()).add(f"seeded:{src.get('seed')}")
        for c in src.get("checkpoints") or ():
            for p in c.get("parts") or ():
                parts.setdefault(p, set()).add(c.get("sha256"))
    problems = []
    if len(versions) > 1:
        problems.append(f"built by different tool versions ({', '.join(versions)})")
    for part, shas in sorted(parts.items()):
        if len(shas) > 1:
            problems.append(f"the {part} comes from different weights ({', '.join(s[:12] for s in sorted(shas))})")
    return versions, {p: sorted(s) for p, s in sorted(parts.items())}, problems


def _artifact_record(job: dict, entry, rel_folder: str, here: list[dict]) -> dict:
    """One release.json artifact: the manifest entry's identity, digests, gates and how it was verified (`here`:
    this merge's own runs against the test vectors)."""
    spec = job["record"].get("spec") or {}
    gate = entry.parity.get("gate")
    runs = entry.verified_on  # export-time and `mi2v verify` runs against the test vectors
    records = [{"check": "parity", "by": "mi2v export", "at": entry.exported_at,
                "on": [r.get("runtime") for r in runs if r.get("by", "export") == "export"] or None,
                "passed": bool(gate and gate.get("passed")), "reason": entry.parity.get("reason")}]
    records += [{"check": "test-vectors", "by": "mi2v verify", "at": r.get("when"), "on": r.get("runtime"),
                 "where": r.get("where"), "passed": bool(r.get("passed"))} for r in runs if r.get("by") == "verify"]
    records += [{"check": "test-vectors", "by": "mi2v release merge", "at": r.get("when"), "on": r.get("runtime"),
                 "where": r.get("where"), "passed": bool(r.get("passed"))} for r in here]
    return {
        "job_id": job["record"]["id"], "component": entry.component, "model": entry.model, "target": entry.target,
        "delegate": entry.delegate, "precision": entry.precision or spec.get("precision") or entry.dtype,
        "dtype": entry.dtype, "soc": entry.target_info.get("soc") or spec.get("soc"),
        "preset": job["manifest"].preset, "resolution": list(job["manifest"].resolution),
        "frames": job["manifest"].frames, "file": f"{rel_folder}/{entry.file}", "sha256": entry.sha256,
        "bytes": entry.bytes, "extra_files": [dict(f.to_dict(), file=f"{rel_folder}/{f.file}")
                                              for f in entry.extra_files],
        "gates": {"parity": gate, "trajectory": entry.trajectory}, "parity": entry.parity,
        "verification": records,
    }


def _copy_job(job: dict, dest: Path) -> None:
    """Copy the job's artifacts, manifest and job record into `dest` (copies, not hard links: editing a job folder
    later must not change a release)."""
    dest.mkdir(parents=True)
    manifest = job["manifest"]
    names = [f for e in manifest.components for f in e.files()] + [MANIFEST_NAME, JOB_FILE]
    for name in names:
        src = manifest.file_path(name)  # inside the job folder (checked again: the folder may have changed)
        target = dest / name  # `name` passed the relative-path check: `dest / name` stays inside `dest`
        target.parent.mkdir(parents=True, exist_ok=True)
        if src.is_dir():
            shutil.copytree(src, target)
        else:
            shutil.copy2(src, target)


def _recheck(staging: Path, artifacts: list[dict]) -> None:
    """Hash every file again where it now lies; add the record (a mismatch aborts the merge)."""
    at = now_iso()
    for a in artifacts:
        for name, sha in [(a["file"], a["sha256"])] + [(f["file"], f["sha256"]) for f in a["extra_files"]]:
            if tree_digest(contained(staging, name, "release file"))[0] != sha:
                raise BadInputError(f"{name}: sha256 changed while copying into the release")
        a["verification"].append({"check": "sha256", "by": "mi2v release merge", "at": at, "passed": True,
                                  "files": 1 + len(a["extra_files"])})


def merge_release(dirs: list[Path], out: Path, allow_mixed: bool = False, run_vectors: bool = True) -> dict:
    """Build RELEASE from job folders (see the module docstring); returns the release.json document. With
    `run_vectors`, every artifact is run here against its stored test vectors (`mi2v verify`, on each runtime this
    machine has) and a failure refuses the merge."""
    jobs = _dedupe([_load_job(f) for f in find_job_folders(dirs)])
    versions, parts, problems = consistency(jobs)
    if problems and not allow_mixed:
        raise BadInputError(f"refusing to merge: the jobs were {problems[0]}" + (
            f" (and {len(problems) - 1} more difference(s))" if len(problems) > 1 else "")
            + "; pass --allow-mixed to merge them anyway")
    out = Path(out).absolute()
    if out.is_dir() and os.path.ismount(out):  # a release replaces its folder by a rename: not a mount point
        raise BadInputError(f"--out {out}: is a mount point, which a release cannot replace by a rename; name a "
                            f"folder inside it (e.g. {out / 'release'})")
    if out.exists():
        if not (out / RELEASE_FILE).is_file():
            raise BadInputError(f"--out {out}: exists and is not a release folder (no {RELEASE_FILE}); choose "
                                "another")
        read_release(out)  # replaced only when it is a release: BadInputError naming what is wrong otherwise
    staging = _staging_for(out, need_bytes=sum(tree_digest(j["folder"])[1] for j in jobs))
    try:
        doc = _assemble(jobs, staging, versions, parts, problems, run_vectors)
        validate(doc, RELEASE, f"{out / RELEASE_FILE} (being written)")
        write_json_atomic(staging / RELEASE_FILE, doc)
        _world_readable(staging)
        _swap_into_place(staging, out)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
        forget_temporary(staging)
    return doc


def _staging_for(out: Path, need_bytes: int) -> Path:
    """The temporary folder the release is assembled in, beside `out` (checked first: writable, with room for a
    copy of the jobs, before anything is copied)."""
    for folder in (out, out.parent):
        check_folder(folder, "--out", need_bytes=need_bytes)
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".mi2v-release-{out.name}-", dir=out.parent))
    register_temporary(staging)  # removed even when a signal has to end the process (mi2v_export/interrupts.py)
    return staging


def _vector_runs(folder: Path) -> dict[str, list[dict]]:
    """`mi2v verify` on a copied job folder, nothing recorded in it: file → run records; a failure refuses."""
    from ..verify import verify_folder

    checks = verify_folder(folder, record=False)
    for c in checks:
        bad = [r for r in c.runs if not r["passed"]]
        if bad:
            raise BadInputError(f"{folder.name}/{c.file}: fails its test vectors on {bad[0]['runtime']} here "
                                f"({bad[0].get('error') or 'outputs outside the gate'}); not merged")
    return {c.file: c.runs for c in checks}


def _assemble(jobs: list[dict], staging: Path, versions, parts, problems, run_vectors: bool) -> dict:
    job_rows, artifacts = [], []
    for job in sorted(jobs, key=lambda j: j["record"]["name"]):
        spec = job["record"].get("spec") or {}
        rel = f"{spec.get('target')}" + (f"-{spec['delegate']}" if spec.get("delegate") else "")
        rel += f"/{job['record']['name']}"
        _copy_job(job, staging / rel)
        here = _vector_runs(staging / rel) if run_vectors else {}
        job_rows.append({k: job["record"].get(k) for k in ("id", "name", "spec", "argv", "host", "wall_s",
                                                           "peak_rss_bytes")} | {"folder": rel})
        artifacts += [_artifact_record(job, e, rel, here.get(e.file, [])) for e in job["manifest"].components]
    _recheck(staging, artifacts)
    return {"schema": SCHEMA, "schema_version": 1, "created_at": now_iso(),
            "tool": {"name": "mi2v-export", "version": tool_version()}, "tool_versions": versions,
            "checkpoints": parts, "mixed": bool(problems), "mixed_reasons": problems, "jobs": job_rows,
            "artifacts": artifacts}


def read_release(folder: str | os.PathLike) -> dict:
    """`folder/release.json`, validated (mi2v_export/schemas/release.schema.json: every path relative, no `..`)
    and with every path it names checked to stay inside `folder` (release.json itself included: no symlink out).
    BadInputError (one line) otherwise."""
    folder = Path(folder)
    where = folder / RELEASE_FILE
    doc = read_json(contained(folder, RELEASE_FILE, str(where)), "release index")
    validate(doc, RELEASE, f"{where}: not a valid release index")
    for job in doc["jobs"]:
        contained(folder, job["folder"], f"{where}: jobs[].folder")
    for a in doc["artifacts"]:
        for name in [a["file"]] + [f["file"] for f in a.get("extra_files") or ()]:
            contained(folder, name, f"{where}: artifacts[].file")
    return doc


def _world_readable(root: Path) -> None:
    """Folders 0755, files 0644 under `root` (and `root`): the modes do not depend on the umask or on mkdtemp's
    0700. Nothing under a fresh release is a symlink (copies follow them)."""
    os.chmod(root, DIR_MODE)
    for below, dirs, files in os.walk(root):
        for d in dirs:
            os.chmod(Path(below) / d, DIR_MODE)
        for f in files:
            os.chmod(Path(below) / f, FILE_MODE)


def _swap_into_place(staging: Path, out: Path) -> None:
    """Rename the finished release into place; an older release of that name is replaced only after that."""
    replace_folder(staging, out)