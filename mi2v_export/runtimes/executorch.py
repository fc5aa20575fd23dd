"""The ExecuTorch runtime (pybindings), one registered runtime per delegate a .pte may be lowered for:
`executorch-xnnpack`, `-portable` (no delegate), `-vulkan`, `-coreml`, `-qnn`. Each is available where this
executorch build registers its backend.

A .pte has no I/O names: the manifest entry's (else the names given, else `input_<i>` / `output_<i>`) in the
program's order; dtypes and shapes come from the method's own metadata (runtimes.dtypes). The pybindings link
libtorch, so torch is imported by `load`, never by this module.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import BadInputError, MissingDependencyError, first_line
from . import dtypes
from .base import Inputs, Runtime, Session, TensorSpec, missing, quiet_fd
from .registry import register

# delegate (manifest spelling; "portable" for none) → the backend id the program names and the registry lists
BACKENDS = {"xnnpack": "XnnpackBackend", "portable": None, "vulkan": "VulkanBackend", "coreml": "CoreMLBackend",
            "qnn": "QnnBackend"}
INSTALL = "pip install executorch"
# delegates whose backend a desktop executorch build may register but whose programs need the phone itself (a QNN
# context binary runs on a Snapdragon HTP): never available on the machines mi2v runs on
DEVICE_ONLY = {"qnn": "QNN .pte files run only on a Snapdragon device"}
# what to say where this build lacks a delegate's backend (the pip wheels have neither): where its programs run
NOT_HERE = {"vulkan": "the ExecuTorch runtime on this host has no VulkanBackend; run it on the device (mi2v bench)",
            "coreml": "the ExecuTorch runtime on this host has no CoreMLBackend (Core ML needs macOS/iOS)"}


def et_runtime() -> Any:
    """executorch.runtime.Runtime.get(), imported quietly (cpuinfo prints on stderr)."""
    try:
        with quiet_fd(2):
            from executorch.runtime import Runtime as EtRuntime
    except ImportError as exc:
        raise MissingDependencyError(f"the ExecuTorch runtime is not installed ({exc}): {INSTALL}") from None
    return EtRuntime.get()


def load_program(data: str | os.PathLike | bytes, *, minimal: bool = False, etdump: bool = False) -> Any:
    """An ExecuTorch Program from a file or its bytes; `minimal` verification, `etdump` profiling when asked.
    Raises what the runtime raises (callers word it)."""
    runtime = et_runtime()
    options: dict[str, Any] = {"enable_etdump": etdump} if etdump else {}
    if minimal:
        from executorch.runtime import Verification

        options["verification"] = Verification.Minimal
    source = data if isinstance(data, (bytes, bytearray)) else str(data)
    with quiet_fd(2):
        return runtime.load_program(source, **options)


def _names(given: Sequence[str] | None, count: int, prefix: str) -> list[str]:
    names = list(given or [])
    return names[:count] + [f"{prefix}_{i}" for i in range(len(names), count)]


def _specs(metas: list, names: list[str]) -> list[TensorSpec]:
    out = []
    for name, meta in zip(names, metas):
        d = dtypes.from_et(meta.dtype())
        out.append(TensorSpec(name, tuple(meta.sizes()), d.name if d else dtypes.FLOAT32.name))
    return out


class ExecuTorchSession(Session):
    """One loaded method of a program (the program is kept alive as long as the method)."""

    def __init__(self, program: Any, path: Path | None, runtime: str, backend: str, method: str | None = None,
                 input_names: Sequence[str] | None = None, output_names: Sequence[str] | None = None):
        self.program, self.path, self.runtime, self.backend = program, path, runtime, backend
        self.method_name = method or ("forward" if "forward" in program.method_names
                                      else sorted(program.method_names)[0])
        with quiet_fd(2):
            self.method = program.load_method(self.method_name)
        meta = self.method.metadata
        n_in, n_out = meta.num_inputs(), meta.num_outputs()
        self.inputs = _specs([meta.input_tensor_meta(i) for i in range(n_in)], _names(input_names, n_in, "input"))
        self.outputs = _specs([meta.output_tensor_meta(i) for i in range(n_out)],
                              _names(output_names, n_out, "output"))
        self.threads = _thread_count()

    def prepare(self, inputs: Mapping[str, np.ndarray]) -> list:
        import torch

        return [torch.from_numpy(np.ascontiguousarray(inputs[t.name])).to(dtypes.torch_dtype(t.dtype)).contiguous()
                for t in self.inputs]

    def execute(self, prepared: list) -> list:
        return self.method.execute(prepared)

    def collect(self, raw: list) -> Inputs:
        return {name: _to_numpy(value) for name, value in zip(self.output_names, raw)}

    def close(self) -> None:
        self.method = self.program = None


def _to_numpy(value: Any) -> np.ndarray:
    """A copy (the method may reuse its output buffers); bfloat16 widened to float32 (numpy has no bfloat16)."""
    if not hasattr(value, "detach"):
        return np.asarray(value)
    value = value.detach()
    if str(value.dtype) == "torch.bfloat16":
        value = value.float()
    return value.clone().numpy()


def _thread_count() -> int | None:
    from executorch.extension.pybindings import portable_lib

    return portable_lib._threadpool_get_thread_count()


def set_threads(threads: int) -> None:
    """The size of the runtime's thread pool (process-wide)."""
    from executorch.extension.pybindings import portable_lib

    portable_lib._unsafe_reset_threadpool(threads)


