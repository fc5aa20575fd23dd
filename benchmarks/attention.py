"""Reference vs rewritten attention / blocks / denoiser on onnxruntime CPU and ExecuTorch XNNPACK, side by side.

    python benchmarks/attention.py --quick                 # tiny preset, small grid (smoke run, ~minutes)
    python benchmarks/attention.py --json out.json          # 270M weights at 720x1280x17 (3x23x40 latent, 2760 tokens)
    python benchmarks/attention.py --cases linear_attention,softmax_attention --runtimes ort --profile

Cases: `linear_attention` / `softmax_attention` (one block's attention module, qkv and proj included),
`linear_core` / `softmax_core` (the same without the qkv / proj GEMMs — q = k = v = the input — i.e. the part the
rewrites change), `linear_block` / `softmax_block` (a whole DiT block) and `denoiser` (one full step).

Every case is exported twice in the same process — the reference module and its rewritten form (plan `--plan`,
default "mobile", knobs via `--set key=value`) — to ONNX (torch.onnx.export dynamo=True, opset 18; run on
onnxruntime's CPU provider) and to ExecuTorch (torch.export → to_edge_transform_and_lower + XnnpackPartitioner →
executorch.runtime). Runs alternate reference / rewritten after `--warmup` runs; medians are reported with
reference/rewritten speed-up and the GFLOP/s of the rewritten form (matmul/conv FLOPs of the reference forward,
torch FlopCounterMode), next to an fp32 GEMM ceiling measured in the same run (torch.mm, 2048³, same threads).

`--json FILE` writes {"machine": {...}, "gemm_gflops": x, "cases": [{"name", "runtime", "shape", "reference_ms",
"rewritten_ms", "speedup", "gflops", ...}]} (a contract; extra keys may be added). `--profile` adds the top
operator types of both forms per case (ORT profiling; ExecuTorch ETDump) to find what holds a case back.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import gc
import io
import json
import os
import platform
import statistics
import sys
import tempfile
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from mi2v_export.flops import counted

CASES = ("linear_attention", "softmax_attention", "linear_core", "softmax_core", "linear_block", "softmax_block",
         "denoiser")
RUNTIMES = ("ort", "xnnpack")


# ----------------------------------------------------------------------------------------------------------------
# cases
# ----------------------------------------------------------------------------------------------------------------

class AttentionCase(nn.Module):
    """One attention module on the input layout it gets inside its model (tokens, or channels-first)."""

    def __init__(self, attn: nn.Module, rope_source: nn.Module, grid, channels_first: bool):
        super().__init__()
        self.attn, self.rope_source, self.grid, self.channels_first = attn, rope_source, grid, channels_first

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        rope = self.rope_source(self.grid)
        if self.channels_first:
            return self.attn.forward_cf(x, rope, self.grid[0])
        return self.attn(x, rope)


class TileQKV(nn.Module):
    """Stands in for the qkv projection in the *_core cases: q = k = v = x, a copy instead of a GEMM."""

    def __init__(self, dim: int):
        super().__init__()
        self.dim = dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([x, x, x], dim=self.dim)


def without_projections(attn: nn.Module, channels_first: bool) -> nn.Module:
    """A shallow copy of an attention module with qkv → TileQKV and proj → Identity (weights untouched)."""
    import copy

    core = copy.copy(attn)
    core._modules = dict(attn._modules)
    core.qkv = TileQKV(1 if channels_first else -1)
    core.proj = nn.Identity()
    return core


class BlockCase(nn.Module):
    def __init__(self, block: nn.Module, rope_source: nn.Module, grid, channels_first: bool):
        super().__init__()
        self.block, self.rope_source, self.grid, self.channels_first = block, rope_source, grid, channels_first

    def forward(self, x: torch.Tensor, mod: torch.Tensor) -> torch.Tensor:
        rope = self.rope_source(self.grid)
        t, h, w = self.grid
        if self.channels_first:
            return self.block.forward_cf(x, mod, rope, t, (h, w))
        return self.block(x, mod, rope, (h, w))


class AngleSource(nn.Module):
    """What the reference model hands its blocks: the RoPE angle table, computed in the forward."""

    def __init__(self, cfg):
        super().__init__()
        self.cfg = cfg

    def forward(self, grid):
        from mi2v_export.models.rope import rope_angles

        return rope_angles(grid, self.cfg.head_dim, self.cfg.rope_scales, self.cfg.rope_theta)


class TableSource(nn.Module):
    """What the rewritten model hands its blocks: RopeTables (constants when the plan bakes them)."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.cache, self.cfg = model.rope_cache, model.config  # not the whole model: its weights would be exported

    def forward(self, grid):
        from mi2v_export.kernels.rope import RopeTables
        from mi2v_export.models.rope import rope_angles

        cfg = self.cfg
        if self.cache is not None and self.cache.grid == tuple(grid):
            return RopeTables(self.cache.angles, tuple(grid), cfg.head_dim, fixed=self.cache.fixed())
        return RopeTables(rope_angles(tuple(grid), cfg.head_dim, cfg.rope_scales, cfg.rope_theta), tuple(grid),
                          cfg.head_dim)


