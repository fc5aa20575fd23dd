"""Safe checkpoint reading, component detection and strict key matching.

Upstream `.pth` files are pickles: a dict with `state_dict` plus `rng_state` (torch/numpy/python RNG states),
`epoch` and maybe `optimizer`. They are read with `torch.load(weights_only=True)` and an explicit allow-list of the
numpy objects that an RNG state needs — never `weights_only=False`, so a file cannot run code when it is read.
`.safetensors` files are read with safetensors. The format is detected from the bytes, not the file name.

A file can hold one or several *parts*: the denoiser, the LTX encoder and/or decoder (a diffusers VAE file holds
both), or the Turbo-VAED decoder (published as a plain decoder state dict without the `decoder.` prefix; our
modules use the prefixed form, so plain keys are mapped on load).
"""

from __future__ import annotations

import os
import pickle
import struct
import zipfile
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from .contract import LTX_DECODER, LTX_ENCODER
from .contract import PART_DENOISER as DENOISER
from .contract import PART_TURBO_VAED as TURBO_VAED
from .errors import CheckpointError, first_line
from .files import atomic_path, sha256_file

# Parts a checkpoint can hold (names used in messages, `mi2v inspect` and manifests).

# Upstream buffers that the forward never reads; their shape depends on how the model was built.
IGNORED_DENOISER_KEYS = ("pos_embed", "pos_embed_temporal")
# Buffers of diffusers' VAE that MobileI2V never uses (raw latents, scaling 1.0).
IGNORED_VAE_KEYS = ("latents_mean", "latents_std")
# Wrappers that training code puts around a state dict or its keys.
CONTAINER_KEYS = ("state_dict", "model", "module", "ema", "model_ema", "net", "weights")
KEY_PREFIXES = ("module.", "_orig_mod.", "model.")


def _numpy_rng_allow_list() -> list:
    """What numpy RNG states (np.random.get_state()) need to unpickle: arrays, dtypes and scalars — data only.
    Each is listed under numpy 2's module name and numpy 1's (`numpy.core`), which older files were written with."""
    from numpy._core import multiarray

    allowed: list = [np.ndarray, np.dtype]
    for fn in (multiarray._reconstruct, multiarray.scalar):
        allowed += [fn, (fn, f"numpy.core.multiarray.{fn.__name__}")]
    allowed += [type(np.dtype(t)) for t in ("u4", "i4", "i8", "u8", "f4", "f8", "bool")]
    return allowed


@dataclass
class Checkpoint:
    """What a checkpoint file holds, read safely."""

    path: Path
    format: str  # "pytorch-zip" | "pytorch-legacy" | "safetensors"
    sha256: str
    state_dict: dict[str, torch.Tensor]
    extras: dict[str, str] = field(default_factory=dict)  # non-weight entries, summarised (epoch, rng_state, …)
    metadata: dict[str, str] = field(default_factory=dict)  # safetensors header metadata
    ignored_keys: list[str] = field(default_factory=list)  # dropped on purpose (unused upstream buffers)
    parts: list[str] = field(default_factory=list)

    @property
    def parameter_count(self) -> int:
        return sum(t.numel() for t in self.state_dict.values())

    def dtypes(self) -> dict[str, int]:
        return dict(Counter(str(t.dtype).replace("torch.", "") for t in self.state_dict.values()))

    def part_state_dict(self, part: str) -> dict[str, torch.Tensor]:
        """The keys of one part, named as our module for that part names them."""
        if part == DENOISER:
            return {k: v for k, v in self.state_dict.items() if not k.startswith(("encoder.", "decoder."))}
        prefix = "encoder." if part == LTX_ENCODER else "decoder."
        return {k: v for k, v in self.state_dict.items() if k.startswith(prefix)}


def sniff_format(path: Path) -> str:
    """Identify the container from its first bytes."""
    with open(path, "rb") as f:
        head = f.read(16)
    if head.startswith(b"PK\x03\x04"):
        return "pytorch-zip"
    if head[:1] == b"\x80" and len(head) > 1 and head[1] in (2, 3, 4, 5):
        return "pytorch-legacy"
    if len(head) >= 9:
        (n,) = struct.unpack("<Q", head[:8])
        if 2 <= n < 100_000_000 and head[8:9] == b"{":
            return "safetensors"
    raise CheckpointError(f"{path.name}: not a PyTorch (.pth/.pt) or safetensors checkpoint")


