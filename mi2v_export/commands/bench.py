"""`mi2v bench`: per-frame latency of the exported components on this machine or a phone; `mi2v bench compare`."""

from __future__ import annotations

from enum import Enum
from pathlib import Path

import typer
from rich.table import Table

from ..contract import SWIFT_UNIT, ComputeUnit
from ..devices.plot import plot_report
from ..devices.registry import describe
from ..devices.report import BenchReport, compare
from ..errors import BadInputError, DeviceError, MissingDependencyError, VerificationError
from ..outputs import MIB, check_file, check_folder, write_or_keep
from ._options import (AdbPath, AdbPort, AllowModified, Artifacts, Checkpoints, Components, DryRun, Image,
                       Iterations, Json, Report, Steps, Team, Warmup, refine)
from ._render import console, err_console, print_json, say

bench_app = typer.Typer(
    name="bench",
    help="Time the exported components on this machine (--device host), on an Android phone over adb "
    "(--device adb[:SERIAL], native runners or --via app) or on an iPhone (--device ios:UDID, macOS) and report the "
    "per-frame latency; `mi2v bench compare A.json B.json` puts two reports side by side.",
    invoke_without_command=True,
    no_args_is_help=False,
)

def _unit_list(value: str | None) -> str | None:
    """Typer callback of `--compute-units`: a comma list of mi2v's compute-unit names, checked as a usage error."""
    if value is None:
        return None
    units = [u.strip() for u in value.split(",") if u.strip()]
    bad = [u for u in units if u not in ComputeUnit.__members__]
    if bad or not units:
        raise typer.BadParameter(f"{', '.join(bad) or repr(value)}: use {', '.join(ComputeUnit.__members__)} "
                                 "(comma-separated)")
    return ",".join(units)


class Via(str, Enum):
    runner = "runner"
    app = "app"


class Runtime(str, Enum):
    """devices/selection.py RUNTIMES (the runtime registry's benchmarked families), spelled out here because the
    CLI starts without numpy; tests/unit/test_structure.py holds the two equal."""

    auto = "auto"
    onnxruntime = "onnxruntime"
    executorch = "executorch"
    litert = "litert"


def _ms(v: float | None, digits: int = 2) -> str:
    return "—" if v is None else f"{v:.{digits}f}"


def _title(report) -> str:
    """Preset, size and frames, the device it ran on (described by its kind, devices/registry.py), and the
    protocol: the heading of the table."""
    from ..devices import kinds  # noqa: F401  (registers every device kind; numpy: not at `mi2v --help`)

    dev = report.device or {}
    who = describe(dev, report.protocol or {})
    if dev.get("simulated_device"):
        who += " [yellow](simulated phone: host timings)[/yellow]"
    art = report.artifacts or {}
    res = art.get("resolution") or ["?", "?"]
    proto = report.protocol or {}
    if proto.get("mode") == "pipeline":
        how = (f"whole runs: {proto.get('clips')} clip(s)"
               + (f" for at least {proto['duration_s']:g} s" if proto.get("duration_s") else "")
               + f", {proto.get('steps')} step(s), {proto.get('inputs')}; per component: its times inside the runs")
    else:
        how = (f"{proto.get('warmup')} warm-up + {proto.get('iterations')} timed iterations × {proto.get('runs')} "
               "run(s)")
    return (f"{art.get('preset', '?')} {res[0]}x{res[1]}x{report.frames} on {who}\n{how}, threads "
            f"{proto.get('threads') or 'default'}, affinity {proto.get('affinity_mask') or 'none'}")


