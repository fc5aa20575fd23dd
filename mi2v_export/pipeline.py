"""The MobileI2V image-to-video pipeline, as upstream runs it, on swappable back-ends (`mi2v generate`).

This module is also the reference an app developer copies: the exact conditioning, sampler loop and
post-processing a phone has to run around the three exported components (architecture.md §4).

    image ─► preprocess ─► encoder ─► z_ref (1,128,1,h,w)
    noise (1,128,T,h,w) from torch.Generator(cpu).manual_seed(seed); z[:, :, 0] = z_ref
    for i, t in enumerate(timesteps):                    # FlowMatchEulerDiscreteScheduler(shift=3) grid
        v = denoiser(z, t, flow_score)                   # velocity ≈ noise − x0 (no CFG: the text is unused)
        z = z + (σ[i+1] − σ[i]) · v                      # Euler step, float32
        z[:, :, 0] = z_ref                               # re-impose the clean first-frame latent
    video = decoder(z)[:, :, :F, :H, :W]                 # decode (scaling factor 1.0), crop 736 → 720 rows
    uint8 = ((clamp(video, -1, 1) + 1) / 2 · 255 + 0.5).clamp(0, 255).to(uint8)

Details, and where they differ from upstream `scripts/inference_i2v.py` on purpose:
  * Preprocessing: RGB, resized straight to H×W (aspect ratio *not* kept, like upstream's `Resize([720,1280])`;
    `fit="cover"` scales and centre-crops instead), normalised to [-1, 1]. EXIF rotation is applied; grayscale and
    palette images are converted; transparent images are composited on white (upstream's `.convert("RGB")` would
    expose whatever colour hides under the alpha).
  * Noise: one CPU `torch.Generator` seeded with `seed`, float32 (upstream: a CUDA generator, then fp16). Draw
    order: the (1,128,T,h,w) noise first, then (posterior sampling only) the (1,128,1,h,w) posterior noise.
  * Reference latent — posterior sample or mean. Upstream always *samples* the LTX posterior:
    z_ref = mean + exp(logvar/2)·ε, logvar being the encoder's one shared log-variance channel (clamped to
    [-30, 20] like diffusers). The artifact contract's encoder returns only the posterior **mean** (`latent`).
    So: `posterior="sample"` (default) samples whenever the encoder stage provides the log-variance (the PyTorch
    stage always does; an artifact only if it has a `logvar` output), and otherwise falls back to the mean and
    says so in `GenerateResult.posterior` / `.notes`. A comparison run (`compare_runs`) makes the PyTorch
    reference use exactly the mode the artifact run ended up with, so the two trajectories start from the same
    latent up to export error. A plain PyTorch run therefore samples while a run on `mi2v export` artifacts uses
    the mean: for the same seed their videos differ unless both use `posterior="mean"` (how far apart depends on
    the real encoder's log-variance, which seeded weights cannot show).
  * Everything between the stages is float32; fp16 artifacts get their inputs cast to fp16 and their outputs cast
    back (upstream keeps the latent in fp16 between steps; the Euler update itself is fp32 there too).

Back-ends: every component runs behind one `Stage` interface (`run(**inputs) -> outputs`, float32 tensors by
the contract's I/O names). `TorchStage` (eager, the reference), `OnnxStage` (onnxruntime), `ExecuTorchStage`
(ExecuTorch runtime) and `CoreMLStage` (macOS only) are registered by artifact file suffix in `STAGE_BACKENDS`.
`build_stages` picks one per component from one or more artifact folders written by `mi2v export` (read through
`mi2v_export.manifest`): the first folder that has the component wins; inside a folder that holds several
artifacts of it, the one of the requested target (`use`, CLI `--use`), else the first this host can run in the
order onnx, executorch (portable / XNNPACK), coreml. Components no folder has fall back to PyTorch on request.

Side effects stay at the edges: nothing here prints; progress goes through a callback; files are written by
`write_video` / `write_contact_sheet` / `write_json`, atomically (temp file in the same folder, then rename).
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import time
import warnings
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from .contract import COMPONENTS, DECODER, DENOISER, ENCODER, IO, runs_on_host
from .errors import BadInputError, CheckpointError, MissingDependencyError, Mi2vError, VerificationError, first_line
from . import bounds
from .files import atomic_path, write_json_atomic
from .integrity import check_entry
from .manifest import TARGET_PREFERENCE
from .media import DEFAULT_FPS, contact_sheet, contact_sheet_path, read_video, write_contact_sheet, write_video
from .models import weight_bytes
from .outputs import check_file
from .shapes import VideoGeometry, geometry

# ---------------------------------------------------------------------------------------------------------------
# Constants of the sampler (architecture.md §4) and of the artifact contract (issue 3)

NUM_TRAIN_TIMESTEPS = 1000
FLOW_SHIFT = 3.0
DEFAULT_STEPS = 2
DEFAULT_FLOW_SCORE = 2.0
MIN_IMAGE_SIDE = 32
LOGVAR_CLAMP = (-30.0, 20.0)  # diffusers DiagonalGaussianDistribution

# component names and their I/O (contract.IO; an encoder may add the optional output `logvar`)
REPORT_SCHEMA_VERSION = 1
# `--compare-to reference` gate: every output frame's PSNR against PyTorch fp32, by artifact precision.
VIDEO_PSNR_MIN_DB = {"fp32": 40.0, "fp16": 30.0}
POSTERIOR_MODES = ("sample", "mean")
FIT_MODES = ("stretch", "cover")

ProgressFn = Callable[[str, int, int], None]  # (stage, done, total)


def _no_progress(stage: str, done: int, total: int) -> None:
    return None


# ---------------------------------------------------------------------------------------------------------------
# Flow-matching schedule


@dataclass(frozen=True)
class FlowSchedule:
    timesteps: torch.Tensor  # (n,) float32, 0-1000 scale, what the denoiser receives
    sigmas: torch.Tensor  # (n+1,) float32, the last one 0

    def __len__(self) -> int:
        return int(self.timesteps.numel())


def flow_schedule(steps: int, shift: float = FLOW_SHIFT, num_train_timesteps: int = NUM_TRAIN_TIMESTEPS) -> FlowSchedule:
    """diffusers `FlowMatchEulerDiscreteScheduler(shift=shift).set_timesteps(steps)`, reproduced bit for bit.

    The grid is shifted twice, as diffusers does: the training σ table (1..N)/N is shifted, its ends give
    t_max = 1000 and t_min = 1000·shift(1/N) ≈ 2.994; `linspace(t_max, t_min, steps)/N` is shifted again.
    1 step → t = [1000]; 2 → [1000, 8.929]; 30 → 1000, 988.27, …, 8.929; σ = t/1000 plus a terminal 0.
    """
    if not isinstance(steps, int) or isinstance(steps, bool) or steps < 1:
        raise BadInputError(f"steps must be a positive integer, got {steps!r}")
    if steps > num_train_timesteps:
        raise BadInputError(f"steps {steps} exceeds the {num_train_timesteps} training timesteps")
    n = num_train_timesteps
    train = torch.from_numpy(np.linspace(1, n, n, dtype=np.float32)[::-1].copy()) / n
    train = shift * train / (1 + (shift - 1) * train)
    sigma_max, sigma_min = train[0].item(), train[-1].item()
    ts = np.linspace(sigma_max * n, sigma_min * n, steps)  # float64, as in diffusers
    sig = ts / n
    sig = shift * sig / (1 + (shift - 1) * sig)
    sigmas = torch.from_numpy(sig).to(torch.float32)
    timesteps = sigmas * n
    return FlowSchedule(timesteps=timesteps, sigmas=torch.cat([sigmas, torch.zeros(1)]))


# ---------------------------------------------------------------------------------------------------------------
# Input image


def load_image(path: str | os.PathLike) -> "PIL.Image.Image":  # noqa: F821
    """Open an image file as 8-bit RGB, or raise one clear BadInputError."""
    from PIL import Image, ImageOps, UnidentifiedImageError

    path = Path(path)
    if not path.exists():
        raise BadInputError(f"{path}: no such file")
    if path.is_dir():
        raise BadInputError(f"{path}: is a folder, not an image")
    try:
        with Image.open(path) as img:
            img.load()
            img = ImageOps.exif_transpose(img)
            return to_rgb(img)
    except (UnidentifiedImageError, Image.DecompressionBombError) as exc:
        kind = "too large to decode safely" if isinstance(exc, Image.DecompressionBombError) else \
            "not an image PIL can read (PNG, JPEG, WebP, BMP, TIFF, …)"
        raise BadInputError(f"{path.name}: {kind}") from None
    except (OSError, SyntaxError, ValueError) as exc:
        raise BadInputError(f"{path.name}: unreadable image ({exc})") from None


def to_rgb(img: "PIL.Image.Image") -> "PIL.Image.Image":  # noqa: F821
    """Any PIL mode → 8-bit RGB: alpha composited on white, 16-bit/float grayscale rescaled, palettes expanded."""
    from PIL import Image

    if img.mode in ("I;16", "I;16L", "I;16B", "I;16N", "I", "F"):
        arr = np.asarray(img, dtype=np.float64)
        top = 65535.0 if img.mode.startswith("I;16") or arr.max(initial=0) > 255 else 255.0
        if img.mode == "F" and arr.max(initial=0) <= 1.0:
            top = 1.0
        img = Image.fromarray(np.clip(arr / top * 255.0 + 0.5, 0, 255).astype(np.uint8), "L")
    if img.mode == "P" and "transparency" in img.info:
        img = img.convert("RGBA")
    if img.mode in ("RGBA", "LA", "PA", "La", "RGBa"):
        img = img.convert("RGBA")
        background = Image.new("RGBA", img.size, (255, 255, 255, 255))
        img = Image.alpha_composite(background, img)
    return img.convert("RGB")


def preprocess_image(img, height: int, width: int, fit: str = "stretch") -> torch.Tensor:
    """PIL image (any mode) → (1, 3, 1, H, W) float32 in [-1, 1], the encoder's `image` input."""
    from PIL import Image

    if fit not in FIT_MODES:
        raise BadInputError(f"fit must be one of {', '.join(FIT_MODES)}, got {fit!r}")
    img = to_rgb(img)
    w0, h0 = img.size
    if min(w0, h0) < MIN_IMAGE_SIDE:
        raise BadInputError(f"image is {w0}x{h0} pixels; it needs at least {MIN_IMAGE_SIDE} on each side")
    if fit == "cover":
        scale = max(width / w0, height / h0)
        cw, ch = min(w0, round(width / scale)), min(h0, round(height / scale))
        left, top = (w0 - cw) // 2, (h0 - ch) // 2
        img = img.crop((left, top, left + cw, top + ch))
    if img.size != (width, height):
        img = img.resize((width, height), Image.Resampling.BILINEAR, reducing_gap=None)
    x = torch.from_numpy(np.asarray(img, dtype=np.uint8).copy()).permute(2, 0, 1).float() / 255.0
    return (x * 2.0 - 1.0)[None, :, None]


