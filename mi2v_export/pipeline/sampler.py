"""The sampler of `mi2v generate`: the flow-matching schedule and the loop around the three components.

    image ─► preprocess ─► encoder ─► z_ref (1,128,1,h,w)
    noise (1,128,T,h,w) from torch.Generator(cpu).manual_seed(seed); z[:, :, 0] = z_ref
    for i, t in enumerate(timesteps):                    # FlowMatchEulerDiscreteScheduler(shift=3) grid
        v = denoiser(z, t, flow_score)                   # velocity ≈ noise − x0 (no CFG: the text is unused)
        z = z + (σ[i+1] − σ[i]) · v                      # Euler step, float32
        z[:, :, 0] = z_ref                               # re-impose the clean first-frame latent
    video = decoder(z)[:, :, :F, :H, :W]                 # decode (scaling factor 1.0), crop 736 → 720 rows

The noise, the posterior and the dtypes between the stages are described in the package docstring
(mi2v_export/pipeline/__init__.py). The stages are anything with `run(**inputs) -> outputs` (pipeline.stages).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch

from ..contract import COMPONENTS, DECODER, DENOISER, ENCODER
from ..errors import BadInputError, Mi2vError
from ..runtimes import memory
from ..shapes import VideoGeometry, geometry
from .media import FIT_MODES, preprocess_image, to_uint8_frames
from .stages import Stage

NUM_TRAIN_TIMESTEPS = 1000
FLOW_SHIFT = 3.0
DEFAULT_STEPS = 2
DEFAULT_FLOW_SCORE = 2.0
LOGVAR_CLAMP = (-30.0, 20.0)  # diffusers DiagonalGaussianDistribution
POSTERIOR_MODES = ("sample", "mean")

ProgressFn = Callable[[str, int, int], None]  # (stage, done, total)


def no_progress(stage: str, done: int, total: int) -> None:
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
# The loop


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
    # seconds: preprocess, load (every stage before it runs; load_<component> each), encode, denoise, decode,
    # postprocess
    timings: dict[str, float]
    step_times: list[float]
    backends: dict[str, str]
    notes: list[str] = field(default_factory=list)
    # the run's resident memory (mi2v_export/runtimes/memory.py): peak, the baseline before it, the method
    memory: dict = field(default_factory=dict)

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

    def __call__(self, image, config: GenerateConfig, progress: ProgressFn = no_progress) -> GenerateResult:
        return self.generate(image, config, progress)

    @torch.inference_mode()
    def generate(self, image, config: GenerateConfig, progress: ProgressFn = no_progress,
                 posterior: str | None = None) -> GenerateResult:
        """`image`: a PIL image, or an already preprocessed (1,3,1,H,W) tensor in [-1, 1]."""
        geo = config.geometry
        timings: dict[str, float] = {}
        notes: list[str] = []

        baseline, method = memory.rss_bytes(), memory.reset_peak()
        t0 = time.perf_counter()
        x = self._input(image, config)
        timings["preprocess"] = time.perf_counter() - t0

        generator = torch.Generator(device="cpu").manual_seed(int(config.seed))
        noise = torch.randn(geo.latent_shape, generator=generator, dtype=torch.float32)

        progress("encode", 0, 1)
        self._load(ENCODER, timings)
        t0 = time.perf_counter()
        z_ref, mode = self._encode(x, geo, posterior or config.posterior, generator, notes)
        timings["encode"] = time.perf_counter() - t0
        self.stages[ENCODER].release()
        progress("encode", 1, 1)

        self._load(DENOISER, timings)
        latents, step_times = self._denoise(noise, z_ref, config, progress)
        timings["denoise"] = sum(step_times)
        self.stages[DENOISER].release()

        progress("decode", 0, 1)
        self._load(DECODER, timings)
        t0 = time.perf_counter()
        video = self._decode(latents[-1], geo)
        timings["decode"] = time.perf_counter() - t0
        self.stages[DECODER].release()
        progress("decode", 1, 1)

        t0 = time.perf_counter()
        video = video[:, :, : geo.frames, : geo.height, : geo.width].clamp(-1.0, 1.0).contiguous()
        frames = to_uint8_frames(video)
        timings["postprocess"] = time.perf_counter() - t0
        return GenerateResult(frames=frames, video=video, cond_latent=z_ref, latents=latents, schedule=config.schedule,
                              posterior=mode, timings=timings, step_times=step_times,
                              backends={c: s.describe() for c, s in self.stages.items()}, notes=notes,
                              memory={"peak_rss_bytes": memory.peak_rss_bytes(), "baseline_rss_bytes": baseline,
                                      "method": method, "stages_resident": "one at a time"})

    def _load(self, component: str, timings: dict[str, float]) -> None:
        """Load a stage (the one resident one: the stage before it was released); its seconds go to
        `load_<component>` and the run's `load`."""
        t0 = time.perf_counter()
        self.stages[component].load()
        timings[f"load_{component}"] = seconds = time.perf_counter() - t0
        timings["load"] = timings.get("load", 0.0) + seconds

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
