"""`mi2v generate`: image → video with MobileI2V, in PyTorch or on exported artifacts, optionally checked against
the PyTorch fp32 reference (`--compare-to reference --report REPORT.json`)."""

from __future__ import annotations

import gc
import time
import warnings
from enum import Enum
from pathlib import Path

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from ..contract import DecoderKind, PresetName
from ._render import console

Fallback = Enum("Fallback", {"none": "none", "pytorch": "pytorch"}, type=str)
Posterior = Enum("Posterior", {"sample": "sample", "mean": "mean"}, type=str)
Fit = Enum("Fit", {"stretch": "stretch", "cover": "cover"}, type=str)
CompareTo = Enum("CompareTo", {"reference": "reference"}, type=str)

STAGE_LABELS = {"load": "load models", "encode": "encode image", "denoise": "denoise", "decode": "decode video"}


def generate(
    image: Path = typer.Option(..., "--image", help="input image (PNG, JPEG, WebP, …); grayscale/alpha are converted"),
    out: Path = typer.Option(..., "--out", help="output video, .mp4 (H.264); a contact sheet <name>_contact.png "
                             "is written next to it"),
    checkpoint: list[Path] = typer.Option([], "--checkpoint", help="weights file (repeatable): denoiser, LTX VAE "
                                          "and/or Turbo-VAED; parts are detected from the keys. Parts without a "
                                          "file use seeded random weights (noise video, for testing)"),
    artifacts: list[Path] = typer.Option([], "--artifacts", help="folder written by `mi2v export` (repeatable; for "
                                         "each component the first folder that has it wins: .onnx → onnxruntime, "
                                         ".pte → ExecuTorch, .mlpackage → Core ML on macOS)"),
    use: list[str] = typer.Option([], "--use", help="which artifact runs when a folder holds several for a "
                                  "component: 'executorch' (all) or 'denoiser=executorch' (repeatable); default: "
                                  "the first this host can run, in the order onnx, executorch, coreml"),
    fallback: Fallback = typer.Option("none", help="component missing from --artifacts: none (error) or pytorch"),
    preset: PresetName | None = typer.Option(None, help="model preset (default: the artifacts' or "
                                             "mobilei2v-270m)"),
    decoder: DecoderKind | None = typer.Option(None, help="default: the artifacts', the checkpoints', else "
                                               "turbo-vaed"),
    steps: int = typer.Option(2, min=1, help="flow-matching Euler steps (shift 3): 1 → t=[1000], 2 → [1000, 8.929], "
                              "N → the shifted grid; upstream's multi-step default is 30"),
    seed: int = typer.Option(0, help="seed of the CPU noise generator"),
    resolution: str | None = typer.Option(None, help="HEIGHTxWIDTH, multiples of 4 (default: the artifacts' or "
                                          "the preset's, e.g. 720x1280)"),
    frames: int | None = typer.Option(None, help="video frames, 8k+1 (default: the artifacts' or the preset's)"),
    flow_score: float = typer.Option(2.0, "--flow-score", help="motion amount (mean optical-flow score the model "
                                     "was trained on; higher = more motion)"),
    posterior: Posterior = typer.Option("sample", help="reference latent: sample the LTX posterior like upstream "
                                        "(falls back to the mean when an encoder artifact has no logvar) or mean"),
    fit: Fit = typer.Option("stretch", help="image → video size: stretch (upstream) or cover (scale, "
                            "centre-crop)"),
    fps: int = typer.Option(17, min=1, help="frames per second of the MP4"),
    compare_to: CompareTo | None = typer.Option(None, "--compare-to", help="reference: also run PyTorch fp32 "
                                                "with the same seed and compare (needs --artifacts)"),
    json_out: Path | None = typer.Option(None, "--report", help="with --compare-to: write the report "
                                         "(latent_rel_err per step, psnr_db and ssim per frame) here"),
    min_psnr: float | None = typer.Option(None, "--min-psnr", help="with --compare-to: per-frame PSNR gate in dB "
                                          "(default 40 for fp32 artifacts, 30 for fp16)"),
) -> None:
    """Generate a video from an image: encode → denoise (flow-matching Euler) → decode.

    No classifier-free guidance: the MobileI2V denoiser ignores the text prompt, so CFG would be a no-op and there
    is no prompt or --cfg-scale option. Motion is set with --flow-score.
    """
    from .. import pipeline as pl
    from ..errors import BadInputError
    from ..presets import get_preset
    from ..shapes import geometry, parse_resolution

    # -- arguments that need no model ------------------------------------------------------------------------
    if out.suffix.lower() != ".mp4":
        raise BadInputError(f"--out {out}: the video must be an .mp4 file")
    if out.exists() and out.is_dir():
        raise BadInputError(f"--out {out}: is a folder")
    fallback, posterior, fit = fallback.value, posterior.value, fit.value
    preset, decoder = preset and preset.value, decoder and decoder.value
    compare_to = compare_to and compare_to.value
    if json_out is not None and compare_to is None:
        raise BadInputError("--report writes the comparison report: use it with --compare-to reference")
    if compare_to and not artifacts:
        raise BadInputError("--compare-to reference compares exported artifacts with PyTorch: pass --artifacts DIR")
    pl.flow_schedule(steps)  # validates --steps

    img = pl.load_image(image)
    use_map = pl.parse_use(use)
    arts = [pl.read_artifacts(a) for a in artifacts]

    # -- resolve preset / size / decoder: explicit option > artifacts manifest > checkpoints > preset default ----
    preset_name = preset or (arts[0].preset if arts else "mobilei2v-270m")
    p = get_preset(preset_name)
    if resolution is not None:
        height, width = parse_resolution(resolution)
    else:
        height, width = tuple(arts[0].resolution) if arts else (p.height, p.width)
    n_frames = frames if frames is not None else (arts[0].frames if arts else p.frames)
    geo = geometry(height, width, n_frames)
    config = pl.GenerateConfig(height=height, width=width, frames=n_frames, steps=steps, seed=seed,
                               flow_score=flow_score, posterior=posterior, fit=fit)
    parts = pl.checkpoint_parts(checkpoint)
    decoder_kind = decoder or next((k for k in map(pl.decoder_kind_of, arts) if k), None) \
        or pl.decoder_from_checkpoints(parts) or "turbo-vaed"

    console.print(f"[bold]mi2v generate[/] {image.name} → {out.name}: {p.name}, {geo.height}x{geo.width}x{geo.frames}"
                  f" (latent {'x'.join(map(str, geo.latent_shape[1:]))}), {steps} step(s), seed {seed}, "
                  f"flow score {flow_score:g}, decoder {decoder_kind}")

    notes: list[str] = []
    with _progress() as progress:
        tasks: dict[str, int] = {}

        def report(prefix: str):
            def cb(stage: str, done: int, total: int) -> None:
                key = f"{prefix}{stage}"
                if key not in tasks:
                    tasks[key] = progress.add_task(f"{prefix}{STAGE_LABELS.get(stage, stage)}", total=total)
                progress.update(tasks[key], completed=done, total=total)
            return cb

        t0 = time.perf_counter()
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            stages = pl.build_stages(p.name, decoder_kind, geo, arts, fallback=fallback, parts=parts, use=use_map,
                                     progress=report("" if not compare_to else "artifacts · "))
        host_s = {"run": time.perf_counter() - t0}
        precision = pl.precision_of(stages)
        result = pl.Pipeline(stages).generate(img, config, report("" if not compare_to else "artifacts · "))
        reference = None
        if compare_to:
            # release the artifact sessions before building the PyTorch models: peak memory is the larger of the
            # two, not their sum (at 720p each holds several GB)
            reuse = {c: s for c, s in stages.items() if isinstance(s, pl.TorchStage)}
            del stages
            gc.collect()
            t0 = time.perf_counter()
            with warnings.catch_warnings(record=True) as more:
                warnings.simplefilter("always")
                ref_stages = {c: reuse.get(c) or pl.torch_stage(c, p.name, decoder_kind, parts)
                              for c in pl.COMPONENTS}
            caught += more
            host_s["reference"] = time.perf_counter() - t0
            # the reference uses the posterior mode the artifact run ended up with, so both start alike
            reference = pl.Pipeline(ref_stages).generate(img, config, report("reference · "),
                                                         posterior=result.posterior)
            del ref_stages, reuse
        notes += _seeded_notes(caught)

        comparison = None
        if reference is not None:
            compare_task = progress.add_task("compare (PSNR, SSIM)", total=1)
            t0 = time.perf_counter()
            threshold = min_psnr if min_psnr is not None else pl.VIDEO_PSNR_MIN_DB[precision]
            comparison = pl.compare_runs(result, reference, threshold)
            host_s["compare"] = time.perf_counter() - t0
            progress.update(compare_task, completed=1)
        write_task = progress.add_task("write video", total=1)
        t0 = time.perf_counter()
        sheet = pl.contact_sheet_path(out)
        pl.write_video(result.frames, out, fps=fps)
        pl.write_contact_sheet(result.frames, sheet)
        if comparison is not None and json_out is not None:
            pl.write_json(pl.build_report(config, result, reference, comparison, image=str(image),
                                          preset=p.name, decoder=decoder_kind, precision=precision), json_out)
        write_s = time.perf_counter() - t0
        progress.update(write_task, completed=1)

    notes += result.notes
    _print_summary(result, reference, host_s, write_s)
    for note in dict.fromkeys(notes):
        console.print(f"[yellow]note:[/] {note}")
    console.print(f"wrote {out} and {sheet}" + (f" and {json_out}" if comparison and json_out else ""))
    if comparison is not None:
        _print_comparison(comparison)
        pl.check_psnr_gate(comparison)


def _progress() -> Progress:
    return Progress(TextColumn("{task.description:<28}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                    console=console, transient=False)


def _seeded_notes(caught) -> list[str]:
    seeded = [str(w.message).split(":")[0] for w in caught if "seeded random weights" in str(w.message)]
    if not seeded:
        return []
    return [f"no checkpoint for the {', '.join(dict.fromkeys(seeded))}: seeded random weights, so the video is "
            "noise (reproducible, fine for testing)"]


def _print_summary(result, reference, host_s: dict, write_s: float) -> None:
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

    row("load models", "", host_s["run"], host_s.get("reference"))
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
    row("write mp4 + contact sheet", "", write_s)
    console.print(table)


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
