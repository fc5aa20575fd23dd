"""`--device adb[:SERIAL]`: a phone over adb as a bench device, timed with its native runners.

`AdbPhone` is what every adb device kind shares (connected at facts(), thermals between components, gone when adb
no longer lists it); `AdbRunnerDevice` times each component with `executor_runner` (`.pte`) or
`onnxruntime_perf_test` (`.onnx`) through an `AndroidSession` (devices/android_session.py: facts, pinning,
staging, runs), with the runners checked on this machine first (devices/runner_checks.py). The Android app
(`--via app`) builds on `AdbPhone` in devices/android_app.py.

The module registers the `adb` device kind (devices/registry.py): `adb` (the only phone) or `adb:SERIAL` (a
HOST:PORT serial is `adb connect`ed first), 50 timed iterations after 5 warm-up ones and 30 s between components
by default, and no delegate Android phones do not have.
"""

from __future__ import annotations

import itertools
import os
import platform
import re
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np

from ..errors import BadInputError, DeviceError, first_line
from ..files import sha256_file
from ..runtimes import dtypes
from ..runtimes.litert import NPU_DELEGATES
from ..runtimes.sessions import is_tiled, run_stage, stage_entry, stage_windows
from .adb import Adb, AdbDevice, AdbTimeout
from .android_session import AndroidSession, StagedFile
from .base import BenchDevice, BenchOptions, BenchReport, ComponentResult, DeviceFacts, RunResult, Say, Selection
from .output_check import raw_outputs
from .profile import etrecord_of, phone_profile
from .remote_stage import RemoteStage
from .benchmark_model import parse_benchmark_model, read_outputs, runner_args, signature_io
from .runners import parse_executor_runner
from .report import percentile
from .registry import Defaults, DeviceKind, register
from .runner_checks import (
    RUNNER_FOR_RUNTIME,
    Runner,
    RunnerFailure,
    check_qnn_libraries,
    qnn_run_options,
    runner_failure,
)
from .selection import artifact_files, remote_name

PHONE_UNSUPPORTED_DELEGATES = ("coreml", "mps")
RETURNS_OUTPUTS = ("executorch", "litert")  # runtime families whose phone runner writes its outputs to a file
PHONE_DEFAULTS = Defaults(iterations=50, warmup=5, cooldown=30.0)


def pick_device(adb: Adb, serial: str | None) -> AdbDevice:
    """The device; a HOST:PORT serial that adb does not know yet is `adb connect`ed first."""
    if serial and re.fullmatch(r"[\w.-]+:\d+", serial) and serial not in {d.serial for d in adb.devices()}:
        adb.connect(serial)
    return adb.pick_device(serial)


class AdbPhone(BenchDevice):
    """A phone over adb as a bench device: connected at facts(), its thermals read between components, gone when
    adb no longer lists it as `device`. The native runners and the Android app both build on it."""

    transport = "adb"

    def __init__(self, opts: BenchOptions, manifest: Any, serial: str | None, say: Say):
        self.opts, self.manifest, self.serial, self.say = opts, manifest, serial, say
        self.session: AndroidSession | None = None

    def connect(self) -> tuple[dict[str, Any], dict[str, Any]]:
        """Pick the phone and read its facts: (the report's device block, its host block)."""
        adb = Adb(self.opts.adb, server_port=self.opts.adb_port, server_host=self.opts.adb_host)
        host = {"os": f"{platform.system()} {platform.release()}", "python": platform.python_version(),
                "adb": {"path": adb.path, "version": adb.version(), "server_port": self.opts.adb_port,
                        "server_host": self.opts.adb_host}}
        self.session = AndroidSession(adb, pick_device(adb, self.serial), self.say)
        self.say(f"reading device facts of {self.session.dev.serial}")
        return self.session.fingerprint(), host

    def snapshot(self) -> dict[str, Any]:
        return self.session.snapshot() if self.session else {}

    def alive(self) -> bool:
        try:
            return self.session is not None and self.session.dev.get_state() == "device"
        except DeviceError:
            return False


