"""Artifact folders written by `mi2v export` as pipeline stages: reading and checking their manifests (through
mi2v_export.manifest, the one reader of manifest.json), choosing one artifact per component and building the
stages.

`build_stages` picks one stage per component from one or more folders: the first folder that has the component
wins; inside a folder that holds several artifacts of it, the one of the requested target (`use`, CLI `--use`),
else the most preferred one this host runs (Manifest.candidates; "runs here" is mi2v_export.runtimes: a registered
runtime accepts the entry and is available). Components no folder has fall back to PyTorch on request.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from .. import runtimes
from ..contract import COMPONENTS, DECODER, DENOISER, ENCODER
from ..errors import BadInputError
from ..integrity import check_entry
from ..exporters.base import target_names
from ..manifest import Manifest, read_manifest
from ..shapes import VideoGeometry
from .sampler import ProgressFn, no_progress
from .stages import Stage, artifact_stage, check_component
from .weights import checkpoint_parts, torch_stage

DECODER_MODELS = {"turbo-vaed": "turbo-vaed", "ltx-decoder": "ltx"}


def read_artifacts(folder: str | os.PathLike) -> Manifest:
    """`DIR/manifest.json` as a `mi2v_export.manifest.Manifest`, with every listed file present (BadInputError
    with one line otherwise). The artifact files are `DIR/<component>.<onnx|pte|mlpackage>` (+ extra files)."""
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise BadInputError(f"artifacts folder {folder}: is a file, not a folder")
    manifest = read_manifest(folder)
    manifest.check_files()
    if not any(e.component in COMPONENTS for e in manifest.components):
        raise BadInputError(f"{folder / 'manifest.json'}: lists none of the components {', '.join(COMPONENTS)}")
    return manifest


def decoder_kind_of(manifest) -> str | None:
    """'turbo-vaed' / 'ltx' when the manifest holds a decoder (of one kind), else None."""
    kinds = {DECODER_MODELS.get(e.model) for e in manifest.components if e.component == DECODER}
    kinds.discard(None)
    return kinds.pop() if len(kinds) == 1 else None


def runnable_here(entry) -> bool:
    """Whether a runtime of mi2v_export.runtimes accepts the artifact and is available here."""
    return runtimes.runnable(entry) is not None


def parse_use(values: Sequence[str]) -> dict[str, str]:
    """`--use` values → {component: target}: 'onnx' applies to every component, 'denoiser=executorch' to one."""
    use: dict[str, str] = {}
    for value in values:
        comp, _, target = value.rpartition("=")
        target = target.strip().lower()
        if target not in target_names():
            raise BadInputError(f"--use {value!r}: unknown target {target!r}; choose one of "
                                f"{', '.join(target_names())}")
        for c in ([comp.strip()] if comp else COMPONENTS):
            check_component(c)
            use[c] = target
    return use


def select_entry(manifests: Sequence, component: str, target: str | None = None, budget: int | None = None):
    """(manifest, entry) for a component: the first folder that has it (of `target` if given); inside it the
    most preferred artifact this host runs (Manifest.candidates), else the most preferred one (its stage then says
    why it cannot run). With a `budget` (bytes), only artifacts whose measured runtime memory fits it count, in any
    folder: BadInputError naming the smallest when the component has artifacts but none fits. None when no folder
    has the component."""
    over: list = []
    for m in manifests:
        runnable, refused = m.candidates(component, lambda e: _refusal(e, target, budget))
        over += [(m, e) for e, why in refused if why == "over budget"]
        wanted = [e for e, why in refused if why == "not here"]
        if runnable or wanted:
            return m, (runnable or wanted)[0]
    if over:
        measured = [(e.runtime_memory["bytes"], m, e) for m, e in over if (e.runtime_memory or {}).get("bytes")]
        smallest = min(measured, key=lambda t: t[0]) if measured else None
        what = (f"the smallest measured is {smallest[2].file} in {smallest[1].folder}, "
                f"{smallest[0] / 2 ** 20:.0f} MiB" if smallest else "none has a measured runtime memory")
        raise BadInputError(f"--memory-budget {budget / 2 ** 20:g}: no {component} artifact fits ({what}); export "
                            f"one with `mi2v export --component {component} --memory-budget ...`")
    return None


def _refusal(entry, target: str | None, budget: int | None = None) -> str | None:
    if target is not None and entry.target != target:
        return "other target"
    if not runnable_here(entry):
        return "not here"
    measured = (entry.runtime_memory or {}).get("bytes")  # not runtime_memory_bytes: planned bytes in old manifests
    if budget is not None and (measured is None or measured > budget):
        return "over budget"
    return None


def check_artifacts(manifest, geo: VideoGeometry, preset: str, decoder: str) -> None:
    """Raise one clear BadInputError when a manifest does not fit the requested preset, size or decoder."""
    where = str(manifest.folder)
    if manifest.preset != preset:
        raise BadInputError(f"{where} holds the {manifest.preset!r} preset, not {preset!r}")
    if tuple(manifest.resolution) != (geo.height, geo.width):
        raise BadInputError(f"{where} was exported for {manifest.resolution[0]}x{manifest.resolution[1]}, not "
                            f"{geo.height}x{geo.width}; re-export it or drop --resolution")
    if manifest.frames != geo.frames:
        raise BadInputError(f"{where} was exported for {manifest.frames} frames, not {geo.frames}; re-export it or "
                            "drop --frames")
    kind = decoder_kind_of(manifest)
    if kind and kind != decoder:
        raise BadInputError(f"{where} holds the {kind} decoder, not {decoder}")
    expected = expected_io_shapes(geo)
    for e in manifest.components:
        for t in e.inputs:
            want = expected.get(e.component, {}).get(t.name)
            if t.shape and want and tuple(t.shape) != want:
                raise BadInputError(f"{where}: {e.file} input {t.name!r} has shape {list(t.shape)}, but "
                                    f"{geo.height}x{geo.width}x{geo.frames} needs {list(want)}")


def expected_io_shapes(geo: VideoGeometry) -> dict[str, dict[str, tuple]]:
    """The static input shapes each component must have for a video size (batch 1)."""
    lat = geo.latent_shape
    return {
        ENCODER: {"image": (1, 3, 1, geo.height, geo.width)},
        DENOISER: {"latent": lat, "timestep": (1,), "flow_score": (1,)},
        DECODER: {"latent": lat},
    }


def check_stage_shapes(stage: Stage, geo: VideoGeometry) -> None:
    """Raise when an artifact's static input shapes do not fit the video size (dynamic axes are skipped)."""
    shapes = getattr(stage, "input_shapes", None)
    if shapes is None:
        return
    expected = expected_io_shapes(geo)[stage.component]
    for name, shape in shapes().items():
        want = expected.get(name)
        if want is None or any(isinstance(s, str) or s is None or s < 0 for s in shape):
            continue  # a dynamic axis: nothing to check statically
        if tuple(shape) != want:
            raise BadInputError(f"{Path(stage.source).name}: input {name!r} is {list(shape)}, but "
                                f"{geo.height}x{geo.width}x{geo.frames} needs {list(want)}; re-export for this size")