@dataclass
class Case:
    name: str
    shape: str
    reference: nn.Module
    rewritten: nn.Module
    ref_inputs: tuple
    rew_inputs: tuple
    flops: float


def build_cases(names, preset: str, grid, plan: str, overrides: dict, seed: int = 0):
    from mi2v_export.kernels import rewrite
    from mi2v_export.kernels.layout import tokens_to_cf
    from mi2v_export.models import load_denoiser

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = load_denoiser(preset=preset)
    cfg = model.config
    t, h, w = grid
    n, c = t * h * w, cfg.hidden_size
    mobile = rewrite(model, plan, **{"grid": grid, "schedule": [(1000.0, 2.0)], **overrides})
    # the block-level cases keep the modulation as an input, like a block inside the model
    cf = mobile.channels_first
    gen = torch.Generator().manual_seed(seed)
    lin = next(i for i in range(cfg.depth) if i not in cfg.softmax_blocks)
    soft = cfg.softmax_blocks[0]
    shape_tok = f"{n}x{c}"
    x_tok = torch.randn(1, n, c, generator=gen)
    x_cf = tokens_to_cf(x_tok, t) if cf else x_tok
    x_blk = x_tok.view(1, t, h * w, c)
    x_blk_cf = tokens_to_cf(x_tok, t) if cf else x_blk
    mod = 0.1 * torch.randn(1, t, 6, c, generator=gen)
    for name in names:
        if name in ("linear_attention", "softmax_attention"):
            i = lin if name == "linear_attention" else soft
            ref = AttentionCase(model.blocks[i].attn, AngleSource(cfg), grid, False)
            rew = AttentionCase(mobile.blocks[i].attn, TableSource(mobile), grid,
                                cf and hasattr(mobile.blocks[i].attn, "forward_cf"))
            yield Case(name, f"block {i}, {shape_tok}", ref, rew, (x_tok,),
                       (x_cf if rew.channels_first else x_tok,), _flops(ref, (x_tok,)))
        elif name in ("linear_core", "softmax_core"):
            i = lin if name == "linear_core" else soft
            rew_cf = cf and hasattr(mobile.blocks[i].attn, "forward_cf")
            ref = AttentionCase(without_projections(model.blocks[i].attn, False), AngleSource(cfg), grid, False)
            rew = AttentionCase(without_projections(mobile.blocks[i].attn, rew_cf), TableSource(mobile), grid, rew_cf)
            yield Case(name, f"block {i} without qkv/proj, {shape_tok}", ref, rew, (x_tok,),
                       (x_cf if rew_cf else x_tok,), _flops(ref, (x_tok,)))
        elif name in ("linear_block", "softmax_block"):
            i = lin if name == "linear_block" else soft
            ref = BlockCase(model.blocks[i], AngleSource(cfg), grid, False)
            rew = BlockCase(mobile.blocks[i], TableSource(mobile), grid, cf)
            yield Case(name, f"block {i}, {shape_tok}", ref, rew, (x_blk, mod), (x_blk_cf, mod),
                       _flops(ref, (x_blk, mod)))
        elif name == "denoiser":
            latent = torch.randn(1, cfg.in_channels, t, h, w, generator=gen)
            args = (latent, torch.tensor([1000.0]), torch.tensor([2.0]))
            yield Case(name, f"{cfg.depth} blocks, latent 1x{cfg.in_channels}x{t}x{h}x{w}", model, mobile, args,
                       args, _flops(model, args))
        else:
            raise SystemExit(f"unknown case {name!r}; choose from {', '.join(CASES)}")


def _flops(module: nn.Module, args) -> float:
    return float(counted(module, *args)[0])


# ----------------------------------------------------------------------------------------------------------------
# runtimes
# ----------------------------------------------------------------------------------------------------------------

@contextlib.contextmanager
def _quiet():
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        yield


