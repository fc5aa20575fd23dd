"""QDQ models for the Qualcomm HTP (onnxruntime.quantization with its QNN configuration), the ONNX target's QNN
delegate: each quantizer takes `(fp32_model, qdq_model, feeds)`, writes the QDQ model and returns what it did for
the manifest (exporters/quantize/__init__.py adds the tool).

w8a16: int8 symmetric weights, uint16 activations (the 16-bit activation type the HTP takes); w8a8: int8
weights, uint8 activations. Calibrated on the inputs the component sees inside the real sampler.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .ort import calibration_in_bounded_memory

# Ops left float (fp16 on the HTP) in every QDQ model: the HTP's quantized Reciprocal is far less accurate than
# the QDQ arithmetic onnxruntime's CPU EP runs. Measured on the tiny encoder (w8a16, SM8650 simulator, against
# PyTorch fp32): all quantized 22.3 dB on the HTP vs 38.5 dB on the CPU EP, the loss appearing at the RMS norms'
# Sqrt → Reciprocal (69.5 → 25.7 dB at one of them); with these float: 38.5 dB on the HTP, every node still there.
HTP_FLOAT_OPS = ("Sqrt", "Reciprocal")


def float_nodes(model) -> list[str]:
    """Nodes the QDQ model keeps float: the scalar-only conditioning and the HTP_FLOAT_OPS."""
    scalar = scalar_only_nodes(model)
    return scalar + [n.name for n in model.graph.node if n.op_type in HTP_FLOAT_OPS and n.name not in scalar]


def scalar_only_nodes(model) -> list[str]:
    """Nodes computed only from single-element graph inputs and constants (the denoiser's timestep / flow-score
    conditioning): they stay float (fp16 on the HTP). Quantizing them would quantize the timestep itself, and a
    constant they share with a quantized node (1000 in clamp(t, max=1000) and t / 1000) would reach a float Clip
    as a dequantized value, a mix the HTP refuses."""
    scalars = {i.name for i in model.graph.input
               if int(np.prod([d.dim_value for d in i.type.tensor_type.shape.dim])) == 1}
    constants = {t.name for t in model.graph.initializer}
    out = []
    for node in model.graph.node:
        live = [i for i in node.input if i and i not in constants]
        if node.op_type == "Constant" or (live and all(i in scalars for i in live)):
            if node.op_type != "Constant":
                out.append(node.name)
            scalars.update(node.output)
    return out


class _Feeds:
    """onnxruntime.quantization CalibrationDataReader over a list of feed dicts."""

    def __init__(self, feeds: list[dict[str, np.ndarray]]):
        self.feeds = feeds
        self._it = iter(feeds)

    def get_next(self):
        return next(self._it, None)

    def rewind(self):
        self._it = iter(self.feeds)


def w8a16(fp32_model: Path, qdq_model: Path, feeds: list[dict[str, np.ndarray]]) -> dict:
    """uint16 activations, uint8 weights (the HTP's LayerNorm takes no int8 weights)."""
    return _quantize_qdq(fp32_model, qdq_model, feeds, activations="QUInt16", weights="QUInt8")


def w8a8(fp32_model: Path, qdq_model: Path, feeds: list[dict[str, np.ndarray]]) -> dict:
    """uint8 activations, uint8 weights (the HTP's LayerNorm takes no int8 weights)."""
    return _quantize_qdq(fp32_model, qdq_model, feeds, activations="QUInt8", weights="QUInt8")


def _quantize_qdq(fp32_model: Path, qdq_model: Path, feeds: list[dict[str, np.ndarray]], *, activations: str,
                  weights: str) -> dict:
    """Write the QDQ model of `fp32_model` (these onnxruntime QuantType names) calibrated on `feeds`; returns what
    was done (for the manifest)."""
    import onnx
    from onnxruntime.quantization import QuantType, quantize
    from onnxruntime.quantization.execution_providers.qnn import get_qnn_qdq_config, qnn_preprocess_model

    # qnn_preprocess_model (onnxruntime 1.32) fails on models with metadata_props (torch.onnx writes some)
    plain = qdq_model.with_suffix(".plain.onnx")
    model = onnx.load(str(fp32_model))
    del model.metadata_props[:]
    onnx.save(model, str(plain))
    pre = qdq_model.with_suffix(".pre.onnx")
    changed = qnn_preprocess_model(str(plain), str(pre))
    src = pre if changed else plain
    keep_float = float_nodes(onnx.load(str(src)))
    config = get_qnn_qdq_config(str(src), _Feeds(feeds), activation_type=getattr(QuantType, activations),
                                weight_type=getattr(QuantType, weights), per_channel=True, activation_symmetric=False,
                                weight_symmetric=True, nodes_to_exclude=keep_float)
    with calibration_in_bounded_memory():
        quantize(str(src), str(qdq_model), config)
    for tmp in (plain, pre):
        tmp.unlink(missing_ok=True)
    return {"activations": activations, "weights": weights + " per-channel symmetric",
            "calibration_samples": len(feeds), "preprocessed": bool(changed), "float_nodes": len(keep_float)}
