"""The benchmark report: schema `mi2v.bench/1`, statistics, the per-frame headline, save/load/compare.

One JSON file per bench invocation:

    {
      "schema": "mi2v.bench/1",
      "created_utc": "2026-…Z",
      "status": "ok" | "partial" | "failed",        # partial: some component failed/skipped or the run stopped early
      "error": null | "one line: cause and fix",     # the first failure (what the CLI printed)
      "tool": {"name": "mi2v", "version": …},
      "host": {"os", "python", "adb": {"path", "version", "server_port"}},   # adb only for --device adb
      "device": {"transport": "host"|"adb", "serial", "simulated_device": bool,
                 adb: "manufacturer", "brand", "model", "device", "soc_manufacturer", "soc_model", "board_platform",
                      "hardware", "os": "android", "os_version", "sdk_int", "build_fingerprint", "build_type", "abi",
                      "abilist", "mem_total_kb", "mem_available_kb", "cpus": [{"id", "max_khz", "governor",
                      "cur_khz"}], "max_khz", "governors", "shell_v2", "toybox_time", "simulator";
                 host: "os", "machine", "cpu", "cores", "mem_total_kb", "python", "runtimes", "governors", "max_khz"},
      "artifacts": {"folder", "preset", "resolution": [H, W], "frames", "latent_shape", "weights", "runtime_choice"},
      "protocol": {"warmup", "iterations", "runs", "warmup_in_timed_process": true, "inputs": "ones", "steps",
                   "threads", "affinity_mask", "affinity_granted", "affinity_rule", "peak_rss_method",
                   "cooldown_s", "thermal_wait_s", "timeout_s", "percentile_method": "nearest-rank"},
      "conditions": {"before": {"time_utc", "thermal_status", "temps_c", "battery": {"level", "temp_c", "plugged"},
                                "cur_khz"}, "after": {…}, "uncontrolled": ["what could not be controlled", …]},
      "staging": {"remote_dir": "/data/local/tmp/mi2v/<hash>", "pushed": [...], "already_there": [...]},   # adb
      "frames": 17,                                 # video frames one encoder+denoiser+decoder pass produces
      "components": [
        {"component": "encoder"|"denoiser"|"decoder", "status": "ok"|"failed"|"skipped", "error": null|"…",
         "artifact": {"file", "path", "format", "model", "target", "delegate", "precision", "sha256", "bytes",
                      "extra_files", "inputs", "parity": {"verified_on": [runtimes it passed on], "passed"}},
         "runtime": {"name", "timed_region", "backend", "threads", "affinity_mask", "runner", "runner_path",
                     "runner_sha256", "runner_source", "runner_file", "runner_libs", "log_channel", "etdump",
                     "failure_log", "version"},
         "conditions": {"before": {…snapshot…}, "after": {…}},
         "output_check": {"psnr_db", "rel_l2", "max_abs", "passed", "finite", "sets", "gate", "runtime"} | null,
                                                  # outputs on the test vectors' inputs vs the stored PyTorch outputs
         "profile": {"runtime", "tool", "runs", "total_ms", "run_ms", "delegated_share", "op_types", "notes",
                     "trace", "ops": [{"op", "calls", "total_ms", "share", "delegated", "where"}]}
                    | {"reason"} | null,       # --profile: the runtime's own per-op profile (devices/profile.py)
         "runs": [{"load_ms", "samples_ms": [...], "warmup_ms": [...], "first_iteration_ms", "mean_only_ms",
                   "peak_rss_kb", "peak_rss_scope", "peak_rss_method", "exit_code", "backend", "threads",
                   "wall_s", "etdump", "log"}],
         "summary": {"latency_ms": {n, min, p10, p50, p90, p99, max, mean, stdev, trimmed_mean_10, run_medians},
                     "load_ms": {"median"}, "peak_rss_kb"}}
      ],
      "per_frame_ms": {"1": …, "2": …},             # (encoder + steps × denoiser + decoder) p50s / frames
      "headline": {"steps", "per_frame_ms", "frames_per_s", "source"},   # a pipeline report: measured over
                                                    # whole runs; else the component medians' formula
      "warnings": [...],
      "modified_files": [{"component", "file", "expected_sha256", "sha256", "expected_bytes", "bytes"}],
                                                    # only with --allow-modified (mi2v_export/integrity.py)
      "pipeline": {...}                             # only with --pipeline: devices/pipeline_bench.py, the schema
    }

The paths a report holds for its own files (a run's `log` and `etdump`, a component's `runtime.etdump` and
`runtime.failure_log`) are relative to the report's folder; `load` checks that each stays inside it
(mi2v_export/safepath.py), so a report passed around cannot make a reader open a file elsewhere.

Percentiles are nearest-rank (the value at rank ⌈q·n⌉ of the sorted samples), so every reported percentile is a
measured sample. stdev is the sample standard deviation (n−1).
"""