class OrtRunner:
    name = "ort"

    def __init__(self, module, args, workdir: Path, tag: str, threads: int, profile: bool):
        import onnxruntime as ort

        path = workdir / f"{tag}.onnx"
        t0 = time.perf_counter()
        with _quiet(), torch.no_grad():
            prog = torch.onnx.export(module, args, dynamo=True, opset_version=18, external_data=True, verbose=False)
            prog.save(str(path), external_data=True)
        del prog
        self.export_s = time.perf_counter() - t0
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
        # no spin-waiting: the two sessions alternate, and an idle session's spinning workers would steal the cores
        # from the other one (a bias of ~30 ms per run against whichever form runs second)
        opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
        opts.enable_profiling = profile
        opts.profile_file_prefix = str(workdir / f"{tag}_ort_profile")
        self.session = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
        names = [i.name for i in self.session.get_inputs()]
        if len(names) != len(args):
            raise RuntimeError(f"exported graph has inputs {names}, expected {len(args)}")
        self.feed = {n: a.numpy() for n, a in zip(names, args)}
        self.profile = profile

    def __call__(self):
        return torch.from_numpy(self.session.run(None, self.feed)[0])

    def op_profile(self) -> dict:
        path = self.session.end_profiling()
        agg = collections.Counter()
        runs = 0
        for event in json.loads(Path(path).read_text()):
            if event.get("cat") == "Node" and event["name"].endswith("_kernel_time"):
                agg[event["args"]["op_name"]] += event["dur"]
            if event.get("name") == "model_run":
                runs += 1
        return {op: round(us / 1e3 / max(runs, 1), 3) for op, us in agg.most_common(10)}


class XnnpackRunner:
    name = "xnnpack"

    def __init__(self, module, args, workdir: Path, tag: str, threads: int, profile: bool):
        from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner
        from executorch.exir import to_edge_transform_and_lower
        from executorch.runtime import Runtime

        t0 = time.perf_counter()
        with _quiet(), torch.no_grad():
            ep = torch.export.export(module, args, strict=False)
            edge = to_edge_transform_and_lower(ep, partitioner=[XnnpackPartitioner()], generate_etrecord=profile)
            self.delegation = _delegation(edge)
            et = edge.to_executorch()
        self.export_s = time.perf_counter() - t0
        self.etrecord = workdir / f"{tag}.etrecord"
        if profile:
            et.get_etrecord().save(str(self.etrecord))
        self.etdump = workdir / f"{tag}.etdump"
        program = Runtime.get().load_program(et.buffer, enable_etdump=profile,
                                             debug_buffer_size=0)
        self.program = program
        self.method = program.load_method("forward")
        self.args = list(args)
        self.profile = profile
        del et, edge, ep

    def __call__(self):
        return self.method.execute(self.args)[0]

    def op_profile(self) -> dict:
        try:
            from executorch.devtools import Inspector

            self.program.write_etdump_result_to_file(str(self.etdump), str(self.etdump) + ".debug")
            with _quiet():
                df = Inspector(etdump_path=str(self.etdump), etrecord=str(self.etrecord)).to_dataframe()
            col = "p50 (ms)" if "p50 (ms)" in df.columns else "avg (ms)"
            agg = collections.Counter()
            for _, row in df.iterrows():
                name = str(row["event_name"])
                if name.startswith(("Method::execute", "Program::load", "Method::init")):
                    continue
                agg[_xnn_op_type(name)] += float(row[col])
            return {k: round(v, 3) for k, v in agg.most_common(10)}
        except Exception as exc:  # profiling is best effort
            return {"error": f"{type(exc).__name__}: {exc}"[:200]}


def _xnn_op_type(event_name: str) -> str:
    """'Fully Connected (NC, F32) GEMM #3' → 'Fully Connected (NC, F32) GEMM'; 'native_call_add.out' kept."""
    return event_name.split(" #")[0]


def _delegation(edge) -> dict:
    try:
        from executorch.devtools.backend_debug import get_delegation_info

        info = get_delegation_info(edge.exported_program().graph_module)
        df = info.get_operator_delegation_dataframe()
        undelegated = {r["op_type"]: int(r["occurrences_in_non_delegated_graphs"]) for _, r in df.iterrows()
                       if r["op_type"] != "Total" and r["op_type"] != "getitem"
                       and int(r["occurrences_in_non_delegated_graphs"]) > 0}
        return {"delegated_nodes": int(info.num_delegated_nodes),
                "non_delegated_nodes": int(info.num_non_delegated_nodes), "non_delegated": undelegated}
    except Exception as exc:
        return {"error": str(exc)[:200]}


RUNNERS = {"ort": OrtRunner, "xnnpack": XnnpackRunner}


# ----------------------------------------------------------------------------------------------------------------
# measurement
# ----------------------------------------------------------------------------------------------------------------