def check_bundled(data: bytes, cases: int, rtol: float, atol: float, method: str = "forward") -> None:
    """Run each of a BundledProgram's first `cases` test cases on this runtime and compare with its expected
    outputs (ExecuTorch's own check); raises what the runtime raises on a mismatch (callers word it)."""
    from executorch.extension.pybindings import portable_lib

    bundled = portable_lib._load_bundled_program_from_buffer(data)
    for n in range(cases):
        bundled.verify_result_with_bundled_expected_output(method, n, rtol, atol)


class ExecuTorchRuntime(Runtime):
    imports = ("torch", "executorch.runtime")
    bench_order = 0
    timed_region = "Method::execute"

    family, suffix, package = "executorch", ".pte", "executorch"

    def __init__(self, delegate: str):
        self.delegate, self.backend_id = delegate, BACKENDS[delegate]
        self.name = f"executorch-{delegate}"

    def accepts(self, entry: Any) -> bool:
        return entry.target == "executorch" and (entry.delegate or "portable") == self.delegate

    def available(self) -> str | None:
        if self.delegate in DEVICE_ONLY:
            return DEVICE_ONLY[self.delegate]
        why = missing("executorch", INSTALL)
        if why or self.backend_id is None:
            return why
        try:
            registry = et_runtime().backend_registry
        except (MissingDependencyError, ImportError) as exc:
            return str(exc)
        if not registry.is_available(self.backend_id):
            return NOT_HERE.get(self.delegate, f"this executorch build has no {self.backend_id}")
        return None

    def load(self, path: str | os.PathLike | None, entry: Any = None, *, threads: int | None = None,
             method: str | None = None, input_names: Sequence[str] | None = None,
             output_names: Sequence[str] | None = None, data: bytes | None = None, **_: Any) -> ExecuTorchSession:
        """`threads` resizes the (process-wide) thread pool; I/O names: the entry's, else `input_names` /
        `output_names`; `data`: the file's bytes when the caller has read them already."""
        path = Path(path)
        if entry is not None:
            input_names = [t.name for t in entry.inputs] or input_names
            output_names = [t.name for t in entry.outputs] or output_names
        et_runtime()  # MissingDependencyError before anything else
        if threads:
            set_threads(threads)
        try:
            program = load_program(path if data is None else data)
            return ExecuTorchSession(program, path, self.name, self.delegate, method, input_names, output_names)
        except Exception as exc:
            raise BadInputError(f"{path.name}: the ExecuTorch runtime cannot load it ({first_line(exc)}): a corrupt "
                                "file, or a program lowered for a delegate this host lacks (Vulkan, QNN, Core ML)"
                                ) from None


for _delegate in BACKENDS:
    register(ExecuTorchRuntime(_delegate))
