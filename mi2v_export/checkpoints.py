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

import io
import os
import pickle
import pickletools
import re
import struct
import zipfile
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import _weights_only_unpickler

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
        names, damaged = _referenced_globals(path, fmt)
        culprit = unsafe_call(str(exc), names)
        if culprit is None and damaged:
            raise CheckpointError(f"{path.name}: truncated or corrupt PyTorch checkpoint (its pickle ends early or "
                                  "is damaged); download or copy it again") from None
        if culprit is None:  # no import outside the allow-list: an opcode torch's loader does not read
            raise CheckpointError(
                f"{path.name}: refused to unpickle ({_unpickler_reason(str(exc))}): the file uses pickle features "
                "outside mi2v's safe loader. Re-save it as weights only with torch.save's defaults (mi2v convert on "
                "a trusted machine) or use .safetensors") from None
        raise CheckpointError(
            f"{path.name}: refused to unpickle: the file references objects outside mi2v's safe allow-list (it "
            f"wants to call {culprit}), so it could run code when loaded. Re-save it as weights only (mi2v convert "
            "on a trusted machine) or use .safetensors") from None
    except (RuntimeError, EOFError, zipfile.BadZipFile, ValueError, OSError, IndexError, struct.error) as exc:
        # IndexError / struct.error: torch's legacy-format reader on a file cut inside its first pickles
        raise CheckpointError(f"{path.name}: truncated or corrupt PyTorch checkpoint ({library_reason(exc)}); "
                              "download or copy it again") from None


# ---- naming what a refused pickle wanted, and library messages cut to whole sentences -----------------------------

PICKLE_SCAN_LIMIT = 64 * 1024 * 1024  # a 270M checkpoint's data.pkl is ~100 KB; a bigger one is not scanned
LEGACY_PICKLES = 5  # a legacy .pth: magic number, protocol, sys info, the objects, the storage keys; then raw bytes
_DOTTED = re.compile(r"[A-Za-z_]\w*(\.[A-Za-z_]\w*)*")
_STRING_OPS = frozenset({"STRING", "BINSTRING", "SHORT_BINSTRING", "UNICODE", "BINUNICODE", "SHORT_BINUNICODE",
                         "BINUNICODE8"})
_MEMO_GETS = frozenset({"GET", "BINGET", "LONG_BINGET"})
_MEMO_PUTS = frozenset({"PUT", "BINPUT", "LONG_BINPUT"})
_NO_PUSH = frozenset({"PROTO", "FRAME", "MEMOIZE", "STOP"}) | _MEMO_PUTS
_UNPICKLER_MARKERS = ("Unsupported", "Trying to", "Can only", "String is too long", "persistent_load",
                      "must be imported")


def pickle_globals(stream) -> Iterator[str]:
    """The `module.name`s one pickle imports (GLOBAL, and STACK_GLOBAL from the two strings before it), in order,
    read with pickletools: nothing is executed. Best effort, to name the call in a refusal; torch's weights-only
    unpickler is what refuses. Raises ValueError where the stream is damaged or ends early."""
    recent: list[str | None] = [None, None]  # what the last two pushing opcodes pushed, when they were strings
    memo: dict[int, str | None] = {}
    for op, arg, _ in pickletools.genops(stream):
        if op.name == "GLOBAL":
            yield _python3_name(*str(arg).split(" ", 1))
        elif op.name == "STACK_GLOBAL" and None not in recent[-2:]:
            yield f"{recent[-2]}.{recent[-1]}"
        if op.name in _MEMO_PUTS:
            memo[arg] = recent[-1]
        elif op.name == "MEMOIZE":
            memo[len(memo)] = recent[-1]
        elif op.name not in _NO_PUSH:
            pushed = arg if op.name in _STRING_OPS else memo.get(arg) if op.name in _MEMO_GETS else None
            recent = [recent[-1], pushed if isinstance(pushed, str) else None]