def gemm_ceiling(threads: int, size: int = 2048, repeats: int = 5) -> float:
    torch.set_num_threads(threads)
    a, b = torch.randn(size, size), torch.randn(size, size)
    for _ in range(2):
        torch.mm(a, b)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        torch.mm(a, b)
        times.append(time.perf_counter() - t0)
    return 2 * size ** 3 / statistics.median(times) / 1e9


def machine_info(threads: int) -> dict:
    import onnxruntime

    from mi2v_export.contract import cpu_flags, cpu_model

    info = {"platform": platform.platform(), "python": platform.python_version(),
            "cpu_count": os.cpu_count(), "threads": threads, "torch": torch.__version__,
            "onnxruntime": onnxruntime.__version__}
    try:
        import executorch

        info["executorch"] = getattr(executorch, "__version__", "?")
    except ImportError:
        pass
    info.update(cpu=cpu_model(), flags=cpu_flags())
    with contextlib.suppress(Exception):
        info["load_avg"] = list(os.getloadavg())
    return info


def measure(case: Case, runtime: str, args, workdir: Path) -> dict:
    runner_cls = RUNNERS[runtime]
    row = {"name": case.name, "runtime": runtime, "shape": case.shape}
    try:
        ref = runner_cls(case.reference, case.ref_inputs, workdir, f"{case.name}_{runtime}_ref", args.threads,
                         args.profile)
        rew = runner_cls(case.rewritten, case.rew_inputs, workdir, f"{case.name}_{runtime}_rew", args.threads,
                         args.profile)
    except Exception as exc:
        row["error"] = f"export failed: {type(exc).__name__}: {exc}"[:500]
        return row
    with torch.no_grad():
        out_ref, out_rew = ref(), rew()
    expected = _to_reference_layout(case, out_rew, out_ref)
    row["max_abs_diff"] = float((expected - out_ref).abs().max())
    for _ in range(args.warmup):
        ref(), rew()
    t_ref, t_rew = [], []
    for _ in range(args.repeats):  # interleaved, so load changes hit both forms alike
        t0 = time.perf_counter()
        ref()
        t_ref.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        rew()
        t_rew.append(time.perf_counter() - t0)
    ref_ms, rew_ms = 1e3 * statistics.median(t_ref), 1e3 * statistics.median(t_rew)
    row.update(reference_ms=round(ref_ms, 3), rewritten_ms=round(rew_ms, 3), speedup=round(ref_ms / rew_ms, 3),
               gflops=round(case.flops / rew_ms / 1e6, 2), reference_gflops=round(case.flops / ref_ms / 1e6, 2),
               gflop=round(case.flops / 1e9, 3), export_s={"reference": round(ref.export_s, 1),
                                                          "rewritten": round(rew.export_s, 1)},
               spread_ms={"reference": [round(1e3 * min(t_ref), 2), round(1e3 * max(t_ref), 2)],
                          "rewritten": [round(1e3 * min(t_rew), 2), round(1e3 * max(t_rew), 2)]})
    if runtime == "xnnpack":
        row["delegation"] = {"reference": ref.delegation, "rewritten": rew.delegation}
    if args.profile:
        row["profile_ms"] = {"reference": ref.op_profile(), "rewritten": rew.op_profile()}
    del ref, rew
    gc.collect()
    return row


def _to_reference_layout(case: Case, out_rew: torch.Tensor, out_ref: torch.Tensor) -> torch.Tensor:
    """Rewritten attention/block outputs may be channels-first; bring them to the reference layout to compare."""
    from mi2v_export.kernels.layout import cf_to_tokens

    if out_rew.shape == out_ref.shape:
        return out_rew
    frames = case.rewritten.grid[0]
    return cf_to_tokens(out_rew, frames).reshape(out_ref.shape)


# ----------------------------------------------------------------------------------------------------------------
# CLI
# ----------------------------------------------------------------------------------------------------------------

def _parse_set(items) -> dict:
    out = {}
    for item in items or []:
        key, _, value = item.partition("=")
        low = value.lower()
        if low in ("true", "false"):
            out[key] = low == "true"
        else:
            try:
                out[key] = int(value)
            except ValueError:
                out[key] = value
    return out