def render_report(report, path: Path | None = None) -> None:
    """The rich table of a report (also used for a partial one)."""
    title = _title(report)
    table = Table("component", "runtime", "artifact", "precision", "load ms", "n", "min", "p50", "p90", "max", "stdev",
                  "peak RSS", "status", title=title, title_justify="left")
    for c in report.components:
        s = c.summary()
        lat = s["latency_ms"]
        rt = c.runtime.get("name") or "—"
        if c.runtime.get("backend"):
            rt += f"/{c.runtime['backend']}"
        art_text = c.artifact.get("file") if c.artifact else "—"
        precision = (c.artifact or {}).get("precision") or "—"
        rss = s.get("peak_rss_kb")
        mean_only = [r.mean_only_ms for r in c.runs if r.mean_only_ms is not None]
        status = c.status if c.status == "ok" else f"[red]{c.status}[/red]"
        if mean_only and not lat.get("n"):
            lat = {"n": 0, "p50": None}
            status += " (mean only)"
        table.add_row(c.component, rt, art_text, precision, _ms(s["load_ms"].get("median"), 1), str(lat.get("n", 0)),
                      _ms(lat.get("min")), _ms(lat.get("p50")), _ms(lat.get("p90")), _ms(lat.get("max")),
                      _ms(lat.get("stdev")), f"{rss / 1024:.0f} MB" if rss else "—", status)
    console.print(table)
    if report.pipeline is None:  # a pipeline report: the measured figure, the computed one and the video's PSNR
        _render_headline(report)
        _render_checks(report)
    for c in report.components:
        tiles = next((r.tiles for r in c.runs if r.tiles), None)
        if tiles:
            per = ", ".join(f"{t['tiles']} × {_ms(t.get('median_tile_ms'))} ms" for t in tiles)
            console.print(f"tiles, {c.component}: {sum(t['tiles'] for t in tiles)} per call over {len(tiles)} stages "
                          f"(tiles × median tile time: {per})", highlight=False)
    for c in report.components:
        if c.profile is not None:
            render_profile(c.component, c.profile)
    if report.pipeline is not None:
        render_pipeline(report.pipeline)
    for c in report.components:
        if c.status != "ok" and c.error:
            console.print(f"[red]{c.component}[/red]: {c.error}")
    unc = (report.conditions or {}).get("uncontrolled") or []
    if unc:
        console.print("not controlled: " + "; ".join(unc), style="dim")
    for w in report.warnings:
        console.print(f"warning: {w}", style="yellow")
    if path is not None:
        console.print(f"report: {path}")


def _render_headline(report) -> None:
    for steps in (1, 2):
        v = report.per_frame_ms(steps)
        mark = " ◀" if steps == report.steps else ""
        if v is None:
            console.print(f"per-frame latency, {steps} step{'s' if steps > 1 else ''}: [red]incomplete[/red] "
                          "(needs encoder, denoiser and decoder)")
        else:
            console.print(f"per-frame latency, {steps} step{'s' if steps > 1 else ''}: [bold]{v:.2f} ms[/bold] "
                          f"({1000.0 / v:.3g} frames/s) = (encoder + {steps} × denoiser + decoder) p50 / "
                          f"{report.frames} frames{mark}")


def _render_checks(report) -> None:
    for c in report.components:
        check = c.output_check or {}
        if check.get("passed") is None:
            why = check.get("reason") or "not checked"
            console.print(f"output check, {c.component}: — ({why})", style="dim", highlight=False)
        else:
            verdict = "[green]pass[/green]" if check["passed"] else "[red]FAIL[/red]"
            console.print(f"output check, {c.component}: {verdict} on {check['runtime']}: PSNR {check['psnr_db']} dB, "
                          f"rel_l2 {check['rel_l2']} ({check['gate']}, {check['sets']} set(s))", highlight=False)


def render_profile(component: str, profile: dict, top: int = 8) -> None:
    """`--profile`: a component's top operators (the runtime's own profiler, devices/profile.py)."""
    if profile.get("reason"):
        console.print(f"profile, {component}: — ({profile['reason']})", style="dim", highlight=False)
        return
    share = profile.get("delegated_share")
    title = (f"{component}: top operators, {profile['tool']}, {profile['runs']} run(s), "
             f"{profile['total_ms']:.2f} ms of ops per run"
             + ("" if share is None else f", {100 * share:.0f} % delegated"))
    table = Table("op", "where", "delegated", "calls", "ms / run", "share", title=title, title_justify="left")
    flags = {True: "yes", False: "no", None: "?"}
    for op in profile["ops"][:top]:
        table.add_row(op["op"], op.get("where", ""), flags[op.get("delegated")], str(op.get("calls", "")),
                      f"{op['total_ms']:.3f}", f"{100 * op['share']:.1f} %")
    console.print(table)
    for note in profile.get("notes", []):
        console.print(f"  {note}", style="dim", highlight=False)


