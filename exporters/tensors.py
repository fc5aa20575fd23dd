"""Torch-side helpers the exporters share: casting the example inputs to an artifact's dtype, describing tensors for
the manifest, and running the PyTorch stand-in of an artifact no runtime here executes.

Kept apart from exporters/base.py, which stays torch-free for the CLI (it reads the registry when it starts).
"""

from __future__ import annotations

import numpy as np
import torch

from mi2v_export import runtimes
from mi2v_export.manifest import TensorInfo
from mi2v_export.runtimes.pytorch import SIMULATED

from .base import ArtifactRun, ComponentSpec, run_artifact

TORCH_DTYPES = {"fp32": torch.float32, "fp16": torch.float16}  # a graph's floating dtype → torch's


def numpy_dtype_name(dtype) -> str:
    """'float32' style name of a torch / numpy / onnx-elem dtype."""
    if isinstance(dtype, torch.dtype):
        return str(dtype).replace("torch.", "")
    return np.dtype(dtype).name


def cast_inputs(spec: ComponentSpec, dtype: str) -> tuple[torch.Tensor, ...]:
    """The example inputs in the precision the exported graph takes (floating tensors only)."""
    t = TORCH_DTYPES[dtype]
    return tuple(x.to(t) if x.is_floating_point() else x for x in spec.args)


def tensor_infos(names, tensors) -> list[TensorInfo]:
    return [TensorInfo(n, tuple(int(s) for s in t.shape), numpy_dtype_name(t.dtype)) for n, t in zip(names, tensors)]


def run_simulated(module, spec: ComponentSpec) -> ArtifactRun:
    """Run the PyTorch stand-in of an artifact that no runtime here executes (the quantized graph that was lowered
    or converted, or its decompressed weights) on the runtime layer's `pytorch-simulated`: recorded as verified_on
    "pytorch-simulated", never as the artifact's runtime."""
    feeds = {n: x.numpy() for n, x in spec.inputs.items()}
    names = list(spec.output_names)
    return run_artifact(runtimes.get(SIMULATED), None, feeds, names[:1], module=module,
                        input_names=list(spec.inputs), output_names=names)
