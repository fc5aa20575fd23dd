"""Per-operator profiles from each runtime's own profiler, for `mi2v bench --profile`.

Wall-clock timing says how long a component takes; it cannot say where the time goes, and a host-side sampler
cannot see inside a native runtime or a delegate. So the profile comes from the runtime itself: onnxruntime's
profiler (`SessionOptions.enable_profiling`, a Chrome trace of one "<node>_kernel_time" event per node run, with
its op type and execution provider) and ExecuTorch's ETDump read through the devtools Inspector (with the
ETRecord written at export where there is one). Both are aggregated the same way: time per operator type per run,
its share of the profiled op time, and whether it ran inside a delegate / a non-CPU execution provider.

Warm-up runs are profiled too (neither runtime can switch its profiler on late) and dropped: by timestamp for
onnxruntime (the Node events before the end of the last warm-up `model_run`), by run index for ExecuTorch.
Nested events are not double counted: ExecuTorch's `Method::execute` and onnxruntime's `model_run` are the run
time (`run_ms`), not ops; an ExecuTorch `OPERATOR_CALL` wraps its `native_call_*` kernel (framework tax, left out);
a `DELEGATE_CALL` wraps the delegate's own events, and only its time outside them counts, as "DELEGATE_CALL
overhead" (the whole call where the delegate logs nothing inside, e.g. a build without delegate profiling).
"""

from __future__ import annotations

import json
import re
import warnings
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import BadInputError, MissingDependencyError, first_line
from .executorch import BACKENDS, load_program
from .onnx import _import_ort

ORT_TOOL = "onnxruntime SessionOptions.enable_profiling"
ET_TOOL = "ExecuTorch ETDump + devtools Inspector"
ET_RUN, ET_CALL, ET_OPERATOR = "Method::execute", "DELEGATE_CALL", "OPERATOR_CALL"
ET_KERNEL = "native_call_"


@dataclass
class OpTime:
    """One operator type's time per run: `calls` per run, `share` of the profile's op time; `delegated`: ran in
    a delegate / a non-CPU execution provider (None: unknown); `where`: the provider, backend or "portable"."""

    op: str
    calls: int
    total_ms: float
    share: float = 0.0
    delegated: bool | None = None
    where: str = ""

    def to_dict(self) -> dict:
        return {"op": self.op, "calls": self.calls, "total_ms": round(self.total_ms, 6),
                "share": round(self.share, 6), "delegated": self.delegated, "where": self.where}


@dataclass
class Profile:
    """A runtime's per-op profile: `total_ms` is the op time per run (the shares' denominator), `run_ms` the
    runtime's own time per run (`Method::execute`, `model_run`) where it logs one; `ops` by time, longest first."""

    runtime: str
    tool: str
    runs: int
    total_ms: float
    ops: list[OpTime]
    delegated_share: float | None = None
    notes: list[str] = field(default_factory=list)
    trace: str | None = None
    run_ms: float | None = None

    def top(self, n: int = 10) -> list[OpTime]:
        return self.ops[:n]

    def to_dict(self, top: int | None = None) -> dict:
        ops = self.ops if top is None else self.ops[:top]
        return {"runtime": self.runtime, "tool": self.tool, "runs": self.runs, "total_ms": round(self.total_ms, 6),
                "run_ms": None if self.run_ms is None else round(self.run_ms, 6),
                "delegated_share": None if self.delegated_share is None else round(self.delegated_share, 6),
                "op_types": len(self.ops), "ops": [o.to_dict() for o in ops], "notes": list(self.notes),
                "trace": self.trace}


def _profile(runtime: str, tool: str, runs: int, totals: Mapping[tuple, list[float]], **rest: Any) -> Profile:
    """A Profile from {(op, where, delegated): [summed ms over the runs, call count]}, per run and sorted."""
    ops = [OpTime(op, round(calls / runs), ms / runs, 0.0, delegated, where)
           for (op, where, delegated), (ms, calls) in totals.items()]
    total = sum(o.total_ms for o in ops)
    for o in ops:
        o.share = o.total_ms / total if total > 0 else 0.0
    ops.sort(key=lambda o: (-o.total_ms, o.op))
    known = all(o.delegated is not None for o in ops)
    delegated = sum(o.share for o in ops if o.delegated) if known and total > 0 else None
    return Profile(runtime, tool, runs, total, ops, delegated, **rest)


