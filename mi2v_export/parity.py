"""Numerical parity between an exported artifact and the PyTorch fp32 reference, and the gates built on it.

Metrics (all computed in float64 over every output element, outputs concatenated in contract order):
- `max_abs`  = max |y - y_ref|
- `rel_l2`   = ||y - y_ref||₂ / ||y_ref||₂
- `psnr_db`  = 20·log10(max|y_ref| / rms(y - y_ref)), the convention of Apple's ml-stable-diffusion (peak = the
  reference's largest magnitude, so it works for latents and velocities as well as for video in [-1, 1]);
  +inf when the outputs are identical.

Gates: an fp32 artifact must reach rel_l2 ≤ 1e-4, an fp16 one PSNR ≥ 40 dB. A NaN or Inf anywhere fails either gate.

Video metrics (`mi2v generate --compare-to reference`): per-frame PSNR with an explicit data range and SSIM
(Wang et al. 2004: 11x11 Gaussian window, σ = 1.5, K1 = 0.01, K2 = 0.03, averaged over the colour channels), gated
by VIDEO_PSNR_MIN_DB.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass

import numpy as np

REFERENCE = "pytorch-fp32"


@dataclass(frozen=True)
class Metrics:
    max_abs: float
    rel_l2: float
    psnr_db: float
    finite: bool  # False when the candidate holds a NaN or an Inf

    def to_dict(self) -> dict:
        return {k: _json_float(v) if isinstance(v, float) else v for k, v in asdict(self).items()}


@dataclass(frozen=True)
class Gate:
    metric: str  # "rel_l2" or "psnr_db"
    op: str  # "<=" or ">="
    threshold: float

    def passes(self, metrics: Metrics) -> bool:
        if not metrics.finite:
            return False
        value = getattr(metrics, self.metric)
        if math.isnan(value):
            return False
        return value <= self.threshold if self.op == "<=" else value >= self.threshold

    def describe(self, metrics: Metrics | None = None) -> str:
        text = f"{self.metric} {self.op} {self.threshold:g}"
        if metrics is not None:
            text = f"{self.metric} = {getattr(metrics, self.metric):.3g} (gate {self.op} {self.threshold:g})"
            if not metrics.finite:
                text += ", output has NaN/Inf"
        return text

    def to_dict(self) -> dict:
        return asdict(self)


# per-frame PSNR gate of a whole generated video against the PyTorch fp32 run, by artifact precision
VIDEO_PSNR_MIN_DB = {"fp32": 40.0, "fp16": 30.0}

FP32_GATE = Gate("rel_l2", "<=", 1e-4)
FP16_GATE = Gate("psnr_db", ">=", 40.0)


# Component gate of integer precisions: PSNR of the artifact's output against PyTorch fp32 on the held-out records
# (what the component sees in the sampler on the validation image). Set from measurement: docs/guides/precision.md.
COMPONENT_PSNR_MIN_DB = {"w8a16": 30.0, "w8a8": 25.0, "w8": 25.0, "w4": 20.0}

# An integer export clears its trajectory gate by at least this much, or exporters/margin.py keeps its costliest
# units float until it does: a video 0.2 dB over the gate passes or fails by the photo (issue 25)
TRAJECTORY_MARGIN_DB = 3.0
# Trajectory gate: per-frame PSNR of the 2-step video on the validation image, artifacts vs PyTorch fp32.
TRAJECTORY_PSNR_MIN_DB = {"fp32": 40.0, "fp16": 40.0, "w8a16": 30.0, "w8a8": 30.0, "w8": 30.0, "w4": 25.0,
                          "mixed": 25.0}


def gate_for(precision: str) -> Gate:
    """The component gate of an artifact's precision (fp32: rel L2; fp16 and integer precisions: PSNR)."""
    if precision in COMPONENT_PSNR_MIN_DB:
        return Gate("psnr_db", ">=", COMPONENT_PSNR_MIN_DB[precision])
    return FP16_GATE if precision == "fp16" else FP32_GATE


def _as_f64(x) -> np.ndarray:
    if hasattr(x, "detach"):  # torch tensor (any float dtype; float64 stays exact)
        x = x.detach().cpu().double().numpy()
    return np.asarray(x, dtype=np.float64)


def max_abs(y, ref) -> float:
    y, ref = _as_f64(y), _as_f64(ref)
    return float(np.max(np.abs(y - ref))) if y.size else 0.0


def rel_l2(y, ref) -> float:
    y, ref = _as_f64(y), _as_f64(ref)
    den = float(np.linalg.norm(ref.ravel()))
    num = float(np.linalg.norm((y - ref).ravel()))
    if den == 0.0:
        return 0.0 if num == 0.0 else math.inf
    return num / den


def psnr_db(y, ref) -> float:
    y, ref = _as_f64(y), _as_f64(ref)
    rms = float(np.sqrt(np.mean((y - ref) ** 2))) if y.size else 0.0
    peak = float(np.max(np.abs(ref))) if ref.size else 0.0
    if rms == 0.0:
        return math.inf
    if peak == 0.0:
        return -math.inf
    return 20.0 * math.log10(peak / rms)


