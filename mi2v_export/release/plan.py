"""Release plans: a TOML file (schema: mi2v_export/schemas/release-plan.schema.json) expanded into independent
export jobs.

A job is one `mi2v export` invocation for one component on one target with its own output folder. Its id is a
content hash of everything that decides its bytes: the export flags, the sha256 of every checkpoint it reads and
the tool version. Two cells that expand to the same job give one job; a job folder that already holds a verified
build of that id is skipped on re-run (see jobs.py).
"""

from __future__ import annotations

import hashlib
import itertools
import json
import tomllib
from dataclasses import asdict, dataclass, field, replace
from functools import cache
from pathlib import Path

from .. import bounds
from ..contract import COMPONENTS
from ..errors import BadInputError, Mi2vError
from ..exporters.orchestrate import ExportRequest
from ..exporters.orchestrate import resolve as resolve_export
from ..safepath import confine, safe_name
from ..schemas import validate

PLAN_SCHEMA = "release-plan"  # mi2v_export/schemas/release-plan.schema.json
# Axes a cell (or the defaults) may give as a list; the cross product of all of them is expanded into jobs.
AXES = ("component", "target", "delegate", "precision", "dtype", "soc", "preset", "resolution", "frames")
BUILTIN_DEFAULTS = {"preset": "mobilei2v-270m", "decoder": "turbo-vaed", "attention": "reference"}


@dataclass(frozen=True)
class Job:
    """One export: everything that decides its artifacts (and so its id), nothing about where it runs."""

    component: str
    target: str
    preset: str
    resolution: str  # "HxW", resolved from the preset when the plan leaves it out
    frames: int
    decoder: str = "turbo-vaed"
    delegate: str | None = None
    precision: str | None = None
    dtype: str | None = None
    soc: str | None = None
    attention: str = "reference"
    rewrite: tuple[str, ...] = ()
    args: tuple[str, ...] = ()
    checkpoints: tuple[tuple[str, str], ...] = ()  # (path, sha256) of the files this job reads
    tool_version: str = ""
    id: str = field(default="", compare=False)

    def identity(self) -> dict:
        """What the id hashes: the flags and the checkpoints' contents (not their paths) and the tool version."""
        d = asdict(self)
        d.pop("id")
        d["checkpoints"] = sorted(sha for _, sha in self.checkpoints)
        return d

    def with_id(self) -> Job:
        blob = json.dumps(self.identity(), sort_keys=True, separators=(",", ":")).encode()
        return replace(self, id=hashlib.sha256(blob).hexdigest()[:16])

    @property
    def precision_label(self) -> str:
        return self.precision or self.dtype or "default"

    @property
    def name(self) -> str:
        """Human-readable and unique (ends with the id): the job's folder name."""
        parts = [self.component, self.target, self.delegate, self.precision_label, self.soc,
                 f"{self.resolution}x{self.frames}", self.id]
        return "-".join(p for p in parts if p)

    def export_args(self, out: Path | str) -> list[str]:
        """The `mi2v export` arguments of this job, writing into `out`."""
        argv = ["export", "--component", self.component, "--target", self.target, "--preset", self.preset,
                "--resolution", self.resolution, "--frames", str(self.frames), "--decoder", self.decoder,
                "--attention", self.attention]
        for flag, value in (("--delegate", self.delegate), ("--precision", self.precision),
                            ("--dtype", self.dtype), ("--soc", self.soc)):
            if value is not None:
                argv += [flag, value]
        for r in self.rewrite:
            argv += ["--rewrite", r]
        for path, _ in self.checkpoints:
            argv += ["--checkpoint", path]
        return argv + list(self.args) + ["--out", str(out), "--json"]

    def to_dict(self) -> dict:
        d = asdict(self)
        d["checkpoints"] = [{"path": p, "sha256": s} for p, s in self.checkpoints]
        d["rewrite"], d["args"] = list(self.rewrite), list(self.args)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> Job:
        """The inverse of to_dict; the id is recomputed and must match the one given (a stale or edited spec)."""
        try:
            ckpts = tuple((str(c["path"]), str(c["sha256"])) for c in d.get("checkpoints") or ())
            fields = {k: d[k] for k in cls.__dataclass_fields__ if k in d and k not in ("checkpoints", "id")}
            job = cls(**dict(fields, rewrite=tuple(d.get("rewrite") or ()), args=tuple(d.get("args") or ()),
                             checkpoints=ckpts, frames=int(d["frames"]))).with_id()
        except (KeyError, TypeError, ValueError) as exc:
            raise BadInputError(f"not a release job spec ({type(exc).__name__}: {exc})") from None
        if d.get("id") and d["id"] != job.id:
            raise BadInputError(f"job spec {d['id']}: its fields hash to {job.id} (edited, or another mi2v version)")
        return job