def to_uint8_frames(video: torch.Tensor) -> np.ndarray:
    """(1, 3, F, H, W) float in [-1, 1] → (F, H, W, 3) uint8, rounded like upstream's save_sample."""
    x = ((video[0].float().clamp(-1, 1) + 1.0) / 2.0 * 255.0 + 0.5).clamp(0, 255).to(torch.uint8)
    return x.permute(1, 2, 3, 0).contiguous().numpy()


# ---------------------------------------------------------------------------------------------------------------
# Stages: one interface, several back-ends


class Stage(ABC):
    """One pipeline component on one back-end. `run` takes and returns float32 CPU tensors by contract name."""

    component: str
    backend: str  # "pytorch" | "onnxruntime" | "executorch" | "coreml"
    source: str  # what runs: a file path or a description of the PyTorch weights
    precision: str = "fp32"
    gate_db: float | None = None  # per-frame PSNR gate from the manifest (trajectory), artifacts only

    @abstractmethod
    def run(self, **inputs: torch.Tensor) -> dict[str, torch.Tensor]:
        ...

    @property
    def provides_logvar(self) -> bool:
        return False

    def describe(self) -> str:
        return f"{self.backend} ({self.precision}) · {self.source}"


class TorchStage(Stage):
    """PyTorch eager, float32: the reference. Wraps the module of `mi2v_export.models` (or any module with the
    contract's positional forward). An encoder module with `.moments()` also gives the posterior log-variance."""

    backend = "pytorch"

    def __init__(self, component: str, module: nn.Module, source: str = "pytorch"):
        _check_component(component)
        module.eval()  # not `module.eval()` as the value: an exported (PT2E) graph's allowed eval returns None
        self.component, self.module, self.source = component, module, source
        self.precision = {torch.float16: "fp16", torch.bfloat16: "bf16"}.get(_module_dtype(module), "fp32")

    @property
    def provides_logvar(self) -> bool:
        return self.component == ENCODER and hasattr(self.module, "moments")

    @torch.inference_mode()
    def run(self, **inputs: torch.Tensor) -> dict[str, torch.Tensor]:
        names, (out_name, *_) = IO[self.component]
        args = [inputs[n] for n in names]
        dtype = _module_dtype(self.module)
        args = [a.to(dtype) if a.is_floating_point() else a for a in args]
        if self.provides_logvar:
            moments = self.module.moments(*args)
            c = moments.shape[1] // 2
            return {"latent": moments[:, :c].float(), "logvar": moments[:, c:c + 1].float()}
        return {out_name: self.module(*args).float()}


