"""`mi2v export`: lower encoder / denoiser / decoder to ONNX, Core ML or ExecuTorch, verify, write manifest.json.

All the work is in `mi2v_export.exporters` (`orchestrate.run_export`); this module parses flags, shows the
exporters' progress events (commands/_render.py `stage_spinners`, on stderr) and prints a summary table (or, with
--json, the run's manifest entries).
"""

from __future__ import annotations

import signal
from pathlib import Path

import typer
from rich.table import Table

from ..contract import AttentionPlan, ComputeUnit, ExportDtype, Soc, choices
from ..errors import Mi2vError
from ..exporters.base import delegate_names, target_names
from ..interrupts import recorded_interrupts
from ..parity import TRAJECTORY_MARGIN_DB
from ..presets import get_preset
from ..qnn import DEFAULT_SOC
from ._options import (Checkpoints, Components, Decoder, Frames, Json, MemoryBudget, MinPsnr, Out, Preset, Resolution,
                       refine)
from ._render import (console, human_bytes, note, print_json, result_notes, spinners_view, stage_spinners,
                      stdout_to_stderr)

DEFAULT_PRESET = "mobilei2v-270m"  # --preset left out: the released model, at its 720p size
# --target and --delegate: what the exporters registered (exporters/targets), nothing listed here
Target = choices("Target", target_names())
Delegate = choices("Delegate", delegate_names())


class ExportInterrupted(Mi2vError):
    """Ctrl-C / SIGTERM during an export. Raised as a Mi2vError because Typer, run with standalone_mode=False,
    turns a KeyboardInterrupt into a *returned* exit code that the CLI shell would otherwise drop."""

    exit_code = 130


def _fmt_parity(p: dict) -> str:
    if not p.get("verified_on"):
        return "—"
    gate = p.get("gate") or {}
    if gate.get("metric") == "psnr_db":
        return f"PSNR {float(p['psnr_db']):.1f} dB"
    return f"rel_l2 {float(p['rel_l2']):.1e}"


def _note_default_preset(preset, resolution: str | None, frames: int | None) -> None:
    """Without --preset the export is the released 270M model at 720p: tens of minutes and gigabytes of memory
    and disk. Say so before it starts (a first try with the defaults should not look like a hang)."""
    if preset is not None:
        return
    default = get_preset(DEFAULT_PRESET)
    size = f"{resolution or f'{default.height}x{default.width}'}, {frames or default.frames} frames"
    note(f"no --preset given: this is the full {DEFAULT_PRESET} export ({size}), a multi-GB run; "
         "--preset tiny is the quick test")