from __future__ import annotations

import math
import os
import statistics
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from .. import schemas
from ..contract import COMPONENTS
from ..files import read_json, write_json_atomic
from ..errors import BadInputError
from ..safepath import contained

SCHEMA = "mi2v.bench/1"
PERCENTILE_METHOD = "nearest-rank"


# --------------------------------------------------------------------------------------------------------------------
# statistics
# --------------------------------------------------------------------------------------------------------------------


def percentile(samples: list[float], q: float) -> float:
    """Nearest-rank percentile, q in [0, 100]."""
    if not samples:
        raise ValueError("no samples")
    ordered = sorted(samples)
    rank = max(1, math.ceil(q / 100.0 * len(ordered)))
    return ordered[min(rank, len(ordered)) - 1]


def trimmed_mean(samples: list[float], proportion: float = 0.1) -> float:
    """Mean after dropping `proportion` of the samples at each end (10% → the middle 80%)."""
    ordered = sorted(samples)
    k = int(len(ordered) * proportion)
    middle = ordered[k:len(ordered) - k] or ordered
    return sum(middle) / len(middle)


def latency_stats(samples: list[float]) -> dict[str, float | int]:
    if not samples:
        return {"n": 0}
    return {
        "n": len(samples),
        "min": min(samples),
        "p10": percentile(samples, 10),
        "p50": percentile(samples, 50),
        "p90": percentile(samples, 90),
        "p99": percentile(samples, 99),
        "max": max(samples),
        "mean": statistics.fmean(samples),
        "stdev": statistics.stdev(samples) if len(samples) > 1 else 0.0,
        "trimmed_mean_10": trimmed_mean(samples, 0.1),
    }


# --------------------------------------------------------------------------------------------------------------------
# report objects
# --------------------------------------------------------------------------------------------------------------------


@dataclass
class RunResult:
    """One runner process (or one in-process run on the host)."""

    load_ms: float | None = None
    samples_ms: list[float] = field(default_factory=list)  # timed iterations, warm-up removed
    warmup_ms: list[float] = field(default_factory=list)  # discarded warm-up iterations (same process)
    peak_rss_kb: int | None = None
    peak_rss_scope: str | None = None  # component | process | runner
    exit_code: int | None = None
    first_iteration_ms: float | None = None
    backend: str | None = None
    threads: int | None = None
    log: str | None = None  # path of the raw stdout+stderr (kept for failed runs), relative to the report
    peak_rss_method: str | None = None  # in-process-vmhwm | toybox-time | vmhwm-poll | runner
    mean_only_ms: float | None = None  # runners older than ExecuTorch 1.3 print only a total (→ mean)
    etdump: str | None = None  # pulled ETDump, relative to the report
    wall_s: float | None = None  # the whole runner process, as seen from the host
    # a tiled component: per stage its file, windows per call and median window time (runtimes/sessions.py)
    tiles: list[dict[str, Any]] | None = None
    # a runner that prints no per-run times but its own statistics (LiteRT's benchmark_model): min / max / p50 /
    # p95 / std / avg in ms and the run count, as the runner computed them
    runner_stats: dict[str, float] | None = None


@dataclass
class ComponentResult:
    component: str
    status: str = "ok"
    error: str | None = None
    artifact: dict[str, Any] = field(default_factory=dict)
    runtime: dict[str, Any] = field(default_factory=dict)
    runs: list[RunResult] = field(default_factory=list)
    conditions: dict[str, Any] = field(default_factory=dict)  # device state before/after this component
    # the artifact's outputs on the benchmarked runtime vs its test vectors (devices/output_check.py), or None
    output_check: dict[str, Any] | None = None
    # `--profile`: top operators by time from the runtime's own profiler (devices/profile.py), or why there is none
    profile: dict[str, Any] | None = None

    def samples(self) -> list[float]:
        return [s for r in self.runs for s in r.samples_ms]

    def runner_p50s(self) -> list[float]:
        """Each run's median as its runner computed it, where the runner printed statistics but no samples."""
        return [r.runner_stats["p50"] for r in self.runs
                if not r.samples_ms and r.runner_stats and r.runner_stats.get("p50") is not None]

    def summary(self) -> dict[str, Any]:
        samples = self.samples()
        lat = latency_stats(samples)
        if samples:
            lat["run_medians"] = [percentile(r.samples_ms, 50) for r in self.runs if r.samples_ms]
        elif self.runner_p50s():  # the runner's own medians (it printed no per-run times)
            lat.update(p50=statistics.median(self.runner_p50s()), source="runner statistics")
        loads = [r.load_ms for r in self.runs if r.load_ms is not None]
        rss = [r.peak_rss_kb for r in self.runs if r.peak_rss_kb is not None]
        return {
            "latency_ms": lat,
            "load_ms": {"median": statistics.median(loads)} if loads else {},
            "peak_rss_kb": max(rss) if rss else None,
        }

    def median_ms(self) -> float | None:
        samples, runner = self.samples(), self.runner_p50s()
        if self.status != "ok" or not (samples or runner):
            return None
        return percentile(samples, 50) if samples else statistics.median(runner)