class AdbRunnerDevice(AdbPhone):
    """A phone over adb timed with its native runners: executor_runner for .pte, onnxruntime_perf_test for .onnx,
    LiteRT's benchmark_model for .tflite."""

    def __init__(self, opts: BenchOptions, manifest: Any, serial: str | None, json_path: Path, say: Say):
        super().__init__(opts, manifest, serial, say)
        self.extras = json_path.with_name(json_path.stem + ".files")  # ETDumps, CSVs, failure logs
        self.json_dir = json_path.parent
        self.files: dict[str, list[StagedFile]] = {}
        self.found: dict[str, Runner | DeviceError] = {}  # per runtime: the runner, or why there is none
        self.prepared: dict[str, Runner | DeviceError] = {}  # per runtime: pushed and probed, or why not
        self.simulated_device = False
        self.simulated_qnn: list[str] = []  # QNN artifacts timed on a simulated phone's HTP simulator
        # executor_runner's own run and model-load times over every output-returning call (--pipeline)
        self.runner_ms = {"run": 0.0, "load": 0.0, "peak_kb": 0}

    def facts(self) -> DeviceFacts:
        device, host = self.connect()
        self.simulated_device = bool(device.get("simulated_device"))
        s = self.session
        assert s is not None
        s.uncontrolled += ["CPU clocks are not locked (needs root); governors are recorded only",
                           "screen state, charging and background apps are not controlled (battery: see conditions)"]
        s.plan_pinning(self.opts.cpu_mask)
        protocol = {"threads": s.threads, "affinity_mask": f"{s.mask:x}" if s.mask else None,
                    "affinity_granted": s.granted, "affinity_rule": s.mask_rule,
                    "peak_rss_method": "toybox-time" if s.has_toybox_time else "vmhwm-poll"}
        return DeviceFacts(device, host, protocol, s.uncontrolled)

    def cool_down(self, pause_s: float, label: str) -> dict[str, Any]:
        assert self.session is not None
        return self.session.cool_down(pause_s, self.opts.thermal_wait, label)

    def prepare(self, sel: Selection) -> None:
        """The artifact's files to stage, under checked remote names (the loop has checked them against the
        manifest), and the runner of its runtime (found once per runtime)."""
        assert self.session is not None and sel.runtime is not None
        self.files[sel.component] = [StagedFile(p, n, sha256_file(p)) for p, n, _ in
                                     artifact_files(self.manifest, sel.entry)]
        if sel.runtime not in self.found:
            try:
                self.found[sel.runtime] = self.session.find_runner(RUNNER_FOR_RUNTIME[sel.runtime],
                                                                   self.opts.runners, Path(self.opts.artifacts))
            except DeviceError as exc:
                self.found[sel.runtime] = exc
        if isinstance(self.found[sel.runtime], DeviceError):
            raise self.found[sel.runtime]
        if sel.entry.delegate == "qnn" and sel.runtime == "onnxruntime":
            abi = self.session.abilist[0] if self.session.abilist else ""
            check_qnn_libraries(self.found[sel.runtime], abi, sel.entry.target_info)  # type: ignore[arg-type]

    def _runner(self, runtime: str) -> Runner:
        """The runner pushed and probed (the staging folder is named after every runner found, once)."""
        s = self.session
        assert s is not None
        if not s.remote_dir:
            s.set_remote_dir([StagedFile(r.local, r.name, r.sha256) for r in self.found.values()
                              if isinstance(r, Runner)])
        if runtime not in self.prepared:
            runner = self.found[runtime]
            assert isinstance(runner, Runner)
            try:
                self.say(f"checking {runner.name} ({runner.describe()['runner_path']}) on the device")
                s.prepare_runner(runner)
                self.prepared[runtime] = runner
            except DeviceError as exc:
                self.prepared[runtime] = exc
        if isinstance(self.prepared[runtime], DeviceError):
            raise self.prepared[runtime]
        return self.prepared[runtime]  # type: ignore[return-value]

    def run(self, sel: Selection, comp: ComponentResult) -> ComponentResult:
        s, opts = self.session, self.opts
        assert s is not None and sel.runtime is not None
        runner = self._runner(sel.runtime)
        comp.runtime.update(runner.describe(), threads=s.threads, affinity_mask=f"{s.mask:x}" if s.mask else None,
                            backend=(sel.entry.delegate or "portable") if sel.runtime == "executorch" else
                            "qnn-htp" if sel.entry.delegate == "qnn" else
                            "xnnpack" if sel.runtime == "litert" else "cpu", log_channel="stdout+stderr")
        if sel.runtime == "litert" and sel.entry.delegate == "gpu":
            comp.runtime["note"] = ("a --delegate gpu export, timed on the CPU (XNNPACK): mi2v does not drive "
                                    "benchmark_model's --use_gpu yet")
        if sel.entry.delegate == "qnn" and sel.runtime == "onnxruntime" and self.simulated_device:
            comp.runtime.update(simulated=True, soc=sel.entry.target_info.get("soc"),
                                note="simulated phone: the QNN HTP simulator on this host's CPU, simulated timings, "
                                     "not a speed figure")
            self.simulated_qnn.append(sel.entry.file)
        try:
            s.stage(self.files[sel.component])
            for r in range(opts.runs):
                self.say(f"{sel.component}: {sel.entry.file} with {runner.name}, run {r + 1}/{opts.runs}: "
                         f"{opts.warmup} warm-up + {opts.iterations} timed iterations")
                comp.runs.append(self._run_tiled(sel, comp, runner, r) if is_tiled(sel.entry)
                                 else self._run_once(sel, comp, runner, r))
            if (opts.etdump or opts.profile) and sel.runtime == "executorch" and not is_tiled(sel.entry):
                comp.runtime["etdump"] = self._profile(sel, runner)
            if opts.profile:
                comp.profile = self._read_profile(sel, comp.runtime.get("etdump"))
        except AdbTimeout:
            raise DeviceError(f"timeout: {runner.name} did not finish the {sel.component} within {opts.timeout:g} s "
                              f"({opts.warmup}+{opts.iterations} iterations): raise --timeout or lower --iterations"
                              ) from None
        except RunnerFailure as exc:
            log = self.extras / f"{sel.component}.log"
            log.parent.mkdir(parents=True, exist_ok=True)
            log.write_text(exc.log)
            comp.runtime["failure_log"] = os.path.relpath(log, self.json_dir)
            raise
        comp.status, comp.error = "ok", None
        return comp

    @staticmethod
    def _remote_names(sel: Selection, stage: int | None = None) -> tuple[str, str | None]:
        """The model's and its external data's names in the staging folder: checked parts only (selection.remote_name);
        `stage`: a tiled entry's stage model instead (its data has the role "s<k>.external_data")."""
        role = "external_data" if stage is None else f"s{stage}.external_data"
        data = next((f.file for f in sel.entry.extra_files if f.role == role), None)
        model = sel.entry.file if stage is None else sel.entry.tiling["stages"][stage]["file"]
        return remote_name(model), remote_name(data) if data else None

    def _run_tiled(self, sel: Selection, comp: ComponentResult, runner: Runner, r: int) -> RunResult:
        """A tiled component: each stage's tile model timed by the runner, one process each; an iteration of the
        component is every stage's iteration times its windows per call (the phone runs the same windows; the
        stitching copies between them are the app's and not timed here). The peak is the largest stage's runner
        process: an app holding every stage and the tensors between them needs more. A runner without per-run
        times (benchmark_model) gives the windows-weighted sum of the stages' means and of their medians."""
        runs = [self._run_once(sel, comp, runner, r, stage=k) for k in range(len(sel.entry.tiling["stages"]))]
        counts = [stage_windows(stage) for stage in sel.entry.tiling["stages"]]
        iterations = min(len(run.samples_ms) for run in runs)
        total = [sum(n * run.samples_ms[i] for n, run in zip(counts, runs)) for i in range(iterations)]
        peaks = [run.peak_rss_kb for run in runs if run.peak_rss_kb is not None]
        weighed = _weighed_stats(runs, counts) if not iterations else {}
        return RunResult(load_ms=sum(run.load_ms or 0 for run in runs), samples_ms=total, exit_code=0, **weighed,
                         peak_rss_kb=max(peaks) if peaks else None, peak_rss_method=runs[0].peak_rss_method,
                         peak_rss_scope="runner", backend=runs[0].backend,
                         tiles=[{"stage": k, "file": stage["file"], "tiles": n,
                                 "median_tile_ms": percentile(run.samples_ms, 50) if run.samples_ms else None}
                                for k, (stage, n, run) in enumerate(zip(sel.entry.tiling["stages"], counts, runs))])

    def _run_once(self, sel: Selection, comp: ComponentResult, runner: Runner, r: int,
                  stage: int | None = None) -> RunResult:
        """One runner process (warm-up inside it); its ETDump or result CSV pulled next to the report."""
        s, opts = self.session, self.opts
        assert s is not None
        tag = sel.component if stage is None else f"{sel.component}.s{stage}"
        if sel.runtime == "executorch":
            model, data = self._remote_names(sel, stage)
            run, text = s.run_executorch(runner, model, data, opts.warmup, opts.iterations, opts.timeout)
            run.backend = comp.runtime["backend"]
            if "--- logcat ---" in text:
                comp.runtime["log_channel"] = "logcat"
            dump = s.pull_if_exists("model.etdump", self.extras / f"{tag}.run{r}.etdump")
            if dump is not None:
                run.etdump = os.path.relpath(dump, self.json_dir)
                s.warnings.append(f"{runner.name} wrote an ETDump in the timed run (built with the event tracer): "
                                  "its timings include profiling overhead")
            return run
        if sel.runtime == "litert":
            run, _ = s.run_litert(runner, self._remote_names(sel, stage)[0], opts.warmup, opts.iterations,
                                  opts.timeout)
            run.backend = "xnnpack"
            return run
        csv = self.extras / f"{tag}.run{r}.csv"
        self.extras.mkdir(parents=True, exist_ok=True)
        qnn = qnn_run_options(sel.entry.target_info) if sel.entry.delegate == "qnn" else None
        run, _ = s.run_ort(runner, self._remote_names(sel, stage)[0], opts.warmup, opts.iterations, opts.timeout,
                           f"runs_{tag}_{r}.csv", csv, qnn=qnn)
        run.backend = "qnn-htp" if qnn else "cpu"
        csv.unlink(missing_ok=True)
        return run

    def pipeline_stage(self, sel: Selection) -> Any:
        """`--pipeline`: the component as executor_runner calls, the sampler's tensors pushed as its inputs and its
        outputs pulled back (a tiled one window by window, stitched here as on the host); each stage's time is
        what the runner reports, the rest of the call is transfers (devices/pipeline_bench.py RemoteStage)."""
        if sel.runtime not in RETURNS_OUTPUTS:
            raise BadInputError(f"--pipeline on a phone: the {sel.component} is {sel.entry.file}, and "
                                "onnxruntime_perf_test returns no outputs; use .pte or .tflite artifacts")
        runner = self._runner(sel.runtime)
        if sel.runtime == "executorch" and not {"inputs", "output_file"} <= runner.flags:
            raise DeviceError(f"--pipeline: {runner.name} on the device has no --inputs / --output_file flags")
        assert self.session is not None
        self.session.stage(self.files[sel.component])
        calls = itertools.count()

        def call(feeds: dict[str, Any]) -> tuple[dict[str, Any], dict]:
            before, vs = dict(self.runner_ms), SimpleNamespace(inputs=feeds)
            local, n = self.extras / "pipeline" / sel.component, next(calls)
            self.runner_ms["peak_kb"] = 0
            out = (self._stitched_set(sel, runner, local, n, vs) if is_tiled(sel.entry)
                   else self._outputs_of_set(sel, runner, local, n, vs))
            for name in local.glob(f"*.set{n}.*"):  # this call's tensors: read already, not kept
                name.unlink()
            return out, {"run_ms": self.runner_ms["run"] - before["run"],
                         "load_ms": self.runner_ms["load"] - before["load"],
                         "peak_rss_kb": self.runner_ms["peak_kb"] or None}
        return RemoteStage(sel, call, _label(sel, runner))

    def outputs(self, sel: Selection, sets: list[Any]) -> tuple[list[dict[str, Any]], str] | str:
        """executor_runner once per test-vector set: the inputs pushed as raw files (--inputs), the outputs written
        with --output_file and pulled back. onnxruntime_perf_test has no way to return outputs."""
        if sel.runtime not in RETURNS_OUTPUTS:
            return "onnxruntime_perf_test returns no outputs: check the .onnx with `mi2v verify` on the target"
        runner = self._runner(sel.runtime)
        if sel.runtime == "executorch" and not {"inputs", "output_file"} <= runner.flags:
            return f"{runner.name} on the device has no --inputs / --output_file flags"
        local = self.extras / "vectors" / sel.component
        outputs = [self._stitched_set(sel, runner, local, n, vs) if is_tiled(sel.entry)
                   else self._outputs_of_set(sel, runner, local, n, vs) for n, vs in enumerate(sets)]
        return outputs, _label(sel, runner)

    def _stitched_set(self, sel: Selection, runner: Runner, local: Path, n: int, vs: Any) -> dict[str, Any]:
        """A tiled entry's whole-frame outputs: every window runs on the device (one runner call each) and the
        host stitches them with the runtime layer's stage loop (runtimes/sessions.py `run_stage`: its time chunks
        and its tiles), as the app does."""
        x = next(iter(vs.inputs.values()))
        for k, stage in enumerate(sel.entry.tiling["stages"]):
            view = stage_entry(sel.entry, stage)
            count = itertools.count()
            run = lambda w, k=k, view=view, count=count: self._outputs_of_set(  # noqa: E731
                sel, runner, local, n, SimpleNamespace(inputs={"x": w}), stage=k, entry=view,
                base=f"{sel.component}.s{k}.w{next(count)}")["y"]
            x = run_stage(run, x, stage)
        return {sel.entry.outputs[0].name: x}

    def _outputs_of_set(self, sel: Selection, runner: Runner, local: Path, n: int, vs: Any, stage: int | None = None,
                        entry: Any = None, base: str | None = None) -> dict[str, Any]:
        if sel.runtime == "litert":
            return self._litert_outputs(sel, runner, local, n, vs, stage, entry or sel.entry, base or sel.component)
        s = self.session
        assert s is not None
        local.mkdir(parents=True, exist_ok=True)
        entry, tag = entry or sel.entry, base or sel.component
        d, base = s.remote_dir, f"{tag}.set{n}.out"
        remote = [self._push_input(local / f"{tag}.set{n}.in{k}.bin", array)  # beside the artifact, not staged
                  for k, array in enumerate(vs.inputs.values())]
        model, data = self._remote_names(sel, stage)
        args = [f"--model_path={d}/{model}", "--num_executions=1", "--inputs=" + ",".join(remote),
                f"--output_file={d}/{base}"]
        if data and "data_path" in runner.flags:
            args.append(f"--data_path={d}/{data}")
        if "print_output" in runner.flags:
            args.append("--print_output=none")
        if s.threads and "cpu_threads" in runner.flags:
            args.append(f"--cpu_threads={s.threads}")
        rc, out, err, _, hwm = s.run_runner(runner, args, self.opts.timeout)
        s.dev.shell(["rm", "-f", *remote])  # the inputs are not kept on the phone
        if rc != 0:
            raise RunnerFailure(runner_failure(runner.name, rc, out + err, [], []), out + err)
        self._count(parse_executor_runner(out + err), hwm)
        files = [s.pull_if_exists(f"{base}-{k}.bin", local / f"{base}-{k}.bin") for k in range(len(entry.outputs))]
        if any(f is None for f in files):
            raise DeviceError(f"{runner.name} wrote no {base}-<i>.bin output files for the {sel.component}")
        return raw_outputs(files, entry)

    def _push_input(self, path: Path, array: Any) -> str:
        """One input tensor as its raw bytes, written at `path` here and pushed to the staging folder; its remote
        path."""
        assert self.session is not None
        path.write_bytes(array.tobytes())
        remote = f"{self.session.remote_dir}/{path.name}"
        self.session.dev.push(path, remote)
        return remote

    def _litert_outputs(self, sel: Selection, runner: Runner, local: Path, n: int, vs: Any, stage: int | None,
                        entry: Any, tag: str) -> dict[str, Any]:
        """benchmark_model once on one input set: each input pushed as its raw bytes (--input_layer_value_files,
        bound by position in the model's subgraph order), the outputs written with --output_filepath (raw bytes
        in the subgraph's output order) and pulled back."""
        s = self.session
        assert s is not None
        local.mkdir(parents=True, exist_ok=True)
        model = self._remote_names(sel, stage)[0]
        ins, outs = self._litert_order(sel, stage)
        in_specs = {t.name: t for t in entry.inputs}
        d, remote, shapes = s.remote_dir, {}, {}
        for k, name in enumerate(ins):  # each in the model's own dtype: the tool checks the files' byte counts
            array = np.asarray(vs.inputs[name]).astype(dtypes.numpy_dtype(in_specs[name].dtype), copy=False)
            remote[name], shapes[name] = self._push_input(local / f"{tag}.set{n}.in{k}.bin", array), array.shape
        out_name = f"{tag}.set{n}.out.bin"
        args = runner_args(f"{d}/{model}", 0, 1, s.threads, remote, f"{d}/{out_name}", shapes=shapes)
        rc, out, err, _, hwm = s.run_runner(runner, args, self.opts.timeout)
        s.dev.shell(["rm", "-f", *remote.values()])
        parsed = parse_benchmark_model(out + err)
        if rc != 0:
            raise RunnerFailure(runner_failure(runner.name, rc, out + err, [], parsed.errors), out + err)
        self._count(parsed, hwm)
        pulled = s.pull_if_exists(out_name, local / out_name)
        if pulled is None:
            raise DeviceError(f"{runner.name} wrote no {out_name} for the {sel.component}")
        specs = {t.name: t for t in entry.outputs}
        try:
            return read_outputs(pulled.read_bytes(), [(o, specs[o].shape, dtypes.numpy_dtype(specs[o].dtype))
                                                      for o in outs])
        except (KeyError, ValueError, NotImplementedError) as exc:
            raise DeviceError(f"{runner.name}'s outputs for the {sel.component} do not match the manifest "
                              f"({first_line(exc)})") from None

    def _litert_order(self, sel: Selection, stage: int | None) -> tuple[list[str], list[str]]:
        """The model's input and output names in its subgraph order (how benchmark_model binds value files and
        writes outputs), read from the local file the manifest names (contained in its folder)."""
        name = sel.entry.file if stage is None else sel.entry.tiling["stages"][stage]["file"]
        try:
            _, ins, outs = signature_io(self.manifest.file_path(name))
        except (KeyError, ValueError) as exc:
            raise DeviceError(f"{name}: cannot read its signature ({first_line(exc)})") from None
        return ins, outs

    def _count(self, parsed: Any, hwm: int | None) -> None:
        """The runner's own run and load times and its peak, added up for `--pipeline` (`pipeline_stage`); a runner
        that prints its timings to logcat only is read there, as the timed runs are."""
        if not parsed.samples_ms and parsed.mean_ms is None and self.session is not None:
            extra = self.session.logcat_fallback()
            parsed = parse_executor_runner(extra) if extra else parsed
        self.runner_ms["run"] += sum(parsed.samples_ms) if parsed.samples_ms else (parsed.mean_ms or 0.0)
        self.runner_ms["load"] += parsed.load_ms or 0.0
        self.runner_ms["peak_kb"] = max(self.runner_ms.get("peak_kb") or 0, parsed.peak_rss_kb or hwm or 0)

    def _profile(self, sel: Selection, runner: Runner) -> str | None:
        """--etdump: a separate one-iteration run with --etdump_path; the pulled file, relative to the report."""
        s = self.session
        assert s is not None
        if "etdump_path" not in runner.flags:
            s.warnings.append(f"--etdump: {runner.name} has no --etdump_path (build it with "
                              "-DEXECUTORCH_ENABLE_EVENT_TRACER=ON)")
            return None
        self.say(f"{sel.component}: a separate profiling run for the ETDump")
        name = f"{sel.component}.etdump"
        s.run_executorch(runner, self._remote_names(sel)[0], None, 0, 1, self.opts.timeout, etdump=name)
        dump = s.pull_if_exists(name, self.extras / name)
        return os.path.relpath(dump, self.json_dir) if dump else None

    def _read_profile(self, sel: Selection, etdump: str | None) -> dict[str, Any]:
        """--profile: the per-op profile of the ETDump the runner wrote, read here (devices/profile.py)."""
        if sel.runtime != "executorch":
            return {"reason": f"{RUNNER_FOR_RUNTIME[sel.runtime]}'s profiles are not read by mi2v: profile "
                              f"{sel.entry.file} on the host"}
        if is_tiled(sel.entry):
            return {"reason": "a tiled component is profiled stage by stage on the host (--device host)"}
        if etdump is None:
            return {"reason": "the runner wrote no ETDump (build it with -DEXECUTORCH_ENABLE_EVENT_TRACER=ON)"}
        return phone_profile(self.json_dir / etdump, sel.entry, 1, self.json_dir,
                             etrecord_of(self.manifest.folder, sel.entry))

    def finish(self, report: BenchReport) -> None:
        if self.session is None:
            return
        s = self.session
        if s.remote_dir:
            report.staging = {"remote_dir": s.remote_dir, "pushed": s.pushed, "already_there": s.already_there,
                              "kept": True}
        report.warnings.extend(s.warnings)
        if self.simulated_qnn:
            report.warnings.append(f"{', '.join(self.simulated_qnn)}: timed on the QNN HTP simulator of a simulated "
                                   "phone (x86_64), simulated timings that say nothing about a phone's speed")


