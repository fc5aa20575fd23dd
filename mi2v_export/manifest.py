"""The artifact manifest (`DIR/manifest.json`): its schema, atomic writing, and the one reader other tools use.

`mi2v export` writes it; `mi2v bench` and `mi2v generate` read it back through `read_manifest` / `Manifest` —
nobody else parses the JSON. Schema (version `SCHEMA_VERSION`; documented in docs/guides/manifest.md):

    {
      "schema": "mi2v-export-manifest", "schema_version": 1,
      "tool": {"name": "mi2v-export", "version": "0.1.0"},
      "libraries": {"python": …, "torch": …, "executorch": …, "coremltools": …, "onnx": …, "onnxruntime": …, …},
      "updated_at": ISO-8601 UTC,
      "preset": "tiny", "resolution": [H, W], "frames": F, "latent_shape": [1, 128, t, h, w],
      "source": {"weights": "seeded" | "checkpoint", "seed": 0 | null,
                 "checkpoints": [{"file": name, "sha256": …, "bytes": …, "parts": ["denoiser", …],
                                  "components": ["denoiser", …]}]},
      "components": [                                   # one entry per artifact file
        {"component": "denoiser", "model": "mobilei2v-denoiser" | "ltx-encoder" | "turbo-vaed" | "ltx-decoder",
         "target": "onnx" | "executorch" | "coreml", "delegate": null | "xnnpack" | "vulkan" | "qnn" | "coreml",
         "dtype": "fp32" | "fp16",                        # the graph's floating dtype
         "precision": "fp32" | "fp16" | "w8a8" | "w8" | "w4" | "w8a16" | "mixed",   # mi2v_export.precision
         "compression": bytes / fp32 bytes | null, "recipe": {unit: precision} | null (mixed only),
         "calibration": {"digest", "size", …} | null,       # calibrated precisions
         "trajectory": {"image", "steps", "seed", "psnr_db_min", "psnr_db", "ssim_min", "gate_db", "passed"} | null,
         "runtime_memory_bytes": the measured bytes of `runtime_memory` | null,
         "runtime_memory": {"bytes", "peak_bytes", "baseline_bytes", "method", "runtime", "planned_bytes"} | null,
                                                          # measured in a fresh process (runtimes/measure.py)
         "tiling": {"format": 1, "tile": [h, w] px, "halo", "grid", "receptive_field", "exact", "blending",
                    "stages": [{"file", "input_window", "output_window", "plan": {…}}]} | null,
                                                          # schema_version 2 when any entry has one
         "file": "denoiser.onnx", "sha256": …, "bytes": …,    # sha256/bytes of a folder (.mlpackage): see tree_digest
         "extra_files": [{"role": "external_data" | "bundled_program" | "test_vectors" | "etrecord", "file", "sha256",
                          "bytes"}],                  # test_vectors: testdata/<component> (ONNX) or a .npz
         "inputs":  [{"name": "latent", "shape": […], "dtype": "float32"}, …],
         "outputs": [{"name": "velocity", "shape": […], "dtype": "float32"}],
         "export": {"wall_s": …, "peak_rss_bytes": …, "peak_rss_method": "vmhwm-reset" | "ru_maxrss",
                    "stages_s": {"load": …, "reference": …, "export": …, "verify": …}},
         "parity": {"reference": "pytorch-fp32", "max_abs", "rel_l2", "psnr_db",
                    "verified_on": [{"where": {"host", "os", "machine", "cpu", "cores", "python"}, "when": ISO-8601,
                                     "runtime": "onnxruntime" | "executorch-xnnpack" | "coreml-<units>" | …,
                                     "runtime_version", "psnr_db", "rel_l2", "max_abs", "passed",
                                     "by": "export" | "verify", "sets": n}, …],   # [] = never run anywhere
                    "reason": null | "why it was not run here",
                    "gate": {"metric", "op", "threshold", "passed", "finite"} | null, "input_seed": 0},
         "structure": {"ok": true, "checks": ["…"]},
         "delegation": {"backends": {id: subgraphs}, "delegated_subgraphs", "ops_delegated", "ops_portable",
                        "ops_share_delegated", "flops_delegated", "flops_portable", "flops_share_delegated",
                        "portable_ops": {op: n}, "delegated_ops": {op: n}} | null,   # ExecuTorch only
         "target_info": {…per-target details: opset, simplifier, compute units, deployment target, backends…},
         "flags": {"attention", "decoder", "verify", "test_vectors", "etrecord", …},
         "test_vectors": {"format": "onnx-testdata" | "bundled-program" | "npz", "file", "sets", "bytes",
                          "inputs": "what the sampler feeds", "expected": "pytorch-fp32", "rtol", "atol"} | null,
         "attention": {…kernels.describe_plan record…} | null,
         "exported_at": ISO-8601 UTC, "tool_version": "0.1.0"}
      ]
    }

Artifacts in one folder share preset, video size and weights (the top-level fields); entries for different
targets / delegates / precisions coexist, one per file name. Floats that JSON cannot hold are written as strings
("inf", "-inf", "nan").

Atomic writing: `Staging` is a temporary folder next to DIR (in DIR's parent, so renames stay on one file system).
Exporters write there; `Staging.commit` moves every finished artifact into DIR, replacing same-named files, and
writes the merged manifest last with a rename. Until then DIR is untouched; on any failure (`Staging.discard`,
also run by the context manager) the temporary folder is removed and DIR is as it was.
"""