def render_pipeline(block: dict) -> None:
    """`--pipeline`: one row per clip (loads and stages apart), then cold vs warm, measured vs computed, quality."""
    table = Table("clip", "load", "encode", "denoise", "decode", "pre+post", "glue", "total", "per frame",
                  "first frame", "peak RSS", "PSNR", title="whole runs (ms)", title_justify="left")
    for c in block["clips"]:
        rss = max([c.get("peak_rss_kb") or 0, *(c.get("device_peak_rss_kb") or {}).values()]) or None
        loads = sum(c["load_ms"].values()) + sum((c.get("device_load_ms") or {}).values())
        table.add_row(f"{c['clip']}{' cold' if c['cold'] else ''}", _ms(loads, 0),
                      *(_ms(c["stage_ms"][k], 1) for k in ("encoder", "denoiser", "decoder")),
                      _ms(c["preprocess_ms"] + c["postprocess_ms"], 1), _ms(c["glue_ms"], 1),
                      _ms(c["total_ms"], 0), _ms(c["per_frame_ms"]), _ms(c["first_frame_ms"], 0),
                      f"{rss / 1024:.0f} MB" if rss else "—",
                      "—" if c.get("psnr_db_min") is None else f"{float(c['psnr_db_min']):.1f} dB")
    console.print(table)
    head, warm = block.get("headline"), block.get("warm")
    if head:
        console.print(f"per frame, measured: [bold]{head['measured_per_frame_ms']:.2f} ms[/bold] ({head['from']}); "
                      f"computed from the stage medians: {head['computed_per_frame_ms']:.2f} ms; the difference "
                      "per clip: " + ", ".join(f"{k} {v:.0f} ms" for k, v in head["difference_ms"].items()),
                      highlight=False)
    if warm and warm["clips"]:
        console.print(f"warm clips: {warm['clips']}, total p50 {warm['total_ms']['p50']:.0f} ms, p95 "
                      f"{warm['total_ms']['p95']:.0f} ms; cold clip {block['cold']['total_ms']:.0f} ms", highlight=False)
    quality, sustained = block.get("quality") or {}, block.get("sustained")
    if quality.get("reference"):
        verdict = "[green]pass[/green]" if quality["passed"] else "[red]below the gate[/red]"
        console.print(f"video vs PyTorch fp32: worst frame {float(quality['psnr_db_min']):.1f} dB (gate "
                      f"{quality['gate_db']:g} dB) {verdict}", highlight=False)
    elif quality.get("reason"):
        console.print(f"video not compared: {quality['reason']}", style="dim")
    if sustained:
        drift = "—" if sustained["drift"] is None else f"{sustained['drift']:.2f}x"
        console.print(f"sustained: {sustained['clips']} clips, drift last/first warm {drift}"
                      + (f"; throttling: {'; '.join(sustained['signs'])}" if sustained["throttled"] else ""))
    if block.get("partial"):
        console.print(f"[red]partial[/red]: {block.get('stopped') or 'fewer clips than asked'}")