def _module_dtype(module: nn.Module) -> torch.dtype:
    p = next((p for p in module.parameters() if p.is_floating_point()), None)  # a quantized graph holds int8 too
    return p.dtype if p is not None else torch.float32


_NP_DTYPES = {"tensor(float)": np.float32, "tensor(float16)": np.float16, "tensor(double)": np.float64,
              "tensor(int64)": np.int64, "tensor(int32)": np.int32}


class OnnxStage(Stage):
    """onnxruntime (CPU execution provider) on `<component>.onnx`; inputs are matched by name."""

    backend = "onnxruntime"

    def __init__(self, component: str, path: Path, threads: int | None = None, qnn_soc: str | None = None,
                 qnn_fp16: bool = True, qnn_cpu_fallback: bool = False):
        """`qnn_soc`: a QNN EPContext model compiled for that SoC, run on the onnxruntime-qnn HTP (simulator);
        `qnn_cpu_fallback` when it was exported with --allow-cpu-fallback."""
        _check_component(component)
        try:
            import onnxruntime as ort
        except ImportError as exc:  # pragma: no cover - pinned dependency
            raise MissingDependencyError(f"onnxruntime is not installed ({exc})") from None
        self.component, self.source = component, str(path)
        opts = ort.SessionOptions()
        opts.enable_profiling = False
        opts.log_severity_level = 3
        if threads:
            opts.intra_op_num_threads = threads
        try:
            if qnn_soc:
                from . import qnn

                self.session = qnn.create_session(path, qnn_soc, fp16=qnn_fp16, allow_cpu_fallback=qnn_cpu_fallback)
                self.backend = qnn.RUNTIME
            else:
                self.session = ort.InferenceSession(str(path), sess_options=opts, providers=["CPUExecutionProvider"])
        except MissingDependencyError:
            raise
        except Exception as exc:  # onnxruntime raises its own exception types for corrupt files
            raise BadInputError(f"{path.name}: onnxruntime cannot load it ({first_line(exc)})") from None
        self.inputs = {i.name: i for i in self.session.get_inputs()}
        self.outputs = [o.name for o in self.session.get_outputs()]
        names, outs = IO[component]
        missing = [n for n in names if n not in self.inputs] + [n for n in outs if n not in self.outputs]
        if missing:
            raise BadInputError(f"{path.name}: does not follow the artifact contract for the {component} (missing "
                                f"I/O {', '.join(missing)}; it has inputs {', '.join(self.inputs)} and outputs "
                                f"{', '.join(self.outputs)})")
        self.precision = "fp16" if any(i.type == "tensor(float16)" for i in self.inputs.values()) else "fp32"

    @property
    def provides_logvar(self) -> bool:
        return self.component == ENCODER and "logvar" in self.outputs

    def input_shapes(self) -> dict[str, tuple]:
        return {n: tuple(i.shape) for n, i in self.inputs.items()}

    def run(self, **inputs: torch.Tensor) -> dict[str, torch.Tensor]:
        feed = {}
        for name, meta in self.inputs.items():
            if name not in inputs:
                raise BadInputError(f"{Path(self.source).name}: unexpected input {name!r}")
            feed[name] = inputs[name].detach().cpu().numpy().astype(_NP_DTYPES.get(meta.type, np.float32))
        values = self.session.run(None, feed)
        return {n: torch.from_numpy(np.asarray(v)).float() for n, v in zip(self.outputs, values)}


# ExecuTorch ScalarType codes (c10) → torch dtypes, for MethodMeta.input_tensor_meta(i).dtype()
_ET_DTYPES = {0: torch.uint8, 1: torch.int8, 3: torch.int32, 4: torch.int64, 5: torch.float16, 6: torch.float32,
              7: torch.float64, 11: torch.bool, 15: torch.bfloat16}


class ExecuTorchStage(Stage):
    """ExecuTorch runtime on `<component>.pte` (`Runtime.get().load_program(path).load_method("forward")`).

    A .pte has no input names: inputs go in the manifest's order (else the contract's), dtypes and shapes come
    from the program's own method metadata."""

    backend = "executorch"

    def __init__(self, component: str, path: Path, input_names: Sequence[str] | None = None,
                 output_names: Sequence[str] | None = None):
        _check_component(component)
        try:
            with _quiet_fd(2):
                from executorch.runtime import Runtime
        except ImportError as exc:  # pragma: no cover - pinned dependency
            raise MissingDependencyError(f"the ExecuTorch runtime is not installed ({exc})") from None
        self.component, self.source = component, str(path)
        try:
            with _quiet_fd(2):
                program = Runtime.get().load_program(str(path))
                self.method = program.load_method("forward")
        except Exception as exc:
            raise BadInputError(f"{path.name}: the ExecuTorch runtime cannot load it ({first_line(exc)}): a corrupt "
                                "file, or a program lowered for a delegate this host lacks (Vulkan, QNN, Core ML)"
                                ) from None
        self._program = program  # keep the program alive as long as the method
        meta = self.method.metadata
        names, outs = IO[component]
        self.input_names = list(input_names or names)
        self.output_names = list(output_names or outs)
        if meta.num_inputs() != len(self.input_names):
            raise BadInputError(f"{path.name}: takes {meta.num_inputs()} inputs, the {component} contract has "
                                f"{len(self.input_names)} ({', '.join(self.input_names)})")
        self.input_meta = [meta.input_tensor_meta(i) for i in range(meta.num_inputs())]
        self.input_dtypes = [_ET_DTYPES.get(int(m.dtype()), torch.float32) for m in self.input_meta]
        self.precision = "fp16" if torch.float16 in self.input_dtypes else "fp32"

    @property
    def provides_logvar(self) -> bool:
        return self.component == ENCODER and "logvar" in self.output_names

    def input_shapes(self) -> dict[str, tuple]:
        return {n: tuple(m.sizes()) for n, m in zip(self.input_names, self.input_meta)}

    def run(self, **inputs: torch.Tensor) -> dict[str, torch.Tensor]:
        args = [inputs[n].detach().cpu().to(d).contiguous() for n, d in zip(self.input_names, self.input_dtypes)]
        values = self.method.execute(args)
        return {n: v.clone().float() for n, v in zip(self.output_names, values)}


