"""Experiment: the Turbo-VAED's last stage as ONE model that streams row bands, carrying each convolution's last rows
(its state) from band to band, against the same stage run whole and the windows a budget picks.

Why: per-step streaming (mi2v_export/streaming.py) keeps a model per step resident and recomputes nothing, yet on
onnxruntime it fits no smaller budget than windows and runs about as slowly (docs/guides/memory.md). One model with
carried state has one set of buffers, band-sized maps and no halo at all. This script builds that model for the
Turbo-VAED steps (mi2v_export/models/turbo_vaed.py: resnets, the 3-D and 2-D up-samplers, the head), checks it
against the whole stage in PyTorch, exports it (to ONNX, or with `--runtime xnnpack` to an ExecuTorch XNNPACK
program, its 3-D convolutions folded into 2-D ones as the exporters fold them) and measures it next to the whole
stage in fresh processes. It is an experiment, not an export path: `mi2v export` does not write this form.

How a band runs (docs/guides/memory.md, "what it needs"): a convolution with vertical padding p reads its 2p-row
state above the band, pads only the columns and passes its last 2p input rows on; its output lags its input by p
rows (an up-sampler doubles the lag); a residual's shortcut waits in a delay state for its branch; rows outside
the frame are zeroed before each convolution (the frame's zero padding), the band's index being a model input; the
host feeds zero bands after the frame until the lag is drained and drops the lagged rows at the top.

    python benchmarks/stateful_stream.py --preset tiny --check            # PyTorch exactness only
    python benchmarks/stateful_stream.py --band 64 --json out.json        # 720p: export, time, memory
    python benchmarks/stateful_stream.py --band 64 --runtime xnnpack --json out.json
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from mi2v_export import contract
from mi2v_export.exporters import rewrites as rw
from mi2v_export.exporters.rewrites.modules import Conv3dAsConv2d
from mi2v_export.models import build_part, seed_part, turbo_vaed as tv
from mi2v_export.models.stages import _TurboHead, _Upsampler2dStep, fine_steps, stages_of
from mi2v_export.presets import get_preset


class Band:
    """One call's bookkeeping: the band index, the states read (in order) and written."""

    def __init__(self, n: torch.Tensor, states: list[torch.Tensor] | None):
        self.n, self.reading, self.written = n, list(states) if states is not None else None, []

    def state(self, like: torch.Tensor, rows: int) -> torch.Tensor:
        if self.reading is None:  # the first trace: every state starts as zeros (the rows above the frame)
            return like.new_zeros((*like.shape[:-2], rows, like.shape[-1]))
        return self.reading.pop(0)

    def mask(self, x: torch.Tensor, lag: int, frame: int) -> torch.Tensor:
        """Zero the rows outside [0, frame): row i of this band is global row n * rows - lag + i."""
        rows = self.n * x.shape[-2] - lag + torch.arange(x.shape[-2], dtype=self.n.dtype)
        keep = ((rows >= 0) & (rows < frame)).view(*([1] * (x.dim() - 2)), -1, 1)
        return torch.where(keep, x, torch.zeros((), dtype=x.dtype))  # not x * keep: a row of zeros through
        # onnxruntime's RMS norm comes out NaN (0 * inf), and NaN * 0 stays NaN

    def carried(self, x: torch.Tensor, rows: int) -> torch.Tensor:
        """[state; x], the last `rows` of which become the next state."""
        if rows == 0:
            return x
        cat = torch.cat([self.state(x, rows), x], dim=-2)
        self.written.append(cat[..., -rows:, :])
        return cat


class BandConv3d(Conv3dAsConv2d):
    """A Conv3d computed with 2-D convolutions (XNNPACK has no 3-D one; exporters/rewrites/modules.py) that also
    runs on a band (`band`): its rows unpadded, the carried state supplies them."""

    def __init__(self, conv3d: nn.Conv3d):
        super().__init__(conv3d)
        self.padding = tuple(int(p) for p in conv3d.padding)

    def band(self, x: torch.Tensor) -> torch.Tensor:
        whole = self.pad_hw
        self.pad_hw = (0, whole[1])
        try:
            return self.forward(x)
        finally:
            self.pad_hw = whole


