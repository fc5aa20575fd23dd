"""The PyTorch side of the pipeline: checkpoints read once and mapped to the parts they hold, and the float32
PyTorch stage of a component (from a checkpoint, else seeded random weights: reproducible noise, fine for tests)."""

from __future__ import annotations

import os
import warnings
from collections.abc import Sequence

from ..checkpoints import DENOISER as P_DENOISER
from ..checkpoints import LTX_DECODER, LTX_ENCODER, TURBO_VAED, Checkpoint, load_part_weights, read_checkpoint
from ..contract import DECODER, DENOISER, ENCODER
from ..errors import BadInputError, CheckpointError
from ..models import DECODER_KINDS, PARTS, build_part, seed_part
from .stages import TorchStage, check_component


def checkpoint_parts(paths: Sequence[str | os.PathLike]) -> dict[str, Checkpoint]:
    """Read each checkpoint once (safely) and map every part it holds to it; a part in two files is an error."""
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
    kinds = [k for k, part in (("turbo-vaed", TURBO_VAED), ("ltx", LTX_DECODER)) if part in parts]
    return kinds[0] if len(kinds) == 1 else None


def torch_stage(component: str, preset: str, decoder: str = "turbo-vaed", parts: dict | None = None,
                seed: int = 0) -> TorchStage:
    """The float32 PyTorch stage of one component: weights from `parts` (checkpoint_parts) or seeded weights."""
    check_component(component)
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

