"""The tables the code owns, rendered from it: the export targets and what each declares, ExecuTorch's delegates,
which (target, delegate) produces which precision, the parity and trajectory gates, the Snapdragon SoCs of the QNN
path, the runtimes and the device kinds. The guides link here instead of copying the values, so a changed gate, a
new SoC or a new target shows up in the docs at the next build.

Sources: the exporter registry (`exporters/base.py`, filled by the modules of `exporters/targets/`: each exporter's
class attributes), the ExecuTorch delegates (`exporters/targets/executorch/delegates.py` `DELEGATES`),
`mi2v_export/parity.py` (gate_for, TRAJECTORY_PSNR_MIN_DB, VIDEO_PSNR_MIN_DB), `mi2v_export/qnn.py` (SOCS,
DEFAULT_SOC), the runtime registry (`mi2v_export/runtimes/`) and the device-kind registry
(`mi2v_export/devices/registry.py`, filled by `devices/kinds.py`). None of them imports torch.
"""

from __future__ import annotations

import dataclasses

from gen_common import code, escape, table
from mi2v_export import parity, precision, qnn, runtimes
from mi2v_export.exporters import base as exporters
from mi2v_export.exporters.targets.executorch.delegates import DELEGATES
from mi2v_export.devices import kinds as _device_kinds  # noqa: F401  (imported for the kinds' registrations)
from mi2v_export.devices import registry as device_registry

PAGE = "reference/tables.md"


def support_cells() -> list[tuple[str, str | None, tuple]]:
    """(target, delegate, precisions) of every `--target` / `--delegate` pair the exporter registry knows."""
    cells = []
    for target in exporters.target_names():
        exporter = exporters.get_exporter(target)
        delegates = list(exporter.delegates())
        if exporter.default_delegate() is None:
            delegates.insert(0, None)
        for delegate in delegates:
            cells.append((target, delegate, exporters.get_exporter(target, delegate).precisions_for(delegate)))
    return cells


def _names(values) -> str:
    return ", ".join(code(v) for v in values)


def target_table() -> str:
    """One row per exporter class: the facts it declares (`Exporter` class attributes, exporters/base.py)."""
    rows, seen = [], set()
    for target, delegate in exporters.kinds():
        e = exporters.get_exporter(target, delegate)
        if id(e) in seen:
            continue  # another delegate of the same exporter (ExecuTorch's: its delegates table below)
        seen.add(id(e))
        own = [f.name for f in dataclasses.fields(e.options_type)]
        rows.append([code(precision.target_label(target, e.delegate)),
                     code(f"{type(e).__module__.removeprefix('mi2v_export.')}.{type(e).__name__}"),
                     escape(e.summary, True), code(e.extension), code(e.runtime), code(e.runtime_package),
                     code(e.test_vector_format), _names(own), _names(e.rewrites), _names(e.trace_rewrites)])
    return table(["target", "exporter", "summary", "artifact", "`runtime`", "`runtime_package`",
                  "`test_vector_format`", "own options (`options_type` fields)", "`rewrites`",
                  "`trace_rewrites`"], rows)


def delegate_table() -> str:
    rows = [[code(d.name), code(d.backend_id), escape(d.description, True), _names(str(p) for p in d.supported),
             code(d.default_dtype), _names(r.name for r in runtimes.for_target("executorch", d.name)),
             _names(d.extra_rewrites), _names(d.extra_trace), _names(("etrecord", *d.flags))]
            for d in DELEGATES.values()]
    return table(["`--delegate`", "backend id", "what", "precisions", "default dtype", "runtime",
                  "extra `rewrites`", "extra `trace_rewrites`", "manifest `flags`"], rows)


def support_table() -> str:
    names = [p.value for p in precision.Precision if p is not precision.Precision.MIXED]
    rows = []
    for target, delegate, cells in support_cells():
        have = {str(p) for p in cells}
        rows.append([code(precision.target_label(target, delegate)), *("yes" if n in have else "" for n in names)])
    return table(["target", *names], rows)


def gate_table() -> str:
    rows = []
    for name in [p.value for p in precision.Precision]:
        gate = parity.gate_for(name)
        trajectory = parity.TRAJECTORY_PSNR_MIN_DB.get(name)
        component = (code(f"{gate.metric} {gate.op} {gate.threshold:g}") if name != precision.Precision.MIXED.value
                     else "the recipe's precision's (`exporters/base.py` `Exporter.gate`)")
        rows.append([code(name), component,
                     code(f"psnr_db >= {trajectory:g}") if trajectory is not None else ""])
    return table(["precision", "component gate (`parity`)", "trajectory gate, worst frame (`trajectory`)"], rows)