def print_table(result: dict) -> None:
    from rich.console import Console
    from rich.table import Table

    ceiling = result["gemm_gflops"]
    table = Table(title=f"reference vs rewritten (plan {result['plan']}); fp32 GEMM ceiling {ceiling:.1f} GFLOP/s")
    for col in ("case", "runtime", "shape", "ref ms", "rewritten ms", "speedup", "GFLOP/s", "% ceiling", "max |diff|"):
        table.add_column(col, justify="left" if col in ("case", "runtime", "shape") else "right")
    for row in result["cases"]:
        if "error" in row:
            table.add_row(row["name"], row["runtime"], row["shape"], "-", "-", "-", "-", "-", row["error"][:60])
            continue
        table.add_row(row["name"], row["runtime"], row["shape"], f"{row['reference_ms']:.1f}",
                      f"{row['rewritten_ms']:.1f}", f"{row['speedup']:.2f}x", f"{row['gflops']:.1f}",
                      f"{100 * row['gflops'] / ceiling:.0f}%", f"{row['max_abs_diff']:.1e}")
    Console(width=200).print(table)
    for row in result["cases"]:
        if "profile_ms" in row:
            Console(width=200).print(f"[bold]{row['name']} / {row['runtime']}[/bold] top ops (ms per run): "
                            f"reference {row['profile_ms']['reference']}  rewritten {row['profile_ms']['rewritten']}")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="tiny preset on a small grid (smoke run)")
    p.add_argument("--json", type=Path, help="write the results here")
    p.add_argument("--repeats", type=int, default=None, help="timed runs per form (default 10, --quick 5)")
    p.add_argument("--warmup", type=int, default=2, help="untimed runs per form first")
    p.add_argument("--cases", default=",".join(CASES), help=f"comma list from {', '.join(CASES)}")
    p.add_argument("--runtimes", default=",".join(RUNTIMES), help="comma list from ort, xnnpack")
    p.add_argument("--plan", default="mobile", help="rewrite plan (reference, mobile, ane)")
    p.add_argument("--set", action="append", metavar="KEY=VALUE", help="override a RewritePlan field")
    p.add_argument("--preset", default=None, help="model preset (default mobilei2v-270m; --quick: tiny)")
    p.add_argument("--grid", default=None, help="latent T,H,W (default 3,23,40 = 720x1280x17; --quick 3,8,12)")
    p.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    p.add_argument("--profile", action="store_true", help="per-operator times (ORT profiling, ExecuTorch ETDump)")
    p.add_argument("--workdir", type=Path, default=None, help="keep exported artifacts here (default: temp dir)")
    args = p.parse_args(argv)
    args.repeats = args.repeats or (5 if args.quick else 10)
    preset = args.preset or ("tiny" if args.quick else "mobilei2v-270m")
    grid = tuple(int(v) for v in (args.grid or ("3,8,12" if args.quick else "3,23,40")).split(","))
    names = [c for c in args.cases.split(",") if c]
    runtimes = [r for r in args.runtimes.split(",") if r]
    for r in runtimes:
        if r not in RUNNERS:
            raise SystemExit(f"unknown runtime {r!r}; choose from {', '.join(RUNNERS)}")
    torch.set_num_threads(args.threads)
    from mi2v_export.kernels import describe_plan

    overrides = _parse_set(args.set)
    result = {"machine": machine_info(args.threads), "gemm_gflops": round(gemm_ceiling(args.threads), 2),
              "plan": args.plan, "preset": preset, "grid": list(grid),
              "rewrite": describe_plan(args.plan, grid=grid, schedule=[(1000.0, 2.0)], **overrides), "cases": []}
    print(f"fp32 GEMM ceiling (torch.mm 2048^3, {args.threads} threads): {result['gemm_gflops']} GFLOP/s",
          file=sys.stderr)
    tmp = None
    if args.workdir is None:
        tmp = tempfile.TemporaryDirectory(prefix="mi2v_bench_")
        workdir = Path(tmp.name)
    else:
        workdir = args.workdir
        workdir.mkdir(parents=True, exist_ok=True)
    try:
        for case in build_cases(names, preset, grid, args.plan, overrides):
            for runtime in runtimes:
                t0 = time.perf_counter()
                row = measure(case, runtime, args, workdir)
                result["cases"].append(row)
                print(f"{case.name:18s} {runtime:8s} " + (
                    row.get("error") or f"ref {row['reference_ms']:.1f} ms  rewritten {row['rewritten_ms']:.1f} ms"
                    f"  {row['speedup']:.2f}x  ({time.perf_counter() - t0:.0f} s)"), file=sys.stderr)
                if args.json:
                    args.json.write_text(json.dumps(result, indent=1))
            del case
            gc.collect()
    finally:
        if tmp is not None:
            tmp.cleanup()
    result["machine"]["load_avg_end"] = list(os.getloadavg())
    if args.json:
        args.json.write_text(json.dumps(result, indent=1))
    print_table(result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
