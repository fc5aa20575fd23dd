"""`mi2v generate`: image → video with MobileI2V, in PyTorch or on exported artifacts, optionally checked against
the PyTorch fp32 reference (`--compare-to reference --report REPORT.json`)."""

from __future__ import annotations

from enum import Enum

import typer
from rich.table import Table

from ._options import (AllowModified, ArtifactFolders, Checkpoints, Decoder, Frames, Image, MemoryBudget, MinPsnr, Out,
                       Preset, Report, Resolution, Steps, refine)
from ._render import bars_view, console, human_bytes, is_quiet, result_notes, say, stage_bars

Fallback = Enum("Fallback", {"none": "none", "pytorch": "pytorch"}, type=str)
Posterior = Enum("Posterior", {"sample": "sample", "mean": "mean"}, type=str)
Fit = Enum("Fit", {"stretch": "stretch", "cover": "cover"}, type=str)
CompareTo = Enum("CompareTo", {"reference": "reference"}, type=str)

STAGE_LABELS = {"load": "load models", "encode": "encode image", "denoise": "denoise", "decode": "decode video",
                "compare": "compare (PSNR, SSIM)", "write": "write video"}


def generate(
    image: Image = ...,
    out: refine(Out, help="output video, .mp4 (H.264); a contact sheet <name>_contact.png is written next to "
                "it") = ...,
    checkpoint: Checkpoints = [],
    artifacts: ArtifactFolders = [],
    use: list[str] = typer.Option([], "--use", help="which artifact runs when a folder holds several for a "
                                  "component: 'executorch' (all) or 'denoiser=executorch' (repeatable); default: "
                                  "the first this host can run, in the order onnx, executorch, coreml, litert"),
    fallback: Fallback = typer.Option("none", help="component missing from --artifacts: none (error) or pytorch"),
    preset: refine(Preset, help="model preset (default: the artifacts' or mobilei2v-270m)") = None,
    decoder: refine(Decoder, help="default: the artifacts', the checkpoints', else turbo-vaed") = None,
    steps: Steps = 2,
    seed: int = typer.Option(0, help="seed of the CPU noise generator"),
    resolution: refine(Resolution, help="HEIGHTxWIDTH, multiples of 4 (default: the artifacts' or the preset's, e.g. "
                       "720x1280)") = None,
    frames: refine(Frames, help="video frames, 8k+1 (default: the artifacts' or the preset's)") = None,
    flow_score: float = typer.Option(2.0, "--flow-score", help="motion amount (mean optical-flow score the model "
                                     "was trained on; higher = more motion)"),
    posterior: Posterior = typer.Option("sample", help="reference latent: sample the LTX posterior like upstream "
                                        "(falls back to the mean when an encoder artifact has no logvar) or mean"),
    fit: Fit = typer.Option("stretch", help="image → video size: stretch (upstream) or cover (scale, "
                            "centre-crop)"),
    fps: int = typer.Option(17, min=1, help="frames per second of the MP4"),
    compare_to: CompareTo | None = typer.Option(None, "--compare-to", help="reference: also run PyTorch fp32 "
                                                "with the same seed and compare (needs --artifacts)"),
    report_path: refine(Report, help="with --compare-to: write the report (latent_rel_err per step, psnr_db and ssim "
                     "per frame) here") = None,
    min_psnr: refine(MinPsnr, help="with --compare-to: per-frame PSNR gate in dB (default 40 for fp32 artifacts, 30 "
                     "for fp16)") = None,
    allow_modified: AllowModified = False,
    memory_budget: refine(MemoryBudget, help="MiB: run only artifacts whose measured runtime memory (manifest) "
                          "fits, e.g. the tiled decoder among several; the stages load one at a time") = None,
) -> None:
    """Generate a video from an image: encode → denoise (flow-matching Euler) → decode.

    No classifier-free guidance: the MobileI2V denoiser ignores the text prompt, so CFG would be a no-op and there
    is no prompt or --cfg-scale option. Motion is set with --flow-score.
    """
    from .. import pipeline as pl  # torch: not at `mi2v --help`

    request = pl.GenerateRequest(
        image=image, out=out, checkpoints=list(checkpoint), artifacts=list(artifacts), use=list(use),
        fallback=fallback.value, preset=preset and preset.value, decoder=decoder and decoder.value, steps=steps,
        seed=seed, resolution=resolution, frames=frames, flow_score=flow_score, posterior=posterior.value,
        fit=fit.value, fps=fps, compare_to=compare_to and compare_to.value, report=report_path, min_psnr=min_psnr,
        allow_modified=allow_modified, memory_budget=memory_budget)
    plan = pl.plan_generate(request)  # bad flags, images, folders fail here, before any model is built
    geo = plan.config.geometry
    say(f"mi2v generate {image.name} → {out.name}: {plan.preset}, {geo.height}x{geo.width}x{geo.frames} (latent "
        f"{'x'.join(map(str, geo.latent_shape[1:]))}), {steps} step(s), seed {seed}, flow score {flow_score:g}, "
        f"decoder {plan.decoder}")
    with bars_view() as view:
        run = pl.run_generate(request, stage_bars(view, STAGE_LABELS), plan=plan)
    if not is_quiet():  # per-stage timings: a report of the run, not its result
        _print_summary(run.result, run.reference, run.seconds)
    result_notes(run.notes, style="yellow")  # seeded weights (stages or artifacts) included: the video is then noise
    wrote_report = run.comparison is not None and report_path is not None
    console.print(f"wrote {out} and {run.sheet}" + (f" and {report_path}" if wrote_report else ""))
    if run.comparison is not None:
        _print_comparison(run.comparison)
        pl.check_psnr_gate(run.comparison)


