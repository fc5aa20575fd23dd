"""The XNNPACK denoiser's reductions, form against form, at one geometry: which way of writing the LayerNorm's
mean / variance and the linear attention's normaliser sum ExecuTorch's XNNPACK delegate runs fastest.

Forms, each lowered alone with the XNNPACK partitioner and timed interleaved with the others in one process:
- `pooled_view`: the mean over an (M, 1, C, 1) view (what `denoiser_delegable` traced before; XNNPACK runs it as
  global average pooling with one channel);
- `product`: the code the XNNPACK export traces now (exporters/rewrites/trace.py `_layer_norm_delegable`,
  `_token_sum_delegable`): a product with a constant column, XNNPACK's fp32 fully-connected kernel.
The LayerNorm runs on (tokens, hidden) and the normaliser sum on (hidden, tokens), the shapes of the 720p step.

    .venv/bin/python benchmarks/layer_norm_forms.py --json benchmarks/results/layer_norm_forms_720p_amd.json
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import warnings

import torch

import int8_ceiling  # benchmarks/int8_ceiling.py: the XNNPACK runner and the interleaved timing
from mi2v_export.contract import cpu_flags, cpu_model
from mi2v_export.exporters.rewrites import trace as trace_rewrites
from mi2v_export.presets import get_preset
from mi2v_export.shapes import geometry


def pooled_view_mean(x: torch.Tensor) -> torch.Tensor:
    *lead, c = x.shape
    return x.reshape(-1, 1, c, 1).mean(dim=(2, 3), keepdim=True).reshape(*lead, 1)


class PooledLayerNorm(torch.nn.Module):
    def forward(self, x):
        d = x - pooled_view_mean(x)
        return d * torch.rsqrt(pooled_view_mean(d * d) + 1e-6)


class ProductLayerNorm(torch.nn.Module):
    def forward(self, x):
        return trace_rewrites._layer_norm_delegable(x, 1e-6)


class PooledSum(torch.nn.Module):
    def forward(self, x):
        return pooled_view_mean(x) * x.shape[-1]


class ProductSum(torch.nn.Module):
    def forward(self, x):
        return trace_rewrites._token_sum_delegable(x)


def measure(cases: dict, warmup: int, reps: int) -> dict:
    """cases: name → (module, input, reference); each lowered by int8_ceiling.xnnpack_runner and timed interleaved
    by int8_ceiling.time_forms; medians in ms, max error vs the reference."""
    runners, out = {}, {}
    for name, (module, x, ref) in cases.items():
        run = runners[name] = int8_ceiling.xnnpack_runner(module.eval(), x, os.cpu_count())
        out[name] = {"outside_delegate": [r.split(":", 1)[1] for r in run.ran_as if r.startswith("outside:")],
                     "max_abs_error": float((run()[1][0] - ref).abs().max())}
    for name, seconds in int8_ceiling.time_forms(runners, warmup, reps).items():
        out[name]["samples_ms"] = [round(t * 1e3, 3) for t in seconds]
        out[name]["median_ms"] = round(statistics.median(out[name]["samples_ms"]), 3)
    return out


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--preset", default="mobilei2v-270m")
    ap.add_argument("--reps", type=int, default=20)
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--json", required=True)
    ap.add_argument("--note", default=None, help="what ran beside it, or anything the reader should know")
    args = ap.parse_args(argv)
    preset = get_preset(args.preset)
    geo = geometry(preset.height, preset.width, preset.frames)
    tokens, hidden = geo.tokens, preset.denoiser.hidden_size
    g = torch.Generator().manual_seed(0)
    x = torch.randn(1, tokens, hidden, generator=g) * 3 + 1
    kt = torch.randn(1, hidden, tokens, generator=g).abs()
    ln_ref = torch.nn.functional.layer_norm(x, (hidden,), eps=1e-6)
    cases = {"layer_norm/pooled_view": (PooledLayerNorm(), x, ln_ref),
             "layer_norm/product": (ProductLayerNorm(), x, ln_ref),
             "normaliser_sum/pooled_view": (PooledSum(), kt, kt.sum(-1, keepdim=True)),
             "normaliser_sum/product": (ProductSum(), kt, kt.sum(-1, keepdim=True))}
    load_before = list(os.getloadavg())
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        forms = measure(cases, args.warmup, args.reps)
    result = {"kind": "layer_norm_forms", "preset": args.preset, "tokens": tokens, "hidden": hidden,
              "host": {"cpu": cpu_model(), "cores": os.cpu_count(), "torch": torch.__version__,
                       "vector_flags": sorted(f for f in cpu_flags() if f.startswith(("avx", "amx", "fma"))),
                       "load_avg_before": load_before, "load_avg_after": list(os.getloadavg())},
              "warmup": args.warmup, "reps": args.reps, "note": args.note, "forms": forms}
    with open(args.json, "w") as f:
        json.dump(result, f, indent=1)
    for name, rec in forms.items():
        print(f"{name:28s} median {rec['median_ms']:8.3f} ms  max err {rec['max_abs_error']:.2e}  "
              f"outside {rec['outside_delegate'] or '-'}")


if __name__ == "__main__":
    main()