def fold_conv3d(root: nn.Module) -> int:
    """Every Conv3d under `root` as a BandConv3d, in place (the ExecuTorch form of both the whole stage and the
    stateful one: they share their step modules); how many."""
    folded = 0
    for parent in list(root.modules()):
        for name, child in list(parent.named_children()):
            if type(child) is nn.Conv3d:
                setattr(parent, name, BandConv3d(child))
                folded += 1
    return folded


def conv(band: Band, module: nn.Module, x: torch.Tensor, lag: int, frame: int) -> tuple[torch.Tensor, int]:
    """A Conv3d / Conv2d with vertical padding p on a band: masked, its state above it, columns padded only."""
    p = module.padding[-2]
    x = band.carried(band.mask(x, lag, frame), 2 * p)
    if isinstance(module, BandConv3d):
        return module.band(x), lag + p
    pad = (*module.padding[:-2], 0, module.padding[-1])
    fn = F.conv3d if isinstance(module, nn.Conv3d) else F.conv2d
    return fn(x, module.weight, module.bias, module.stride, pad, module.dilation, module.groups), lag + p


def time_padded(band, m: nn.Module, x, lag, frame):
    if isinstance(m, tv.TimePaddedConv3d):
        before = m.time_pad if m.causal else m.time_pad // 2
        return conv(band, m.conv, tv.pad_time(x, before, m.time_pad - before), lag, frame)
    if isinstance(m, tv.DepthwiseSeparableConv3d):
        y, lag = conv(band, m.depthwise_conv, tv.pad_time(x, m.time_pad, m.time_pad), lag, frame)
        return m.pointwise_conv(y), lag
    raise TypeError(type(m).__name__)


def delayed(band: Band, x: torch.Tensor, rows: int) -> torch.Tensor:
    """x, `rows` rows later: what a residual's shortcut waits for its branch's lag."""
    return band.carried(x, rows)[..., : x.shape[-2], :]


def resnet(band, m: tv.ResnetBlock3d, x, lag, frame):
    h, l1 = time_padded(band, m.conv1, m.first_activation(tv.channel_rms_norm(x)), lag, frame)
    h, l2 = time_padded(band, m.conv2, F.silu(tv.channel_rms_norm(h)), l1, frame)
    if m.conv_shortcut is not None:
        x = m.conv_shortcut(m.norm3(x.movedim(1, -1)).movedim(-1, 1))
    return h + delayed(band, x, l2 - lag), l2


def step(band, m: nn.Module, x, lag, frame):
    """One fine step on a band: (output band, its lag, its frame rows)."""
    if isinstance(m, tv.ResnetBlock3d):
        y, lag = resnet(band, m, x, lag, frame)
        return y, lag, frame
    if isinstance(m, tv.Upsampler3d):
        y, lag = time_padded(band, m.conv, x, lag, frame)
        y = y.unflatten(1, (-1, 2)).transpose(2, 3).flatten(2, 3)
        return tv.per_frame(lambda f: F.pixel_shuffle(f, 2), y)[:, :, 1:], 2 * lag, 2 * frame
    if isinstance(m, _Upsampler2dStep):
        x = F.silu(tv.channel_rms_norm(x))
        y, lag = conv_frames(band, m.upsampler.conv, x, lag, frame)
        return tv.per_frame(lambda f: F.pixel_shuffle(f, 2), y), 2 * lag, 2 * frame
    if isinstance(m, _TurboHead):
        y, lag = time_padded(band, m.conv_out, F.silu(tv.channel_rms_norm(x)), lag, frame)
        return y, lag, frame
    raise TypeError(f"{type(m).__name__} has no streamed form here")


def conv_frames(band, m: nn.Conv2d, x, lag, frame):
    """A per-frame Conv2d on a (B, C, T, H, W) band."""
    b = x.shape[0]
    y, lag = conv(band, m, x.transpose(1, 2).flatten(0, 1), lag, frame)
    return y.unflatten(0, (b, -1)).transpose(1, 2), lag


