"""The Turbo-VAED decoder on the QNN HTP simulator one block at a time: its time per block at a size where the whole
decoder takes hours on the simulator (720x1280x17: ~2.9 TFLOP; the simulator runs 0.3-1 GFLOP/s on 2 cores).

    flock /tmp/mi2v-heavy.lock python benchmarks/qnn_decoder_blocks.py --resolution 720x1280 --frames 17 \
        --json benchmarks/results/qnn_720p_decoder_blocks.json [--list] [--stages all|NAME,...]

The decoder is split into its blocks (conv_in, every resnet, every 3-D upsampler, each pixel-shuffle upsampler with
the norm and SiLU before it, the final norm + SiLU + conv_out); chained they are the decoder. Each block chosen is
exported on its own as `mi2v export --target onnx --delegate qnn` exports a component (the QNN lowering rewrites,
torch.onnx dynamo, opset 18), compiled for the SoC's HTP in fp16 with CPU fallback disabled (every node on the HTP
or it fails), run on the simulator in a child process (killed after --sim-timeout) on its real input (the PyTorch
fp32 decode of the seeded example latent), and compared with its PyTorch fp32 output. Per block: GFLOP, node share
on the HTP, context-binary size, compile and simulator seconds, PSNR. By default the first block of each signature
(same graph on the same shapes) runs; the whole decode's simulator time is then the sum over all blocks of the
measured time, or the measured twin's, or (for blocks not run) GFLOP at the measured rate; the JSON says how many
seconds came from each. Seeded weights; the CPU model, flags and load are recorded (no phone figure).
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from mi2v_export.flops import counted
from mi2v_export.qnn import DEFAULT_SOC


class NormSiluThen(nn.Module):
    """The decoder's tail pattern `layer(silu(channel_rms_norm(x)))` as one stage."""

    def __init__(self, layer: nn.Module):
        super().__init__()
        self.layer = layer

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        from mi2v_export.models.turbo_vaed import channel_rms_norm

        return self.layer(F.silu(channel_rms_norm(x)))


def decoder_stages(decoder) -> dict[str, nn.Module]:
    """Block name → module in forward order (every resnet, upsampler and width-changing resnet on its own);
    chained they equal `TurboVAEDDecoder.forward`."""
    stages = {"conv_in": decoder.conv_in}
    stages.update({f"mid_block.resnets.{k}": r for k, r in enumerate(decoder.mid_block.resnets)})
    for i, block in enumerate(decoder.up_blocks):
        if block.conv_in is not None:
            stages[f"up_blocks.{i}.conv_in"] = block.conv_in
        if block.upsamplers is not None:
            stages[f"up_blocks.{i}.upsamplers.0"] = block.upsamplers[0]
        stages.update({f"up_blocks.{i}.resnets.{k}": r for k, r in enumerate(block.resnets)})
    for k in range(1, decoder.num_2d_stages + 1):
        stages[f"upsampler2d_{k}"] = NormSiluThen(getattr(decoder, f"upsampler2d_{k}"))
    stages["conv_out"] = NormSiluThen(decoder.conv_out)
    return stages


def signature(module: nn.Module, x: torch.Tensor) -> str:
    """Blocks with the same signature run the same graph on the same shapes (only weight values differ)."""
    params = ",".join(f"{n}{tuple(p.shape)}" for n, p in module.named_parameters())
    act = getattr(getattr(module, "first_activation", None), "__name__", "")
    return f"{type(module).__name__}{tuple(x.shape)}{act}[{params}]"


def stage_io(stages: dict[str, nn.Module], latent: torch.Tensor) -> dict[str, tuple]:
    """Each stage's (input, fp32 output, GFLOP, signature) on the decode of `latent`."""
    io, x = {}, latent
    for name, module in stages.items():
        flops, y = counted(module, x)
        io[name] = (x, y, flops / 1e9, signature(module, x))
        x = y
    return io