from __future__ import annotations

import datetime as _dt
import os
import platform
import shutil
import tempfile
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

from . import schemas
from .files import read_json, write_json_atomic
from .errors import BadInputError
from .interrupts import forget_temporary, register_temporary
from .safepath import contained, escape_below

MANIFEST_NAME = "manifest.json"
SCHEMA = "mi2v-export-manifest"
SCHEMA_VERSION = 1
# written when an entry is tiled: a reader of version 1 refuses the folder in one line instead of feeding
# whole-frame inputs to a tile model (mi2v_export/runtimes/sessions.py runs tiled entries)
TILED_SCHEMA_VERSION = 2
READS = (SCHEMA_VERSION, TILED_SCHEMA_VERSION)
STAGING_PREFIX = ".mi2v-export-"

# Libraries whose versions go in the manifest (absent ones are recorded as null).
LIBRARIES = ("torch", "executorch", "coremltools", "onnx", "onnxruntime", "onnxscript", "onnxsim", "numpy",
             "diffusers", "torchao", "litert-torch", "ai-edge-litert", "ai-edge-quantizer", "litert-converter")


def now_iso() -> str:
    return _dt.datetime.now(_dt.timezone.utc).replace(microsecond=0).isoformat().replace("+00:00", "Z")


def tool_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("mi2v-export")
    except PackageNotFoundError:
        return "0+unknown"


def library_versions() -> dict[str, str | None]:
    from importlib.metadata import PackageNotFoundError, version

    out: dict[str, str | None] = {"python": platform.python_version()}
    for name in LIBRARIES:
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            out[name] = None
    return out


# ---------------------------------------------------------------------------------------------------------------
# Schema objects


@dataclass(frozen=True)
class TensorInfo:
    name: str
    shape: tuple[int, ...]
    dtype: str  # numpy-style name: float32, float16, int64 …

    def to_dict(self) -> dict:
        return {"name": self.name, "shape": list(self.shape), "dtype": self.dtype}

    @classmethod
    def from_dict(cls, d: dict) -> TensorInfo:
        return cls(str(d["name"]), tuple(int(s) for s in d.get("shape") or ()), str(d.get("dtype")))


@dataclass(frozen=True)
class FileInfo:
    role: str
    file: str
    sha256: str
    bytes: int

    def to_dict(self) -> dict:
        return {"role": self.role, "file": self.file, "sha256": self.sha256, "bytes": self.bytes}

    @classmethod
    def from_dict(cls, d: dict) -> FileInfo:
        return cls(str(d["role"]), str(d["file"]), str(d["sha256"]), int(d["bytes"]))


