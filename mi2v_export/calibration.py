"""Calibration data recorded from the real sampler: what each component sees inside `mi2v generate`.

The PyTorch fp32 pipeline (mi2v_export.pipeline.Pipeline, the same code `mi2v generate` runs) is driven over the
calibration images, a few seeds and both sampler lengths (1 and 2 steps); recording stages keep every input:

    encoder   the preprocessed image (1, 3, 1, H, W)
    denoiser  (latent, timestep, flow_score) at every sampler step
    decoder   the final latent of each run

`held_out` holds the same records for the validation image (packaged, never in the default calibration set): the
component gate measures a quantized artifact on inputs its activation ranges were not fitted to.

Sets are cached by content (`~/.cache/mi2v/calibration/<digest>.safetensors`, or `$MI2V_CACHE`): the digest covers
the images' bytes, the weights (checkpoint digests or the seed), the geometry, the decoder kind, seeds, step counts
and CALIBRATION_VERSION (bump it when what is recorded changes).
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import torch

from .errors import BadInputError
from .files import sha256_file

CALIBRATION_VERSION = 1
DATA = Path(__file__).parent / "data"
DEFAULT_DIR = DATA / "calibration"
VALIDATION_IMAGE = DATA / "validation" / "chelsea.png"
SEEDS = (0, 1)
STEPS = (1, 2)
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp")
MAX_IMAGES = 32


@dataclass
class CalibrationSet:
    """Recorded inputs per component, for calibration (`samples`) and for the held-out gate (`held_out`)."""

    digest: str
    images: list[str]
    seeds: tuple[int, ...]
    steps: tuple[int, ...]
    samples: dict[str, list[dict[str, torch.Tensor]]] = field(default_factory=dict)
    held_out: dict[str, list[dict[str, torch.Tensor]]] = field(default_factory=dict)
    cached: bool = False

    def record(self) -> dict:
        """The manifest's `calibration` field."""
        return {"digest": self.digest, "size": sum(len(v) for v in self.samples.values()),
                "samples": {c: len(v) for c, v in self.samples.items()}, "images": self.images,
                "seeds": list(self.seeds), "steps": list(self.steps), "validation_image": VALIDATION_IMAGE.name,
                "held_out": {c: len(v) for c, v in self.held_out.items()}, "version": CALIBRATION_VERSION}


def list_images(folder: Path | None) -> list[Path]:
    """The calibration images of `folder` (default: the packaged set), sorted; one-line error when unusable."""
    folder = Path(folder) if folder is not None else DEFAULT_DIR
    if not folder.is_dir():
        raise BadInputError(f"--calibration {folder}: not a folder of images")
    images = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
    if not images:
        raise BadInputError(f"--calibration {folder}: no images ({', '.join(IMAGE_SUFFIXES)})")
    if len(images) > MAX_IMAGES:
        raise BadInputError(f"--calibration {folder}: {len(images)} images; use at most {MAX_IMAGES} (calibration "
                            "runs the fp32 pipeline on each)")
    return images


def cache_dir() -> Path:
    return Path(os.environ.get("MI2V_CACHE") or Path.home() / ".cache" / "mi2v") / "calibration"


def set_digest(images: list[Path], weights: dict, geo, decoder: str, preset: str) -> str:
    h = hashlib.sha256()
    for p in images + [VALIDATION_IMAGE]:
        h.update(p.name.encode() + b"\0" + bytes.fromhex(sha256_file(p)))
    meta = {"weights": weights, "geometry": [geo.height, geo.width, geo.frames], "decoder": decoder,
            "preset": preset, "seeds": SEEDS, "steps": STEPS, "version": CALIBRATION_VERSION}
    h.update(json.dumps(meta, sort_keys=True).encode())
    return h.hexdigest()


class _Recorder:
    """A pipeline stage that keeps a copy of every input and then runs the real stage (or, for the decoder, only
    records: calibration needs what the decoder sees, not the video)."""

    def __init__(self, inner, store: list, run: bool = True, output_shape: tuple | None = None):
        self.inner, self.store, self.do_run, self.output_shape = inner, store, run, output_shape
        self.component, self.backend, self.source = inner.component, inner.backend, inner.source
        self.precision = inner.precision

    @property
    def provides_logvar(self) -> bool:
        return self.inner.provides_logvar

    def describe(self) -> str:
        return self.inner.describe()

    def load(self) -> None:
        self.inner.load()

    def release(self) -> None:
        self.inner.release()

    def run(self, **inputs):
        self.store.append({k: v.detach().float().clone() for k, v in inputs.items()})
        if self.do_run:
            return self.inner.run(**inputs)
        return {"video": torch.zeros(self.output_shape)}