def _python3_name(module: str, name: str = "") -> str:
    """A protocol-2 GLOBAL under the Python 3 name torch's loader gives it (`__builtin__ eval` → builtins.eval)."""
    names = getattr(_weights_only_unpickler, "NAME_MAPPING", {})
    modules = getattr(_weights_only_unpickler, "IMPORT_MAPPING", {})
    module, name = names.get((module, name), (modules.get(module, module), name))
    return f"{module}.{name}"


def _referenced_globals(path: Path, fmt: str) -> tuple[list[str], bool]:
    """Every import in a .pth's pickles (the zip's `data.pkl`, or the first pickles of a legacy / plain file), and
    whether a pickle was damaged (cut short, or bytes that are no pickle): the names before the damage are kept."""
    names: list[str] = []
    try:
        if fmt == "pytorch-zip":
            with zipfile.ZipFile(path) as z:
                member = next(i for i in z.infolist() if i.filename.rsplit("/", 1)[-1] == "data.pkl")
                if member.file_size <= PICKLE_SCAN_LIMIT:
                    names.extend(pickle_globals(io.BytesIO(z.read(member))))
        else:
            with open(path, "rb") as f:
                for _ in range(LEGACY_PICKLES):
                    if not f.peek(1)[:1]:  # a plain pickle file ends after its one pickle
                        break
                    names.extend(pickle_globals(f))
    except (ValueError, StopIteration, zipfile.BadZipFile, OSError, EOFError):
        return names, True
    return names, False


def _allowed_globals() -> set[str]:
    """What the loader accepts: torch's own weights-only allow-list plus `_numpy_rng_allow_list`."""
    names = set(getattr(_weights_only_unpickler, "_get_allowed_globals", dict)())
    for item in _numpy_rng_allow_list():
        names.add(item[1] if isinstance(item, tuple) else f"{item.__module__}.{item.__qualname__}")
    return names


def unsafe_call(message: str, names: list[str]) -> str | None:
    """The import a refused pickle wanted (`posix.system` for os.system on Linux), among the imports the file
    really holds (`names`, from _referenced_globals): the one torch's message names, else the first one outside
    the allow-list. None when there is none: torch names a half-read import when a file is cut inside it."""
    named = re.search(r"GLOBAL (\S+) (?:was|whose)", message)
    if named:
        culprit = named.group(1) if "." in named.group(1) else f"builtins.{named.group(1)}"  # torch strips builtins.
        if culprit in names:
            return culprit
    allowed = _allowed_globals()
    return next((n for n in names if n not in allowed and _DOTTED.fullmatch(n)), None)


def _unpickler_reason(message: str) -> str:
    """The line of torch's weights-only message that says what it refused (the rest is advice about
    weights_only=False, which mi2v never uses)."""
    for line in message.splitlines():
        line = line.strip().removeprefix("WeightsUnpickler error:").strip()
        if line.startswith(_UNPICKLER_MARKERS):
            return _first_sentence(line)
    return "the weights-only unpickler refused it"


def _first_sentence(text: str, limit: int = 240) -> str:
    sentence = re.split(r"(?<=[.!?])\s", text.strip(), maxsplit=1)[0].rstrip(".")
    if len(sentence) > limit:  # one huge sentence: cut at a word and say so
        sentence = sentence[:limit].rsplit(" ", 1)[0] + " …"
    return sentence


def library_reason(exc: BaseException) -> str:
    """A library's reason, as its first whole sentence: libraries append hints ("This is an internal miniz error.
    If you are seeing this error, there is a high …"), and a fixed character cut (errors.first_line) left the error
    line ending mid-sentence."""
    return _first_sentence(first_line(exc, limit=10_000))


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
        raise CheckpointError(f"{path.name}: truncated or corrupt safetensors file ({library_reason(exc)}); "
                              "download or copy it again") from None


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

    @property
    def problems(self) -> int:
        """How far a file is from a model: `mi2v inspect` compares a file with the preset where this is least."""
        return len(self.missing) + len(self.unexpected) + len(self.mismatched)

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