def weighed(parts: Sequence[tuple[Profile, int]]) -> Profile:
    """One profile of a call made of `count` runs of each part's model (a tiled component's stage models, each
    run once per window): every op's time and calls multiplied by its part's count."""
    totals: dict[tuple, list[float]] = defaultdict(lambda: [0.0, 0])
    for profile, count in parts:
        for op in profile.ops:
            totals[op.op, op.where, op.delegated][0] += op.total_ms * count
            totals[op.op, op.where, op.delegated][1] += op.calls * count
    first = parts[0][0]
    runs = [p.run_ms * n for p, n in parts if p.run_ms is not None]
    notes = [*first.notes, f"{len(parts)} models (tile stages), each op weighed by its model's runs per call"]
    merged = _profile(first.runtime, first.tool, 1, totals, notes=notes, trace=first.trace,
                      run_ms=sum(runs) if len(runs) == len(parts) else None)  # the parts are per run already
    merged.runs = first.runs
    return merged


def _check_runs(runs: int, warmup: int) -> None:
    if runs < 1 or warmup < 0:
        raise BadInputError(f"profiling needs runs >= 1 and warmup >= 0 (got runs={runs}, warmup={warmup})")


# --- onnxruntime ---------------------------------------------------------------------------------------------------

def profile_onnx(path: str | Path, inputs: Mapping[str, np.ndarray], runs: int, out_dir: str | Path,
                 threads: int | None = None, providers: Sequence[str] | None = None, *, name: str | None = None,
                 warmup: int = 1) -> Profile:
    """Profile `warmup + runs` runs of an ONNX model with onnxruntime's profiler; the warm-up runs are dropped.
    The trace is kept as `<out_dir>/<name>.onnxruntime-profile.json` (name: the model's stem)."""
    _check_runs(runs, warmup)
    ort = _import_ort()
    path, out_dir = Path(path), Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    name = name or path.stem
    so = ort.SessionOptions()
    so.log_severity_level = 3
    so.enable_profiling = True
    so.profile_file_prefix = str(out_dir / f"{name}.ort")
    if threads:
        so.intra_op_num_threads = threads
    try:
        session = ort.InferenceSession(str(path), sess_options=so,
                                       providers=list(providers or ["CPUExecutionProvider"]))
    except Exception as exc:  # onnxruntime raises its own exception types for corrupt files
        raise BadInputError(f"{path.name}: onnxruntime cannot load it ({first_line(exc)})") from None
    feed = {i.name: np.asarray(inputs[i.name]) for i in session.get_inputs()}
    for _ in range(warmup + runs):
        session.run(None, feed)
    raw = Path(session.end_profiling())
    trace = raw.replace(out_dir / f"{name}.onnxruntime-profile.json")
    first = session.get_providers()[0]
    return read_onnx_trace(trace, runs, warmup, runtime="onnxruntime" if first == "CPUExecutionProvider" else first)