@dataclass
class Plan:
    path: Path
    name: str
    out: Path  # where the job folders go
    jobs: list[Job]


# ---------------------------------------------------------------------------------------------------------------
# Reading and validating


def read_plan_file(path: Path) -> dict:
    if not path.is_file():
        raise BadInputError(f"{path}: no such plan file")
    try:
        data = tomllib.loads(path.read_text())
    except (OSError, UnicodeDecodeError) as exc:
        raise BadInputError(f"{path}: cannot read ({exc})") from None
    except tomllib.TOMLDecodeError as exc:
        raise BadInputError(f"{path}: not valid TOML ({exc})") from None
    validate(data, PLAN_SCHEMA, str(path))  # BadInputError naming the first offending key
    return data


def load_plan(path: str | Path, out: Path | None = None) -> Plan:
    """Read, validate and expand a plan file into its jobs (duplicates removed, first occurrence kept)."""
    from ..manifest import tool_version

    path = Path(path).absolute()
    data = read_plan_file(path)
    name = data.get("name") or path.stem  # the schema allows plain names only (safepath's rules)
    checkpoints = [_checkpoint_record(confine(path.parent, c, f"{path}: checkpoints[{i}]"))  # inside the plan's
                   for i, c in enumerate(data.get("checkpoints") or ())]  # folder, like every path a file names
    defaults = dict(BUILTIN_DEFAULTS, **(data.get("defaults") or {}))
    jobs: dict[str, Job] = {}
    for i, cell in enumerate(data["cells"]):
        for job in expand_cell({**defaults, **cell}, checkpoints, tool_version(), where=f"{path}: cells[{i}]"):
            jobs.setdefault(job.id, job)
    return Plan(path=path, name=name, out=plan_out(path, data, name, out), jobs=list(jobs.values()))


def plan_out(path: Path, data: dict, name: str, out: Path | None) -> Path:
    """Where the job folders go: the command line's `--out` as given; otherwise the plan's `out` (default
    `<name>-jobs`), which must stay inside the plan file's folder (plans are shared and downloaded: a plan saying
    `out = "/etc"` or leading out through `..` or a symlink is refused, see mi2v_export/safepath.py)."""
    if out is not None:
        return Path(out).absolute()
    return confine(path.parent, data.get("out") or f"{name}-jobs", f"{path}: out").absolute()


def expand_cell(cell: dict, checkpoints: list[dict], version: str, where: str) -> list[Job]:
    """Every combination of the cell's list-valued axes, as jobs with ids."""
    from ..presets import get_preset

    for key in ("component", "target"):
        if key not in cell:
            raise BadInputError(f"{where}: no {key} (give it in the cell or in [defaults])")
    axes = {k: cell[k] if isinstance(cell[k], list) else [cell[k]] for k in AXES if k in cell}
    jobs = []
    for combo in itertools.product(*axes.values()):
        values = dict(zip(axes, combo))
        preset = get_preset(values["preset"])  # BadInputError for an unknown preset
        files = _checkpoints_for(values["component"], cell.get("decoder", "turbo-vaed"), checkpoints)
        job = Job(
            component=values["component"], target=values["target"], preset=preset.name,
            resolution=values.get("resolution") or f"{preset.height}x{preset.width}",
            frames=int(values.get("frames") or preset.frames), decoder=cell.get("decoder", "turbo-vaed"),
            delegate=values.get("delegate"), precision=values.get("precision"), dtype=values.get("dtype"),
            soc=values.get("soc"), attention=cell.get("attention", "reference"),
            rewrite=tuple(cell.get("rewrite") or ()), args=tuple(cell.get("args") or ()),
            checkpoints=tuple((c["path"], c["sha256"]) for c in files), tool_version=version)
        jobs.append(normalise(job, where).with_id())
    return jobs


# `mi2v export` flags that take a path: a plan names its files through its own keys (`checkpoints`, `out`), which
# stay inside its folder; through `args` they would not be checked, so they are refused there.
PATH_FLAGS = ("--checkpoint", "--recipe", "--calibration", "--out")


def _check_args(args: tuple[str, ...], where: str) -> None:
    for arg in args:
        flag = arg.split("=", 1)[0]
        if flag in PATH_FLAGS:
            raise BadInputError(f"{where}: args: {flag} takes a path, which a plan may not pass through `args` "
                                "(the paths a plan names stay inside its folder: use `checkpoints` / `out`, or run "
                                "`mi2v export` directly)")


