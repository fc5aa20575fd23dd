"""What every bench device is: the options of a run, the facts a device reports, and the device interface.

The bench loop (devices/bench.py `bench_device`) drives a `BenchDevice`: facts() once, prepare(sel) for every
component, then per component cool_down() and run(); finish() at the end, whatever happened. The devices:

* `host.HostDevice` (`--device host`): in this process, warm-up discarded in the same process;
* `android.AdbRunnerDevice` (`--device adb[:SERIAL]`): a phone over adb with its native runners
  (`executor_runner` for `.pte`, `onnxruntime_perf_test` for `.onnx`), pinned, thermally gated;
* `android_app.AppDevice` (`--via app`) and `ios.IOSDevice` (`--device ios:UDID`, one per compute unit): the
  benchmark apps (apps/), which time every component in one process.

Each registers its kind (devices/registry.py) in its own module.
"""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..contract import COMPONENTS
from ..errors import BadInputError
from .report import BenchReport, ComponentResult, RunResult
from .selection import Selection, select_artifacts

Say = Callable[[str], None]  # a progress note (the CLI logs it on stderr)

NO_DRY_RUN = ("--dry-run prints the commands of --via app and --device ios:UDID; the host and native-runner "
              "benchmarks have nothing to print without running")


def quiet(_: str) -> None:
    """The `Say` that drops every note."""
    return None


@dataclass
class BenchOptions:
    """`mi2v bench`'s options: the loop's, then those only some device kinds read (each kind checks its own,
    `DeviceKind.check` / `claims`)."""

    artifacts: Path
    device: str = "host"
    runtime: str = "auto"
    iterations: int | None = None  # None: the kind's default (DeviceKind.defaults)
    warmup: int | None = None
    runs: int = 1
    steps: int = 2
    runners: list[Path] = field(default_factory=list)  # adb: the native runners (host: warned about)
    cpu_mask: str | None = None  # host, adb
    threads: int | None = None  # host
    adb: Path | None = None
    adb_port: int | None = None
    adb_host: str | None = None  # an adb server on another machine (adb -H); None: this machine's
    json_path: Path | None = None
    cooldown: float | None = None
    thermal_wait: float = 120.0
    timeout: float = 600.0
    etdump: bool = False  # adb runners
    profile: bool = False  # per-op profiles from the runtime's own profiler (devices/profile.py)
    stage_processes: bool = False  # host --pipeline: each stage call in a fresh process (devices/stage_child.py)
    components: tuple[str, ...] = COMPONENTS
    via: str = "runner"  # adb: the native runners (default) or the Android benchmark app (apps/android)
    dry_run: bool = False  # --via app / ios: print the exact commands, touch no device
    team: str | None = None  # ios: Apple development team for signing the test bundle
    compute_units: tuple[str, ...] = ()  # ios: Core ML compute units to time (default: all four)
    app_dir: Path | None = None  # --via app / ios: the apps/android (built APKs) or apps/ios folder (default: this
    # checkout's)
    allow_modified: bool = False  # run files that differ from the manifest (mi2v_export/integrity.py), recorded


@dataclass
class DeviceFacts:
    """What a device says about itself before the first component (the report's device, host and protocol)."""

    device: dict[str, Any]
    host: dict[str, Any] = field(default_factory=dict)
    protocol: dict[str, Any] = field(default_factory=dict)  # threads, affinity, how memory is measured, mode
    uncontrolled: list[str] = field(default_factory=list)


class BenchDevice(ABC):
    """A place where components are timed: this machine, a phone's native runners, the Android app, the iOS XCTest.

    The loop (`bench_device`) calls facts() once, prepare(sel) for every component, then per component
    cool_down() and run(); finish() at the end, whatever happened. A device that measures every component in one
    process (the apps) sets `together` and does its work at the first run(). One that runs the whole
    `--pipeline` loop itself (the Android app) sets `runs_pipeline` and does it in pipeline_clips()."""

    transport = "host"
    together = False
    runs_pipeline = False

    def select(self, manifest: Any, opts: BenchOptions) -> list[Selection]:
        return select_artifacts(manifest, opts.runtime, self.transport, opts.components)

    def report_path(self, json_path: Path) -> Path:
        """Where this device's report goes (iOS: one file per compute unit beside --json)."""
        return json_path

    @abstractmethod
    def facts(self) -> DeviceFacts:
        """Connect and describe the device; raise Mi2vError when it does not answer (then no report is written)."""

    def snapshot(self) -> dict[str, Any]:
        return {}

    def prepare(self, sel: Selection) -> None:
        """Check (and stage) what the component needs; raise Mi2vError when it cannot run."""

    def cool_down(self, pause_s: float, label: str) -> dict[str, Any]:
        """Pause before a component; returns the snapshot it starts from."""
        if pause_s > 0:
            time.sleep(pause_s)
        return self.snapshot()

    @abstractmethod
    def run(self, sel: Selection, comp: ComponentResult) -> ComponentResult:
        """Time the component (`comp` has its artifact and runtime filled in); return it with its runs."""

    def alive(self) -> bool:
        """False when the device is gone (the remaining components are not run)."""
        return True

    def outputs(self, sel: Selection, sets: list[Any]) -> tuple[list[dict[str, Any]], str] | str:
        """Run the artifact once per stored test-vector input set (testvectors.VectorSet) where it was timed:
        (one output dict per set, the runtime's name), or why this device cannot return outputs."""
        return "this device returns no outputs"

    def pipeline_stage(self, sel: Selection) -> Any:
        """The component as a pipeline stage (mi2v_export/pipeline/stages.py `Stage`) that runs on this device, for
        `mi2v bench --pipeline` (devices/pipeline_bench.py); None where this kind cannot drive the whole run. A
        stage whose device reports its own time offers `take_times()` → {"device_ms", "device_load_ms",
        "transfer_ms", "peak_rss_kb"} since the last call (devices/remote_stage.py)."""
        return None

    def pipeline_clips(self, selections: dict[str, Selection], image: Any, config: Any, popts: Any,
                       say: Say) -> tuple[dict[str, Any], dict[str, Any]]:
        """Where `runs_pipeline`: run `popts.clips` clips of `config` on `image` on the device and return its
        report's `pipeline` block (the schema's) and each distinct video's uint8 frames by sha256."""
        raise BadInputError("this device does not run the whole pipeline itself")

    def finish(self, report: BenchReport) -> None:
        """Record what the device staged and warned about; release what it holds."""

    def print_commands(self, echo: Say) -> None:
        raise BadInputError(NO_DRY_RUN)

    def print_pipeline_commands(self, selections: dict[str, Selection], popts: Any, echo: Say) -> None:
        """`--pipeline --dry-run`: the commands of a device that runs the whole loop itself."""
        raise BadInputError("--pipeline --dry-run prints the commands of --via app; the other devices have nothing "
                            "to print without running")


__all__ = ["NO_DRY_RUN", "BenchDevice", "BenchOptions", "BenchReport", "ComponentResult", "DeviceFacts", "RunResult",
           "Say", "Selection", "quiet"]