def _summarise(value) -> str:
    if isinstance(value, torch.Tensor):
        return f"tensor {tuple(value.shape)} {str(value.dtype).replace('torch.', '')}"
    if isinstance(value, dict):
        return f"dict with {len(value)} entries ({', '.join(map(str, list(value)[:6]))}{', …' if len(value) > 6 else ''})"
    if isinstance(value, (list, tuple)):
        return f"{type(value).__name__} of {len(value)}"
    return repr(value)[:80]


def _torch_load_safely(path: Path, fmt: str):
    try:
        with torch.serialization.safe_globals(_numpy_rng_allow_list()):
            return torch.load(path, map_location="cpu", weights_only=True, mmap=(fmt == "pytorch-zip"))
    except pickle.UnpicklingError as exc:
        msg = str(exc)
        culprit = ""
        if "GLOBAL" in msg or "Unsupported global" in msg or "not an allowed global" in msg:
            for token in msg.replace("`", " ").replace("'", " ").split():
                if "." in token and token[0].isalpha() and not token.startswith(("torch.serialization", "https")):
                    culprit = token.rstrip(".,:;")
                    break
        what = f" (it wants to call {culprit})" if culprit else ""
        raise CheckpointError(
            f"{path.name}: refused to unpickle: the file references objects outside mi2v's safe allow-list{what}; "
            "it could run code when loaded. Re-save it as weights only (mi2v convert on a trusted machine) or "
            "use .safetensors") from None
    except (RuntimeError, EOFError, zipfile.BadZipFile, ValueError, OSError) as exc:
        raise CheckpointError(f"{path.name}: truncated or corrupt PyTorch checkpoint ({first_line(exc, 160)})") from None