@dataclass
class ArtifactEntry:
    """One artifact file and everything known about it (see the module docstring for the JSON form)."""

    component: str
    model: str
    target: str
    delegate: str | None
    dtype: str
    file: str
    sha256: str
    bytes: int
    inputs: list[TensorInfo]
    outputs: list[TensorInfo]
    export: dict
    parity: dict
    structure: dict = field(default_factory=dict)
    delegation: dict | None = None
    target_info: dict = field(default_factory=dict)
    flags: dict = field(default_factory=dict)
    attention: dict | None = None
    extra_files: list[FileInfo] = field(default_factory=list)
    exported_at: str = ""
    tool_version: str = ""
    precision: str | None = None  # mi2v_export.precision name; None in manifests written before it existed
    compression: float | None = None  # bytes / bytes of the same component exported in fp32
    calibration: dict | None = None  # {"digest", "size", ...} of the calibration set (calibrated precisions)
    trajectory: dict | None = None  # the whole-pipeline gate {image, steps, seed, psnr_db_min, psnr_db, ...}
    runtime_memory_bytes: int | None = None  # `runtime_memory["bytes"]`: the measured peak above the baseline
    runtime_memory: dict | None = None  # runtimes/measure.py's record, with the target's planned bytes beside
    tiling: dict | None = None  # the tile plan of a tiled VAE component (runtimes/sessions.py runs it)
    recipe: dict | None = None  # unit → precision when precision == "mixed"
    test_vectors: dict | None = None  # mi2v_export.testvectors record; None when exported without them

    @property
    def verified_on(self) -> list[dict]:
        """Every run of the artifact against its stored outputs (export time and `mi2v verify`), oldest first."""
        return verifications(self.parity)

    @property
    def verified(self) -> bool:
        """Ran on at least one runtime and passed its gate on every runtime it ran on."""
        runs = self.verified_on
        return bool(runs) and all(r.get("passed") for r in runs)

    def files(self) -> list[str]:
        return [self.file] + [f.file for f in self.extra_files]

    def input(self, name: str) -> TensorInfo:
        for t in self.inputs:
            if t.name == name:
                return t
        raise KeyError(name)

    def to_dict(self) -> dict:
        return {
            "component": self.component, "model": self.model, "target": self.target, "delegate": self.delegate,
            "dtype": self.dtype, "file": self.file, "sha256": self.sha256, "bytes": self.bytes,
            "extra_files": [f.to_dict() for f in self.extra_files],
            "inputs": [t.to_dict() for t in self.inputs], "outputs": [t.to_dict() for t in self.outputs],
            "export": self.export, "parity": self.parity, "structure": self.structure,
            "delegation": self.delegation, "target_info": self.target_info, "flags": self.flags,
            "attention": self.attention, "exported_at": self.exported_at, "tool_version": self.tool_version,
            "precision": self.precision or self.dtype, "compression": self.compression,
            "calibration": self.calibration, "trajectory": self.trajectory,
            "runtime_memory_bytes": self.runtime_memory_bytes, "recipe": self.recipe,
            "test_vectors": self.test_vectors, "runtime_memory": self.runtime_memory, "tiling": self.tiling,
        }

    @classmethod
    def from_dict(cls, d: dict) -> ArtifactEntry:
        return cls(
            component=str(d["component"]), model=str(d.get("model") or d["component"]), target=str(d["target"]),
            delegate=d.get("delegate"), dtype=str(d.get("dtype") or "fp32"), file=str(d["file"]),
            sha256=str(d.get("sha256") or ""), bytes=int(d.get("bytes") or 0),
            inputs=[TensorInfo.from_dict(t) for t in d.get("inputs") or ()],
            outputs=[TensorInfo.from_dict(t) for t in d.get("outputs") or ()],
            export=dict(d.get("export") or {}), parity=dict(d.get("parity") or {}),
            structure=dict(d.get("structure") or {}), delegation=d.get("delegation"),
            target_info=dict(d.get("target_info") or {}), flags=dict(d.get("flags") or {}),
            attention=d.get("attention"), extra_files=[FileInfo.from_dict(f) for f in d.get("extra_files") or ()],
            exported_at=str(d.get("exported_at") or ""), tool_version=str(d.get("tool_version") or ""),
            precision=d.get("precision") or d.get("dtype") or "fp32", compression=d.get("compression"),
            calibration=d.get("calibration"), trajectory=d.get("trajectory"),
            runtime_memory_bytes=d.get("runtime_memory_bytes"), recipe=d.get("recipe"),
            test_vectors=d.get("test_vectors"), runtime_memory=d.get("runtime_memory"), tiling=d.get("tiling"),
        )