def export(
    target: Target = typer.Option(..., "--target", help="export format"),
    delegate: Delegate | None = typer.Option(None, "--delegate", help="executorch: xnnpack (default) | vulkan | qnn | "
                                            "coreml; onnx: qnn (onnxruntime's QNN EP, needs --soc)"),
    component: Components = "all",
    decoder: Decoder = "turbo-vaed",
    preset: refine(Preset, help=f"model preset (default: {DEFAULT_PRESET}, the full 720p model: a multi-GB "
                   "run)") = None,
    checkpoint: Checkpoints = [],
    resolution: Resolution = None,
    frames: Frames = None,
    dtype: ExportDtype | None = typer.Option(None, "--dtype", help="fp32 | fp16: alias of --precision fp32|fp16"),
    precision: str | None = typer.Option(None, "--precision", help="fp32 | fp16 | w8a8 | w8 | w4 | w8a16, or per "
                                         "component: denoiser=w8a8,decoder=fp16,encoder=fp16 (default: fp16 for "
                                         "Core ML and the coreml/qnn delegates, fp32 otherwise)"),
    calibration: Path | None = typer.Option(None, "--calibration", help="folder of images to calibrate 8-bit "
                                            "activations on (default: the photos shipped with mi2v)"),
    min_psnr: refine(MinPsnr, help="trajectory gate: per-frame PSNR floor in dB (default: the precision's, see "
                     "README)") = None,
    gate_margin: float = typer.Option(TRAJECTORY_MARGIN_DB, "--gate-margin", help="integer precisions clear the trajectory gate by "
                                      "this many dB, keeping their costliest units float when they do not "
                                      "(docs: Precision, margin); 0 exports every unit at the precision"),
    recipe: Path | None = typer.Option(None, "--recipe", help="mixed precision: a recipe JSON (unit → precision) "
                                       "from `mi2v quantize analyze`"),
    attention: AttentionPlan = typer.Option("reference", "--attention", help="denoiser attention plan: reference "
                                            "| mobile (exact rewrites for CPU runtimes) | ane (mobile + "
                                            "channels-first layout and Apple's split-einsum tiles, for Core ML)"),
    rewrite: list[str] = typer.Option([], "--rewrite", help="change one rewrite of the plan, NAME=VALUE "
                                      "(repeatable): linear_attention, softmax_attention, channels_first, "
                                      "rope_tables, fp32_accumulate = true|false; linear_heads_per_group, "
                                      "softmax_heads_per_group, query_chunk = N; softmax = native|split"),
    out: refine(Out, help="output folder (artifacts + manifest.json)") = Path("artifacts"),
    no_verify: bool = typer.Option(False, "--no-verify", help="skip running the artifact against PyTorch "
                                   "(recorded in the manifest)"),
    no_test_vectors: bool = typer.Option(False, "--no-test-vectors", help="do not write the test vectors (sampler "
                                         "inputs + PyTorch outputs: testdata/<component>/ for ONNX, "
                                         "<component>.bpte for ExecuTorch, testdata/<file>.npz for Core ML) that "
                                         "`mi2v verify` and `mi2v bench` check the artifact with"),
    etrecord: bool = typer.Option(False, "--etrecord", help="executorch: also write <component>.etrecord for "
                                  "per-op profiling"),
    compute_units: ComputeUnit = typer.Option("all", "--compute-units", help="Core ML compute units"),
    min_ios: int = typer.Option(17, "--min-ios", min=17, max=18, help="Core ML minimum deployment target: 17 | 18"),
    soc: Soc = typer.Option(DEFAULT_SOC, "--soc", help="QNN: the Snapdragon SoC to compile for (README: SoC table)"),
    allow_cpu_fallback: bool = typer.Option(False, "--allow-cpu-fallback", help="onnx/qnn: accept nodes the HTP "
                                            "refuses (onnxruntime runs them on the CPU; node and FLOP shares on "
                                            "the HTP are recorded). Default: every node on the HTP or exit 4"),
    tile: str | None = typer.Option(None, "--tile", help="encoder / decoder: run in tiles of HxW video pixels "
                                    "(multiples of 32); the halo covers each stage's receptive field, so the "
                                    "stitched output is exact"),
    halo: int | None = typer.Option(None, "--halo", help="with --tile: a smaller halo in video pixels (multiple "
                                    "of 32); the overlaps are blended and the error is measured"),
    memory_budget: refine(MemoryBudget, help="encoder / decoder: the largest tile whose measured peak (fresh "
                          "process, above the runtime's baseline) fits this many MiB") = None,
    stream_rows: int | None = typer.Option(None, "--stream-rows", help="encoder / decoder: run every stage step "
                                           "by step in full-width bands of this many video rows (multiple of 32), "
                                           "keeping only the rows the next step needs; exact"),
    time_chunk: int | None = typer.Option(None, "--time-chunk", help="encoder / decoder: run each stage whose "
                                          "temporal field allows it in chunks of this many video frames (multiple "
                                          "of 8) plus a halo of frames; exact. Pays on long clips; alone or with "
                                          "--tile / --memory-budget"),
    json_out: refine(Json, help="print this run's manifest entries as JSON on stdout") = False,
) -> None:
    """Export MobileI2V components to ONNX / Core ML / ExecuTorch, check them against PyTorch fp32, and describe
    them in OUT/manifest.json. Nothing is moved into OUT unless every component exported and passed its gate."""
    from ..exporters.orchestrate import ExportRequest, prepare, run_export  # torch: not at `mi2v --help`

    request = ExportRequest(target=target.value, out_dir=out, components=component,
                            delegate=delegate.value if delegate else None, decoder=decoder.value,
                            preset=preset.value if preset else DEFAULT_PRESET, checkpoints=list(checkpoint),
                            resolution=resolution, frames=frames,
                            dtype=dtype.value if dtype else None, precision=precision, calibration=calibration,
                            min_psnr=min_psnr, gate_margin=gate_margin, recipe=recipe, attention=attention.value, rewrite=list(rewrite),
                            verify=not no_verify, test_vectors=not no_test_vectors, etrecord=etrecord,
                            compute_units=compute_units.value, min_ios=min_ios, soc=soc.value,
                            allow_cpu_fallback=allow_cpu_fallback, tile=tile, halo=halo,
                            memory_budget=memory_budget, stream_rows=stream_rows, time_chunk=time_chunk)
    _note_default_preset(preset, resolution, frames)
    plan = prepare(request)  # bad flags, missing SDKs, wrong checkpoints fail here, before any model is built

    # Ctrl-C and SIGTERM unwind the export (staging folder removed, output folder untouched). `interrupts.seen`
    # records the signal: a library may re-raise the KeyboardInterrupt as its own error (torch.export does), and
    # Python drops one raised inside a weakref callback, so run_export also asks at every stage and before the commit.
    with recorded_interrupts(signal.SIGINT, signal.SIGTERM) as interrupts:
        try:
            with stdout_to_stderr(json_out), spinners_view() as view:
                report = run_export(plan, stage_spinners(view), stop_requested=lambda: interrupts.seen)
        except BaseException:  # whatever the signal surfaced as
            if not interrupts.seen:
                raise
            raise ExportInterrupted(f"interrupted; nothing was written to {out} (earlier artifacts there are "
                                    "untouched)") from None

    if json_out:
        print_json({"out_dir": str(report.out_dir), "manifest": str(report.out_dir / "manifest.json"),
                    "artifacts": [e.to_dict() for e in report.entries]})
        return
    _print_summary(report)