class CoreMLStage(Stage):
    """Core ML `.mlpackage` through coremltools' predict: runs only on macOS."""

    backend = "coreml"

    def __init__(self, component: str, path: Path):
        _check_component(component)
        if not runs_on_host("coreml"):
            raise MissingDependencyError(f"{path.name}: Core ML models run only on macOS; export this component to "
                                         "ONNX or ExecuTorch, or pass --fallback pytorch")
        import coremltools as ct  # pragma: no cover - macOS only

        self.component, self.source = component, str(path)  # pragma: no cover
        self.model = ct.models.MLModel(str(path))  # pragma: no cover
        self.precision = "fp16"  # pragma: no cover

    def run(self, **inputs: torch.Tensor) -> dict[str, torch.Tensor]:  # pragma: no cover - macOS only
        names, outs = IO[self.component]
        out = self.model.predict({n: inputs[n].detach().cpu().numpy().astype(np.float32) for n in names})
        return {n: torch.from_numpy(np.asarray(out[n])).float() for n in out}


# Artifact suffix → stage class: adding a back-end is adding a class and a line here.
STAGE_BACKENDS: dict[str, type[Stage]] = {".onnx": OnnxStage, ".pte": ExecuTorchStage, ".mlpackage": CoreMLStage}


def _check_component(component: str) -> None:
    if component not in COMPONENTS:
        raise BadInputError(f"unknown component {component!r}; expected one of {', '.join(COMPONENTS)}")


@contextlib.contextmanager
def _quiet_fd(fd: int) -> Iterator[None]:
    """Silence a native library's writes to a file descriptor (ExecuTorch's cpuinfo chatter on stderr)."""
    if logging.getLogger("mi2v").isEnabledFor(logging.DEBUG):  # `mi2v -v`
        yield
        return
    try:
        saved = os.dup(fd)
    except OSError:  # no such descriptor (embedded interpreters)
        yield
        return
    try:
        with open(os.devnull, "wb") as devnull:
            os.dup2(devnull.fileno(), fd)
        yield
    finally:
        os.dup2(saved, fd)
        os.close(saved)


# ---------------------------------------------------------------------------------------------------------------
# Artifacts folder and manifest (read through mi2v_export.manifest, the one reader of manifest.json)

DECODER_MODELS = {"turbo-vaed": "turbo-vaed", "ltx-decoder": "ltx"}


def read_artifacts(folder: str | os.PathLike) -> "Manifest":  # noqa: F821
    """`DIR/manifest.json` as a `mi2v_export.manifest.Manifest`, with every listed file present (BadInputError
    with one line otherwise). The artifact files are `DIR/<component>.<onnx|pte|mlpackage>` (+ extra files)."""
    from .manifest import read_manifest

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
    """Whether this host has a runtime for the artifact (onnxruntime; ExecuTorch portable/XNNPACK; Core ML on a Mac)."""
    return runs_on_host(entry.target, entry.delegate)


def parse_use(values: Sequence[str]) -> dict[str, str]:
    """`--use` values → {component: target}: 'onnx' applies to every component, 'denoiser=executorch' to one."""
    use: dict[str, str] = {}
    for value in values:
        comp, _, target = value.rpartition("=")
        target = target.strip().lower()
        if target not in TARGET_PREFERENCE:
            raise BadInputError(f"--use {value!r}: unknown target {target!r}; choose one of "
                                f"{', '.join(TARGET_PREFERENCE)}")
        for c in ([comp.strip()] if comp else COMPONENTS):
            _check_component(c)
            use[c] = target
    return use


def select_entry(manifests: Sequence, component: str, target: str | None = None):
    """(manifest, entry) for a component: the first folder that has it (of `target` if given); inside it the
    most preferred artifact this host runs (Manifest.candidates), else the most preferred one (its stage then says
    why it cannot run). None when no folder has the component."""
    for m in manifests:
        runnable, refused = m.candidates(component, lambda e: _refusal(e, target))
        wanted = [e for e, why in refused if why == "not here"]
        if runnable or wanted:
            return m, (runnable or wanted)[0]
    return None


def _refusal(entry, target: str | None) -> str | None:
    if target is not None and entry.target != target:
        return "other target"
    return None if runs_on_host(entry.target, entry.delegate) else "not here"


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


# ---------------------------------------------------------------------------------------------------------------
# PyTorch weights


def checkpoint_parts(paths: Sequence[str | os.PathLike]) -> dict[str, "Checkpoint"]:  # noqa: F821
    """Read each checkpoint once (safely) and map every part it holds to it; a part in two files is an error."""
    from .checkpoints import read_checkpoint

    found: dict = {}
    for p in paths:
        ckpt = read_checkpoint(p)
        for part in ckpt.parts:
            if part in found:
                raise CheckpointError(f"two checkpoints hold the {part}: {found[part].path.name} and "
                                      f"{ckpt.path.name}; pass only one")
            found[part] = ckpt
    return found


def decoder_from_checkpoints(parts: dict) -> str | None:
    """The decoder kind the given checkpoints imply, if exactly one kind is present."""
    from .checkpoints import LTX_DECODER, TURBO_VAED

    kinds = [k for k, part in (("turbo-vaed", TURBO_VAED), ("ltx", LTX_DECODER)) if part in parts]
    return kinds[0] if len(kinds) == 1 else None


def torch_stage(component: str, preset: str, decoder: str = "turbo-vaed", parts: dict | None = None,
                seed: int = 0) -> TorchStage:
    """The float32 PyTorch stage of one component: weights from `parts` (checkpoint_parts) or seeded weights."""
    from .checkpoints import DENOISER as P_DENOISER
    from .checkpoints import LTX_ENCODER, load_part_weights
    from .models import DECODER_KINDS, PARTS, build_part, seed_part

    _check_component(component)
    if component == DECODER and decoder not in DECODER_KINDS:
        raise BadInputError(f"unknown decoder {decoder!r}; choose one of: {', '.join(DECODER_KINDS)}")
    part = {ENCODER: LTX_ENCODER, DENOISER: P_DENOISER, DECODER: DECODER_KINDS.get(decoder)}[component]
    spec = PARTS[part]
    module = build_part(part, preset)
    ckpt = (parts or {}).get(part)
    if ckpt is None:
        warnings.warn(f"{spec.label}: no checkpoint given, using seeded random weights (seed {seed}); the video "
                      "will be meaningless but reproducible", stacklevel=2)
        seed_part(module, seed)
        source = f"{spec.label}, seeded weights"
    else:
        load_part_weights(module, ckpt, part, f"{spec.label} of preset {preset!r}")
        source = f"{spec.label}, {ckpt.path.name}"
    return TorchStage(component, module.float().eval().requires_grad_(False), source)