@bench_app.callback()
def bench(
    ctx: typer.Context,
    artifacts: Artifacts = None,
    device: str = typer.Option("host", "--device", help="host (in this process), adb (the only phone), "
                               "adb:SERIAL (a HOST:PORT serial is `adb connect`ed first), adb:all or "
                               "adb:SERIAL1,SERIAL2 (several phones at once, one report each plus a comparison) or "
                               "ios:UDID (macOS with Xcode: the Core ML XCTest in apps/ios)"),
    via: Via = typer.Option(Via.runner, "--via", help="phone: runner = the native executor_runner / "
                            "onnxruntime_perf_test (default); app = the Android benchmark app (apps/android, "
                            "installed when needed; .pte only)"),
    dry_run: refine(DryRun, help="--via app / ios:UDID: print the exact commands and touch no device") = False,
    app_dir: Path | None = typer.Option(None, "--app-dir", help="--via app: the Android app folder whose build "
                                        "outputs hold the APKs (default: apps/android of this checkout, built by "
                                        "`make android`); ios: the apps/ios package to stage and test"),
    team: Team = None,
    compute_units: str | None = typer.Option(None, "--compute-units", callback=_unit_list, help="ios: Core ML "
                                             "compute units to time, comma-separated from all, cpu_and_ne, "
                                             "cpu_and_gpu, cpu_only (default: each of the four)"),
    runtime: Runtime = typer.Option(Runtime.auto, "--runtime", help="auto: ExecuTorch when every component has a "
                                    "runnable .pte, else onnxruntime, else LiteRT, else per component"),
    iterations: Iterations = None,
    warmup: Warmup = None,
    runs: int = typer.Option(1, "--runs", min=1, help="separate runner processes per component (their medians are "
                             "reported as run_medians)"),
    steps: refine(Steps, max=2, help="denoising steps of the headline (1 or 2; both are reported)") = 2,
    runner: list[Path] = typer.Option([], "--runner", help="executor_runner / onnxruntime_perf_test / "
                                      "benchmark_model built for the phone (repeatable; told apart by name). "
                                      "Default: DIR/runners/<abi>/, else the one on the phone's PATH"),
    cpu_mask: str | None = typer.Option(None, "--cpu-mask", help="pin to these cores (hex, e.g. f0); default on a "
                                        "phone: the big cores from cpuinfo_max_freq; on host: not pinned"),
    threads: int | None = typer.Option(None, "--threads", min=1, help="host only: intra-op threads (default: the "
                                       "runtime's, or the pinned core count)"),
    adb: AdbPath = None,
    adb_port: AdbPort = None,
    adb_server: list[str] = typer.Option([], "--adb-server", help="adb:all / a serial list: look for the phones "
                                         "on the adb server at HOST:PORT (repeatable: a lab of several machines; "
                                         "like adb -H HOST -P PORT) instead of this machine's"),
    report_path: refine(Report, help="report file (default: mi2v-bench/<time>-<device>.json); checked before any "
                        "device work and written even when a component fails (not when no device answers)") = None,
    json_out: refine(Json, help="print the report(s) as JSON on stdout instead of the table (progress stays on "
                     "stderr)") = False,
    plot: Path | None = typer.Option(None, "--plot", help="draw the per-component breakdown into this PNG"),
    cooldown: float | None = typer.Option(None, "--cooldown", min=0, help="pause between components, seconds "
                                          "(default: 0 on host, 30 on a phone); then wait for thermal status 0"),
    thermal_wait: float = typer.Option(120.0, "--thermal-wait", min=0, help="at most this long (s) waiting for a warm "
                                       "phone to cool before a component"),
    timeout: float = typer.Option(600.0, "--timeout", min=0, help="limit for one runner process on the phone, seconds"),
    etdump: bool = typer.Option(False, "--etdump", help="phone, ExecuTorch: one extra profiling run per "
                                "component with --etdump_path, pulled next to the report"),
    profile: bool = typer.Option(False, "--profile", help="each component's top operators by time from the "
                                 "runtime's own profiler (onnxruntime's; ExecuTorch's ETDump through the Inspector, "
                                 "with the .etrecord of `mi2v export --etrecord`); on a phone the runner writes "
                                 "the ETDump"),
    component: Components = "all",
    allow_modified: AllowModified = False,
    pipeline: bool = typer.Option(False, "--pipeline", help="time the whole image-to-video run (encode, steps, "
                                  "decode with its tiles, crop) as one measurement, --clips times: cold start, warm "
                                  "p50/p95, peak memory, PSNR against PyTorch fp32"),
    clips: int = typer.Option(3, "--clips", help="--pipeline: whole runs back to back (the first is the cold one)"),
    duration: float | None = typer.Option(None, "--duration", help="--pipeline: keep running clips for this many "
                                          "seconds, at least two (sustained: drift and throttling are reported)"),
    image: refine(Image, help="--pipeline: the input photo (default: the validation photo shipped with mi2v)") = None,
    checkpoint: refine(Checkpoints, help="--pipeline: the weights of the PyTorch fp32 reference the video is "
                       "compared with (artifacts exported with seeded weights need none)") = [],
    stage_processes: bool = typer.Option(False, "--stage-processes", help="--pipeline on the host: each stage call "
                                         "in a fresh process (its load, first run and peak memory every time, as an "
                                         "app that keeps no model between stages)"),
) -> None:
    """Time the exported encoder, denoiser and decoder and report the per-frame latency
    (encoder + steps × denoiser + decoder) / frames, for 1 and 2 steps.

    On a phone the runners are pushed to /data/local/tmp/mi2v/<content hash>/ (skipped when already there), warmed
    up inside the timed process, pinned to the big cores and measured with `toybox time`; the device's identity,
    clocks, thermal state and battery are recorded, with a list of what could not be controlled.
    """
    if ctx.invoked_subcommand is not None:
        return
    from ..devices.bench import BenchOptions, run_bench  # numpy and the device kinds: not at `mi2v --help`
    from ..devices.fleet import is_fleet
    from ..devices.pipeline_bench import PipelineOptions, run_pipeline_bench

    if artifacts is None:
        raise BadInputError("--artifacts DIR is required (a folder written by `mi2v export`); "
                            "or use `mi2v bench compare A.json B.json`")
    units = tuple(SWIFT_UNIT[u] for u in (compute_units or "").split(",") if u)
    opts = BenchOptions(artifacts=artifacts, device=device, runtime=runtime.value, iterations=iterations,
                        warmup=warmup, runs=runs, steps=steps, runners=list(runner), cpu_mask=cpu_mask,
                        threads=threads, adb=adb, adb_port=adb_port, json_path=report_path, cooldown=cooldown,
                        thermal_wait=thermal_wait, timeout=timeout, etdump=etdump, profile=profile,
                        stage_processes=stage_processes,
                        components=tuple(component.split(",")),
                        via=via.value, dry_run=dry_run, team=team, app_dir=app_dir,
                        compute_units=units, allow_modified=allow_modified)
    if plot is not None and plot.suffix.lower() not in (".png", ".svg", ".pdf"):
        raise BadInputError(f"--plot {plot}: use a .png file name")
    if not dry_run:
        _check_destinations(report_path, plot)

    if pipeline and (is_fleet(device) or adb_server or profile):
        raise BadInputError("--pipeline times one device's whole run: name one device (no adb:all, --adb-server) "
                            "and profile the components without --pipeline")
    if is_fleet(device) or adb_server:
        _bench_fleet(opts, adb_server, json_out)
        return
    show = (lambda report, path: None) if json_out else render_report
    if pipeline:
        if stage_processes and device != "host":
            raise BadInputError("--stage-processes runs each stage in a process of this machine: use --device host")
        popts = PipelineOptions(clips=clips, duration_s=duration, image=image, checkpoints=list(checkpoint))
        outcome = run_pipeline_bench(opts, popts, say, echo=typer.echo)
    else:
        _refuse_pipeline_options(clips, duration, image, checkpoint, stage_processes)
        outcome = run_bench(opts, say, echo=typer.echo)
    for report, path in outcome.reports:
        show(report, path)
    if json_out:
        print_json([r.to_dict() for r, _ in outcome.reports])
    first = outcome.reports[0][0] if outcome.reports else None
    if plot is not None and first is not None and any(c.status == "ok" for c in first.components):
        drawn = write_or_keep(plot, lambda path: plot_report(first, path), "plot")
        (err_console if json_out else console).print(f"plot: {drawn}")  # stdout: JSON only
    if outcome.error is not None:
        kind = next((k for k in (BadInputError, MissingDependencyError, VerificationError)
                     if isinstance(outcome.error, k)), DeviceError)
        raise kind(f"{outcome.error} (report: {outcome.reports[0][1] if outcome.reports else None})")