def _print_summary(result, reference, host_s: dict) -> None:
    table = Table(title="per-stage timings (host)")
    table.add_column("stage")
    table.add_column("back-end")
    table.add_column("seconds", justify="right")
    if reference is not None:
        table.add_column("reference (pytorch fp32) s", justify="right")

    def row(name, backend, value, ref=None):
        cells = [name, backend, f"{value:.3f}"]
        if reference is not None:
            cells.append("" if ref is None else f"{ref:.3f}")
        table.add_row(*cells)

    def ref(key):
        return reference.timings[key] if reference is not None else None

    row("check models", "", host_s["run"], host_s.get("reference"))
    row("load each stage before it runs", "", result.timings.get("load", 0.0), ref("load"))
    row("preprocess", "", result.timings["preprocess"], ref("preprocess"))
    row("encode", result.backends["encoder"], result.timings["encode"], ref("encode"))
    n = len(result.step_times)
    per = result.timings["denoise"] / n
    row(f"denoise ({n} step{'s' if n > 1 else ''}, {per:.3f} s/step)", result.backends["denoiser"],
        result.timings["denoise"], ref("denoise"))
    row("decode", result.backends["decoder"], result.timings["decode"], ref("decode"))
    row("postprocess", "", result.timings["postprocess"], ref("postprocess"))
    if "compare" in host_s:
        row("compare (latents, PSNR, SSIM)", "", host_s["compare"])
    row("write mp4 + contact sheet", "", host_s["write"])
    console.print(table)
    peak, base = result.memory.get("peak_rss_bytes"), result.memory.get("baseline_rss_bytes")
    if peak is not None:
        console.print(f"run peak resident memory: {human_bytes(peak)} ({human_bytes(peak - (base or 0))} above the "
                      "process before the run; one stage loaded at a time)")


def _print_comparison(comparison: dict) -> None:
    s = comparison["summary"]
    table = Table(title="artifacts vs PyTorch fp32 (same seed)")
    table.add_column("step")
    table.add_column("t", justify="right")
    table.add_column("latent rel err", justify="right")
    for st in comparison["steps"]:
        table.add_row(str(st["step"]), f"{st['timestep']:.3f}", f"{st['latent_rel_err']:.2e}")
    console.print(table)
    psnrs = " ".join(f"{f['psnr_db']:.1f}" for f in comparison["frames"])
    console.print(f"per-frame PSNR dB: {psnrs}")
    console.print(f"min PSNR {s['min_psnr_db']:.1f} dB (gate {s['threshold_psnr_db']:.0f} dB), min SSIM "
                  f"{s['min_ssim']:.4f}: " + ("[green]PASS[/]" if s["passed"] else "[red]FAIL[/]"))


def register(app: typer.Typer) -> None:
    app.command("generate")(generate)