def build_stages(preset: str, decoder: str = "turbo-vaed", geo: VideoGeometry | None = None,
                 artifacts: Sequence = (), checkpoints: Sequence = (), fallback: str | None = None,
                 parts: dict | None = None, use: dict[str, str] | None = None,
                 progress: ProgressFn = _no_progress, allow_modified: bool = False,
                 modified: list | None = None) -> dict[str, Stage]:
    """One stage per component: from the first artifacts folder (path or read_artifacts manifest) that has it —
    of the target `use[component]` when given — else PyTorch when there are no folders or `fallback == "pytorch"`,
    else a BadInputError naming the missing component. An artifact that differs from its manifest is refused
    unless `allow_modified` (mi2v_export/integrity.py); the modified files run anyway are added to `modified`."""
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
        hit = select_entry(manifests, component, use.get(component))
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


def artifact_stage(component: str, path: Path, entry=None) -> Stage:
    """The stage for one artifact file, by suffix (STAGE_BACKENDS); `entry` (manifest) gives I/O names/order."""
    path = Path(path)
    cls = STAGE_BACKENDS.get(path.suffix)
    if cls is None:
        raise BadInputError(f"{path.name}: unknown artifact type (expected {', '.join(STAGE_BACKENDS)})")
    if entry is not None and entry.target == "executorch" and not runs_on_host(entry.target, entry.delegate):
        raise MissingDependencyError(f"{path.name} is lowered for the {entry.delegate} delegate, which runs only on "
                                     "the device; use an XNNPACK or ONNX artifact here, or --fallback pytorch")
    if cls is ExecuTorchStage and entry is not None:
        stage = cls(component, path, [t.name for t in entry.inputs] or None, [t.name for t in entry.outputs] or None)
    elif entry is not None and entry.delegate == "qnn":
        stage = cls(component, path, qnn_soc=entry.target_info.get("soc"), qnn_fp16=entry.precision == "fp16",
                    qnn_cpu_fallback=bool((entry.flags or {}).get("allow_cpu_fallback")))
    else:
        stage = cls(component, path)
    if entry is not None:
        stage.precision = entry.precision or entry.dtype  # the exported precision, even with fp32 program I/O
        stage.gate_db = (entry.trajectory or {}).get("gate_db")  # the trajectory gate it passed at export
    return stage


# ---------------------------------------------------------------------------------------------------------------
# The sampler


@dataclass
class GenerateConfig:
    height: int
    width: int
    frames: int
    steps: int = DEFAULT_STEPS
    seed: int = 0
    flow_score: float = DEFAULT_FLOW_SCORE
    posterior: str = "sample"  # "sample" (upstream) | "mean"
    fit: str = "stretch"

    def __post_init__(self):
        self.geometry = geometry(self.height, self.width, self.frames)
        self.schedule = flow_schedule(self.steps)
        if self.posterior not in POSTERIOR_MODES:
            raise BadInputError(f"posterior must be one of {', '.join(POSTERIOR_MODES)}, got {self.posterior!r}")
        if self.fit not in FIT_MODES:
            raise BadInputError(f"fit must be one of {', '.join(FIT_MODES)}, got {self.fit!r}")
        if not math.isfinite(float(self.flow_score)):
            raise BadInputError(f"flow score must be a finite number, got {self.flow_score!r}")
        if not 0 <= int(self.seed) < 2 ** 63:
            raise BadInputError(f"seed must be in [0, 2^63), got {self.seed}")


@dataclass
class GenerateResult:
    frames: np.ndarray  # (F, H, W, 3) uint8, what gets written
    video: torch.Tensor  # (1, 3, F, H, W) float32, cropped and clamped to [-1, 1]
    cond_latent: torch.Tensor  # (1, 128, 1, h, w) the reference latent written into frame 0
    latents: list[torch.Tensor]  # the latent after each step (frame 0 re-imposed)
    schedule: FlowSchedule
    posterior: str  # the mode actually used: "sample" | "mean"
    timings: dict[str, float]  # seconds: preprocess, encode, denoise, decode, postprocess
    step_times: list[float]
    backends: dict[str, str]
    notes: list[str] = field(default_factory=list)

    @property
    def final_latent(self) -> torch.Tensor:
        return self.latents[-1]


