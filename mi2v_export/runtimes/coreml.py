"""Core ML prediction through coremltools (macOS only), one registered runtime per compute unit:
`coreml-all`, `coreml-cpu_and_ne`, `coreml-cpu_and_gpu`, `coreml-cpu_only` (the units of mi2v_export.contract).

I/O names, shapes and types come from the model's own description (runtimes.dtypes' Core ML column), inputs are
cast to them, outputs come back as predict returns them. Torch-free; coremltools is imported by `load`.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from ..contract import COMPUTE_UNITS, COREMLTOOLS_UNIT
from ..errors import BadInputError, MissingDependencyError, first_line
from . import dtypes
from .base import Inputs, Runtime, Session, TensorSpec, missing
from .registry import register


def _specs(features: Any) -> list[TensorSpec]:
    out = []
    for f in features:
        array = f.type.multiArrayType
        d = dtypes.from_coreml(array.dataType)
        out.append(TensorSpec(f.name, tuple(int(s) for s in array.shape), d.name if d else dtypes.FLOAT32.name))
    return out


class CoreMLSession(Session):  # pragma: no cover - macOS only
    def __init__(self, model: Any, path: Path, runtime: str, units: str):
        self.model, self.path, self.runtime, self.backend = model, path, runtime, units
        description = model.get_spec().description
        self.inputs, self.outputs = _specs(description.input), _specs(description.output)

    def prepare(self, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        return {t.name: np.asarray(inputs[t.name]).astype(dtypes.numpy_dtype(t.dtype), copy=False)
                for t in self.inputs}

    def execute(self, prepared: dict[str, np.ndarray]) -> dict:
        return self.model.predict(prepared)

    def collect(self, raw: dict) -> Inputs:
        return {name: np.array(raw[name]) for name in self.output_names if name in raw}

    def close(self) -> None:
        self.model = None


class CoreMLRuntime(Runtime):
    imports = ("coremltools",)

    family, suffix, package = "coreml", ".mlpackage", "coremltools"

    def __init__(self, units: str):
        self.units = units
        self.name = f"coreml-{units}"

    def accepts(self, entry: Any) -> bool:
        return entry.target == "coreml"

    def available(self) -> str | None:
        if sys.platform != "darwin":
            return f"Core ML prediction needs macOS (this host is {sys.platform})"
        return missing("coremltools", "pip install coremltools")

    def load(self, path: str | os.PathLike | None, entry: Any = None, **_: Any) -> CoreMLSession:
        path = Path(path)
        why = self.available()
        if why:
            raise MissingDependencyError(f"{path.name}: {why}")
        import coremltools as ct  # pragma: no cover - macOS only

        try:  # pragma: no cover - macOS only
            model = ct.models.MLModel(str(path), compute_units=getattr(ct.ComputeUnit, COREMLTOOLS_UNIT[self.units]))
        except Exception as exc:  # pragma: no cover - macOS only
            raise BadInputError(f"{path.name}: Core ML cannot load it ({first_line(exc)})") from None
        return CoreMLSession(model, path, self.name, self.units)  # pragma: no cover - macOS only


for _units in COMPUTE_UNITS:
    register(CoreMLRuntime(_units))
