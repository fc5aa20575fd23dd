"""onnxruntime: the CPU execution provider (`onnxruntime`) and the Qualcomm HTP simulator of the onnxruntime-qnn
wheel for QNN EPContext models (`qnn-htp-simulator`, CPU fallback disabled unless the export allowed it).

Inputs are matched by name and cast to the model's declared input types (runtimes.dtypes); outputs come back in
the model's types. Torch-free.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from .. import qnn
from ..errors import BadInputError, Mi2vError, MissingDependencyError, first_line
from . import dtypes
from .base import Inputs, Runtime, Session, TensorSpec, missing, quiet_fd
from .registry import register


def _spec(arg: Any) -> TensorSpec:
    d = dtypes.from_onnx(arg.type)
    return TensorSpec(arg.name, tuple(arg.shape), d.name if d else dtypes.FLOAT32.name)


class OnnxSession(Session):
    """An `onnxruntime.InferenceSession` (CPU EP, or the QNN EP's HTP simulator)."""

    def __init__(self, session: Any, path: Path, runtime: str, backend: str, threads: int | None,
                 quiet: bool = False):
        self.session, self.path, self.runtime, self.backend, self.threads = session, path, runtime, backend, threads
        self.quiet = quiet  # the QNN libraries print on fd 2 while running
        self.inputs = [_spec(i) for i in session.get_inputs()]
        self.outputs = [_spec(o) for o in session.get_outputs()]

    def prepare(self, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        return {t.name: np.asarray(inputs[t.name]).astype(dtypes.numpy_dtype(t.dtype), copy=False)
                for t in self.inputs}

    def execute(self, prepared: dict[str, np.ndarray]) -> list:
        if not self.quiet:
            return self.session.run(None, prepared)
        with quiet_fd(2):
            return self.session.run(None, prepared)

    def collect(self, raw: list) -> Inputs:
        return {name: np.asarray(value) for name, value in zip(self.output_names, raw)}

    def close(self) -> None:
        self.session = None


def _import_ort():
    try:
        import onnxruntime as ort
    except ImportError as exc:
        raise MissingDependencyError(f"onnxruntime is not installed ({exc}): pip install onnxruntime") from None
    return ort


def _load_error(path: Path, exc: Exception) -> BadInputError:
    return BadInputError(f"{path.name}: onnxruntime cannot load it ({first_line(exc)})")


class OnnxRuntimeCPU(Runtime):
    """onnxruntime's CPU execution provider, for every ONNX artifact but QNN EPContext models."""

    imports = ("onnxruntime",)
    bench_order = 1
    timed_region = "InferenceSession.Run"

    name, family, suffix, package = "onnxruntime", "onnxruntime", ".onnx", "onnxruntime"

    def accepts(self, entry: Any) -> bool:
        return entry.target == "onnx" and entry.delegate != "qnn"

    def available(self) -> str | None:
        return missing("onnxruntime", "pip install onnxruntime")

    def load(self, path: str | os.PathLike | None, entry: Any = None, *, threads: int | None = None,
             session_options: Any = None, providers: list[str] | None = None, low_memory: bool = False,
             **_: Any) -> OnnxSession:
        """`threads`: intra-op threads; `session_options` (with its `providers`, else onnxruntime's choice)
        replaces the defaults (CPU EP, quiet log). `low_memory`: no CPU arena and no memory-pattern planning, so
        a session frees its activations after each run (the stages of a tiled component: several sessions live
        at once; benchmarks/ort_memory_settings.py measured the cost at 1.03-1.15x on a whole 720p decoder)."""
        ort = _import_ort()
        path = Path(path)
        so = session_options or ort.SessionOptions()
        if session_options is None:  # the defaults: quiet, CPU EP
            so.log_severity_level = 3
            providers = providers or ["CPUExecutionProvider"]
        if low_memory:
            so.enable_cpu_mem_arena = False
            so.enable_mem_pattern = False
        if threads:
            so.intra_op_num_threads = threads
        try:
            session = ort.InferenceSession(str(path), sess_options=so, providers=providers)
        except Exception as exc:  # onnxruntime raises its own exception types for corrupt files
            raise _load_error(path, exc) from None
        first = session.get_providers()[0]
        backend = "cpu" if first == "CPUExecutionProvider" else first  # what executes, when providers were given
        return OnnxSession(session, path, self.name, backend, threads or so.intra_op_num_threads or None)


class QnnHtpSimulator(Runtime):
    """onnxruntime's QNN EP on the HTP simulator of the onnxruntime-qnn wheel (x86_64), for QNN EPContext models."""

    measures_memory = False  # the simulator's memory is the host's, not the phone's
    imports = ("onnxruntime",)
    bench_order = 1

    name, family, suffix, package = qnn.RUNTIME, "onnxruntime", ".onnx", "onnxruntime-qnn"

    def accepts(self, entry: Any) -> bool:
        return entry.target == "onnx" and entry.delegate == "qnn"

    def available(self) -> str | None:
        try:
            qnn.check_available()
        except MissingDependencyError as exc:
            return str(exc)
        return None

    def load(self, path: str | os.PathLike | None, entry: Any = None, *, soc: str | None = None,
             fp16: bool | None = None, allow_cpu_fallback: bool | None = None, **_: Any) -> OnnxSession:
        """The SoC, fp16 and CPU fallback default to what the entry was exported with (target_info, precision,
        flags), else SM8650, fp16, no fallback."""
        _import_ort()
        path = Path(path)
        info, flags = (getattr(entry, "target_info", None) or {}), (getattr(entry, "flags", None) or {})
        soc = soc or info.get("soc") or qnn.DEFAULT_SOC
        fp16 = fp16 if fp16 is not None else (entry is None or entry.precision == "fp16")
        fallback = allow_cpu_fallback if allow_cpu_fallback is not None else bool(flags.get("allow_cpu_fallback"))
        try:
            session = qnn.create_session(path, soc, fp16=fp16, allow_cpu_fallback=fallback)
        except Mi2vError:
            raise
        except Exception as exc:
            raise _load_error(path, exc) from None
        return OnnxSession(session, path, self.name, qnn.RUNTIME, None, quiet=True)


register(OnnxRuntimeCPU())
register(QnnHtpSimulator())