def _refuse_pipeline_options(clips: int, duration: float | None, image: Path | None, checkpoint: list,
                             stage_processes: bool) -> None:
    given = [flag for flag, value in (("--clips", clips != 3), ("--duration", duration is not None),
                                      ("--image", image is not None), ("--checkpoint", bool(checkpoint)),
                                      ("--stage-processes", stage_processes)) if value]
    if given:
        raise BadInputError(f"{', '.join(given)}: only with --pipeline (the whole run as one measurement)")


def _check_destinations(report_path: Path | None, plot: Path | None) -> None:
    """The report (or the default mi2v-bench/ folder; per-phone and per-compute-unit reports and the pulled
    ETDumps go beside it) and the plot can be written: checked before any device work, so a read-only folder, a
    parent that is a file or a full disk is one line (exit 2) instead of measurements lost at the end
    (mi2v_export/outputs.py)."""
    if report_path is not None:
        check_file(report_path, "--report", need_bytes=MIB)
    else:
        check_folder(Path("mi2v-bench"), "--report (default mi2v-bench/)", need_bytes=MIB)
    if plot is not None:
        check_file(plot, "--plot", need_bytes=MIB)


def _bench_fleet(opts, servers: list[str], json_out: bool) -> None:
    """Several phones at once (devices/fleet.py): a report per phone, then one comparison table."""
    from ..devices import fleet  # numpy and the device kinds: not at `mi2v --help`

    if not opts.device.startswith("adb"):
        raise BadInputError("--adb-server needs an adb device: --device adb:all or adb:SERIAL1,SERIAL2")
    if opts.dry_run or opts.via != "runner":
        raise BadInputError("several phones at once use the native runners (--via runner) and no --dry-run; "
                            "name one phone (adb:SERIAL) for those")
    phones = fleet.find_phones(opts.device, [fleet.parse_server(s) for s in servers], opts.adb, opts.adb_port)
    say(f"benchmarking {len(phones)} phone(s) at once: {', '.join(p.label for p in phones)}")
    results = fleet.bench_phones(opts, phones, say)
    rows = fleet.comparison(results)
    if json_out:
        print_json({"phones": rows, "reports": [r.to_dict() for res in results for r, _ in res.reports]})
    else:
        for res in results:
            for report, path in res.reports:
                render_report(report, path)
        _render_comparison(rows)
    failed = [r for r in results if r.error is not None]
    if failed:
        raise DeviceError(f"{len(failed)} of {len(results)} phone(s) failed: " + "; ".join(
            f"{r.phone.label}: {str(r.error).splitlines()[0]}" for r in failed))


