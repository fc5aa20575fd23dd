"""The conversion itself, apart from the exporter's bookkeeping: the module with named outputs, the converter run
without its progress chatter, and the tensor-name scopes of a recipe's float units (how the converter names the
tensors each module produced; exporters/quantize/litert.py keeps those scopes float)."""

from __future__ import annotations

import contextlib
import io
import logging
from collections.abc import Sequence
from pathlib import Path

import torch
from torch import nn

from mi2v_export.runtimes.base import quiet_fd


class _NamedOutputs(nn.Module):
    """`module`'s outputs as a dict by contract name: litert_torch writes dict keys as the signature's output names,
    so the file needs no manifest to say which output is which."""

    def __init__(self, module: nn.Module, input_names: Sequence[str], names: Sequence[str]):
        super().__init__()
        self.inner, self.input_names, self.names = module, tuple(input_names), tuple(names)

    def forward(self, **inputs: torch.Tensor) -> dict[str, torch.Tensor]:
        out = self.inner(*(inputs[n] for n in self.input_names))
        out = out if isinstance(out, (tuple, list)) else (out,)
        return dict(zip(self.names, out))


def named_outputs(module: nn.Module, input_names: Sequence[str], names: Sequence[str]) -> nn.Module:
    return _NamedOutputs(module, input_names, names).eval()


def convert_quietly(module: nn.Module, inputs: dict[str, torch.Tensor], path: Path) -> None:
    """`litert_torch.convert(module, sample_kwargs=inputs).export(path)`; its progress lines (stdout) and the
    converter's native log lines (fd 2) stay out of the CLI's output unless `mi2v -v`."""
    import litert_torch

    sink = io.StringIO()
    logging.getLogger("litert_torch").setLevel(logging.ERROR)
    with contextlib.redirect_stdout(sink), quiet_fd(2):
        model = litert_torch.convert(module, sample_args=(), sample_kwargs=inputs)
        model.export(str(path))


def _scope_part(module: nn.Module, attribute: str) -> str:
    cls = type(module)
    return f"{cls.__module__}.{cls.__qualname__}_{attribute}"


def unit_scopes(root: nn.Module, units: Sequence[str]) -> list[str]:
    """The tensor-name scope of each unit (a submodule path under the export wrapper, e.g. `model.blocks.3`): the
    converter names a tensor by the modules on its call stack, `<module>.<Class>_<attribute>` per level joined with
    "/", containers that are never called (ModuleList, ModuleDict) left out."""
    scopes = []
    for unit in units:
        module, parts = root, []
        for attribute in unit.split("."):
            module = module._modules[attribute]
            if not isinstance(module, (nn.ModuleList, nn.ModuleDict)):
                parts.append(_scope_part(module, attribute))
        scopes.append("/".join(parts))
    return scopes