def _print_summary(report) -> None:
    """The table of what was exported, `note:` lines on delegation, skipped runs and extra files, the manifest."""
    table = Table(title=f"exported to {report.out_dir}")
    for col in ("component", "target", "precision", "file", "size", "time", "peak RSS", "parity", "verified on"):
        table.add_column(col, justify="right" if col in ("size", "time", "peak RSS") else "left", no_wrap=True)
    notes = []
    for e in report.entries:
        tgt = e.target + (f"/{e.delegate}" if e.delegate else "")
        verified = ", ".join(r.get("runtime", "?") for r in e.verified_on) or "—"
        table.add_row(e.component, tgt, e.precision or e.dtype, e.file, human_bytes(e.bytes),
                      f"{e.export['wall_s']:.1f}s", human_bytes(e.export["peak_rss_bytes"]), _fmt_parity(e.parity),
                      verified)
        if e.parity.get("reason"):
            notes.append(f"{e.file}: not run here — {e.parity['reason']} (structural checks passed)")
        if e.delegation:
            d = e.delegation
            share = d.get("flops_share_delegated")
            notes.append(f"{e.file}: {d['ops_delegated']} ops delegated in {d['delegated_subgraphs']} subgraph(s), "
                         f"{d['ops_portable']} on portable kernels"
                         + (f"; {share * 100:.1f}% of conv/matmul FLOPs delegated" if share is not None else ""))
        for f in e.extra_files:
            notes.append(f"{f.file}: {f.role.replace('_', ' ')} ({human_bytes(f.bytes)})")
        if e.tiling:
            t = e.tiling
            per = " / ".join(f"{h}x{w}" for h, w in t.get("stage_tiles") or [t["tile"]])
            chunks = [n for n in t.get("time_chunks") or [] if n > 1]
            asked = f"{t['time_chunk']} frames: " if t.get("time_chunk") else ""
            timed = f", chunked in time ({asked}{' / '.join(map(str, chunks))} chunks)" if chunks else ""
            notes.append(f"{e.file}: tiled {per} px ({len(t['stages'])} stages){timed}, {t['tiles']} tile runs per "
                         f"call, {'exact' if t['exact'] else 'blended'}")
        memory = (e.runtime_memory or {}).get("bytes")
        if memory is not None:
            notes.append(f"{e.file}: runs in {human_bytes(memory)} above the runtime's baseline (measured)")
    console.print(table, width=None if console.is_terminal else 160)
    result_notes(notes)
    console.print(f"manifest: {report.out_dir / 'manifest.json'}")


def register(app: typer.Typer) -> None:
    app.command("export")(export)