class Pipeline:
    """encode → N flow-matching Euler steps → decode, on any mix of stages (see the module docstring)."""

    def __init__(self, stages: dict[str, Stage]):
        missing = [c for c in COMPONENTS if c not in stages]
        if missing:
            raise BadInputError(f"pipeline needs stages for {', '.join(missing)}")
        self.stages = stages

    def __call__(self, image, config: GenerateConfig, progress: ProgressFn = _no_progress) -> GenerateResult:
        return self.generate(image, config, progress)

    @torch.inference_mode()
    def generate(self, image, config: GenerateConfig, progress: ProgressFn = _no_progress,
                 posterior: str | None = None) -> GenerateResult:
        """`image`: a PIL image, or an already preprocessed (1,3,1,H,W) tensor in [-1, 1]."""
        geo = config.geometry
        timings: dict[str, float] = {}
        notes: list[str] = []

        t0 = time.perf_counter()
        x = self._input(image, config)
        timings["preprocess"] = time.perf_counter() - t0

        generator = torch.Generator(device="cpu").manual_seed(int(config.seed))
        noise = torch.randn(geo.latent_shape, generator=generator, dtype=torch.float32)

        progress("encode", 0, 1)
        t0 = time.perf_counter()
        z_ref, mode = self._encode(x, geo, posterior or config.posterior, generator, notes)
        timings["encode"] = time.perf_counter() - t0
        progress("encode", 1, 1)

        latents, step_times = self._denoise(noise, z_ref, config, progress)
        timings["denoise"] = sum(step_times)

        progress("decode", 0, 1)
        t0 = time.perf_counter()
        video = self._decode(latents[-1], geo)
        timings["decode"] = time.perf_counter() - t0
        progress("decode", 1, 1)

        t0 = time.perf_counter()
        video = video[:, :, : geo.frames, : geo.height, : geo.width].clamp(-1.0, 1.0).contiguous()
        frames = to_uint8_frames(video)
        timings["postprocess"] = time.perf_counter() - t0
        return GenerateResult(frames=frames, video=video, cond_latent=z_ref, latents=latents, schedule=config.schedule,
                              posterior=mode, timings=timings, step_times=step_times,
                              backends={c: s.describe() for c, s in self.stages.items()}, notes=notes)

    @staticmethod
    def _input(image, config: GenerateConfig) -> torch.Tensor:
        geo = config.geometry
        if not isinstance(image, torch.Tensor):
            return preprocess_image(image, geo.height, geo.width, config.fit)
        if tuple(image.shape) != (1, 3, 1, geo.height, geo.width):
            raise BadInputError(f"image tensor must be (1, 3, 1, {geo.height}, {geo.width}), got "
                                f"{tuple(image.shape)}")
        return image.float()

    def _encode(self, x: torch.Tensor, geo: VideoGeometry, mode: str, generator: torch.Generator,
                notes: list[str]) -> tuple[torch.Tensor, str]:
        """The conditioning latent: a posterior sample (upstream) or its mean; returns it and the mode used."""
        enc = self.stages[ENCODER].run(image=x)
        mean = enc["latent"].float()
        want_ref = (1, geo.latent_shape[1], 1, geo.latent_h, geo.latent_w)
        if tuple(mean.shape) != want_ref:
            raise Mi2vError(f"the encoder returned {tuple(mean.shape)}, expected {want_ref}")
        if mode == "sample" and "logvar" in enc:
            eps = torch.randn(mean.shape, generator=generator, dtype=torch.float32)
            logvar = enc["logvar"].float().clamp(*LOGVAR_CLAMP)
            return mean + torch.exp(0.5 * logvar) * eps, mode
        if mode == "sample":
            notes.append("posterior mean used as the reference latent: the encoder stage "
                         f"({self.stages[ENCODER].backend}) gives no log-variance")
        return mean, "mean"

    def _denoise(self, noise: torch.Tensor, z_ref: torch.Tensor, config: GenerateConfig,
                 progress: ProgressFn) -> tuple[list[torch.Tensor], list[float]]:
        """Flow-matching Euler steps with latent frame 0 re-imposed after each; the latents and seconds per step."""
        sched = config.schedule
        latent = noise.clone()
        latent[:, :, :1] = z_ref
        flow = torch.tensor([float(config.flow_score)], dtype=torch.float32)
        latents: list[torch.Tensor] = []
        step_times: list[float] = []
        n = len(sched)
        progress("denoise", 0, n)
        for i in range(n):
            t0 = time.perf_counter()
            t = sched.timesteps[i:i + 1]
            v = self.stages[DENOISER].run(latent=latent, timestep=t, flow_score=flow)["velocity"].float()
            if v.shape != latent.shape:
                raise Mi2vError(f"the denoiser returned {tuple(v.shape)}, expected {tuple(latent.shape)}")
            latent = latent + (sched.sigmas[i + 1] - sched.sigmas[i]) * v
            latent[:, :, :1] = z_ref
            latents.append(latent.clone())
            step_times.append(time.perf_counter() - t0)
            progress("denoise", i + 1, n)
        return latents, step_times

    def _decode(self, latent: torch.Tensor, geo: VideoGeometry) -> torch.Tensor:
        video = self.stages[DECODER].run(latent=latent)["video"].float()
        want = (1, 3, geo.frames, geo.decoded_height, geo.decoded_width)
        if tuple(video.shape) != want:
            raise Mi2vError(f"the decoder returned {tuple(video.shape)}, expected {want}")
        return video


# ---------------------------------------------------------------------------------------------------------------
# Comparison against the PyTorch reference


def precision_of(stages: dict[str, Stage]) -> str:
    """fp32 when every stage is; the one reduced precision otherwise, or "mixed" when they differ."""
    reduced = {s.precision for s in stages.values()} - {"fp32"}
    if not reduced:
        return "fp32"
    return reduced.pop() if len(reduced) == 1 else "mixed"


def gate_of(stages: dict[str, Stage]) -> float:
    """Per-frame PSNR gate of a run: the strictest trajectory gate the artifacts' manifest entries carry, else the
    default of the run's precision."""
    from .parity import TRAJECTORY_PSNR_MIN_DB

    gates = [s.gate_db for s in stages.values() if getattr(s, "gate_db", None) is not None]
    if gates:
        return max(float(g) for g in gates)
    precision = precision_of(stages)
    return VIDEO_PSNR_MIN_DB.get(precision, TRAJECTORY_PSNR_MIN_DB.get(precision, 25.0))


def compare_runs(result: GenerateResult, reference: GenerateResult, min_psnr_db: float) -> dict:
    """Per-step latent relative error and per-frame PSNR / SSIM (video mapped to [0, 1], data range 1, before
    uint8 rounding) of a run against the PyTorch reference run; `passed` when every frame reaches `min_psnr_db`."""
    from .parity import frame_metrics, max_abs, rel_l2

    steps = []
    sched = result.schedule
    for i, (a, r) in enumerate(zip(result.latents, reference.latents)):
        steps.append({"step": i, "timestep": float(sched.timesteps[i]), "sigma": float(sched.sigmas[i]),
                      "sigma_next": float(sched.sigmas[i + 1]), "latent_rel_err": rel_l2(a, r),
                      "latent_max_abs": max_abs(a, r)})
    to01 = [(v[0].permute(1, 2, 3, 0) + 1.0) / 2.0 for v in (result.video, reference.video)]  # (F,H,W,3)
    frames = frame_metrics(to01[0], to01[1], data_range=1.0)
    psnrs = [f["psnr_db"] for f in frames]
    failing = [f["frame"] for f in frames if not f["psnr_db"] >= min_psnr_db]  # NaN fails too
    return {
        "conditioning": {"latent_rel_err": rel_l2(result.cond_latent, reference.cond_latent),
                         "latent_max_abs": max_abs(result.cond_latent, reference.cond_latent)},
        "steps": steps,
        "frames": frames,
        "summary": {
            "min_psnr_db": min(psnrs),
            "mean_psnr_db": float(np.mean(psnrs)),
            "min_ssim": min(f["ssim"] for f in frames),
            "max_latent_rel_err": max(s["latent_rel_err"] for s in steps),
            "threshold_psnr_db": min_psnr_db,
            "failing_frames": failing,
            "passed": not failing,
        },
    }


