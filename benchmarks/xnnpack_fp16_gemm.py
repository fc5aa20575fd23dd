"""How exact XNNPACK's fp16 Linear is on this CPU: one fp16 nn.Linear lowered to XNNPACK and run by the ExecuTorch
runtime, against the same fp16 inputs and weights multiplied with fp32 accumulation (PSNR), for growing reduction
length K; PyTorch's own fp16 Linear beside it.

    python benchmarks/xnnpack_fp16_gemm.py

Why: the 270M denoiser exported for XNNPACK in fp16 reaches only ~15 dB against fp32 at 720p (and 14.6 dB at
128x224), while onnxruntime's fp16 graph reaches 74 dB. Measured here (AVX512-FP16 host): the error grows with K,
about 14 dB from K=64 to K=4608, far above PyTorch's fp16 Linear (fp32 accumulation); consistent with fp16
accumulation in XNNPACK's native-fp16 kernels (not confirmed from XNNPACK's source).
"""

from __future__ import annotations

import json
import warnings


def main() -> None:
    warnings.simplefilter("ignore")
    import torch
    from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner
    from executorch.exir import to_edge_transform_and_lower
    from executorch.extension.pybindings.portable_lib import _load_for_executorch_from_buffer

    from mi2v_export import parity
    from mi2v_export.contract import cpu_flags, cpu_model

    torch.manual_seed(0)
    rows = []
    for k in (64, 1152, 4608):
        m = torch.nn.Linear(k, 1024).half()
        x = torch.randn(1, 84, k).half()
        program = to_edge_transform_and_lower(torch.export.export(m, (x,), strict=False),
                                              partitioner=[XnnpackPartitioner()]).to_executorch()
        got = _load_for_executorch_from_buffer(program.buffer).forward((x,))[0].float()
        ref = torch.nn.functional.linear(x.float(), m.weight.float(), m.bias.float())
        rows.append({"K": k, "xnnpack_fp16_psnr_db": round(parity.psnr_db(got, ref), 1),
                     "pytorch_fp16_psnr_db": round(parity.psnr_db(m(x).float(), ref), 1)})
    print(json.dumps({"host": {"cpu": cpu_model(), "flags": cpu_flags()}, "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
