"""The one runtime layer: every way mi2v runs an artifact on this machine, as registered adapters.

    from mi2v_export import runtimes
    rt = runtimes.runnable(entry)            # or runtimes.get("onnxruntime"), runtimes.for_entry(entry)
    with rt.load(path, entry) as session:    # Session: inputs / outputs (TensorSpec), run(dict) -> dict
        outputs = session.run({"latent": x})

Adapters, one module each, registered on import: `onnx` (onnxruntime CPU; the QNN HTP simulator of
onnxruntime-qnn), `executorch` (one runtime per delegate), `coreml` (macOS, one per compute unit), `litert` (ai-edge-litert's Interpreter), `pytorch` (the
fp32 reference and the stand-in of artifacts no runtime here runs). `dtypes` is the one dtype table, `memory` the
one peak-memory probe. A runtime that is not importable here says so in one line (`available()`).

Torch-free: nothing here imports torch, executorch or coremltools until an adapter loads (`mi2v verify` of ONNX
artifacts runs on the `verify` extra, which has no torch). Adding a runtime: one module here that `register`s it,
imported below.
"""

from __future__ import annotations

# each registers its runtimes; the registry keeps this order (the order `mi2v verify` runs them in)
from . import onnx, executorch, coreml, litert, pytorch  # noqa: F401, I001
from .base import Inputs, Runtime, Session, TensorSpec
from .registry import all, for_entry, for_path, for_target, get, names, register, runnable, why_not

__all__ = ["Inputs", "Runtime", "Session", "TensorSpec", "all", "for_entry", "for_path", "for_target", "get",
           "names", "register", "runnable", "why_not"]