def read_onnx_trace(trace: str | Path, runs: int, warmup: int = 0, runtime: str = "onnxruntime") -> Profile:
    """A Profile from an onnxruntime profiler trace holding `warmup + runs` runs (the first `warmup` dropped)."""
    events = json.loads(Path(trace).read_text())
    model_runs = sorted((e for e in events if e.get("cat") == "Session" and e.get("name") == "model_run"),
                        key=lambda e: e["ts"])
    cutoff = (model_runs[warmup - 1]["ts"] + model_runs[warmup - 1]["dur"]) if 0 < warmup <= len(model_runs) \
        else float("-inf")
    totals: dict[tuple, list[float]] = defaultdict(lambda: [0.0, 0])
    for e in events:
        if e.get("cat") != "Node" or not str(e.get("name", "")).endswith("_kernel_time") or e["ts"] < cutoff:
            continue
        args = e.get("args") or {}
        provider = args.get("provider", "")
        op = args.get("op_name") or e["name"][:-len("_kernel_time")]
        key = (op, provider or "unknown", (provider != "CPUExecutionProvider") if provider else None)
        totals[key][0] += e["dur"] / 1000.0
        totals[key][1] += 1
    measured = [e["dur"] / 1000.0 for e in model_runs[warmup:]]
    notes = ["times are onnxruntime's kernel times (1 µs resolution); delegated = a provider other than "
             "CPUExecutionProvider"]
    return _profile(runtime, ORT_TOOL, runs, totals, notes=notes, trace=str(trace),
                    run_ms=sum(measured) / len(measured) if measured else None)


# --- ExecuTorch ----------------------------------------------------------------------------------------------------

def _torch_inputs(inputs: Sequence[np.ndarray] | Mapping[str, np.ndarray]) -> list:
    try:
        import torch
    except ImportError as exc:
        raise MissingDependencyError(f"the ExecuTorch runtime needs torch ({exc}): pip install torch") from None
    values = list(inputs.values()) if isinstance(inputs, Mapping) else list(inputs)
    return [torch.from_numpy(np.ascontiguousarray(v)) for v in values]


def profile_executorch(pte_path: str | Path, inputs: Sequence[np.ndarray] | Mapping[str, np.ndarray], runs: int,
                       out_dir: str | Path, etrecord: str | Path | None = None, *, name: str | None = None,
                       warmup: int = 1, method: str = "forward") -> Profile:
    """Profile `warmup + runs` executions of a .pte's method with ETDump on, read back through the Inspector
    (with `etrecord` where given); inputs in the method's order (a mapping: its values' order). The ETDump is
    kept as `<out_dir>/<name>.etdump` (name: the program's stem)."""
    _check_runs(runs, warmup)
    pte_path, out_dir = Path(pte_path), Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    args = _torch_inputs(inputs)
    try:
        program = load_program(pte_path, etdump=True)
        loaded = program.load_method(method)
        for _ in range(warmup + runs):
            loaded.execute(args)
    except MissingDependencyError:
        raise
    except Exception as exc:
        raise BadInputError(f"{pte_path.name}: the ExecuTorch runtime cannot run it ({first_line(exc)})") from None
    etdump = out_dir / f"{name or pte_path.stem}.etdump"
    program.write_etdump_result_to_file(str(etdump), "")
    backends = [b for b in BACKENDS.values() if b and b.encode() in pte_path.read_bytes()]
    delegate = next((d for d, b in BACKENDS.items() if b and b in backends), "portable")
    return read_etdump(etdump, runs, warmup, etrecord=etrecord, backends=backends, runtime=f"executorch-{delegate}")


def _inspector(etdump: Path, etrecord: str | Path | None) -> Any:
    try:
        from executorch.devtools import Inspector
    except ImportError as exc:
        raise MissingDependencyError(f"the ExecuTorch devtools are not installed ({exc}): "
                                     "pip install executorch") from None
    with warnings.catch_warnings():  # "Output Buffer not found": no debug data asked for
        warnings.simplefilter("ignore")
        return Inspector(etdump_path=str(etdump), etrecord=None if etrecord is None else str(etrecord))


def _kept(blocks: list, warmup: int) -> list[tuple[Any, list[float]]]:
    """(event, its per-run times less the warm-up runs) for every event of the execution blocks; the warm-up runs
    are the first ones, in the first block(s) (a block groups the runs with the same events)."""
    out, skip = [], warmup
    for block in blocks:
        run = next((e for e in block.events if e.name == ET_RUN and e.perf_data), None)
        drop = min(skip, len(run.perf_data.raw)) if run else 0
        skip -= drop
        out += [(e, [float(t) for t in e.perf_data.raw[drop:]]) for e in block.events if e.perf_data]
    return out