def verifications(parity: dict) -> list[dict]:
    """`parity.verified_on` as a list of run records; a pre-list manifest's runtime name (or null) is read as one
    record (or none)."""
    value = (parity or {}).get("verified_on")
    if not value:
        return []
    if isinstance(value, str):
        gate = parity.get("gate") or {}
        return [{"runtime": value, "passed": bool(gate.get("passed")), "psnr_db": parity.get("psnr_db"),
                 "rel_l2": parity.get("rel_l2"), "by": "export"}]
    return [dict(r) for r in value]


def append_verifications(folder: str | os.PathLike, runs: dict[str, list[dict]]) -> None:
    """Add run records to `parity.verified_on` of the entries whose file is a key of `runs`, and rewrite the
    manifest atomically. Works on the raw JSON so fields this version does not know are kept."""
    path = Path(folder) / MANIFEST_NAME
    raw = read_json(path, "manifest")
    for entry in raw.get("components") or ():
        if entry.get("file") in runs:
            parity = entry.setdefault("parity", {})
            parity["verified_on"] = verifications(parity) + list(runs[entry["file"]])
    raw["updated_at"] = now_iso()
    write_json_atomic(path, raw, allow_nan=False)


# When several artifacts of one component could run: this target order, then this delegate order, fp32 before
# lower precisions, then the file name.
TARGET_PREFERENCE = ("onnx", "executorch", "coreml", "litert")
DELEGATE_PREFERENCE = ("xnnpack", None, "vulkan", "qnn")


def entry_preference(e: ArtifactEntry) -> tuple:
    def rank(order: tuple, value) -> int:
        return order.index(value) if value in order else len(order)

    return rank(TARGET_PREFERENCE, e.target), rank(DELEGATE_PREFERENCE, e.delegate), e.dtype != "fp32", e.file


