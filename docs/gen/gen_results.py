"""The results pages: every JSON file under benchmarks/results/ and benchmarks/sample_reports/, grouped by topic,
as tables and figures drawn from the files themselves (no number in these pages is typed by hand).

A file's kind is read from its fields (what its writer records, see gen_results_kinds), its topic from its kind;
each file gets a section (anchor: its file stem) that names the file, the script or command that wrote it and the
machine it recorded (CPU model, flags, cores, load average, as the file has them). A file of an unknown kind
still gets a section on the "Other result files" page, so no results file is left out.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import gen_results_devices as devices
import gen_results_kinds as kinds
import gen_results_memory as memory
import gen_results_runs as runs
from gen_common import REPO, code, escape, machine_lines, read_json, rel, table

RESULT_DIRS = (REPO / "benchmarks" / "results", REPO / "benchmarks" / "sample_reports")

RENDER: dict[str, Callable[[object, str, dict], str]] = {
    "precision": kinds.precision, "recipe": kinds.recipe, "w4_units": kinds.w4_units, "fp16_gemm": kinds.fp16_gemm,
    "export": kinds.export, "attention": kinds.attention, "qnn": devices.qnn, "qnn_blocks": devices.qnn_blocks,
    "bench_report": devices.bench_report, "release_plan": devices.release_plan,
    "receptive_field": kinds.receptive_field, "tiled_vae": memory.tiled_vae, "ort_memory": memory.ort_memory,
    "qnn_tiled": memory.qnn_tiled, "tile_cost": memory.tile_cost, "stateful_stream": memory.stateful_stream,
    "pipeline": runs.pipeline, "int8_ceiling": runs.int8_ceiling, "layer_norm_forms": runs.layer_norm_forms,
    "litert": runs.litert, "other": kinds.other,
}
WRITERS = {
    "precision": "`benchmarks/precision.py`", "w4_units": "`benchmarks/w4_sensitive_units.py`",
    "fp16_gemm": "`benchmarks/xnnpack_fp16_gemm.py`", "qnn": "`benchmarks/qnn.py`",
    "qnn_blocks": "`benchmarks/qnn_decoder_blocks.py`", "release_plan": "`benchmarks/release_plan.py`",
    "attention": "`benchmarks/attention.py`", "receptive_field": "`benchmarks/vae_receptive_field.py`",
    "tiled_vae": "`benchmarks/tiled_vae.py`", "ort_memory": "`benchmarks/ort_memory_settings.py`",
    "qnn_tiled": "`benchmarks/qnn_tiled.py`", "tile_cost": "`benchmarks/tile_cost.py`",
    "stateful_stream": "`benchmarks/stateful_stream.py` (an experiment)",
    "pipeline": "`benchmarks/pipeline.py`",
    "int8_ceiling": "`benchmarks/int8_ceiling.py`", "litert": "`benchmarks/litert.py`",
    "layer_norm_forms": "`benchmarks/layer_norm_forms.py`",
    "bench_report": "`mi2v bench --report`",
    "export": "`mi2v export` (its manifest entries; the command is in the file)",
    "recipe": "a `mi2v export --recipe` run with its gates (the command is in the file)",
}


@dataclass(frozen=True)
class Result:
    path: Path
    data: object
    kind: str

    @property
    def name(self) -> str:
        return rel(self.path)

    @property
    def anchor(self) -> str:
        return re.sub(r"[^a-z0-9_-]+", "-", self.path.stem.lower())


@dataclass(frozen=True)
class Topic:
    page: str
    title: str
    kinds: tuple[str, ...]
    intro: str


SEEDED = ("Seeded (random) weights unless a file says otherwise; times come from a shared 2-core x86 host, so "
          "read the ratios measured in the same run rather than absolute times, and mind the load average each "
          "file recorded.")
TOPICS = (
    Topic("results/precision.md", "Precision and quantization", ("precision", "recipe", "w4_units", "fp16_gemm"),
          "Size, host time, video quality and runtime memory per target and precision "
          "([guide](../guides/precision.md)). " + SEEDED + " Runtime memory: the ExecuTorch memory plan's planned "
          "activation bytes; for onnxruntime the measured peak of the session alone."),
    Topic("results/stand-in-exports.md", "Core ML and Vulkan exports at 720p", ("export",),
          "Full `mi2v export` runs whose numerics were checked on the PyTorch stand-in (`pytorch-simulated`): "
          "no Core ML or Vulkan runtime runs here, so there is no device time. " + SEEDED),
    Topic("results/qnn.md", "Qualcomm HTP (QNN)", ("qnn", "qnn_blocks", "qnn_tiled"),
          "Node share on the HTP, context-binary size, compile time and the HTP simulator's output against PyTorch "
          "fp32 ([guide](../guides/qnn.md)). Simulator seconds are no phone speed. " + SEEDED),
    Topic("results/attention.md", "Attention rewrites", ("attention",),
          "Reference against rewritten attention on onnxruntime and ExecuTorch XNNPACK "
          "(`make bench-attention`, `benchmarks/attention.py --json FILE`; "
          "[guide](../guides/attention.md))."),
    Topic("results/release-plan.md", "Release plans", ("release_plan",),
          "Wall time and whole-plan peak memory of `mi2v plan --executor local` with `--jobs 1` and `--jobs 2` "
          "([guide](../guides/release.md)). Single runs on a shared host: noisy."),
    Topic("results/phone-bench.md", "Phone benchmarks", ("bench_report",),
          "`mi2v bench` reports kept as samples ([guide](../guides/benchmarking.md)). A report from the "
          "simulated phone says `simulated_device: true`: its times are the host's, not a phone's."),
    Topic("results/tiling.md", "Memory and tiling", ("tiled_vae", "tile_cost", "stateful_stream", "ort_memory",
                                                     "receptive_field"),
          "Tiled against untiled VAE components (measured runtime memory: a fresh process's peak above its "
          "baseline; time side by side), onnxruntime's memory settings, and how far one output pixel of each "
          "VAE part reads into its input, the halo an exact tile needs ([guide](../guides/memory.md)). " + SEEDED),
    Topic("results/pipeline.md", "The whole run and int8 limits", ("pipeline", "int8_ceiling", "layer_norm_forms"),
          "The whole image-to-video run measured clip after clip next to the per-frame figure computed from "
          "per-component medians ([guide](../guides/benchmarking.md#pipeline)); this machine's fp32 and int8 GEMM "
          "ceilings at the denoiser's shapes and the w8a8 step's share of them; the forms of the XNNPACK step's "
          "float reductions side by side. " + SEEDED),
    Topic("results/litert.md", "LiteRT next to onnxruntime and ExecuTorch", ("litert",),
          "The same component and precision exported for onnxruntime, ExecuTorch XNNPACK and LiteRT, timed side by "
          "side in one run (ratio to onnxruntime's median), with sizes, video quality against the all-fp32 PyTorch "
          "run and each runtime's measured memory ([guide](../guides/litert.md)). " + SEEDED),
    Topic("results/other.md", "Other result files", ("other",),
          "Result files of a kind the docs generator does not know yet (listed so that none is left out)."),
)


def kind_of(data: object) -> str:
    """The kind of a results file, from the fields its writer records."""
    if not isinstance(data, dict):
        return "other"
    rows = data.get("rows")
    checks = (
        ("qnn_tiled", data.get("benchmark") == "qnn_tiled"),
        ("bench_report", data.get("schema") == "mi2v.bench/1"),
        # benchmarks/litert.py: its first 720p run predates the "benchmark" key ("beside" is its own field)
        ("litert", data.get("benchmark") == "litert" or ("cells" in data and "beside" in data)),
        ("precision", "cells" in data),
        ("recipe", isinstance(data.get("recipe"), dict)), ("w4_units", "sensitive_units" in data),
        ("fp16_gemm", isinstance(rows, list) and all(isinstance(r, dict) and "K" in r for r in rows)),
        ("export", "entries" in data), ("qnn_blocks", "stages" in data and "soc" in data),
        ("qnn", "target_info" in data and "simulator" in data), ("release_plan", "runs" in data and "plan" in data),
        ("attention", "cases" in data), ("receptive_field", data.get("benchmark") == "vae_receptive_field"),
        ("tiled_vae", data.get("benchmark") == "tiled_vae"), ("tile_cost", data.get("benchmark") == "tile_cost"),
        ("stateful_stream", data.get("benchmark") == "stateful_stream"),
        ("ort_memory", data.get("benchmark") == "ort_memory_settings"),
        ("pipeline", data.get("benchmark") == "pipeline"), ("int8_ceiling", data.get("kind") == "int8_ceiling"),
        ("layer_norm_forms", data.get("kind") == "layer_norm_forms"),
    )
    return next((kind for kind, hit in checks if hit), "other")


def load(dirs: Sequence[Path] = RESULT_DIRS) -> list[Result]:
    results = []
    for folder in dirs:
        for path in sorted(Path(folder).glob("*.json")):
            data = read_json(path)
            results.append(Result(path, data, kind_of(data)))
    return results


def section(result: Result, images: dict) -> str:
    out = [f"## `{result.name}` {{#{result.anchor}}}\n", f"Written by {WRITERS.get(result.kind, 'an unknown tool')}.",
           "", *machine_lines(result.data if isinstance(result.data, dict) else {}), "",
           RENDER[result.kind](result.data, result.anchor, images)]
    return "\n".join(out)


def topic_page(topic: Topic, results: list[Result], images: dict) -> str:
    mine = [r for r in results if r.kind in topic.kinds]
    out = [f"# {topic.title}\n", topic.intro + "\n",
           "Generated from the files below when the docs are built.\n"]
    if not mine:
        out.append("No result files of this kind are recorded yet.\n")
    qnn = [r for r in mine if r.kind == "qnn"]
    if qnn:
        out.append(devices.qnn_summary(qnn, images))
    if "tiled_vae" in topic.kinds:
        out.append(memory.tiling_summary([r for r in mine if r.kind == "tiled_vae"],
                                         [r for r in results if r.kind == "pipeline"]))
    out += [section(r, images) for r in mine]
    return "\n".join(out)


def _machine_summary(data: object) -> str:
    if not isinstance(data, dict):
        return ""
    record = next((data[k] for k in ("machine", "host") if isinstance(data.get(k), dict)), {})
    device = data.get("device") if isinstance(data.get("device"), dict) else {}
    return escape(str(record.get("cpu") or device.get("model") or record.get("os") or ""), True)


def index_page(results: list[Result]) -> str:
    where = {kind: topic for topic in TOPICS for kind in topic.kinds}
    rows = [[code(r.name), f"[{where[r.kind].title}]({where[r.kind].page.rsplit('/', 1)[-1]}#{r.anchor})", r.kind,
             _machine_summary(r.data)] for r in results]
    return "\n".join(["# Results\n",
                      "Every measured figure in these docs comes from a JSON file in `benchmarks/results/` or "
                      "`benchmarks/sample_reports/`, rendered here when the docs are built. Each section names the "
                      "machine the file recorded.\n",
                      table(["file", "page", "kind", "machine (CPU or device)"], rows)])


def pages(dirs: Sequence[Path] = RESULT_DIRS) -> dict[str, str | bytes]:
    results = load(dirs)
    out: dict[str, str | bytes] = {"results/index.md": index_page(results)}
    for topic in TOPICS:
        images: dict[str, bytes] = {}
        out[topic.page] = topic_page(topic, results, images)
        folder = topic.page.rsplit("/", 1)[0]
        out.update({f"{folder}/{name}": png for name, png in images.items()})
    return out