def video_gate_table() -> str:
    rows = [[code(k), code(f"psnr_db >= {v:g}")] for k, v in parity.VIDEO_PSNR_MIN_DB.items()]
    return table(["artifact precision", "`mi2v generate --compare-to reference` gate, every frame"], rows)


def soc_table() -> str:
    rows = [[code(s.name), escape(s.product, True) + (" (default)" if s.name == qnn.DEFAULT_SOC else ""),
             code(s.soc_model), f"v{s.htp_arch}"] for s in qnn.SOCS.values()]
    return table(["`--soc`", "product", "`soc_model`", "HTP"], rows)


def runtime_table() -> str:
    rows = [[code(r.name), r.family, code(r.suffix) if r.suffix else "a PyTorch module (no file)",
             escape(" ".join((type(r).__doc__ or "").split()), True)] for r in runtimes.all()]
    return table(["runtime (`mi2v verify --runtime`)", "family", "loads", "what it is"], rows)


def device_kind_table() -> str:
    rows = []
    for k in device_registry.all_kinds():
        spelled = ", ".join(code(s) for s in k.spellings) if k.spellings else code(f"{k.transport}:…")
        rows.append([code(k.transport), code(k.via), spelled, k.serial,
                     f"{k.defaults.iterations} / {k.defaults.warmup} / {k.defaults.cooldown:g} s",
                     "yes" if k.dry_run else ""])
    return table(["transport (`--device`)", "`--via`", "spellings", "serial after the prefix",
                  "default iterations / warm-up / cool-down", "`--dry-run`"], rows)


def page() -> str:
    return "\n".join([
        "# Tables from the code\n",
        "Generated when the docs are built from the modules that own these facts; the guides link here.\n",
        "## Export targets {#targets}\n",
        "The exporter registry (`exporters/base.py`): one `Exporter` subclass per target in `exporters/targets/`, "
        "whose class attributes are these columns ([add a target](../architecture.md#add-a-target)). The "
        "`--target` and `--delegate` choices of the CLI come from here; rewrite names are entries of "
        "`LOWERING_REWRITES` (`exporters/rewrites/__init__.py`).\n",
        target_table(),
        "## ExecuTorch delegates {#executorch-delegates}\n",
        "`DELEGATES` in `exporters/targets/executorch/delegates.py`: what each `--target executorch --delegate` "
        "adds to the ExecuTorch exporter's rewrites, its precisions and the runtime that executes its programs "
        "([runtimes](#runtimes): where one is installed; [ExecuTorch](../guides/executorch.md)).\n",
        delegate_table(),
        "## Precisions per target {#precision-support}\n",
        "Each exporter declares the precisions it produces (its `supported`, in `exporters/targets/`; ExecuTorch's per "
        "delegate in `DELEGATES`); asking a target for "
        "another fails in one line naming what it supports. `mixed` (a recipe from `mi2v quantize analyze`) is "
        "allowed wherever its precision is.\n",
        support_table(),
        "## Gates {#gates}\n",
        "`mi2v_export/parity.py`: the component gate of each precision (fp32 against PyTorch fp32 on the seeded "
        "input; fp16 likewise; integer precisions on the held-out sampler records) and the trajectory gate (the "
        "2-step video on the validation image). `--min-psnr DB` replaces the trajectory gate.\n",
        gate_table(),
        video_gate_table(),
        "## Snapdragon SoCs (QNN) {#socs}\n",
        "`mi2v_export/qnn.py` `SOCS`: `--soc` offers exactly these.\n",
        soc_table(),
        "## Runtimes {#runtimes}\n",
        "The runtime registry (`mi2v_export/runtimes/`), in the order `mi2v verify` tries them; what is installed "
        "decides which of them run on a given machine (`mi2v verify` lists the others as notes).\n",
        runtime_table(),
        "## Device kinds {#device-kinds}\n",
        "The device kinds `mi2v bench` knows (`mi2v_export/devices/registry.py`, one module each).\n",
        device_kind_table(),
    ])


def pages() -> dict[str, str]:
    return {PAGE: page()}