def _load_safetensors(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    from safetensors import safe_open

    try:
        tensors = {}
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
            for k in f.keys():
                tensors[k] = f.get_tensor(k)
        return tensors, meta
    except Exception as exc:  # safetensors raises its own SafetensorError / OSError variants
        raise CheckpointError(f"{path.name}: truncated or corrupt safetensors file ({first_line(exc, 160)})") from None


def _unwrap(obj, path: Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Find the weights in a training checkpoint dict; summarise everything else."""
    if not isinstance(obj, dict):
        raise CheckpointError(f"{path.name}: holds a {type(obj).__name__}, not a state dict or checkpoint dict")
    extras: dict[str, str] = {}
    weights = obj
    for key in CONTAINER_KEYS:
        inner = obj.get(key)
        if isinstance(inner, dict) and inner and all(isinstance(v, torch.Tensor) for v in inner.values()):
            weights = inner
            extras = {k: _summarise(v) for k, v in obj.items() if k != key}
            break
    tensors = {k: v for k, v in weights.items() if isinstance(v, torch.Tensor)}
    for k, v in weights.items():
        if not isinstance(v, torch.Tensor):
            extras[k] = _summarise(v)
    if not tensors:
        raise CheckpointError(f"{path.name}: contains no weight tensors (top-level keys: {', '.join(map(str, obj))})")
    return tensors, extras


def _strip_prefixes(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    changed = True
    while changed:
        changed = False
        for prefix in KEY_PREFIXES:
            if sd and all(k.startswith(prefix) for k in sd):
                sd = {k[len(prefix):]: v for k, v in sd.items()}
                changed = True
    return sd


def _is_turbo_vaed(keys) -> bool:
    return any("upsampler2d_1." in k or ".depthwise_conv." in k for k in keys)


def detect_parts(keys) -> list[str]:
    """Which model parts a set of keys belongs to."""
    keys = list(keys)
    parts = []
    if any(k.startswith("t_block.") for k in keys) and any(k.startswith("blocks.") for k in keys):
        parts.append(DENOISER)
    if any(k.startswith("encoder.") for k in keys):
        parts.append(LTX_ENCODER)
    decoder_keys = [k for k in keys if k.startswith("decoder.")]
    if decoder_keys:
        parts.append(TURBO_VAED if _is_turbo_vaed(decoder_keys) else LTX_DECODER)
    return parts


def read_checkpoint(path: str | os.PathLike) -> Checkpoint:
    """Read any supported checkpoint safely, normalise its key names and detect what it holds."""
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"{path}: no such file")
    if path.is_dir():
        raise CheckpointError(f"{path}: is a folder; pass the weights file inside it (.safetensors / .pth)")
    if path.stat().st_size == 0:
        raise CheckpointError(f"{path.name}: file is empty")
    fmt = sniff_format(path)
    metadata: dict[str, str] = {}
    if fmt == "safetensors":
        tensors, metadata = _load_safetensors(path)
        extras: dict[str, str] = {}
    else:
        tensors, extras = _unwrap(_torch_load_safely(path, fmt), path)
    tensors = _strip_prefixes(tensors)
    # Turbo-VAED is published as a plain decoder state dict: give it the `decoder.` prefix our module uses.
    if _is_turbo_vaed(tensors) and not any(k.startswith("decoder.") for k in tensors):
        tensors = {f"decoder.{k}": v for k, v in tensors.items()}
    ignored = [k for k in tensors if k in IGNORED_DENOISER_KEYS or k in IGNORED_VAE_KEYS]
    for k in ignored:
        tensors.pop(k)
    ckpt = Checkpoint(path=path, format=fmt, sha256=sha256_file(path), state_dict=tensors, extras=extras,
                      metadata=metadata, ignored_keys=ignored)
    ckpt.parts = detect_parts(tensors)
    if not ckpt.parts:
        sample = ", ".join(list(tensors)[:3])
        raise CheckpointError(f"{path.name}: weights of an unknown model (first keys: {sample}); expected a "
                              "MobileI2V denoiser, LTX-Video VAE or Turbo-VAED decoder")
    return ckpt


@dataclass
class KeyReport:
    missing: list[str]
    unexpected: list[str]
    mismatched: list[tuple[str, tuple, tuple]]  # key, file shape, model shape

    @property
    def ok(self) -> bool:
        return not (self.missing or self.unexpected or self.mismatched)

    def describe(self, limit: int = 4) -> str:
        def names(items):
            return ", ".join(items[:limit]) + (f", … (+{len(items) - limit})" if len(items) > limit else "")

        parts = []
        if self.missing:
            parts.append(f"{len(self.missing)} missing ({names(self.missing)})")
        if self.unexpected:
            parts.append(f"{len(self.unexpected)} unexpected ({names(self.unexpected)})")
        if self.mismatched:
            shown = [f"{k}: file {list(a)} vs model {list(b)}" for k, a, b in self.mismatched]
            parts.append(f"{len(self.mismatched)} mis-shaped ({names(shown)})")
        return "; ".join(parts)


def compare_keys(sd: dict[str, torch.Tensor], expected: dict[str, tuple]) -> KeyReport:
    missing = [k for k in expected if k not in sd]
    unexpected = [k for k in sd if k not in expected]
    mismatched = [(k, tuple(sd[k].shape), tuple(expected[k])) for k in expected
                  if k in sd and tuple(sd[k].shape) != tuple(expected[k])]
    return KeyReport(missing, unexpected, mismatched)


def load_part_weights(module: torch.nn.Module, ckpt: Checkpoint, part: str, label: str) -> None:
    """Load one part of a checkpoint into `module` strictly, or raise a one-line error naming every problem."""
    if part not in ckpt.parts:
        held = ", ".join(ckpt.parts)
        raise CheckpointError(f"{ckpt.path.name}: holds {held}, not the {label}")
    sd = ckpt.part_state_dict(part)
    expected = {k: tuple(v.shape) for k, v in module.state_dict().items()}
    report = compare_keys(sd, expected)
    if not report.ok:
        raise CheckpointError(f"{ckpt.path.name} does not match the {label}: {report.describe()}")
    module.load_state_dict(sd, strict=True)


def write_safetensors(state_dict: dict[str, torch.Tensor], out: str | os.PathLike,
                      metadata: dict[str, str] | None = None) -> Path:
    """Write a weights-only file atomically (temp file in the same folder, verified, then renamed)."""
    from safetensors.torch import load_file, save_file

    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.detach().contiguous().clone() if v.is_shared() or not v.is_contiguous() else v.detach()
               for k, v in state_dict.items()}
    with atomic_path(out) as tmp:
        save_file(tensors, str(tmp), metadata=metadata or {})
        back = load_file(str(tmp))
        if set(back) != set(tensors) or any(back[k].shape != tensors[k].shape for k in tensors):
            raise CheckpointError(f"{out.name}: written file did not read back identically")
    return out
