"""This machine's fp32 and int8 GEMM ceilings at the denoiser's own GEMM shapes, all forms side by side in one run,
and the w8a8 denoiser step's effective GOP/s as a share of the int8 ceiling.

    python benchmarks/int8_ceiling.py --preset mobilei2v-270m                    # 720x1280x17 shapes (minutes)
    python benchmarks/int8_ceiling.py --preset tiny --quick --json /tmp/c.json    # smoke run (< 1 min)
    python benchmarks/int8_ceiling.py --step-report benchmarks/results/precision_720p_onnx_denoiser.json
    python benchmarks/int8_ceiling.py --step-ms 2995                             # a step time measured elsewhere

Shapes: the denoiser is built on the `meta` device at the preset's video size (or --resolution / --frames) and run
once with forward hooks on every nn.Linear and Conv2d: each call gives (M, K, N) with M = rows of the output (tokens
for the per-token linears and 1x1 convs), K = reduction length, N = outputs. 1x1 convs are GEMMs and timed as such;
depthwise convs are listed (their FLOPs) but not timed; shapes under --min-share of the GEMM FLOPs (the timestep
MLPs, M = 1 or 2) are listed, not timed. The step's FLOPs come from torch's FlopCounterMode (mi2v_export/flops.py).

Forms, per shape, each the median of --reps timed runs after --warmup, rounds interleaved so load changes hit every
form alike; GOP/s = 2·M·K·N / time. fp32: torch.matmul (MKL/oneDNN), onnxruntime MatMul, XNNPACK nn.Linear through
ExecuTorch. int8: onnxruntime MatMulInteger (u8 and s8 activations x s8 weights, int32 out), QLinearMatMul (u8 x s8
→ u8), the QDQ MatMul quantize_static writes (float in, Q→DQ→MatMul with per-channel int8 weights, float out, which
onnxruntime fuses; `_qout` adds an output Q→DQ), XNNPACK static w8a8 per-channel nn.Linear (PT2E XNNPACKQuantizer,
as exporters/quantize/pt2e.py xnnpack_w8a8; float in/out, the quantize/dequantize included), torch._int_mm. A form
that fails to build records its error. The ceiling per precision is the best form per shape; "overall" is FLOP-
weighted over the timed shapes (their total FLOPs / the total time at each shape's best rate). Host facts: CPU
model, flags, load average before and after.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from onnx import helper, numpy_helper

from mi2v_export.contract import cpu_flags, cpu_model

RESULTS = Path(__file__).resolve().parent / "results"
FLAGS = ("avx2", "avx512f", "avx512_vnni", "avx512_bf16", "avx512_fp16", "amx_int8", "amx_tile", "amx_bf16",
         "avx_vnni")
OPSET = 19


# ---------------------------------------------------------------------------------------------------------------
# The denoiser's GEMM shapes

def denoiser_gemms(preset_name: str, resolution: tuple[int, int] | None, frames: int | None) -> dict:
    """{"geometry", "step_gop", "shapes": [{kind, M, K, N, calls, gop, share}]} of one denoiser step."""
    from mi2v_export.flops import counted
    from mi2v_export.models import build_part
    from mi2v_export.presets import get_preset
    from mi2v_export.shapes import geometry

    preset = get_preset(preset_name)
    h, w = resolution or (preset.height, preset.width)
    geo = geometry(h, w, frames or preset.frames)
    module = build_part("denoiser", preset, device="meta").eval()
    calls: dict[tuple, int] = {}

    def hook(mod, _inputs, out):
        key = _gemm_key(mod, out)
        calls[key] = calls.get(key, 0) + 1

    for mod in module.modules():
        if isinstance(mod, (torch.nn.Linear, torch.nn.Conv2d)):
            mod.register_forward_hook(hook)
    with torch.device("meta"):
        flops, _ = counted(module, torch.empty(geo.latent_shape), torch.empty(1), torch.empty(1))
    rows = [{"kind": kind, "M": m, "K": k, "N": n, "calls": c, "gop": 2 * m * k * n * c / 1e9}
            for (kind, m, k, n), c in calls.items()]
    gemm_gop = sum(r["gop"] for r in rows if not r["kind"].startswith("depthwise"))
    for r in rows:
        r["share"] = round(r["gop"] / gemm_gop, 5)
        r["gop"] = round(r["gop"], 4)
    return {"geometry": {"height": h, "width": w, "frames": geo.frames, "latent": list(geo.latent_shape),
                         "tokens": geo.tokens},
            "step_gop": round(flops / 1e9, 3), "gemm_gop": round(gemm_gop, 3),
            "shapes": sorted(rows, key=lambda r: -r["gop"])}


def _gemm_key(m: torch.nn.Module, out: torch.Tensor) -> tuple:
    if isinstance(m, torch.nn.Linear):
        return "linear", out.numel() // m.out_features, m.in_features, m.out_features
    kh, kw = m.kernel_size
    rows = out.numel() // m.out_channels
    if m.groups == m.in_channels == m.out_channels and m.groups > 1:
        return f"depthwise{kh}x{kw}", rows, kh * kw, m.out_channels  # 2·M·K·N = its FLOPs; not a GEMM
    return f"conv{kh}x{kw}", rows, m.in_channels // m.groups * kh * kw, m.out_channels


# ---------------------------------------------------------------------------------------------------------------
# The forms: each builder takes (x fp32 [M,K], w fp32 [K,N], threads) and returns a zero-argument callable

def torch_fp32(x, w, threads):
    a, b = torch.from_numpy(x), torch.from_numpy(w)
    return lambda: torch.matmul(a, b)


def torch_int_mm(x, w, threads):
    a, b = torch.from_numpy(_q(x, np.int8)), torch.from_numpy(_q(w, np.int8))
    torch._int_mm(a, b)
    return lambda: torch._int_mm(a, b)


def _q(a: np.ndarray, dtype) -> np.ndarray:
    """Symmetric int8 (or uint8 around 128) of `a` at its own absolute maximum: the data to feed integer forms."""
    s = np.abs(a).max() / 127 or 1.0
    q = np.clip(np.round(a / s), -127, 127)
    return (q + 128).astype(np.uint8) if dtype == np.uint8 else q.astype(np.int8)


def _ort(nodes: list, feed: dict, out_dtype, inits: dict, threads: int) -> Callable:
    """A runner of the one-output graph `nodes` (inputs: `feed`'s arrays; initializers: `inits`); `.ran_as`: the op
    types of the graph onnxruntime optimised (its fusions)."""
    import onnx
    import onnxruntime as ort

    vi = lambda name, dtype, shape: helper.make_tensor_value_info(  # noqa: E731
        name, helper.np_dtype_to_tensor_dtype(np.dtype(dtype)), shape)
    graph = helper.make_graph(nodes, "g", [vi(k, v.dtype, v.shape) for k, v in feed.items()],
                              [vi("y", out_dtype, None)],
                              initializer=[numpy_helper.from_array(np.asarray(v), k) for k, v in inits.items()])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)])
    so = ort.SessionOptions()
    so.intra_op_num_threads, so.inter_op_num_threads, so.log_severity_level = threads, 1, 3
    so.add_session_config_entry("session.intra_op.allow_spinning", "0")  # idle spinners would slow the other forms
    with tempfile.TemporaryDirectory() as tmp:
        so.optimized_model_filepath = os.path.join(tmp, "opt.onnx")
        sess = ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])
        ran_as = sorted({n.op_type for n in onnx.load(so.optimized_model_filepath).graph.node})
    run = lambda: sess.run(None, feed)  # noqa: E731
    run.ran_as = ran_as
    return run


def ort_fp32(x, w, threads):
    return _ort([helper.make_node("MatMul", ["x", "w"], ["y"])], {"x": x}, np.float32, {"w": w}, threads)


def _ort_matmul_integer(act_dtype):
    def build(x, w, threads):
        zp = np.array(128 if act_dtype == np.uint8 else 0, act_dtype)
        return _ort([helper.make_node("MatMulInteger", ["x", "w", "xz"], ["y"])], {"x": _q(x, act_dtype)},
                    np.int32, {"w": _q(w, np.int8), "xz": zp}, threads)
    return build


def ort_qlinear_matmul(x, w, threads):
    f32 = np.float32
    inits = {"xs": f32(np.abs(x).max() / 127), "xz": np.uint8(128), "w": _q(w, np.int8),
             "ws": f32(np.abs(w).max() / 127), "wz": np.int8(0), "ys": f32(0.05), "yz": np.uint8(128)}
    node = helper.make_node("QLinearMatMul", ["x", "xs", "xz", "w", "ws", "wz", "ys", "yz"], ["y"])
    return _ort([node], {"x": _q(x, np.uint8)}, np.uint8, inits, threads)


def _ort_qdq(quantized_output: bool):
    def build(x, w, threads):
        ws = (np.abs(w).max(axis=0) / 127).astype(np.float32)
        inits = {"xs": np.float32(np.abs(x).max() / 127.5), "xz": np.uint8(128), "wq": np.round(w / ws).astype(np.int8),
                 "ws": ws, "wz": np.zeros_like(ws, np.int8), "ys": np.float32(0.05), "yz": np.uint8(128)}
        nodes = [helper.make_node("QuantizeLinear", ["x", "xs", "xz"], ["xq"]),
                 helper.make_node("DequantizeLinear", ["xq", "xs", "xz"], ["xd"]),
                 helper.make_node("DequantizeLinear", ["wq", "ws", "wz"], ["wd"], axis=1),
                 helper.make_node("MatMul", ["xd", "wd"], ["m" if quantized_output else "y"])]
        if quantized_output:
            nodes += [helper.make_node("QuantizeLinear", ["m", "ys", "yz"], ["mq"]),
                      helper.make_node("DequantizeLinear", ["mq", "ys", "yz"], ["y"])]
        return _ort(nodes, {"x": x}, np.float32, inits, threads)
    return build


def _linear(x, w) -> tuple[torch.nn.Module, torch.Tensor]:
    lin = torch.nn.Linear(w.shape[0], w.shape[1]).eval()
    with torch.no_grad():
        lin.weight.copy_(torch.from_numpy(w.T.copy()))
    return lin, torch.from_numpy(x)


def xnnpack_runner(module, xt, threads):
    """`module` on `xt` lowered to XNNPACK and loaded: a call runs it once (`run()[1]` is the outputs); `ran_as` names
    the backend and the ops left outside it (benchmarks/layer_norm_forms.py times its forms with it too)."""
    from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner
    from executorch.exir import to_edge_transform_and_lower

    from mi2v_export.runtimes.executorch import load_program

    edge = to_edge_transform_and_lower(torch.export.export(module, (xt,), strict=False),
                                       partitioner=[XnnpackPartitioner()])
    outside = sorted({str(n.target).split(".")[-2] if "." in str(n.target) else str(n.target)
                      for n in edge.exported_program().graph.nodes if n.op == "call_function"
                      and "delegate" not in str(n.target) and "getitem" not in str(n.target)})
    program = load_program(edge.to_executorch().buffer)  # kept alive with its method (freeing it crashes)
    method = program.load_method("forward")
    run = lambda: (program, method.execute([xt]))  # noqa: E731
    run.ran_as = ["XnnpackBackend"] + [f"outside:{op}" for op in outside]
    return run


def xnnpack_fp32(x, w, threads):
    with torch.no_grad():
        return xnnpack_runner(*_linear(x, w), threads)


def xnnpack_w8a8(x, w, threads):
    from executorch.backends.xnnpack.quantizer.xnnpack_quantizer import (
        XNNPACKQuantizer,
        get_symmetric_quantization_config,
    )
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e

    lin, xt = _linear(x, w)
    quantizer = XNNPACKQuantizer().set_global(get_symmetric_quantization_config(is_per_channel=True))
    prepared = prepare_pt2e(torch.export.export(lin, (xt,), strict=False).module(), quantizer)
    with torch.no_grad():
        prepared(xt)
        return xnnpack_runner(convert_pt2e(prepared), xt, threads)


FORMS: dict[str, tuple[str, Callable]] = {
    "torch_fp32": ("fp32", torch_fp32), "ort_fp32": ("fp32", ort_fp32), "xnnpack_fp32": ("fp32", xnnpack_fp32),
    "ort_matmulinteger_u8s8": ("int8", _ort_matmul_integer(np.uint8)),
    "ort_matmulinteger_s8s8": ("int8", _ort_matmul_integer(np.int8)),
    "ort_qlinearmatmul_u8s8": ("int8", ort_qlinear_matmul), "ort_qdq_matmul": ("int8", _ort_qdq(False)),
    "ort_qdq_matmul_qout": ("int8", _ort_qdq(True)), "xnnpack_w8a8": ("int8", xnnpack_w8a8),
    "torch_int_mm": ("int8", torch_int_mm),
}


# ---------------------------------------------------------------------------------------------------------------
# Measurement

def build_forms(shape: dict, names: list[str], threads: int, errors: dict) -> dict[str, Callable]:
    rng = np.random.default_rng(0)
    x = rng.standard_normal((shape["M"], shape["K"]), np.float32)
    w = (rng.standard_normal((shape["K"], shape["N"]), np.float32) / np.sqrt(shape["K"])).astype(np.float32)
    runners = {}
    for name in names:
        try:
            with warnings.catch_warnings(), torch.no_grad():
                warnings.simplefilter("ignore")
                runners[name] = FORMS[name][1](x, w, threads)
                runners[name]()
        except Exception as exc:  # noqa: BLE001 - recorded per form, the others still run
            errors.setdefault(name, f"{type(exc).__name__}: {(str(exc).strip() or '-').splitlines()[0]}"[:300])
    return runners


def time_forms(runners: dict[str, Callable], warmup: int, reps: int) -> dict[str, list[float]]:
    """Seconds per run of each form; `warmup` untimed rounds, then `reps` rounds each running every form once."""
    times: dict[str, list[float]] = {name: [] for name in runners}
    with torch.no_grad():
        for i in range(warmup + reps):
            for name, run in runners.items():
                t0 = time.perf_counter()
                run()
                if i >= warmup:
                    times[name].append(time.perf_counter() - t0)
    return times


def measure(shapes: list[dict], names: list[str], args) -> tuple[dict, dict]:
    forms = {name: {"precision": FORMS[name][0], "shapes": []} for name in names}
    errors: dict[str, str] = {}
    for shape in shapes:
        runners = build_forms(shape, names, args.threads, errors)
        times = time_forms(runners, args.warmup, args.reps)
        label = f"{shape['M']}x{shape['K']}x{shape['N']}"
        for name, run in runners.items():
            med = statistics.median(times[name])
            forms[name].setdefault("ran_as", getattr(run, "ran_as", None))
            forms[name]["shapes"].append({"shape": label, "median_ms": round(1e3 * med, 4),
                                          "gops": round(2 * shape["M"] * shape["K"] * shape["N"] / med / 1e9, 2)})
        print(label, " ".join(f"{n}={forms[n]['shapes'][-1]['gops']}" for n in runners), flush=True)
        del runners
    for name, err in errors.items():
        forms[name]["error"] = err
    return forms, errors


def ceilings(shapes: list[dict], forms: dict) -> dict:
    """Per precision: the best form's GOP/s per shape, and the FLOP-weighted overall (total FLOPs / total time)."""
    out = {}
    for precision in ("fp32", "int8"):
        per_shape, flop, sec = {}, 0.0, 0.0
        for shape in shapes:
            label = f"{shape['M']}x{shape['K']}x{shape['N']}"
            rates = {name: row["gops"] for name, f in forms.items() if f["precision"] == precision
                     for row in f["shapes"] if row["shape"] == label}
            if not rates:
                continue
            best = max(rates, key=rates.get)
            per_shape[label] = {"gops": rates[best], "form": best}
            flop += shape["gop"]
            sec += shape["gop"] / rates[best]
        out[precision] = {"per_shape": per_shape, "overall_gops": round(flop / sec, 2) if sec else None}
    return out


# ---------------------------------------------------------------------------------------------------------------
# The w8a8 step against the ceiling

def step_share(step_ms: float, step_gop: float, ceiling_gops: float) -> dict:
    """The step's effective GOP/s (its FLOPs / its time) and that as a share of the int8 ceiling."""
    eff = step_gop / (step_ms / 1e3)
    return {"step_ms": round(step_ms, 2), "effective_gops": round(eff, 2),
            "share_of_int8_ceiling": round(eff / ceiling_gops, 4) if ceiling_gops else None}


def step_section(args, gemms: dict, ceil: dict) -> list[dict]:
    """Each step time (--step-ms; the denoiser cells of --step-report, a benchmarks/precision.py JSON, at
    --precision) against the int8 ceiling, counting all the step's FLOPs and its GEMM FLOPs only."""
    rows = [("--step-ms", ms, None) for ms in args.step_ms or []]
    for path in args.step_report:
        report = json.loads(Path(path).read_text())
        cfg = {k: report.get("config", {}).get(k) for k in ("preset", "resolution", "frames", "attention")}
        rows += [(f"{path}:{c.get('target')}", 1e3 * c["median_s"], cfg) for c in report.get("cells", [])
                 if c.get("component") == "denoiser" and c.get("precision") == args.precision and c.get("median_s")]
    top = ceil["int8"]["overall_gops"]
    return [{"source": src, "precision": args.precision, "report_config": cfg,
             "all_flops": step_share(ms, gemms["step_gop"], top),
             "gemm_flops_only": step_share(ms, gemms["gemm_gop"], top)} for src, ms, cfg in rows]


# ---------------------------------------------------------------------------------------------------------------
# CLI

def host(threads: int) -> dict:
    import onnxruntime

    flags = set(cpu_flags())
    return {"cpu": cpu_model(), "cores": os.cpu_count(), "threads": threads, "torch": torch.__version__,
            "onnxruntime": onnxruntime.__version__, "flags": {f: f in flags for f in FLAGS},
            "all_vector_flags": sorted(flags), "load_avg_before": list(os.getloadavg())}


def _et_threads(threads: int) -> None:
    """ExecuTorch's process-wide pool, sized once before any program is loaded (resizing later is unsafe)."""
    try:
        from mi2v_export.runtimes.executorch import set_threads

        set_threads(threads)
    except ImportError:
        pass


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--preset", default="mobilei2v-270m")
    p.add_argument("--resolution", help="HEIGHTxWIDTH (default: the preset's)")
    p.add_argument("--frames", type=int, help="default: the preset's")
    p.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--reps", type=int, default=7, help="timed rounds (at least 5)")
    p.add_argument("--min-share", type=float, default=0.005, help="time shapes with at least this share of the "
                   "GEMM FLOPs (0.02 with --quick)")
    p.add_argument("--forms", default=",".join(FORMS), help="comma-separated subset of: " + ", ".join(FORMS))
    p.add_argument("--quick", action="store_true", help="1 warm-up, 5 reps, shapes >= 2%% of the FLOPs")
    p.add_argument("--step-ms", type=float, action="append", help="a measured denoiser step (ms); repeatable")
    p.add_argument("--step-report", action="append", default=[], help="a benchmarks/precision.py JSON: its "
                   "denoiser cells at --precision (repeatable: onnxruntime's and XNNPACK's steps in one run)")
    p.add_argument("--precision", default="w8a8")
    p.add_argument("--note", help="what the results file should say beside its figures (what ran beside, where the "
                   "step times come from)")
    p.add_argument("--json", type=Path, help="default: benchmarks/results/int8_ceiling_<preset>.json")
    args = p.parse_args(argv)
    if args.quick:
        args.warmup, args.reps, args.min_share = 1, 5, max(args.min_share, 0.02)
    args.reps = max(args.reps, 5)
    return args


def main(argv=None) -> None:
    args = parse_args(argv)
    from mi2v_export.shapes import parse_resolution

    torch.set_num_threads(args.threads)
    _et_threads(args.threads)
    result = {"kind": "int8_ceiling", "host": host(args.threads), "preset": args.preset,
              "config": {"warmup": args.warmup, "reps": args.reps, "min_share": args.min_share, "quick": args.quick}}
    gemms = denoiser_gemms(args.preset, parse_resolution(args.resolution) if args.resolution else None, args.frames)
    timed = [s for s in gemms["shapes"] if not s["kind"].startswith("depthwise") and s["share"] >= args.min_share]
    result.update(geometry=gemms["geometry"], step_gop=gemms["step_gop"], gemm_gop=gemms["gemm_gop"],
                  shapes=gemms["shapes"], timed_share=round(sum(s["share"] for s in timed), 4))
    names = [n.strip() for n in args.forms.split(",") if n.strip()]
    result["forms"], result["errors"] = measure(timed, names, args)
    ceil = result["ceilings"] = ceilings(timed, result["forms"])
    fp32, int8 = ceil["fp32"]["overall_gops"], ceil["int8"]["overall_gops"]
    result["int8_over_fp32"] = round(int8 / fp32, 3) if fp32 and int8 else None
    result["step"] = step_section(args, gemms, ceil)
    result["host"]["load_avg_after"] = list(os.getloadavg())
    if args.note:
        result["note"] = args.note
    out = args.json or RESULTS / f"int8_ceiling_{args.preset}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1) + "\n")
    print(f"fp32 ceiling {fp32} GOP/s, int8 ceiling {int8} GOP/s, int8/fp32 {result['int8_over_fp32']}; "
          f"errors: {result['errors'] or 'none'}; step: {result['step'] or '-'}; wrote {out}")


if __name__ == "__main__":
    main()
