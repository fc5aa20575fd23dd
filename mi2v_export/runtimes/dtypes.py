"""The one dtype table of the runtime layer: numpy ↔ torch ↔ ONNX ↔ ExecuTorch ↔ Core ML names of each element type.

Every adapter in this package casts inputs and reads metadata through it, so the maps cannot drift apart again (the
pipeline's ONNX map lacked bool, the host bench's int8, one ExecuTorch map int16 and another bf16). The names a
manifest writes (`TensorInfo.dtype`) are the numpy-style `name` column. numpy has no bfloat16: its `numpy` column is
None and `numpy_dtype` gives float32 for it (the adapters widen bf16 outputs to float32). Torch-free: `torch_dtype`
imports torch only when asked.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np


@dataclass(frozen=True)
class DType:
    name: str  # numpy-style name, as the manifest writes it: "float32", "int64", "bfloat16"
    short: str  # the precision spelling for floats ("fp32"), else the name
    numpy: str | None  # numpy dtype name; None where numpy has none (bfloat16)
    torch: str  # attribute of the torch module: torch.float32
    onnx: str  # onnxruntime's NodeArg.type
    onnx_elem: int  # onnx.TensorProto element type
    et_scalar: int  # ExecuTorch / c10 ScalarType code (MethodMeta.input_tensor_meta(i).dtype())
    coreml: int | None  # Core ML ArrayFeatureType.ArrayDataType; None where Core ML has no such array type


DTYPES: tuple[DType, ...] = (
    DType("bool", "bool", "bool", "bool", "tensor(bool)", 9, 11, None),
    DType("uint8", "uint8", "uint8", "uint8", "tensor(uint8)", 2, 0, None),
    DType("int8", "int8", "int8", "int8", "tensor(int8)", 3, 1, None),
    DType("int16", "int16", "int16", "int16", "tensor(int16)", 5, 2, None),
    DType("int32", "int32", "int32", "int32", "tensor(int32)", 6, 3, 131104),
    DType("int64", "int64", "int64", "int64", "tensor(int64)", 7, 4, None),
    DType("float16", "fp16", "float16", "float16", "tensor(float16)", 10, 5, 65552),
    DType("bfloat16", "bf16", None, "bfloat16", "tensor(bfloat16)", 16, 15, None),
    DType("float32", "fp32", "float32", "float32", "tensor(float)", 1, 6, 65568),
    DType("float64", "fp64", "float64", "float64", "tensor(double)", 11, 7, 65600),
)

_BY_NAME = {d.name: d for d in DTYPES} | {d.short: d for d in DTYPES}
_BY_ONNX = {d.onnx: d for d in DTYPES}
_BY_ONNX_ELEM = {d.onnx_elem: d for d in DTYPES}
_BY_ET = {d.et_scalar: d for d in DTYPES}
_BY_COREML = {d.coreml: d for d in DTYPES if d.coreml is not None}


def by_name(name: str) -> DType | None:
    """"float32", "fp32", "float" (torch's str without the module), …; None when unknown."""
    key = str(name).removeprefix("torch.")
    return _BY_NAME.get({"float": "float32", "half": "float16", "double": "float64", "long": "int64",
                         "int": "int32", "short": "int16"}.get(key, key))


def from_numpy(dtype: Any) -> DType | None:
    try:
        return _BY_NAME.get(np.dtype(dtype).name)
    except TypeError:
        return None


def from_torch(dtype: Any) -> DType | None:
    """A torch.dtype (without importing torch: its str is 'torch.float32')."""
    return by_name(str(dtype))


def from_onnx(type_str: str) -> DType | None:
    return _BY_ONNX.get(type_str)


def from_onnx_elem(elem_type: int) -> DType | None:
    return _BY_ONNX_ELEM.get(int(elem_type))


def from_et(scalar_type: Any) -> DType | None:
    """An ExecuTorch ScalarType code (an int, or the pybindings' enum value)."""
    return _BY_ET.get(int(scalar_type))


def from_coreml(array_type: int) -> DType | None:
    return _BY_COREML.get(int(array_type))


def numpy_dtype(name: str) -> np.dtype:
    """The numpy dtype to hold values of `name`: float32 for bfloat16 (numpy has none) and for unknown names."""
    d = by_name(name)
    return np.dtype(d.numpy if d is not None and d.numpy else "float32")


def frombuffer(data: bytes, d: DType, shape: Any = None) -> np.ndarray:
    """A writable copy of a tensor's raw bytes of dtype `d` (a serialized tensor: a BundledProgram's test case);
    bfloat16 is widened to float32 (its bits are float32's upper half)."""
    if d.numpy is None:  # bfloat16
        array = (np.frombuffer(data, dtype=np.uint16).astype(np.uint32) << 16).view(np.float32)
    else:
        array = np.frombuffer(data, dtype=d.numpy).copy()
    return array.reshape(shape) if shape is not None else array


def torch_dtype(name: str) -> Any:
    """torch.<dtype> of `name` (torch imported here, on demand; float32 for unknown names)."""
    import torch

    d = by_name(name)
    return getattr(torch, d.torch if d is not None else "float32")


FLOAT32 = _BY_NAME["float32"]