def measure_stage(name: str, module: nn.Module, x: torch.Tensor, ref: torch.Tensor, args, work: Path) -> dict:
    """One block on the simulator. When the HTP cannot hold it at this size (QNN_COMMON_ERROR_MEM_ALLOC when the
    graph is finalized: the 720p up_blocks.3 resnets), it runs on a row band of its input, halved until the HTP
    takes it (what a phone does with such a block), and its time is that band's times rows / band rows."""
    from mi2v_export.exporters import rewrites as rw
    from mi2v_export.exporters.base import get_exporter

    rows = x.shape[-2]
    while True:
        try:
            return simulate_block(name, module, x, ref, args, work, rows / x.shape[-2])
        except Exception as exc:  # noqa: BLE001 - the HTP's refusal comes as VerificationError (qnn.compile_failure)
            if "MEM_ALLOC" not in str(exc) or x.shape[-2] < 16:
                raise
        x = x[..., : x.shape[-2] // 2, :].contiguous()
        with rw.tracing(get_exporter("onnx", "qnn").trace_rewrites), torch.no_grad():
            ref = module(x)


def simulate_block(name: str, module: nn.Module, x: torch.Tensor, ref: torch.Tensor, args, work: Path,
                   tiles: float) -> dict:
    from mi2v_export import parity, qnn
    from mi2v_export.exporters import rewrites as rw
    from mi2v_export.exporters.base import get_exporter

    from qnn import simulate  # benchmarks/qnn.py: the simulator in a child process with a time limit

    source, ctx = work / f"{name}.onnx", work / f"{name}_ctx.onnx"
    if ctx.exists():  # the QNN EP refuses to overwrite an EPContext model (a rerun in the same --work)
        for f in [*qnn.context_binaries(ctx), ctx]:
            f.unlink(missing_ok=True)
    t0 = time.perf_counter()
    with rw.tracing(get_exporter("onnx", "qnn").trace_rewrites), torch.no_grad():
        torch.onnx.export(module, (x,), str(source), dynamo=True, opset_version=18, input_names=["x"],
                          output_names=["y"], verbose=False)
    record = {"export_s": round(time.perf_counter() - t0, 1), "tiles": round(tiles, 3), "tile_input_shape": list(x.shape)}
    found, compile_s = qnn.compile_context(source, ctx, args.soc, fp16=True)
    record.update(htp_node_share=found.htp_node_share, compile_s=round(compile_s, 1),
                  context_binary_bytes=sum(b.stat().st_size for b in qnn.context_binaries(ctx)))
    sim = simulate(ctx, {"x": x.numpy()}, args.soc, "fp16", args.sim_timeout)
    record["simulator"] = {"finished": sim["finished"], "seconds": round(sim["seconds"] * tiles, 1),
                           "tile_seconds": sim["seconds"], "timeout_s": args.sim_timeout}
    if sim["finished"]:
        record["simulator"].update(psnr_db=parity.psnr_db(sim["output"], ref.numpy()),
                                   rel_l2=parity.rel_l2(sim["output"], ref.numpy()))
    return record


def estimate(rows: dict) -> dict:
    """Whole-decode simulator seconds: each block as measured, else as its measured twin (same signature), else its
    GFLOP at the measured blocks' overall throughput; says how many seconds came from each."""
    done = {n: r for n, r in rows.items() if r.get("simulator", {}).get("finished")}
    if not done:
        return {}
    by_signature = {r["signature"]: r["simulator"]["seconds"] for r in done.values()}
    rate = sum(r["gflop"] for r in done.values()) / sum(r["simulator"]["seconds"] for r in done.values())
    parts, unpriced = {"measured": 0.0, "measured_twin": 0.0, "flop_rate": 0.0}, []
    for name, r in rows.items():
        if name in done:
            parts["measured"] += r["simulator"]["seconds"]
        elif r["signature"] in by_signature:
            parts["measured_twin"] += by_signature[r["signature"]]
        elif rate > 0:
            parts["flop_rate"] += r["gflop"] / rate
        else:
            unpriced.append(name)
    return {"seconds_from": {k: round(v, 1) for k, v in parts.items()}, "gflop_per_s_measured": round(rate, 4),
            "whole_decode_s": None if unpriced else round(sum(parts.values()), 1), "unpriced_blocks": unpriced,
            "kind": "sum of blocks: measured, or a measured twin block (same graph and shapes), or GFLOP at the "
                    "measured rate; separate simulator processes, so each block includes its own session load"}


def distinct(io: dict) -> list[str]:
    """The first block of each signature (the default --stages: every graph-and-shape measured once)."""
    seen, names = set(), []
    for name, (_, _, _, sig) in io.items():
        if sig not in seen:
            seen.add(sig)
            names.append(name)
    return names


def parse_args() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--preset", default="mobilei2v-270m")
    ap.add_argument("--resolution", default=None)
    ap.add_argument("--frames", type=int, default=None)
    ap.add_argument("--soc", default=DEFAULT_SOC)
    ap.add_argument("--stages", default=None,
                    help="comma-separated block names, or 'all' (default: the first block of each signature)")
    ap.add_argument("--list", action="store_true", help="print the blocks, their GFLOP and shapes, and exit")
    ap.add_argument("--sim-timeout", type=float, default=3600.0)
    ap.add_argument("--work", type=Path, default=None, help="folder for the stage models (default: temporary)")
    ap.add_argument("--json", type=Path, required=True)
    ap.add_argument("--resume", action="store_true", help="keep the blocks already measured in --json")
    args = ap.parse_args()
    args.error = ap.error
    return args


def load_blocks(args) -> tuple:
    """(blocks, their io, the result record without measurements) of the seeded decoder at the asked size."""
    from qnn import cpu_record

    from mi2v_export.exporters import components
    from mi2v_export.exporters import rewrites as rw
    from mi2v_export.exporters.base import get_exporter
    from mi2v_export.presets import get_preset
    from mi2v_export.shapes import geometry, parse_resolution

    preset = get_preset(args.preset)
    h, w = parse_resolution(args.resolution) if args.resolution else (preset.height, preset.width)
    geo = geometry(h, w, args.frames or preset.frames)
    spec = components.load_component("decoder", preset=preset.name, geo=geo, reference=False)
    decoder = spec.module.model.decoder
    rw.apply_rewrites(decoder, get_exporter("onnx", "qnn").rewrites)
    stages = decoder_stages(decoder)
    with rw.tracing(get_exporter("onnx", "qnn").trace_rewrites):
        io = stage_io(stages, next(iter(spec.inputs.values())))
    rows = {n: {"input_shape": list(x.shape), "output_shape": list(y.shape), "gflop": round(g, 4), "signature": sig}
            for n, (x, y, g, sig) in io.items()}
    result = {"component": "decoder", "model": spec.model, "preset": preset.name, "resolution": [h, w],
              "frames": geo.frames, "soc": args.soc, "precision": "fp16", "host": cpu_record(), "stages": rows}
    return stages, io, result


def resumed(args, result: dict) -> None:
    """With --resume, take the rows already measured in --json (same configuration, same block signature)."""
    before = json.loads(args.json.read_text()) if args.resume and args.json.is_file() else {}
    keys = ("preset", "resolution", "frames", "soc")
    if before and [before.get(k) for k in keys] != [result[k] for k in keys]:
        args.error(f"--resume: {args.json} holds another configuration")
    rows = result["stages"]
    for name, row in before.get("stages", {}).items():
        if "simulator" in row and name in rows and row.get("signature") == rows[name]["signature"]:
            rows[name] = row


def main() -> None:
    from qnn import cpu_record

    args = parse_args()
    stages, io, result = load_blocks(args)
    rows = result["stages"]
    if args.stages == "all":
        wanted = list(stages)
    else:
        wanted = args.stages.split(",") if args.stages else distinct(io)
    unknown = sorted(set(wanted) - set(stages))
    if unknown:
        args.error(f"unknown block(s) {', '.join(unknown)}; the blocks are: {', '.join(stages)}")
    if args.list:
        for n, r in rows.items():
            print(f"{n:28s} {r['gflop']:9.2f} GFLOP  {r['input_shape']} -> {r['output_shape']}"
                  f"{'  *' if n in wanted else ''}")
        return
    resumed(args, result)
    work = args.work or Path(tempfile.mkdtemp(prefix="mi2v-qnn-blocks-"))
    work.mkdir(parents=True, exist_ok=True)
    args.json.parent.mkdir(parents=True, exist_ok=True)
    for name in [n for n in wanted if "simulator" not in rows[n]]:
        x, y = io[name][:2]
        rows[name].update(measure_stage(name, stages[name], x, y, args, work))
        result["whole_decode"] = estimate(rows)
        args.json.write_text(json.dumps(result, indent=1, default=str))
        print(name, json.dumps(rows[name], default=str), flush=True)
    result["host_after"] = cpu_record()
    args.json.write_text(json.dumps(result, indent=1, default=str))


if __name__ == "__main__":
    main()