def build_stages(preset: str, decoder: str = "turbo-vaed", geo: VideoGeometry | None = None,
                 artifacts: Sequence = (), checkpoints: Sequence = (), fallback: str | None = None,
                 parts: dict | None = None, use: dict[str, str] | None = None,
                 progress: ProgressFn = no_progress, allow_modified: bool = False,
                 modified: list | None = None, budget: int | None = None) -> dict[str, Stage]:
    """One stage per component: from the first artifacts folder (path or read_artifacts manifest) that has it —
    of the target `use[component]` when given — else PyTorch when there are no folders or `fallback == "pytorch"`,
    else a BadInputError naming the missing component. An artifact that differs from its manifest is refused
    unless `allow_modified` (mi2v_export/integrity.py); the modified files run anyway are added to `modified`.
    `budget` (bytes): only artifacts whose measured runtime memory fits it (`select_entry`)."""
    if fallback not in (None, "none", "pytorch"):
        raise BadInputError(f"fallback must be 'pytorch' or 'none', got {fallback!r}")
    manifests = [a if hasattr(a, "components") else read_artifacts(a) for a in artifacts]
    if geo is not None:
        for m in manifests:
            check_artifacts(m, geo, preset, decoder)
    if parts is None:
        parts = checkpoint_parts(checkpoints)
    use = use or {}
    stages: dict[str, Stage] = {}
    for i, component in enumerate(COMPONENTS):
        progress("load", i, len(COMPONENTS))
        hit = select_entry(manifests, component, use.get(component), budget)
        if hit is not None:
            manifest, entry = hit
            changed = check_entry(manifest, entry, allow_modified=allow_modified)
            if modified is not None:
                modified += changed
            stage = artifact_stage(component, manifest.path_of(entry), entry)
            if geo is not None:
                check_stage_shapes(stage, geo)
        elif manifests and use.get(component):
            raise BadInputError(f"--use {component}={use[component]}: no {use[component]} artifact of the "
                                f"{component} in {', '.join(str(m.folder) for m in manifests)}")
        elif not manifests or fallback == "pytorch":
            stage = torch_stage(component, preset, decoder, parts)
        else:
            have = sorted({e.component for m in manifests for e in m.components})
            folders = ", ".join(str(m.folder) for m in manifests)
            raise BadInputError(f"no {component} in {folders} (it has: {', '.join(have)}); export it "
                                f"(`mi2v export --component {component}`) or pass --fallback pytorch")
        stages[component] = stage
    progress("load", len(COMPONENTS), len(COMPONENTS))
    return stages

