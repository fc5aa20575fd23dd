"""LiteRT (formerly TensorFlow Lite) through `ai-edge-litert`'s Interpreter on this CPU, with its default XNNPACK
delegate (`litert`), for `.tflite` artifacts of every LiteRT export but the NPU-compiled ones (which need the
vendor's dispatch library on a phone).

The exporter (exporters/targets/litert) converts each component with named inputs and a dict of named outputs, so the
file's `serving_default` signature carries the contract's names: the session needs no manifest entry to match them
(with one, it keeps the entry's order). Inputs are cast to the signature's types (runtimes.dtypes); a statically
quantized (w8a8) model keeps float I/O, so no input is quantized here. Torch-free: ai_edge_litert is imported by
`load`.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import BadInputError, MissingDependencyError, first_line
from . import dtypes
from .base import Inputs, Runtime, Session, TensorSpec, missing, quiet_fd
from .registry import register

INSTALL = "pip install -e '.[litert]' (the pins of pyproject.toml's litert extra)"
NPU_DELEGATES = ("qualcomm", "mediatek", "google-tensor")  # compiled ahead of time for a phone's NPU


def _specs(details: Mapping[str, dict], order: list[str]) -> list[TensorSpec]:
    names = [n for n in order if n in details] + sorted(n for n in details if n not in order)
    out = []
    for name in names:
        d = dtypes.from_numpy(details[name]["dtype"])
        out.append(TensorSpec(name, tuple(int(s) for s in details[name]["shape"]),
                              d.name if d else dtypes.FLOAT32.name))
    return out


def _entry_names(entry: Any, field: str) -> list[str]:
    return [t.name for t in (getattr(entry, field, None) or [])]


class LiteRTSession(Session):
    """One signature runner of an `Interpreter` (LiteRT's CPU kernels with its XNNPACK delegate)."""

    def __init__(self, interpreter: Any, path: Path, runtime: str, threads: int | None, entry: Any = None):
        self.interpreter, self.path, self.runtime, self.threads = interpreter, path, runtime, threads
        self.backend = "xnnpack"
        self.runner = interpreter.get_signature_runner()
        dynamic = [n for n, d in self.runner.get_input_details().items() if any(s < 0 for s in d["shape_signature"])]
        if dynamic:
            raise BadInputError(f"{path.name}: input {dynamic[0]} has a dynamic shape; mi2v runs static-shape "
                                "models only (export with fixed shapes)")
        self.inputs = _specs(self.runner.get_input_details(), _entry_names(entry, "inputs"))
        self.outputs = _specs(self.runner.get_output_details(), _entry_names(entry, "outputs"))

    def prepare(self, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        return {t.name: np.ascontiguousarray(np.asarray(inputs[t.name]).astype(dtypes.numpy_dtype(t.dtype),
                                                                                 copy=False))
                for t in self.inputs}

    def execute(self, prepared: dict[str, np.ndarray]) -> dict:
        return self.runner(**prepared)

    def collect(self, raw: dict) -> Inputs:
        return {name: np.array(raw[name]) for name in self.output_names}

    def close(self) -> None:
        self.runner = self.interpreter = None


class LiteRTCPU(Runtime):
    """ai-edge-litert's Interpreter: what `benchmark_model` runs on a phone's CPU, here on the host's."""

    imports = ("ai_edge_litert.interpreter",)
    bench_order = 3
    timed_region = "SignatureRunner call (inputs copied in, Invoke, outputs copied out)"

    name, family, suffix, package = "litert", "litert", ".tflite", "ai-edge-litert"

    def accepts(self, entry: Any) -> bool:
        return entry.target == "litert" and entry.delegate not in NPU_DELEGATES

    def available(self) -> str | None:
        return missing("ai_edge_litert", INSTALL)

    def load(self, path: str | os.PathLike | None, entry: Any = None, *, threads: int | None = None,
             **_: Any) -> LiteRTSession:
        path = Path(path)
        why = self.available()
        if why:
            raise MissingDependencyError(f"{path.name}: {why}")
        from ai_edge_litert.interpreter import Interpreter

        try:
            with quiet_fd(2):  # "INFO: Created TensorFlow Lite XNNPACK delegate for CPU."
                interpreter = Interpreter(model_path=str(path), num_threads=threads or os.cpu_count() or 1)
                session = LiteRTSession(interpreter, path, self.name, threads, entry)
        except (ValueError, RuntimeError, KeyError) as exc:  # a corrupt flatbuffer, a missing signature
            raise BadInputError(f"{path.name}: LiteRT cannot load it ({first_line(exc)})") from None
        return session


register(LiteRTCPU())


class LiteRTNpu(Runtime):
    """A `.tflite` compiled ahead of time for a phone's NPU (`--delegate qualcomm|mediatek|google-tensor`): its
    dispatch ops run only through the vendor's LiteRT dispatch library on that phone, never on this host."""

    measures_memory = False
    imports = ("ai_edge_litert.interpreter",)

    name, family, suffix, package = "litert-npu", "litert", ".tflite", "ai-edge-litert"

    def accepts(self, entry: Any) -> bool:
        return entry.target == "litert" and entry.delegate in NPU_DELEGATES

    def available(self) -> str | None:
        return ("an NPU-compiled .tflite runs only on a phone, through the vendor's LiteRT dispatch library "
                "(LiteRT CompiledModel with the NPU accelerator)")

    def load(self, path: str | os.PathLike | None, entry: Any = None, **_: Any) -> Session:
        raise MissingDependencyError(f"{Path(path).name}: {self.available()}")


register(LiteRTNpu())