# --------------------------------------------------------------------------------------------------------------------
# the adb device kind
# --------------------------------------------------------------------------------------------------------------------


def _weighed_stats(runs: list[RunResult], counts: list[int]) -> dict[str, Any]:
    """A tiled component's mean and median per call from runners that print statistics only: each stage's figure
    times its windows per call, summed (a sum of medians, not the median of sums: the runner kept no samples)."""
    out: dict[str, Any] = {}
    if all(run.mean_only_ms is not None for run in runs):
        out["mean_only_ms"] = sum(n * run.mean_only_ms for n, run in zip(counts, runs))
    if all((run.runner_stats or {}).get("p50") is not None for run in runs):
        out["runner_stats"] = {"p50": sum(n * run.runner_stats["p50"] for n, run in zip(counts, runs))}
    return out


def _label(sel: Selection, runner: Runner) -> str:
    """What ran a set: the runner and its backend (ExecuTorch's delegate, LiteRT's XNNPACK)."""
    backend = "xnnpack" if sel.runtime == "litert" else (sel.entry.delegate or "portable")
    return f"{runner.name}/{backend}"


def phone_refuses(entry: Any, runtime: str) -> str | None:
    """An ExecuTorch program delegated to a backend Android phones do not have (Core ML, MPS); a LiteRT model
    compiled for an NPU, which benchmark_model runs only through the vendor's dispatch library (not driven yet)."""
    if runtime == "executorch" and entry.delegate in PHONE_UNSUPPORTED_DELEGATES:
        return f"{entry.file} is delegated to {entry.delegate}, which Android phones do not have"
    if runtime == "litert" and entry.delegate in NPU_DELEGATES:
        return (f"{entry.file} is compiled for the {entry.delegate} NPU: mi2v does not drive benchmark_model's "
                "NPU dispatch yet (time the CPU .tflite of a plain --target litert export)")
    return None


def describe_phone(device: dict[str, Any], protocol: dict[str, Any]) -> str:
    return (f"{device.get('manufacturer') or ''} {device.get('model') or ''} ({device.get('serial')}), SoC "
            f"{device.get('soc_model')}, Android {device.get('os_version')}, {device.get('abi')}")


def _open(opts: BenchOptions, manifest: Any, serial: str | None, json_path: Path, say: Say,
          system: str | None) -> list[BenchDevice]:
    return [AdbRunnerDevice(opts, manifest, serial, json_path, say)]


register(DeviceKind("adb", open=_open, spellings=("adb", "adb:SERIAL"), defaults=PHONE_DEFAULTS,
                    refuses=phone_refuses, describe=describe_phone))
