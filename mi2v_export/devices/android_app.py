"""`--device adb[:SERIAL] --via app`: a phone timed inside the Android benchmark app (apps/android).

The host reads the phone's facts and thermals over adb (`AdbPhone`, devices/android.py); one instrumentation run
at the first run() times every prepared component in the app's process (apps/android_app.py `run_via_app`:
install, push, `am instrument`, read the app's report), and its report is merged into the loop's. With `--pipeline`
the app runs the whole image-to-video loop itself (`pipeline_clips`: apps/android_pipeline.py), and the pipeline
bench (devices/pipeline_bench.py) summarises its clips and compares its videos with PyTorch fp32.

The module registers the `adb` kind of `--via app`: ExecuTorch `.pte` artifacts only, the phone's defaults, and
`--dry-run` (the exact commands, no device touched).
"""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

from ..apps.android_app import (APP_DIR, APP_RUNNER, AppArtifact, app_artifact, artifacts_from_manifest,
                                merge_app_report, run_via_app)
from ..apps.android_pipeline import pipeline_commands, run_pipeline_app
from ..apps.build import print_commands
from ..calibration import VALIDATION_IMAGE
from ..errors import BadInputError, DeviceError, Mi2vError
from ..runtimes.sessions import is_tiled
from .android import PHONE_DEFAULTS, AdbPhone, describe_phone, phone_refuses
from .base import BenchDevice, BenchOptions, ComponentResult, DeviceFacts, Say, Selection
from .registry import DeviceKind, register
from .report import SCHEMA, BenchReport
from .selection import family_of, select_artifacts


