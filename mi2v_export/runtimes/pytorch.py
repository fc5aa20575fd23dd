"""PyTorch eager as a runtime: the fp32 reference (`pytorch`) and the stand-in for an artifact that no runtime here
executes (`pytorch-simulated`: the quantized graph that was lowered, or its decompressed weights, run in PyTorch).

Neither loads a file: `load` takes the module (and optionally which of its methods to call) and gives the same
`Session` as the artifact runtimes, so a pipeline stage or an exporter's check runs either through one interface.
They accept no manifest entry (`mi2v verify` never picks them). torch is imported by `load`, never by this module.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from . import dtypes
from .base import Inputs, Runtime, Session, TensorSpec, missing
from .registry import register

REFERENCE = "pytorch"
SIMULATED = "pytorch-simulated"  # verified_on of an artifact checked by its PyTorch stand-in, never the runtime's


def module_dtype(module: Any) -> str:
    """The dtypes name of a module's first floating parameter (a quantized graph holds int8 too); float32 without."""
    p = next((p for p in module.parameters() if p.is_floating_point()), None)
    d = dtypes.from_torch(p.dtype) if p is not None else None
    return d.name if d else dtypes.FLOAT32.name


class TorchSession(Session):
    """A module called positionally with the inputs in `input_names` order; floating inputs cast to its dtype."""

    backend = "pytorch"
    path = None

    def __init__(self, module: Any, call: Callable, runtime: str, input_names: Sequence[str],
                 output_names: Sequence[str]):
        self.module, self.call, self.runtime = module, call, runtime
        self.dtype = module_dtype(module)
        self.inputs = [TensorSpec(n, (), self.dtype) for n in input_names]  # shapes: whatever the module takes
        self.outputs = [TensorSpec(n, (), self.dtype) for n in output_names]

    def prepare(self, inputs: Mapping[str, np.ndarray]) -> list:
        import torch

        args = [torch.from_numpy(np.ascontiguousarray(inputs[name])) for name in self.input_names]
        float_dtype = dtypes.torch_dtype(self.dtype)
        return [a.to(float_dtype) if a.is_floating_point() else a for a in args]

    def execute(self, prepared: list) -> Any:
        import torch

        with torch.inference_mode():
            return self.call(*prepared)

    def collect(self, raw: Any) -> Inputs:
        values = list(raw) if isinstance(raw, (list, tuple)) else [raw]
        return {name: _to_numpy(v) for name, v in zip(self.output_names, values)}

    def close(self) -> None:
        self.module = self.call = None


def _to_numpy(value: Any) -> np.ndarray:
    value = value.detach()
    return (value.float() if str(value.dtype) == "torch.bfloat16" else value).cpu().numpy()


class TorchRuntime(Runtime):
    imports = ("torch",)
    measures_memory = False  # a module in this process: the host's memory, not an artifact's

    family, suffix, package = "pytorch", None, "torch"

    def __init__(self, name: str):
        self.name = name

    def accepts(self, entry: Any) -> bool:
        return False  # runs a module in memory, never an artifact file

    def available(self) -> str | None:
        return missing("torch", "pip install torch")

    def load(self, path: str | os.PathLike | None = None, entry: Any = None, *, module: Any,
             input_names: Sequence[str], output_names: Sequence[str], call: Callable | None = None,
             **_: Any) -> TorchSession:
        """`module` in eval mode, called as `call(*inputs)` (default: the module itself)."""
        module.eval()  # not `module = module.eval()`: an exported (PT2E) graph's allowed eval returns None
        return TorchSession(module, call or module, self.name, input_names, output_names)


register(TorchRuntime(REFERENCE))
register(TorchRuntime(SIMULATED))