def _render_comparison(rows: list[dict]) -> None:
    table = Table("phone", "model", "SoC", "encoder p50", "denoiser p50", "decoder p50", "per frame (1 step)",
                  "per frame (2 steps)", "status", "started", "finished", title="phones side by side (ms)",
                  title_justify="left")
    for r in rows:
        table.add_row(r["phone"] + (" (simulated)" if r["simulated"] else ""), r["model"] or "—", r["soc"] or "—",
                      _ms(r["encoder_p50_ms"]), _ms(r["denoiser_p50_ms"]), _ms(r["decoder_p50_ms"]),
                      _ms(r["per_frame_ms_1_step"]), _ms(r["per_frame_ms_2_step"]),
                      r["status"] if r["status"] == "ok" else f"[red]{r['error']}[/red]", r["started_at"] or "—",
                      r["finished_at"] or "—")
    console.print(table)


@bench_app.command("compare")
def compare_cmd(
    a: Path = typer.Argument(..., metavar="A.json", help="baseline report (written by `mi2v bench --report`)"),
    b: Path = typer.Argument(..., metavar="B.json", help="report to compare against the baseline"),
    json_flag: refine(Json, help="print the rows as JSON on stdout instead of the table") = False,
) -> None:
    """Two reports side by side: per-frame latency and each component's p50 / p90 / load time, with B/A ratios."""
    ra, rb = BenchReport.load(a), BenchReport.load(b)
    rows = compare(ra, rb)
    if json_flag:
        print_json(rows)
        return

    def who(r: BenchReport) -> str:
        d = r.device or {}
        name = d.get("model") or d.get("cpu") or d.get("transport")
        rts = sorted({c.runtime.get("name", "?") for c in r.components if c.runtime})
        return f"{name}{' (simulated)' if d.get('simulated_device') else ''}, {'/'.join(rts)}"

    table = Table("metric", f"A: {a.name}", f"B: {b.name}", "B/A",
                  title=f"A = {who(ra)}\nB = {who(rb)}", title_justify="left")
    for row in rows:
        ratio = row["ratio"]
        style = None if ratio is None else ("green" if ratio < 0.95 else "red" if ratio > 1.05 else None)
        table.add_row(row["metric"], _ms(row["a"]), _ms(row["b"]), "—" if ratio is None else f"{ratio:.2f}×",
                      style=style)
    console.print(table)
    console.print("B/A < 1: B is faster", style="dim")


def register(app: typer.Typer) -> None:
    app.add_typer(bench_app, name="bench")