class AppDevice(AdbPhone):
    """A phone over adb timed inside the Android benchmark app: the host reads the phone's facts and thermals over
    adb; one instrumentation run (at the first run()) times every prepared component in the app's process."""

    together = True
    runs_pipeline = True

    def __init__(self, opts: BenchOptions, manifest: Any, serial: str | None, say: Say):
        super().__init__(opts, manifest, serial, say)
        self.items: list[AppArtifact] = []
        self.batch: BenchReport | Mi2vError | None = None
        self.device: dict[str, Any] = {}
        self.app_dir = Path(opts.app_dir) if opts.app_dir else APP_DIR

    def select(self, manifest: Any, opts: BenchOptions) -> list[Selection]:
        """The .pte of each component (the app runs ExecuTorch only)."""
        sels = select_artifacts(manifest, "executorch", "adb", opts.components)
        if all(s.entry is None for s in sels):
            raise BadInputError(f"{opts.artifacts}: no ExecuTorch (.pte) artifact for {', '.join(opts.components)}; "
                                "the app runs .pte only: export with `--target executorch`")
        for s in sels:
            if s.entry is None and not any(e.component == s.component and family_of(e) == "executorch"
                                           for e in manifest.components):
                s.reason = "no ExecuTorch artifact in the manifest (the app runs .pte only)"
        return sels

    def prepare(self, sel: Selection) -> None:
        """A tiled component is several programs; the app's component timing runs one per component, so it is
        refused (the whole run, `--pipeline --via app`, runs every stage through the app's tile loop)."""
        if is_tiled(sel.entry):
            raise BadInputError(f"{sel.component} is tiled ({len(sel.entry.tiling['stages'])} stage programs): the "
                                "app times one program per component; time it inside the whole run "
                                "(`--pipeline --via app`) or with the native runner (drop `--via app`)")
        item = artifacts_from_manifest(self.opts.artifacts, [sel.component])[0][0]
        item.sha256 = None  # the bench loop applied the integrity policy (mi2v_export/integrity.py): hash what is there
        self.items.append(item)

    def print_commands(self, echo: Say) -> None:
        for sel in self.select(self.manifest, self.opts):
            if sel.entry is not None:
                self.prepare(sel)
        adb = SimpleNamespace(path=str(self.opts.adb)) if self.opts.adb else None
        run_via_app(self.serial or "SERIAL", self.items, self.opts.iterations, self.opts.warmup, dry_run=True,
                    runs=self.opts.runs, frames=self.manifest.frames, adb=adb, app_dir=self.app_dir, echo=echo)

    def print_pipeline_commands(self, selections: dict[str, Selection], popts: Any, echo: Say) -> None:
        adb = str(self.opts.adb) if self.opts.adb else "adb"
        items = [app_artifact(self.manifest, self.opts.artifacts, sel.entry) for sel in selections.values()]
        print_commands(pipeline_commands(self.serial or "SERIAL", items, popts.clips, popts.duration_s,
                                         app_dir=self.app_dir, adb=adb), echo)

    def pipeline_clips(self, selections: dict[str, Selection], image: Any, config: Any, popts: Any,
                       say: Say) -> tuple[dict[str, Any], dict[str, Any]]:
        """The clips inside the app (apps/android_pipeline.py); its report is merged like a component run's
        (finish), its `pipeline` block and videos go back to the pipeline bench."""
        o = self.opts
        items = [app_artifact(self.manifest, o.artifacts, sel.entry) for sel in selections.values()]
        image_name = Path(popts.image or VALIDATION_IMAGE).name  # as pipeline_bench.image_name
        timeout = o.timeout * popts.clips + (popts.duration_s or 0.0)  # --timeout is per clip here
        app, videos, staging = run_pipeline_app(self.session.dev, items, config, image, image_name, popts.clips,
                                                popts.duration_s, app_dir=self.app_dir, timeout=timeout, say=say)
        base = {"schema": SCHEMA, "device": self.device, "components": []}
        merged = merge_app_report(app, base, serial=self.session.dev.serial, artifacts=items,
                                  host={"adb": {"path": self.session.adb.path}})
        merged["staging"] = {**(merged.get("staging") or {}), **staging}
        self.batch = BenchReport.from_dict(merged)
        return app["pipeline"], videos

    def facts(self) -> DeviceFacts:
        self.device, host = self.connect()
        assert self.session is not None
        uncontrolled = [*self.session.uncontrolled, "the app process is not pinned to cores and CPU clocks are not "
                        "locked", "screen state, charging and background apps are not controlled"]
        return DeviceFacts(self.device, host, {"mode": "app", "runner": APP_RUNNER}, uncontrolled)

    def run(self, sel: Selection, comp: ComponentResult) -> ComponentResult:
        if self.batch is None:
            self.batch = self._run_app()
        if isinstance(self.batch, Mi2vError):
            raise self.batch
        measured = self.batch.component(sel.component)
        if measured is None:
            raise DeviceError("not measured: the app did not report it")
        return measured

    def outputs(self, sel: Selection, sets: list[Any]) -> str:
        """The app checks the outputs itself (its report's output_check); reached only when it did not."""
        item = next((a for a in self.items if a.component == sel.component), None)
        why = item.check_reason if item is not None and item.check_reason else "the app's report has no output_check"
        return f"the app did not check the outputs: {why}"

    def _run_app(self) -> BenchReport | Mi2vError:
        """Install when needed, push, instrument once for every prepared component, read the app's report."""
        o = self.opts
        base = {"schema": SCHEMA, "device": self.device, "components": []}
        try:
            merged = run_via_app(self.session.dev, self.items, o.iterations, o.warmup, runs=o.runs,
                                 frames=self.manifest.frames, base_report=base, adb=self.session.adb,
                                 app_dir=self.app_dir, timeout=o.timeout, say=self.say)
        except Mi2vError as exc:
            return exc
        return BenchReport.from_dict(merged)

    def finish(self, report: BenchReport) -> None:
        """The app's view joins the host's: device facts as merged, its protocol and conditions, its warnings."""
        b = self.batch
        if not isinstance(b, BenchReport):
            return
        report.device, report.tool, report.staging = b.device, b.tool, b.staging
        report.protocol.update({k: v for k, v in b.protocol.items() if k not in report.protocol
                                or k in ("warmup", "iterations", "runs", "timed_region")})
        report.conditions["app"] = b.conditions
        report.warnings += [w for w in b.warnings if w not in report.warnings]


# --------------------------------------------------------------------------------------------------------------------
# the adb device kind of --via app
# --------------------------------------------------------------------------------------------------------------------


def _check(opts: BenchOptions) -> None:
    if opts.runtime not in ("auto", "executorch"):
        raise BadInputError(f"--via app runs ExecuTorch .pte artifacts only: drop --runtime {opts.runtime}, or use "
                            "the native runners (--via runner)")


def _claims(opts: BenchOptions) -> str | None:
    """--via app on another transport than adb."""
    return "--via app runs the Android benchmark app: use it with --device adb[:SERIAL]" if opts.via == "app" else None


def _describe(device: dict[str, Any], protocol: dict[str, Any]) -> str:
    return describe_phone(device, protocol) + ", measured by the Android app"


def _open(opts: BenchOptions, manifest: Any, serial: str | None, json_path: Path, say: Say,
          system: str | None) -> list[BenchDevice]:
    return [AppDevice(opts, manifest, serial, say)]


register(DeviceKind("adb", via="app", open=_open, defaults=PHONE_DEFAULTS, dry_run=True, check=_check,
                    claims=_claims, refuses=phone_refuses, describe=_describe))