def normalise(job: Job, where: str) -> Job:
    """The job as the export will really run it, checked by the export's own validation (exporters/orchestrate.py
    `resolve`: target, delegate, precision for that target, preset, resolution, frames 8k+1, attention, rewrites;
    and the preset's size cap, mi2v_export/bounds.py, but not its memory estimate: the job may run on another
    machine), so a bad cell is refused at `mi2v plan --list`, not later inside a job; and spelled one way, so one
    export has one id: the target's default delegate filled in, `dtype` (an alias) and the default precision
    written as the precision they mean, the SoC kept only where it changes the build (QNN)."""
    if job.component not in COMPONENTS:
        raise BadInputError(f"{where}: component {job.component!r} is not one of {', '.join(COMPONENTS)}")
    _check_args(job.args, where)
    request = ExportRequest(target=job.target, out_dir=Path("."), components=job.component, delegate=job.delegate,
                            decoder=job.decoder, preset=job.preset, resolution=job.resolution, frames=job.frames,
                            dtype=job.dtype, precision=job.precision, attention=job.attention,
                            rewrite=list(job.rewrite), soc=job.soc or ExportRequest.soc)
    try:
        exporter, options, _, preset, geo = resolve_export(request)
        bounds.check_cap(preset, geo.height, geo.width, geo.frames)
    except Mi2vError as exc:
        raise type(exc)(f"{where}: {exc}") from None
    done = replace(job, target=exporter.name, delegate=options.delegate, preset=preset.name,
                   resolution=f"{geo.height}x{geo.width}", frames=geo.frames, dtype=None,
                   precision=options.precisions[job.component].value,
                   soc=exporter.manifest_flags(options).get("soc"))  # where the SoC shapes the build
    safe_name(done.with_id().name, f"{where}: job folder name")  # a plain name: the job's folder
    return done


# ---------------------------------------------------------------------------------------------------------------
# Checkpoints: read once per plan, each job gets the files holding its component's model


@cache
def _read_parts(path: str, size: int, mtime_ns: int) -> tuple[str, tuple[str, ...]]:
    from ..checkpoints import read_checkpoint

    ckpt = read_checkpoint(path)  # CheckpointError (one line) for missing / unsafe / unknown files
    return ckpt.sha256, tuple(ckpt.parts)


def _checkpoint_record(path: Path) -> dict:
    if not path.is_file():
        raise BadInputError(f"checkpoint {path}: no such file")
    st = path.stat()
    sha, parts = _read_parts(str(path), st.st_size, st.st_mtime_ns)
    return {"path": str(path), "sha256": sha, "parts": parts}


def _checkpoints_for(component: str, decoder: str, checkpoints: list[dict]) -> list[dict]:
    """The files holding this component's model; all of them when none does, so the export itself fails with its
    own message (a broken cell fails as a job, it does not stop the plan)."""
    from ..exporters.components import model_name

    if not checkpoints:
        return []
    need = model_name(component, decoder)
    return [c for c in checkpoints if need in c["parts"]] or list(checkpoints)


# ---------------------------------------------------------------------------------------------------------------
# GitHub Actions matrix


def github_matrix(plan: Plan) -> dict:
    """The job list as a GitHub Actions matrix (`strategy.matrix: ${{ fromJSON(...) }}`): one entry per job with
    its id, folder name and full spec, checkpoint paths relative to the plan file's folder."""
    include = []
    for job in plan.jobs:
        spec = job.to_dict()
        spec["checkpoints"] = [{"path": _relative(c["path"], plan.path.parent), "sha256": c["sha256"]}
                               for c in spec["checkpoints"]]
        include.append({"job": job.id, "name": job.name, "spec": spec})
    return {"include": include}


def jobs_from_matrix(matrix: dict, base: Path) -> list[Job]:
    """The jobs of a matrix written by github_matrix (checkpoint paths resolved against `base`)."""
    jobs = []
    for entry in matrix.get("include") or ():
        spec = dict(entry["spec"])
        spec["checkpoints"] = [{"path": str((base / c["path"]).absolute()), "sha256": c["sha256"]}
                               for c in spec.get("checkpoints") or ()]
        jobs.append(Job.from_dict(spec))
    return jobs


def _relative(path: str, base: Path) -> str:
    try:
        return Path(path).relative_to(base).as_posix()
    except ValueError:
        return path