def compare(outputs: Sequence | Mapping, reference: Sequence | Mapping) -> Metrics:
    """Metrics of candidate outputs against reference outputs (same order / same names, same shapes)."""
    if isinstance(reference, Mapping):
        names = list(reference)
        if not isinstance(outputs, Mapping) or set(outputs) != set(names):
            raise ValueError(f"outputs {list(outputs)} do not match the reference outputs {names}")
        outputs = [outputs[n] for n in names]
        reference = [reference[n] for n in names]
    if len(outputs) != len(reference):
        raise ValueError(f"{len(outputs)} outputs against {len(reference)} reference outputs")
    ys, refs = [], []
    for y, r in zip(outputs, reference):
        y, r = _as_f64(y), _as_f64(r)
        if y.shape != r.shape:
            raise ValueError(f"output shape {tuple(y.shape)} differs from the reference {tuple(r.shape)}")
        ys.append(y.ravel())
        refs.append(r.ravel())
    y = np.concatenate(ys) if ys else np.zeros(0)
    r = np.concatenate(refs) if refs else np.zeros(0)
    finite = bool(np.all(np.isfinite(y)))
    y_safe = np.nan_to_num(y, nan=0.0, posinf=0.0, neginf=0.0)
    return Metrics(max_abs=max_abs(y_safe, r), rel_l2=rel_l2(y_safe, r), psnr_db=psnr_db(y_safe, r), finite=finite)


def _json_float(v: float) -> float | str:
    """JSON has no inf/nan: write them as strings ("inf", "-inf", "nan")."""
    if math.isfinite(v):
        return v
    return "nan" if math.isnan(v) else ("inf" if v > 0 else "-inf")


# ---------------------------------------------------------------------------------------------------------------
# Video metrics


def _frames_f64(x) -> np.ndarray:
    a = _as_f64(x)
    if a.ndim == 3:  # (F, H, W) grey
        a = a[..., None]
    if a.ndim != 4:
        raise ValueError(f"expected frames (F, H, W, C), got shape {a.shape}")
    return a


def psnr_with_range(y, ref, data_range: float) -> float:
    """Standard PSNR with a known data range (1.0 for video in [0, 1]); +inf when identical."""
    y, ref = _as_f64(y), _as_f64(ref)
    mse = float(np.mean((y - ref) ** 2)) if y.size else 0.0
    if mse == 0.0:
        return math.inf
    return 10.0 * math.log10(data_range ** 2 / mse)


def _gaussian_kernel(size: int = 11, sigma: float = 1.5) -> np.ndarray:
    x = np.arange(size, dtype=np.float64) - (size - 1) / 2.0
    g = np.exp(-(x ** 2) / (2.0 * sigma ** 2))
    return g / g.sum()


def _filter2(img: np.ndarray, g: np.ndarray) -> np.ndarray:
    """'valid' separable Gaussian filter over the first two axes of (H, W, C)."""
    import torch
    import torch.nn.functional as F

    t = torch.from_numpy(np.ascontiguousarray(img.transpose(2, 0, 1)))[:, None]  # (C,1,H,W) float64
    k = torch.from_numpy(g)
    t = F.conv2d(t, k.view(1, 1, -1, 1))
    t = F.conv2d(t, k.view(1, 1, 1, -1))
    return t[:, 0].numpy().transpose(1, 2, 0)


def ssim(y, ref, data_range: float = 1.0) -> float:
    """Mean SSIM of one frame (H, W, C) or (H, W) against a reference frame (Gaussian window, Wang et al.)."""
    y, ref = _as_f64(y), _as_f64(ref)
    if y.ndim == 2:
        y, ref = y[..., None], ref[..., None]
    size = min(11, y.shape[0], y.shape[1])
    if size % 2 == 0:
        size -= 1
    g = _gaussian_kernel(size, 1.5)
    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    mu_x, mu_y = _filter2(y, g), _filter2(ref, g)
    sxx = _filter2(y * y, g) - mu_x ** 2
    syy = _filter2(ref * ref, g) - mu_y ** 2
    sxy = _filter2(y * ref, g) - mu_x * mu_y
    s = ((2 * mu_x * mu_y + c1) * (2 * sxy + c2)) / ((mu_x ** 2 + mu_y ** 2 + c1) * (sxx + syy + c2))
    return min(1.0, float(s.mean()))  # ≤ 1 by definition; rounding can overshoot by an ulp


def frame_metrics(y, ref, data_range: float = 1.0) -> list[dict]:
    """Per-frame {frame, psnr_db, ssim, max_abs} of a video (F, H, W, C) against a reference video."""
    y, ref = _frames_f64(y), _frames_f64(ref)
    if y.shape != ref.shape:
        raise ValueError(f"video shape {y.shape} differs from the reference {ref.shape}")
    return [{"frame": i, "psnr_db": psnr_with_range(y[i], ref[i], data_range), "ssim": ssim(y[i], ref[i], data_range),
             "max_abs": max_abs(y[i], ref[i])} for i in range(y.shape[0])]