def record_runs(stages: dict, image_paths: list[Path], geo, seeds=SEEDS,
                steps_list=STEPS) -> dict[str, list[dict[str, torch.Tensor]]]:
    """Drive the real sampler over images × seeds × step counts with recording stages; the inputs each component
    saw."""
    from .pipeline import DECODER, DENOISER, ENCODER, GenerateConfig, Pipeline, load_image

    store: dict[str, list] = {ENCODER: [], DENOISER: [], DECODER: []}
    video_shape = (1, 3, geo.frames, geo.decoded_height, geo.decoded_width)
    pipe = Pipeline({ENCODER: _Recorder(stages[ENCODER], store[ENCODER]),
                     DENOISER: _Recorder(stages[DENOISER], store[DENOISER]),
                     DECODER: _Recorder(stages[DECODER], store[DECODER], run=False, output_shape=video_shape)})
    for path in image_paths:
        image = load_image(path)
        for seed in seeds:
            for steps in steps_list:
                pipe.generate(image, GenerateConfig(geo.height, geo.width, geo.frames, steps=steps, seed=seed))
    store[ENCODER] = _unique(store[ENCODER])
    return store


def _unique(records: list[dict]) -> list[dict]:
    """Drop repeated records (the encoder sees the same image for every seed and step count)."""
    out, seen = [], set()
    for r in records:
        key = hashlib.sha256(b"".join(t.numpy().tobytes() for t in r.values())).hexdigest()
        if key not in seen:
            seen.add(key)
            out.append(r)
    return out


def _save(path: Path, cal: CalibrationSet) -> None:
    from safetensors.torch import save_file

    tensors, meta = {}, {"images": json.dumps(cal.images), "digest": cal.digest}
    for part, groups in (("samples", cal.samples), ("held_out", cal.held_out)):
        for comp, records in groups.items():
            for i, rec in enumerate(records):
                for name, t in rec.items():
                    tensors[f"{part}/{comp}/{i}/{name}"] = t.contiguous()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".tmp{os.getpid()}")
    save_file(tensors, str(tmp), metadata=meta)
    os.replace(tmp, path)


def _load(path: Path) -> CalibrationSet | None:
    from safetensors import safe_open

    try:
        with safe_open(str(path), "pt") as f:
            meta = f.metadata() or {}
            groups: dict[str, dict[str, dict[int, dict]]] = {"samples": {}, "held_out": {}}
            for key in f.keys():
                part, comp, i, name = key.split("/")
                groups[part].setdefault(comp, {}).setdefault(int(i), {})[name] = f.get_tensor(key)
    except Exception:  # noqa: BLE001 - a damaged cache entry is rebuilt, never trusted
        return None
    as_lists = {p: {c: [recs[i] for i in sorted(recs)] for c, recs in g.items()} for p, g in groups.items()}
    return CalibrationSet(meta.get("digest", ""), json.loads(meta.get("images", "[]")), SEEDS, STEPS,
                          as_lists["samples"], as_lists["held_out"], cached=True)


def build(stages: dict, geo, *, folder: Path | None, weights: dict, decoder: str, preset: str,
          use_cache: bool = True) -> CalibrationSet:
    """The calibration set of these weights and this geometry: from the cache, or recorded now (and cached)."""
    images = list_images(folder)
    digest = set_digest(images, weights, geo, decoder, preset)
    path = cache_dir() / f"{digest}.safetensors"
    if use_cache and path.is_file():
        cal = _load(path)
        if cal is not None and cal.digest == digest:
            return cal
    samples = record_runs(stages, images, geo)
    held_out = record_runs(stages, [VALIDATION_IMAGE], geo, seeds=(SEEDS[0],), steps_list=(2,))
    cal = CalibrationSet(digest, [p.name for p in images], SEEDS, STEPS, samples, held_out)
    if use_cache:
        try:
            _save(path, cal)
        except OSError:
            pass  # a read-only home only costs the next run the recording
    return cal