@dataclass
class Manifest:
    """The whole manifest: shared configuration plus one `ArtifactEntry` per artifact file."""

    preset: str
    resolution: tuple[int, int]
    frames: int
    latent_shape: tuple[int, ...]
    source: dict
    components: list[ArtifactEntry] = field(default_factory=list)
    tool: dict = field(default_factory=lambda: {"name": "mi2v-export", "version": tool_version()})
    libraries: dict = field(default_factory=library_versions)
    updated_at: str = field(default_factory=now_iso)
    folder: Path | None = None  # where it was read from (not serialised)

    # -- lookups -------------------------------------------------------------------------------------------
    def candidates(self, component: str, refusal: Callable[[ArtifactEntry], str | None]
                   ) -> tuple[list[ArtifactEntry], list[tuple[ArtifactEntry, str]]]:
        """The artifact selection of `generate` and `bench`: the component's entries that can run where they are
        wanted (`refusal(entry)` is None), most preferred first (ENTRY_PREFERENCE), and the others with the reason."""
        entries = sorted((e for e in self.components if e.component == component), key=entry_preference)
        reasons = [(e, refusal(e)) for e in entries]
        return [e for e, why in reasons if why is None], [(e, why) for e, why in reasons if why is not None]

    def find(self, component: str, target: str | None = None, delegate: str | None = None) -> ArtifactEntry:
        """The entry of a component (optionally of one target / delegate); BadInputError when absent or ambiguous."""
        hits = [e for e in self.components if e.component == component and (target is None or e.target == target)
                and (delegate is None or e.delegate == delegate)]
        if not hits:
            what = component + (f" for target {target}" if target else "") + (f"/{delegate}" if delegate else "")
            have = ", ".join(f"{e.component}:{e.target}" + (f"/{e.delegate}" if e.delegate else "")
                             for e in self.components) or "nothing"
            raise BadInputError(f"the manifest has no {what} (it lists {have})")
        if len(hits) > 1:
            raise BadInputError(f"the manifest has {len(hits)} artifacts for the {component} "
                                f"({', '.join(e.file for e in hits)}); name the target")
        return hits[0]

    def path_of(self, entry: ArtifactEntry) -> Path:
        return self.file_path(entry.file)

    def file_path(self, name: str) -> Path:
        """Where a file the manifest names lies: inside the folder, never outside (mi2v_export/safepath.py;
        BadInputError for `..`, absolute paths and symlinks that lead out)."""
        if self.folder is None:
            raise ValueError("manifest was not read from a folder")
        path = contained(self.folder, name, f"{self.folder / MANIFEST_NAME}: file")
        bad = escape_below(path, self.folder) if path.is_dir() else None  # hashing a folder follows its links
        if bad is not None:
            raise BadInputError(f"{self.folder / MANIFEST_NAME}: file {name!r} holds {bad.relative_to(self.folder)}, "
                                f"a symlink leading outside {self.folder}; refused")
        return path

    def check_files(self) -> None:
        """Every listed file exists inside the folder; BadInputError otherwise. Whether the bytes are the ones the
        manifest describes is the integrity policy's question (mi2v_export/integrity.py)."""
        for e in self.components:
            for name in e.files():
                if not self.file_path(name).exists():
                    raise BadInputError(f"{self.folder}: the manifest lists {name} but the file is missing")

    # -- (de)serialisation ------------------------------------------------------------------------------------
    def to_dict(self) -> dict:
        return {
            "schema": SCHEMA, "tool": self.tool, "libraries": self.libraries,
            "schema_version": TILED_SCHEMA_VERSION if any(e.tiling for e in self.components) else SCHEMA_VERSION,
            "updated_at": self.updated_at, "preset": self.preset, "resolution": list(self.resolution),
            "frames": self.frames, "latent_shape": list(self.latent_shape), "source": self.source,
            "components": [e.to_dict() for e in self.components],
        }

    @classmethod
    def from_dict(cls, d: dict, folder: Path | None = None) -> Manifest:
        where = folder / MANIFEST_NAME if folder else "manifest"
        if not isinstance(d, dict) or d.get("schema") != SCHEMA:
            raise BadInputError(f"{where}: not an mi2v export manifest")
        version = d.get("schema_version")
        if version not in READS:
            raise BadInputError(f"{where}: schema version {version} is not supported (this mi2v reads versions "
                                f"{', '.join(map(str, READS))}); re-export the artifacts or upgrade mi2v")
        schemas.validate(d, schemas.MANIFEST, f"{where}: malformed manifest")  # mi2v_export/schemas/manifest
        try:
            return cls(
                preset=str(d["preset"]), resolution=(int(d["resolution"][0]), int(d["resolution"][1])),
                frames=int(d["frames"]), latent_shape=tuple(int(s) for s in d["latent_shape"]),
                source=dict(d.get("source") or {}),
                components=[ArtifactEntry.from_dict(e) for e in d.get("components") or ()],
                tool=dict(d.get("tool") or {}), libraries=dict(d.get("libraries") or {}),
                updated_at=str(d.get("updated_at") or ""), folder=folder)
        except (KeyError, TypeError, ValueError, IndexError) as exc:
            raise BadInputError(f"{where}: malformed manifest ({type(exc).__name__}: {exc})") from None

    def conflict_with(self, other: Manifest) -> str | None:
        """Why `other` (a new export) cannot share this folder, or None when it can: preset, video size and the
        weights (seeded vs checkpoints, and the same file for any model part both use) must agree."""
        if (self.preset, tuple(self.resolution), self.frames) != (other.preset, tuple(other.resolution),
                                                                   other.frames):
            return (f"it holds {self.describe_configuration()}, this export is "
                    f"{other.describe_configuration()}")
        a, b = self.source, other.source
        if a.get("weights") != b.get("weights") or a.get("seed") != b.get("seed"):
            return f"it holds {_describe_source(a)}, this export uses {_describe_source(b)}"
        mine = {p: c.get("sha256") for c in a.get("checkpoints") or () for p in c.get("parts") or ()}
        for c in b.get("checkpoints") or ():
            for p in c.get("parts") or ():
                if p in mine and mine[p] != c.get("sha256"):
                    return f"its {p} comes from another checkpoint than {c.get('file')}"
        return None

    def describe_configuration(self) -> str:
        return (f"preset {self.preset}, {self.resolution[0]}x{self.resolution[1]}x{self.frames}, "
                f"{_describe_source(self.source)}")