def json_safe(value):
    """JSON has no inf/nan: write them as "inf" / "-inf" / "nan" strings, as the export manifest does."""
    if isinstance(value, float) and not math.isfinite(value):
        return "nan" if math.isnan(value) else ("inf" if value > 0 else "-inf")
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    return value


def build_report(config: GenerateConfig, result: GenerateResult, reference: GenerateResult, comparison: dict,
                 *, image: str, preset: str, decoder: str, precision: str) -> dict:
    """The `--json` report of `mi2v generate --compare-to reference` (schema REPORT_SCHEMA_VERSION)."""
    geo = config.geometry
    return {
        "schema_version": REPORT_SCHEMA_VERSION,
        "kind": "mi2v-generate-compare",
        "image": image,
        "preset": preset,
        "decoder": decoder,
        "resolution": [geo.height, geo.width],
        "frames": geo.frames,
        "latent_shape": list(geo.latent_shape),
        "num_steps": config.steps,
        "seed": config.seed,
        "flow_score": config.flow_score,
        "posterior": result.posterior,
        "timesteps": [float(t) for t in result.schedule.timesteps],
        "sigmas": [float(s) for s in result.schedule.sigmas],
        "reference": "pytorch-fp32",
        "precision": precision,
        "backends": result.backends,
        "reference_backends": reference.backends,
        **comparison,
        "timings_s": {"artifacts": _timing_record(result), "reference": _timing_record(reference)},
        "notes": result.notes,
    }


def _timing_record(r: GenerateResult) -> dict:
    return {**{k: round(v, 4) for k, v in r.timings.items()}, "steps": [round(t, 4) for t in r.step_times]}


# ---------------------------------------------------------------------------------------------------------------
# Outputs (atomic: temp file in the destination folder, renamed into place when complete)


def write_json(data: dict, out: str | os.PathLike) -> Path:
    return write_json_atomic(out, json_safe(data), allow_nan=False)


def check_psnr_gate(comparison: dict, what: str = "artifact pipeline") -> None:
    s = comparison["summary"]
    if not s["passed"]:
        raise VerificationError(
            f"{what} diverges from PyTorch fp32: min frame PSNR {s['min_psnr_db']:.1f} dB < "
            f"{s['threshold_psnr_db']:.0f} dB on frame(s) {', '.join(map(str, s['failing_frames']))}")


# ---------------------------------------------------------------------------------------------------------------
# `mi2v generate` as one call: GenerateRequest (the flags) → plan_generate (checks, no model) → run_generate


@dataclass
class GenerateRequest:
    """What `mi2v generate` is asked for; None means: from the artifacts, else the checkpoints, else the preset."""

    image: Path
    out: Path
    checkpoints: list[Path] = field(default_factory=list)
    artifacts: list[Path] = field(default_factory=list)
    use: list[str] = field(default_factory=list)  # `--use` values
    fallback: str = "none"  # component missing from the artifacts: "none" (error) or "pytorch"
    preset: str | None = None
    decoder: str | None = None
    steps: int = DEFAULT_STEPS
    seed: int = 0
    resolution: str | None = None  # "HxW"
    frames: int | None = None
    flow_score: float = DEFAULT_FLOW_SCORE
    posterior: str = "sample"
    fit: str = "stretch"
    fps: int = DEFAULT_FPS
    compare_to: str | None = None  # "reference": also run PyTorch fp32 and compare
    report: Path | None = None  # the comparison report (JSON)
    min_psnr: float | None = None  # the comparison gate; None: the artifacts' manifest gate (pipeline.gate_of)
    allow_modified: bool = False  # run artifacts that differ from their manifest (mi2v_export/integrity.py)


@dataclass
class GeneratePlan:
    """A checked request with everything resolved that needs no model."""

    request: GenerateRequest
    image: Any  # PIL image
    manifests: list
    use: dict[str, str]
    preset: str
    config: GenerateConfig
    parts: dict
    decoder: str


@dataclass
class GenerateRun:
    plan: GeneratePlan
    result: GenerateResult
    reference: GenerateResult | None
    comparison: dict | None
    seconds: dict[str, float]  # host seconds: run (load models), reference, compare, write
    notes: list[str]
    sheet: Path  # the contact sheet written beside the video


def plan_generate(request: GenerateRequest) -> GeneratePlan:
    """Check the request and resolve preset, size and decoder (explicit option > artifacts' manifest >
    checkpoints > preset default); BadInputError before any model is built."""
    from .presets import get_preset
    from .shapes import parse_resolution

    r = request
    out = Path(r.out)
    if out.suffix.lower() != ".mp4":
        raise BadInputError(f"--out {out}: the video must be an .mp4 file")
    check_file(out, "--out")
    if r.report is not None:
        check_file(r.report, "--report")
    if r.compare_to not in (None, "reference"):
        raise BadInputError(f"--compare-to {r.compare_to!r}: only 'reference' (PyTorch fp32) is supported")
    if r.report is not None and r.compare_to is None:
        raise BadInputError("--report writes the comparison report: use it with --compare-to reference")
    if r.compare_to and not r.artifacts:
        raise BadInputError("--compare-to reference compares exported artifacts with PyTorch: pass --artifacts DIR")
    if r.fps < 1:
        raise BadInputError(f"--fps must be positive, got {r.fps}")
    if r.fallback not in ("none", "pytorch"):
        raise BadInputError(f"--fallback must be 'none' or 'pytorch', got {r.fallback!r}")
    flow_schedule(r.steps)  # validates the step count
    image = load_image(r.image)
    use = parse_use(r.use)
    arts = [read_artifacts(a) for a in r.artifacts]
    preset = get_preset(r.preset or (arts[0].preset if arts else "mobilei2v-270m"))
    if r.resolution is not None:
        height, width = parse_resolution(r.resolution)
    else:
        height, width = tuple(arts[0].resolution) if arts else (preset.height, preset.width)
    frames = r.frames if r.frames is not None else (arts[0].frames if arts else preset.frames)
    config = GenerateConfig(height=height, width=width, frames=frames, steps=r.steps, seed=r.seed,
                            flow_score=r.flow_score, posterior=r.posterior, fit=r.fit)
    bounds.check_cap(preset, height, width, frames)  # before the geometry's model-free checks build anything
    parts = checkpoint_parts(r.checkpoints)
    decoder = r.decoder or next((k for k in map(decoder_kind_of, arts) if k), None) \
        or decoder_from_checkpoints(parts) or "turbo-vaed"
    weights = weight_bytes(preset, COMPONENTS, decoder)
    bounds.check_memory(config.geometry, weights, "run", "this video")
    return GeneratePlan(request=r, image=image, manifests=arts, use=use, preset=preset.name, config=config,
                        parts=parts, decoder=decoder)