@dataclass
class BenchReport:
    device: dict[str, Any]
    components: list[ComponentResult] = field(default_factory=list)
    frames: int | None = None
    protocol: dict[str, Any] = field(default_factory=dict)
    conditions: dict[str, Any] = field(default_factory=dict)
    host: dict[str, Any] = field(default_factory=dict)
    tool: dict[str, Any] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    created_utc: str = field(default_factory=lambda: datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"))
    artifacts: dict[str, Any] = field(default_factory=dict)  # the manifest's folder, preset, resolution, weights
    staging: dict[str, Any] = field(default_factory=dict)  # adb: remote folder, files pushed / already there
    error: str | None = None  # the first error (one line), when a component failed or the run stopped early
    steps: int = 2  # the denoising steps of the headline
    modified_files: list[dict[str, Any]] = field(default_factory=list)  # --allow-modified: integrity.Modified
    pipeline: dict[str, Any] | None = None  # `--pipeline`: the whole run, clip by clip (devices/pipeline_bench.py)

    def component(self, name: str) -> ComponentResult | None:
        return next((c for c in self.components if c.component == name), None)

    @property
    def status(self) -> str:
        states = {c.status for c in self.components}
        if "ok" not in states:
            return "failed"
        return "ok" if states == {"ok"} and not self.error else "partial"

    def per_frame_ms(self, steps: int) -> float | None:
        """(encoder + steps × denoiser + decoder) / frames, from each component's median; None if any is missing."""
        if not self.frames:
            return None
        parts = {name: (c.median_ms() if (c := self.component(name)) else None) for name in COMPONENTS}
        if any(v is None for v in parts.values()):
            return None
        return (parts["encoder"] + steps * parts["denoiser"] + parts["decoder"]) / self.frames  # type: ignore[operator]

    def to_dict(self) -> dict[str, Any]:
        protocol = {"percentile_method": PERCENTILE_METHOD, **self.protocol}
        comps = []
        for c in self.components:
            d = asdict(c)
            d["summary"] = c.summary()
            comps.append(d)
        return {
            "schema": SCHEMA,
            "created_utc": self.created_utc,
            "status": self.status,
            "error": self.error,
            "tool": self.tool or _tool_info(),
            "host": self.host,
            "device": self.device,
            "artifacts": self.artifacts,
            "protocol": protocol,
            "conditions": self.conditions,
            "staging": self.staging,
            "frames": self.frames,
            "components": comps,
            "per_frame_ms": {str(s): self.per_frame_ms(s) for s in (1, 2)},
            "headline": self.headline(),
            "warnings": list(self.warnings),
            **({"modified_files": list(self.modified_files)} if self.modified_files else {}),
            **({"pipeline": self.pipeline} if self.pipeline is not None else {}),
        }

    def headline(self) -> dict[str, Any]:
        """The per-frame figure: measured over whole runs for a pipeline report, else computed from the component
        medians (`source` says which)."""
        measured = ((self.pipeline or {}).get("headline") or {}).get("measured_per_frame_ms")
        value = measured if measured is not None else self.per_frame_ms(self.steps)
        return {"steps": self.steps, "per_frame_ms": value, "frames_per_s": (1000.0 / value) if value else None,
                "source": "pipeline (measured)" if measured is not None else "component medians (computed)"}

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write atomically (a partial report is still a complete JSON file)."""
        return write_json_atomic(path, self.to_dict())

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> BenchReport:
        validate(data)
        comps = []
        for c in data["components"]:
            runs = [RunResult(**{k: v for k, v in r.items() if k in RunResult.__dataclass_fields__})
                    for r in c.get("runs", [])]
            comps.append(ComponentResult(component=c["component"], status=c.get("status", "ok"), error=c.get("error"),
                                         artifact=c.get("artifact", {}), runtime=c.get("runtime", {}), runs=runs,
                                         conditions=c.get("conditions", {}), output_check=c.get("output_check"),
                                         profile=c.get("profile")))
        protocol = {k: v for k, v in data.get("protocol", {}).items() if k != "percentile_method"}
        return cls(device=data["device"], components=comps, frames=data.get("frames"), protocol=protocol,
                   conditions=data.get("conditions", {}), host=data.get("host", {}), tool=data.get("tool", {}),
                   warnings=list(data.get("warnings", [])), created_utc=data.get("created_utc", ""),
                   artifacts=data.get("artifacts", {}), staging=data.get("staging", {}), error=data.get("error"),
                   steps=int((data.get("headline") or {}).get("steps", 2)),
                   modified_files=list(data.get("modified_files") or []), pipeline=data.get("pipeline"))

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> BenchReport:
        data = read_json(path, "bench report")
        try:
            report = cls.from_dict(data)
        except BadInputError as exc:
            raise BadInputError(f"{path}: {exc}") from None
        for what, value in report.attached_files():
            contained(Path(path).parent, value, f"{path}: {what}")
        return report

    def attached_files(self) -> list[tuple[str, str]]:
        """(field, path relative to the report) of the files the report points at: ETDumps and failure logs."""
        found = []
        for c in self.components:
            for key in ("etdump", "failure_log"):
                if c.runtime.get(key) is not None:
                    found.append((f"components.{c.component}.runtime.{key}", c.runtime[key]))
            if (c.profile or {}).get("trace") is not None:
                found.append((f"components.{c.component}.profile.trace", c.profile["trace"]))
            for n, run in enumerate(c.runs):
                found += [(f"components.{c.component}.runs.{n}.{key}", getattr(run, key))
                          for key in ("log", "etdump") if getattr(run, key) is not None]
        return found


def validate(data: Any) -> None:
    """Raise BadInputError unless `data` is a report this version reads."""
    if not isinstance(data, dict) or "schema" not in data:
        raise BadInputError("not a mi2v bench report (no `schema` field)")
    schema = str(data["schema"])
    family, _, version = schema.partition("/")
    if family != "mi2v.bench":
        raise BadInputError(f"not a mi2v bench report (schema {schema!r})")
    if version != SCHEMA.split("/")[1]:
        raise BadInputError(f"bench report schema {schema!r} is not supported by this mi2v (reads {SCHEMA})")
    schemas.validate(data, schemas.BENCH_REPORT, "malformed bench report")  # mi2v_export/schemas/bench-report


def compare(a: BenchReport, b: BenchReport) -> list[dict[str, Any]]:
    """Rows of (metric, a, b, b/a) for the per-frame headline and each component's median/p90/load."""
    rows: list[dict[str, Any]] = []

    def add(metric: str, va: float | None, vb: float | None) -> None:
        ratio = (vb / va) if (va and vb is not None) else None
        rows.append({"metric": metric, "a": va, "b": vb, "ratio": ratio})

    for steps in (1, 2):
        add(f"per-frame ms ({steps} step{'s' if steps > 1 else ''})", a.per_frame_ms(steps), b.per_frame_ms(steps))
    for name in COMPONENTS:
        ca, cb = a.component(name), b.component(name)
        sa = ca.summary() if ca else {"latency_ms": {}, "load_ms": {}}
        sb = cb.summary() if cb else {"latency_ms": {}, "load_ms": {}}
        add(f"{name} p50 ms", sa["latency_ms"].get("p50"), sb["latency_ms"].get("p50"))
        add(f"{name} p90 ms", sa["latency_ms"].get("p90"), sb["latency_ms"].get("p90"))
        add(f"{name} load ms", sa["load_ms"].get("median"), sb["load_ms"].get("median"))
    if a.pipeline is not None or b.pipeline is not None:
        for metric, path in PIPELINE_ROWS:
            add(metric, _dig(a.pipeline, path), _dig(b.pipeline, path))
    return rows


# `bench compare` rows of pipeline reports: (metric, path in the `pipeline` block)
PIPELINE_ROWS = (("pipeline per-frame ms (measured)", ("headline", "measured_per_frame_ms")),
                 ("pipeline per-frame ms (computed)", ("headline", "computed_per_frame_ms")),
                 ("pipeline cold clip ms", ("cold", "total_ms")),
                 ("pipeline warm clip p50 ms", ("warm", "total_ms", "p50")),
                 ("pipeline warm clip p95 ms", ("warm", "total_ms", "p95")),
                 ("pipeline first frame p50 ms", ("warm", "first_frame_ms", "p50")),
                 ("pipeline peak RSS kB", ("peak_rss_kb",)))


def _dig(block: dict[str, Any] | None, path: tuple[str, ...]) -> float | None:
    value: Any = block
    for key in path:
        value = value.get(key) if isinstance(value, dict) else None
    return value if isinstance(value, (int, float)) else None


def _tool_info() -> dict[str, Any]:
    try:
        from importlib.metadata import version

        ver = version("mi2v-export")
    except Exception:
        ver = "unknown"
    return {"name": "mi2v", "version": ver}