def _describe_source(source: dict) -> str:
    if source.get("weights") == "seeded":
        return f"seeded weights (seed {source.get('seed')})"
    names = ", ".join(c.get("file", "?") for c in source.get("checkpoints") or ())
    return f"checkpoints {names}"


def _merge_source(old: dict, new: dict) -> dict:
    if new.get("weights") != "checkpoint":
        return new
    seen = {c.get("sha256") for c in new.get("checkpoints") or ()}
    extra = [c for c in old.get("checkpoints") or () if c.get("sha256") not in seen]
    return dict(new, checkpoints=extra + list(new.get("checkpoints") or ()))


def read_manifest(folder: str | os.PathLike) -> Manifest:
    """Read `folder/manifest.json` (BadInputError with one line when missing, unreadable or another schema)."""
    folder = Path(folder)
    path = folder / MANIFEST_NAME
    if not folder.is_dir():
        raise BadInputError(f"{folder}: no such artifacts folder")
    if not path.is_file():
        raise BadInputError(f"{folder}: no {MANIFEST_NAME}; is this a folder written by `mi2v export`?")
    contained(folder, MANIFEST_NAME, str(path))  # not a symlink leading out of the folder
    return Manifest.from_dict(read_json(path, "manifest"), folder=folder)


def read_manifest_if_any(folder: str | os.PathLike) -> Manifest | None:
    """The manifest of `folder`, or None when the folder or its manifest does not exist."""
    if not (Path(folder) / MANIFEST_NAME).is_file():
        return None
    return read_manifest(folder)


def merge(existing: Manifest | None, new: Manifest) -> Manifest:
    """`new` plus the entries of `existing` for files that `new` does not replace (same configuration only)."""
    if existing is None:
        return new
    replaced = set()
    for e in new.components:
        replaced.update(e.files())
    kept = [e for e in existing.components if not (set(e.files()) & replaced)]
    new.components = kept + list(new.components)
    new.source = _merge_source(existing.source, new.source)
    order = {"encoder": 0, "denoiser": 1, "decoder": 2}
    new.components.sort(key=lambda e: (order.get(e.component, 9), e.target, e.delegate or ""))
    return new


# ---------------------------------------------------------------------------------------------------------------
# Atomic staging


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def clean_stale_staging(parent: Path) -> list[Path]:
    """Remove staging folders in `parent` left by export processes that no longer run (e.g. killed with -9)."""
    removed = []
    if not parent.is_dir():
        return removed
    for p in parent.glob(f"{STAGING_PREFIX}*"):
        try:  # .mi2v-export-<out name>-<pid>-<mkdtemp suffix, no dashes>
            pid = int(p.name[len(STAGING_PREFIX):].rsplit("-", 2)[-2])
        except (IndexError, ValueError):
            continue
        if pid != os.getpid() and not _pid_alive(pid):
            shutil.rmtree(p, ignore_errors=True)
            removed.append(p)
    return removed