def run_generate(request: GenerateRequest, progress: ProgressFn = _no_progress,
                 plan: GeneratePlan | None = None) -> GenerateRun:
    """The whole `mi2v generate`: build the stages, generate, optionally re-run PyTorch fp32 and compare, write
    the video, contact sheet and report. `progress(stage, done, total)` gets stages prefixed "artifacts · " /
    "reference · " when comparing, then "compare" and "write". The caller applies `check_psnr_gate` to
    `run.comparison` once it has shown the run (everything is written by then)."""
    plan = plan or plan_generate(request)
    prefix = "artifacts · " if request.compare_to else ""
    seconds: dict[str, float] = {}
    modified: list = []  # integrity.Modified of the files run with --allow-modified (recorded in the report)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        t0 = time.perf_counter()
        stages = build_stages(plan.preset, plan.decoder, plan.config.geometry, plan.manifests,
                              fallback=request.fallback, parts=plan.parts, use=plan.use,
                              progress=_prefixed(progress, prefix), allow_modified=request.allow_modified,
                              modified=modified)
        seconds["run"] = time.perf_counter() - t0
        precision = precision_of(stages)
        manifest_gate = gate_of(stages)  # the trajectory gate the artifacts passed at export, if any
        result = Pipeline(stages).generate(plan.image, plan.config, _prefixed(progress, prefix))
        reference = _reference_run(plan, stages, result, progress, seconds) if request.compare_to else None
    comparison = None
    if reference is not None:
        progress("compare", 0, 1)
        t0 = time.perf_counter()
        threshold = request.min_psnr if request.min_psnr is not None else manifest_gate
        comparison = compare_runs(result, reference, threshold)
        comparison["modified_files"] = [m.to_dict() for m in modified]
        seconds["compare"] = time.perf_counter() - t0
        progress("compare", 1, 1)
    sheet = _write_outputs(plan, result, reference, comparison, precision, progress, seconds)
    notes = list(dict.fromkeys(_seeded_notes(caught) + _seeded_artifact_notes(plan.manifests) + result.notes
                               + [f"{m.file} differs from its manifest (--allow-modified)" for m in modified]))
    return GenerateRun(plan=plan, result=result, reference=reference, comparison=comparison, seconds=seconds,
                       notes=notes, sheet=sheet)


def _prefixed(progress: ProgressFn, prefix: str) -> ProgressFn:
    return lambda stage, done, total: progress(f"{prefix}{stage}", done, total)


def _reference_run(plan: GeneratePlan, stages: dict[str, Stage], result: GenerateResult, progress: ProgressFn,
                   seconds: dict[str, float]) -> GenerateResult:
    """PyTorch fp32 with the same seed and the posterior mode the artifact run ended up with. The artifact
    sessions are released first: peak memory is the larger of the two runs, not their sum."""
    import gc

    reuse = {c: s for c, s in stages.items() if isinstance(s, TorchStage)}
    stages.clear()
    gc.collect()
    t0 = time.perf_counter()
    ref_stages = {c: reuse.get(c) or torch_stage(c, plan.preset, plan.decoder, plan.parts) for c in COMPONENTS}
    seconds["reference"] = time.perf_counter() - t0
    return Pipeline(ref_stages).generate(plan.image, plan.config, _prefixed(progress, "reference · "),
                                         posterior=result.posterior)


def _write_outputs(plan: GeneratePlan, result: GenerateResult, reference: GenerateResult | None,
                   comparison: dict | None, precision: str, progress: ProgressFn, seconds: dict[str, float]) -> Path:
    request = plan.request
    progress("write", 0, 1)
    t0 = time.perf_counter()
    sheet = contact_sheet_path(request.out)
    try:  # all or nothing: each file goes to a temporary name beside it, renamed only once all are written
        with atomic_path(request.out) as video_tmp, atomic_path(sheet) as sheet_tmp:
            write_video(result.frames, video_tmp, fps=request.fps)
            write_contact_sheet(result.frames, sheet_tmp)
            if comparison is not None and request.report is not None:
                write_json(build_report(plan.config, result, reference, comparison, image=str(request.image),
                                        preset=plan.preset, decoder=plan.decoder, precision=precision),
                           request.report)
    except OSError as exc:
        raise BadInputError(f"cannot write {request.out} ({exc.strerror or exc}); nothing was written") from None
    seconds["write"] = time.perf_counter() - t0
    progress("write", 1, 1)
    return sheet


def _seeded_notes(caught) -> list[str]:
    seeded = [str(w.message).split(":")[0] for w in caught if "seeded random weights" in str(w.message)]
    if not seeded:
        return []
    return [f"no checkpoint for the {', '.join(dict.fromkeys(seeded))}: seeded random weights, so the video is "
            "noise (reproducible, fine for testing)"]


def _seeded_artifact_notes(manifests) -> list[str]:
    """Artifacts exported without a checkpoint carry seeded random weights: their video is noise too."""
    seeded = [str(m.folder) for m in manifests if (m.source or {}).get("weights") == "seeded"]
    if not seeded:
        return []
    return [f"the artifacts in {', '.join(seeded)} were exported with seeded random weights (no --checkpoint), so "
            "the video is noise (reproducible, fine for testing)"]


__all__ = [
    "FlowSchedule", "flow_schedule", "load_image", "to_rgb", "preprocess_image", "to_uint8_frames",
    "Stage", "TorchStage", "OnnxStage", "ExecuTorchStage", "CoreMLStage", "STAGE_BACKENDS",
    "read_artifacts", "decoder_kind_of", "runnable_here", "parse_use", "select_entry", "check_artifacts",
    "expected_io_shapes", "check_stage_shapes", "artifact_stage", "TARGET_PREFERENCE",
    "checkpoint_parts", "decoder_from_checkpoints", "torch_stage", "build_stages",
    "GenerateConfig", "GenerateResult", "Pipeline", "precision_of", "gate_of",
    "compare_runs", "json_safe", "build_report", "VIDEO_PSNR_MIN_DB",
    "atomic_path", "write_video", "contact_sheet", "write_contact_sheet", "write_json", "contact_sheet_path",
    "read_video", "check_psnr_gate", "GenerateRequest", "GeneratePlan", "GenerateRun", "plan_generate",
    "run_generate",
    "COMPONENTS", "IO", "DEFAULT_STEPS", "DEFAULT_FLOW_SCORE", "DEFAULT_FPS", "FLOW_SHIFT",
]
