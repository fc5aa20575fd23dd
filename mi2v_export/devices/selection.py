"""Which artifact of the manifest each component is timed with, and the files it needs on a device.

For each component (encoder, denoiser, decoder) one artifact is chosen for the runtime: `--runtime auto` prefers
ExecuTorch when every component has a `.pte` the device can run, then onnxruntime, else whatever each component has.
Which runtime family runs an artifact is mi2v_export.runtimes' answer (`family_of`: the registry's `for_entry`), not
a table here. What cannot run anywhere here (Core ML off a Mac, a target `mi2v bench` does not run) is refused below;
what a device kind cannot run (a delegate this machine cannot execute, one Android phones do not have) is refused by
the kind (`DeviceKind.refuses`, devices/registry.py).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .. import runtimes
from ..contract import COMPONENTS
from ..errors import BadInputError
from ..safepath import safe_name
from .registry import transport_kind



def bench_families() -> tuple[str, ...]:
    """The runtime families mi2v bench times, in the order `--runtime auto` prefers them: each runtime adapter
    declares its `bench_order` (mi2v_export/runtimes/base.py); None keeps a family out of the bench."""
    ranked = sorted((rt.bench_order, rt.family) for rt in runtimes.all() if rt.bench_order is not None)
    return tuple(dict.fromkeys(family for _, family in ranked))


FAMILIES = bench_families()
RUNTIMES = ("auto", *sorted(FAMILIES, key=lambda f: f != "onnxruntime"))  # --runtime, in the help's old order


@dataclass
class Selection:
    component: str
    entry: Any | None  # manifest.ArtifactEntry
    runtime: str | None
    reason: str | None = None  # why nothing runs, when entry is None


def family_of(entry: Any) -> str | None:
    """The runtime family (onnxruntime, executorch, coreml) that runs a manifest entry: its runtimes' in
    mi2v_export.runtimes; None when no registered runtime accepts it."""
    return next((r.family for r in runtimes.for_entry(entry)), None)


def _runnable(entry: Any, transport: str) -> str | None:
    """Why this artifact cannot run on this kind of device, or None when it can."""
    family = family_of(entry)
    if family == "coreml":
        return f"{entry.file} is Core ML, which needs a Mac/iPhone"
    if family not in FAMILIES:
        return f"{entry.file} has target {entry.target!r}, which mi2v bench does not run"
    return transport_kind(transport).refuses(entry, family)


def select_artifacts(manifest: Any, runtime: str, transport: str,
                     components: tuple[str, ...] = COMPONENTS) -> list[Selection]:
    if runtime not in RUNTIMES:
        raise BadInputError(f"--runtime {runtime!r}: choose one of {', '.join(RUNTIMES)}")
    options: dict[str, dict[str, list[Any]]] = {}
    unrunnable: dict[str, list[str]] = {}
    for c in components:
        options[c] = {f: [] for f in FAMILIES}
        unrunnable[c] = []
        runnable, refused = manifest.candidates(c, lambda e: _runnable(e, transport))
        unrunnable[c] = [why for _, why in refused]
        for e in runnable:
            options[c][family_of(e)].append(e)
    present = [c for c in components if any(options[c].values()) or unrunnable[c]]
    if runtime == "auto":
        full = [rt for rt in FAMILIES if present and all(options[c][rt] for c in present)]
        preferred = full[0] if full else None
    else:
        preferred = runtime
    out = []
    for c in components:
        has = {e.file for e in manifest.components if e.component == c}
        if not has:
            out.append(Selection(c, None, None, f"the manifest has no {c} artifact"))
            continue
        rt = preferred
        if rt is None:  # auto without a runtime that covers everything: whatever this component has
            rt = next((r for r in FAMILIES if options[c][r]), None)
        if rt is not None and options[c].get(rt):
            out.append(Selection(c, options[c][rt][0], rt))
            continue
        if rt is not None and runtime != "auto":
            why = f"no {rt} artifact for the {c} in the manifest (it has {', '.join(sorted(has))})"
        else:
            why = "; ".join(unrunnable[c]) or f"no runnable {c} artifact"
        out.append(Selection(c, None, None, why))
    return out


def describe_artifact(manifest: Any, e: Any) -> dict[str, Any]:
    gate = (e.parity or {}).get("gate") or {}
    return {
        "file": e.file,
        "path": str(manifest.path_of(e)),
        "format": Path(e.file).suffix.lstrip("."),
        "model": e.model,
        "target": e.target,
        "delegate": e.delegate,
        "precision": e.precision or e.dtype,
        "sha256": e.sha256,
        "bytes": e.bytes,
        "extra_files": [{"role": f.role, "file": f.file, "sha256": f.sha256, "bytes": f.bytes}
                        for f in e.extra_files],
        "inputs": [t.to_dict() for t in e.inputs],
        "parity": {"verified_on": sorted({r.get("runtime") for r in e.verified_on if r.get("passed")}),
                   "passed": gate.get("passed")},
    }


def artifact_files(manifest: Any, e: Any) -> list[tuple[Path, str, str]]:
    """(local path, remote name, manifest sha256) of the artifact's files: the primary one, then its extra files.
    Files that are not needed to run it (test vectors, bundled programs, ETRecords, a QNN context's source model)
    are left out. The local path stays inside the artifacts folder (`Manifest.file_path`) and the remote name is
    made of checked parts only (`remote_name`), so nothing is read or pushed outside either folder."""
    files = [(manifest.path_of(e), remote_name(e.file), e.sha256)]
    for f in e.extra_files:
        if f.role in ("bundled_program", "test_vectors", "etrecord", "qnn_source"):
            continue
        files.append((manifest.file_path(f.file), remote_name(f.file), f.sha256))
    return files


def remote_name(name: str) -> str:
    """A manifest file name as a path under a phone's staging folder (`/data/local/tmp/mi2v/<hash>/NAME`): every
    part a plain name (mi2v_export/safepath.py `safe_name`: no `..`, no leading `/`, nothing a shell reads), so a
    crafted manifest cannot make a push or a runner argument leave that folder."""
    what = "manifest.json: file" + (f" {name!r}, part" if "/" in str(name) else "")
    return "/".join(safe_name(part, what) for part in str(name).split("/"))