class StatefulStage(nn.Module):
    """band (rows of the stage input), n (band index), *states → output band, *states."""

    def __init__(self, steps: list[nn.Module], frame: int):
        super().__init__()
        self.steps, self.frame = nn.ModuleList(steps), frame

    def run(self, x, n, states):
        band, lag, frame = Band(n, states), 0, self.frame
        for m in self.steps:
            x, lag, frame = step(band, m, x, lag, frame)
        return x, band.written, lag

    def forward(self, x, n, *states):
        y, written, _ = self.run(x, n, list(states))
        return (y, *written)


def stream_whole(stage: StatefulStage, x: torch.Tensor, rows: int, run=None) -> torch.Tensor:
    """The stage on `x` band by band (`run(band, n, states)` → (y, states); PyTorch by default)."""
    n0 = torch.zeros((), dtype=torch.float32)
    with torch.no_grad():
        y0, states, lag = stage.run(x[..., :rows, :], n0, None)
    states = [torch.zeros_like(s) for s in states]
    scale = y0.shape[-2] // rows
    out_rows, total = scale * rows, x.shape[-2] * scale
    calls = -(-(total + lag) // out_rows)
    run = run or (lambda b, n, s: _torch_call(stage, b, n, s))
    out = None
    for k in range(calls):
        band = x[..., k * rows:(k + 1) * rows, :]
        if band.shape[-2] < rows:
            band = F.pad(band, (0, 0, 0, rows - band.shape[-2]))
        y, states = run(band, k, states)
        if out is None:
            out = torch.empty((*y.shape[:-2], total, y.shape[-1]), dtype=y.dtype)
        lo = k * out_rows - lag
        a, b = max(lo, 0), min(lo + out_rows, total)
        if b > a:
            out[..., a:b, :] = torch.as_tensor(y)[..., a - lo:b - lo, :]
    return out


def _torch_call(stage, band, n, states):
    with torch.no_grad():
        y, *new = stage(band, torch.tensor(float(n)), *states)
    return y, new


def last_stage(preset: str):
    model = seed_part(build_part("turbo-vaed", preset), 0).eval()
    p = get_preset(preset)
    latent = (1, 128, 1 + (p.frames - 1) // 8, -(-p.height // 32), -(-p.width // 32))
    stages = stages_of(model, latent)
    steps = [s.module.steps[0] for s in fine_steps(stages[-1])]
    return stages, steps


def check(preset: str, rows: int, runtime: str = "onnxruntime") -> float:
    stages, steps = last_stage(preset)
    if runtime == "xnnpack":  # the form that is exported: 3-D convolutions folded into 2-D ones
        fold_conv3d(stages[-1].module)
    x = torch.randn(stages[-1].input_shape, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        ref = stages[-1].module(x)
    got = stream_whole(StatefulStage(steps, x.shape[-2]), x, rows)
    return float((got - ref).norm() / ref.norm())


# ---------------------------------------------------------------------------------------------------------------
# onnxruntime: export, then each form timed and measured in fresh processes


ORT_CHILD = r"""
import onnxruntime as ort
so = ort.SessionOptions(); so.enable_cpu_mem_arena = False; so.enable_mem_pattern = False
so.intra_op_num_threads = spec["threads"]
base = rss()
s = ort.InferenceSession(spec["model"], so, providers=["CPUExecutionProvider"])
names = [i.name for i in s.get_inputs()]
def call(*inputs):
    return s.run(None, dict(zip(names, inputs)))
"""

XNNPACK_CHILD = r"""
import torch
from executorch.runtime import Runtime
torch.set_num_threads(spec["threads"])
base = rss()
method = Runtime.get().load_program(spec["model"]).load_method("forward")
def call(*inputs):
    # np.ascontiguousarray would turn the 0-d band index into a 1-d array
    return [t.numpy() for t in method.execute([torch.from_numpy(i if i.flags.c_contiguous else i.copy())
                                               for i in inputs])]
"""

# What a child runs around its runtime's prologue (which defines `call` and takes `base` before loading): the stage
# whole, or band by band with its states, timed; the peak is this process's VmHWM above `base`.
CHILD = r"""
import json, sys, time
import numpy as np
from mi2v_export.runtimes import memory
memory.map_large_buffers()
spec = json.loads(sys.argv[1])
def rss():  # VmHWM, this process's own high-water mark (ru_maxrss keeps the parent's across exec)
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
exec(spec["prologue"])
x = np.load(spec["input"])
times = []
for _ in range(spec["runs"]):
    t0 = time.perf_counter()
    if spec["rows"]:
        states = [np.zeros(shape, np.float32) for shape in spec["state_shapes"]]
        rows, out = spec["rows"], None
        for k in range(spec["calls"]):
            band = x[..., k * rows:(k + 1) * rows, :]
            if band.shape[-2] < rows:
                band = np.pad(band, [(0, 0)] * (band.ndim - 2) + [(0, rows - band.shape[-2]), (0, 0)])
            y, *states = call(np.ascontiguousarray(band), np.array(float(k), np.float32), *states)
            if out is None:
                out = np.empty((*y.shape[:-2], spec["total"], y.shape[-1]), np.float32)
            lo = k * y.shape[-2] - spec["lag"]
            a, b = max(lo, 0), min(lo + y.shape[-2], spec["total"])
            if b > a:
                out[..., a:b, :] = y[..., a - lo:b - lo, :]
    else:
        out = call(x)[0]
    times.append(time.perf_counter() - t0)
np.save(spec["output"], out)
print(json.dumps({"run_s": times, "peak_bytes": rss() - base}))
"""
PROLOGUES = {"onnxruntime": ORT_CHILD, "xnnpack": XNNPACK_CHILD}
_PEAK = ("VmHWM of a fresh process ({how}) after loading the model and running it, minus its VmHWM before "
         "loading; the stage input is loaded after the baseline, the output kept")
PEAK_METHOD = {"onnxruntime": _PEAK.format(how="large buffers mapped, arena and memory pattern off, as a tiled "
                                               "stage runs"),
               "xnnpack": _PEAK.format(how="large buffers mapped; the ExecuTorch runtime imported before the "
                                           "baseline")}
SUFFIX = {"onnxruntime": ".onnx", "xnnpack": ".pte"}


def export_onnx(module: nn.Module, args: tuple, path: Path, names: list[str]) -> None:
    torch.onnx.export(module, args, str(path), input_names=names, dynamo=True, opset_version=18,
                      external_data=False)


def export_xnnpack(module: nn.Module, args: tuple, path: Path, names: list[str]) -> None:
    """torch.export → XNNPACK partitioner → .pte, with the Turbo-VAED's channel RMS traced in its delegable form
    (as the ExecuTorch exporter traces it; its convolutions already folded by fold_conv3d)."""
    from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner
    from executorch.exir import to_edge_transform_and_lower

    with rw.tracing(("channel_rms_view",)), torch.no_grad():
        program = torch.export.export(module, args, strict=False)
        edge = to_edge_transform_and_lower(program, partitioner=[XnnpackPartitioner()])
    path.write_bytes(edge.to_executorch().buffer)


EXPORTS = {"onnxruntime": export_onnx, "xnnpack": export_xnnpack}


def child(spec: dict) -> dict:
    got = subprocess.run([sys.executable, "-c", CHILD, json.dumps(spec)], capture_output=True, text=True,
                         timeout=3600)
    if got.returncode:
        raise SystemExit(got.stderr.strip().splitlines()[-1])
    return json.loads(got.stdout.strip().splitlines()[-1])


def measure(args) -> dict:
    stages, steps = last_stage(args.preset)
    if args.runtime == "xnnpack":
        fold_conv3d(stages[-1].module)
        rw.apply_rewrites(stages[-1].module, ("layer_norm_view",))
    work = Path(args.work or tempfile.mkdtemp(prefix="mi2v-stateful-"))
    work.mkdir(parents=True, exist_ok=True)
    x = torch.randn(stages[-1].input_shape, generator=torch.Generator().manual_seed(0))
    np.save(work / "x.npy", x.numpy())
    unit = get_preset(args.preset).height and (stages[-1].output_shape[-2] // x.shape[-2])
    rows = args.band // unit  # stage-input rows per band
    stage = StatefulStage(steps, x.shape[-2]).eval()
    n0 = torch.zeros((), dtype=torch.float32)
    with torch.no_grad():
        _, states, lag = stage.run(x[..., :rows, :], n0, None)
    states = [torch.zeros_like(s) for s in states]
    t0 = time.perf_counter()
    stateful, whole = (work / f"{name}{SUFFIX[args.runtime]}" for name in ("stateful", "whole"))
    if not (args.reuse and stateful.exists() and whole.exists()):
        export = EXPORTS[args.runtime]
        export(stage, (x[..., :rows, :].contiguous(), n0, *states), stateful,
               ["x", "n", *[f"s{i}" for i in range(len(states))]])
        export(stages[-1].module.eval(), (x,), whole, ["x"])
    export_s = time.perf_counter() - t0
    total = stages[-1].output_shape[-2]
    out_rows = total // x.shape[-2] * rows
    forms = {"whole stage": {"model": str(whole), "rows": 0},
             f"stateful, {args.band}-row bands": {"model": str(stateful), "rows": rows,
                                                 "calls": -(-(total + lag) // out_rows), "lag": lag,
                                                 "total": total, "state_shapes": [list(t.shape) for t in states]}}
    records = {name: {"runs_s": [], "peaks": []} for name in forms}
    for r in range(args.rounds):
        for name, f in forms.items():
            got = child({**f, "input": str(work / "x.npy"), "output": str(work / f"{name[:5]}.npy"),
                         "runs": args.per_process, "threads": os.cpu_count(), "prologue": PROLOGUES[args.runtime]})
            records[name]["runs_s"] += got["run_s"]
            records[name]["peaks"].append(got["peak_bytes"])
    ref = np.load(work / "whole.npy").astype(np.float64)
    got = np.load(work / "state.npy").astype(np.float64)
    base = statistics.median(records["whole stage"]["runs_s"])
    for name, rec in records.items():
        rec["median_s"] = statistics.median(rec["runs_s"])
        rec["time_ratio_vs_whole"] = rec["median_s"] / base
        rec["peak_bytes_median"] = int(statistics.median(rec["peaks"]))
    return {"benchmark": "stateful_stream", "runtime": args.runtime, "preset": args.preset, "band_px": args.band,
            "stage_input": list(x.shape), "stage_output": list(stages[-1].output_shape), "states": len(states),
            "lag_rows": lag, "export_s": export_s, **({"note": args.note} if args.note else {}),
            "rounds": args.rounds, "per_process": args.per_process,
            "rel_l2_vs_whole": float(np.linalg.norm(got - ref) / np.linalg.norm(ref)),
            "pytorch_rel_l2": check(args.preset, rows, args.runtime) if args.preset == "tiny" else None,
            "peak_method": PEAK_METHOD[args.runtime],
            "machine": {"cpu_model": contract.cpu_model(), "cpu_flags": contract.cpu_flags(),
                        "cores": os.cpu_count(), "load_average": list(os.getloadavg())},
            "forms": records}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--preset", default="mobilei2v-270m")
    ap.add_argument("--band", type=int, default=64, help="video rows per band (a multiple of the stage's unit)")
    ap.add_argument("--runtime", choices=sorted(EXPORTS), default="onnxruntime")
    ap.add_argument("--check", action="store_true", help="PyTorch exactness only")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--per-process", type=int, default=2)
    ap.add_argument("--work")
    ap.add_argument("--reuse", action="store_true", help="keep the models already in --work (time them again)")
    ap.add_argument("--note", help="what ran beside, recorded in the results file")
    ap.add_argument("--json")
    args = ap.parse_args()
    if args.check:
        stages, _ = last_stage(args.preset)
        unit = stages[-1].output_shape[-2] // stages[-1].input_shape[-2]
        print(json.dumps({"rel_l2_vs_whole": check(args.preset, max(args.band // unit, 1), args.runtime)}))
        return
    result = measure(args)
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2))
    for name, rec in result["forms"].items():
        print(f"{name:>28}: {rec['median_s']:.2f} s ({rec['time_ratio_vs_whole']:.2f}x), peak "
              f"{rec['peak_bytes_median'] / 2**20:.0f} MiB")
    print(f"rel L2 vs whole: {result['rel_l2_vs_whole']:.1e}, {result['states']} states, lag {result['lag_rows']}")


if __name__ == "__main__":
    main()