def _et_key(event: Any, backend: str) -> tuple[str, str, bool]:
    if event.is_delegated_op:  # a delegate's own event: its name is the delegate's op ("Convolution ... #1")
        return re.sub(r"\s*#\d+$", "", str(event.name)), event.delegate_backend_name or backend, True
    if event.name == ET_CALL:
        return ET_CALL, event.delegate_backend_name or backend, True
    return "aten." + event.name[len(ET_KERNEL):], "portable", False


def read_etdump(etdump: str | Path, runs: int, warmup: int = 0, *, etrecord: str | Path | None = None,
                backends: Sequence[str] = (), runtime: str = "executorch") -> Profile:
    """A Profile from an ETDump holding `warmup + runs` executions (the first `warmup` dropped); `backends`: the
    delegate ids in the program, to name the backend of delegated events where there is no ETRecord."""
    blocks = [b for b in _inspector(Path(etdump), etrecord).event_blocks if b.name == "Execute"]
    backend = backends[0] if len(backends) == 1 else "delegate"
    totals: dict[tuple, list[float]] = defaultdict(lambda: [0.0, 0])
    inside: dict[Any, float] = defaultdict(float)  # per delegate call (instruction id): the time of its own events
    calls: list[tuple[Any, list[float]]] = []
    run_times: list[float] = []
    for event, times in _kept(blocks, warmup):
        if event.name == ET_RUN:
            run_times += times
        elif event.name == ET_CALL:
            calls.append((event, times))
        elif event.is_delegated_op or event.name.startswith(ET_KERNEL):
            key = _et_key(event, backend)
            totals[key][0] += sum(times)
            totals[key][1] += len(times)
            if event.is_delegated_op:
                inside[getattr(event, "_instruction_id", None)] += sum(times)
    opaque = [e for e, _ in calls if getattr(e, "_instruction_id", None) not in inside]
    for event, times in calls:
        own = inside.get(getattr(event, "_instruction_id", None))
        key = _et_key(event, backend) if own is None else (f"{ET_CALL} overhead", _et_key(event, backend)[1], True)
        totals[key][0] += max(0.0, sum(times) - (own or 0.0))
        totals[key][1] += len(times)
    notes = _et_notes(opaque, bool(inside), etrecord is not None)
    return _profile(runtime, ET_TOOL, runs, totals, notes=notes, trace=str(etdump),
                    run_ms=sum(run_times) / len(run_times) if run_times else None)


def _et_notes(opaque: list, delegate_ops: bool, etrecord: bool) -> list[str]:
    notes = ["portable ops are their kernels' time (native_call_*, without the OPERATOR_CALL framework tax); "
             "Method::execute is the run time, not an op"]
    if delegate_ops:
        notes.append("delegated ops are the delegate's own events (XNNPACK: its operators, 1 µs resolution); "
                     "DELEGATE_CALL overhead is each call's time outside them")
    if opaque:
        notes.append(f"delegate internals not profiled by this build: one DELEGATE_CALL event per subgraph "
                     f"({len(opaque)} subgraph(s))")
    if not etrecord:
        notes.append("no ETRecord: events are not mapped to the graph's aten ops; the backend is read from the .pte")
    return notes


# --- rendering -----------------------------------------------------------------------------------------------------

def table_rows(profile: Profile, top: int = 10) -> list[dict]:
    """The `top` ops as table rows (and one row for the rest): op, where, delegated, calls, ms per run, share."""
    def row(op: str, where: str, delegated: str, calls: int, ms: float, share: float) -> dict:
        return {"op": op, "where": where, "delegated": delegated, "calls": calls, "ms": round(ms, 4),
                "share": f"{100 * share:.1f}%"}

    flags = {True: "yes", False: "no", None: "?"}
    rows = [row(o.op, o.where, flags[o.delegated], o.calls, o.total_ms, o.share) for o in profile.top(top)]
    rest = profile.ops[top:]
    if rest:
        rows.append(row(f"({len(rest)} more op types)", "", "", sum(o.calls for o in rest),
                        sum(o.total_ms for o in rest), sum(o.share for o in rest)))
    return rows