def staging_home(out_dir: Path) -> Path:
    """Where a staging folder for `out_dir` lives: its parent (so the final rename replaces nothing half-way),
    but inside `out_dir` itself, hidden, when `out_dir` is a mount point or on another file system than its parent
    (a Docker volume, an NFS share, a USB disk): a rename cannot cross file systems (EXDEV)."""
    if out_dir.is_dir() and (os.path.ismount(out_dir) or os.stat(out_dir).st_dev != os.stat(out_dir.parent).st_dev):
        return out_dir
    return out_dir.parent


class Staging:
    """A temporary folder next to the output folder; artifacts move into the output folder only on `commit`.

    Use as a context manager: leaving the block without `commit()` (an error, Ctrl-C) removes the folder.
    """

    def __init__(self, out_dir: str | os.PathLike):
        self.out_dir = Path(out_dir).absolute()
        parent = self.out_dir.parent
        try:
            parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise BadInputError(f"cannot create {parent}: {exc.strerror or exc}") from None
        if self.out_dir.exists() and not self.out_dir.is_dir():
            raise BadInputError(f"--out {self.out_dir}: exists and is not a folder")
        home = staging_home(self.out_dir)
        clean_stale_staging(home)
        try:
            self.path = Path(tempfile.mkdtemp(prefix=f"{STAGING_PREFIX}{self.out_dir.name}-{os.getpid()}-",
                                              dir=home))
        except OSError as exc:
            raise BadInputError(f"--out {self.out_dir}: cannot create a staging folder in {home} "
                                f"({exc.strerror or exc})") from None
        os.chmod(self.path, 0o755)  # the folders it holds are renamed into place: world-readable like the files
        register_temporary(self.path)  # removed even when a signal has to end the process (interrupts.py)
        self.committed = False

    def __enter__(self) -> Staging:
        return self

    def __exit__(self, *exc) -> bool:
        if not self.committed:
            self.discard()
        return False

    def discard(self) -> None:
        shutil.rmtree(self.path, ignore_errors=True)
        forget_temporary(self.path)

    def commit(self, manifest: Manifest, files: Iterable[str]) -> Manifest:
        """Move `files` (names inside the staging folder) into the output folder and write the merged manifest.

        Same-named files already in the output folder are first moved into the staging folder (so a failure half
        way can put them back), then the new ones are renamed in, then manifest.json is replaced atomically.
        """
        existing = read_manifest_if_any(self.out_dir) if self.out_dir.is_dir() else None
        merged = merge(existing, manifest)
        self.out_dir.mkdir(parents=True, exist_ok=True)
        backup = self.path / ".replaced"
        backup.mkdir(exist_ok=True)
        moved: list[tuple[Path, Path | None]] = []  # (installed path, its backup or None)
        try:
            for name in files:
                src, dst = self.path / name, self.out_dir / name
                dst.parent.mkdir(parents=True, exist_ok=True)  # e.g. testdata/<component>
                old = None
                if dst.exists() or dst.is_symlink():
                    old = backup / name
                    old.parent.mkdir(parents=True, exist_ok=True)
                    os.replace(dst, old)
                os.replace(src, dst)
                moved.append((dst, old))
            # entries of the old manifest whose files vanished from disk are dropped rather than left dangling
            merged.components = [e for e in merged.components if all((self.out_dir / f).exists()
                                                                      for f in e.files())]
            merged.updated_at = now_iso()
            write_json_atomic(self.out_dir / MANIFEST_NAME, merged.to_dict(), allow_nan=False)
        except BaseException:
            for dst, old in reversed(moved):
                if dst.is_dir() and not dst.is_symlink():
                    shutil.rmtree(dst, ignore_errors=True)
                else:
                    dst.unlink(missing_ok=True)
                if old is not None:
                    os.replace(old, dst)
            raise
        self.committed = True
        self.discard()
        merged.folder = self.out_dir
        return merged
