"""Code structure limits, measured with `ast` over the whole package: no function body longer than 60 lines
(signature and docstring aside) in mi2v_export/ (devices/ included), exporters/ and attention_kernels/."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

pytestmark = pytest.mark.unit

REPO = Path(__file__).resolve().parents[2]
PACKAGES = ("mi2v_export", "exporters", "attention_kernels")
MAX_BODY_LINES = 60

# Functions allowed over the limit: none (the devices/ and simulator/ restructuring of issue 11b split the last ones).
# This set may only shrink: a new long function anywhere fails.
NOT_YET_SPLIT: set[str] = set()


def body_lines(node: ast.FunctionDef | ast.AsyncFunctionDef) -> int:
    """Lines from the first statement after the docstring to the end of the function."""
    body = node.body
    if len(body) > 1 and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant) \
            and isinstance(body[0].value.value, str):
        body = body[1:]
    return body[-1].end_lineno - body[0].lineno + 1


def long_functions(limit: int = MAX_BODY_LINES) -> dict[str, int]:
    """'path:function' → body lines, for every function (methods and nested ones too) over `limit`."""
    found = {}
    for package in PACKAGES:
        for path in sorted((REPO / package).rglob("*.py")):
            tree = ast.parse(path.read_text(), filename=str(path))
            for node in ast.walk(tree):
                if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and body_lines(node) > limit:
                    found[f"{path.relative_to(REPO).as_posix()}:{node.name}"] = body_lines(node)
    return found


def test_the_measure_counts_the_body_only(tmp_path):
    source = 'def f(\n    a,\n    b,\n):\n    """Doc\n    string."""\n    x = 1\n    return x\n'
    assert body_lines(ast.parse(source).body[0]) == 2


def test_no_function_body_over_60_lines():
    found = long_functions()
    new = {k: v for k, v in found.items() if k not in NOT_YET_SPLIT}
    assert not new, f"function bodies over {MAX_BODY_LINES} lines: {new}"
    fixed = NOT_YET_SPLIT - set(found)
    assert not fixed, f"no longer over the limit, remove from NOT_YET_SPLIT: {sorted(fixed)}"


def test_every_subpackage_is_installed():
    """A non-editable install ships only the packages pyproject lists: each folder with an __init__.py is one
    (a missing one breaks `mi2v` itself, which imports every command module)."""
    import tomllib

    config = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]
    where = {name: REPO / path for name, path in config["package-dir"].items()}
    listed = set(config["packages"])
    for name, root in where.items():
        found = {name + "." + ".".join(p.parent.relative_to(root).parts) if p.parent != root else name
                 for p in root.rglob("__init__.py") if "__pycache__" not in p.parts}
        assert found <= listed, f"not in [tool.setuptools] packages: {sorted(found - listed)}"


# ---- import cycles and module sizes (issue 23) --------------------------------------------------------------------

# Where each package's sources lie (pyproject.toml maps exporters/ and attention_kernels/ into mi2v_export).
SOURCE_ROOTS = {"mi2v_export": REPO / "mi2v_export", "mi2v_export.exporters": REPO / "exporters",
                "mi2v_export.kernels": REPO / "attention_kernels"}
# Import cycles that exist today (each a set of modules); this list may only shrink: a new cycle anywhere fails.
KNOWN_CYCLES: list[set[str]] = []
MAX_MODULE_LINES = 600
# Modules over the limit today, with their line counts: each may only shrink, and the list too.
LONG_MODULES: dict[str, int] = {}


def project_modules() -> dict[str, Path]:
    """Dotted module name → file, for every module of the installed packages."""
    out = {}
    for pkg, root in SOURCE_ROOTS.items():
        for path in sorted(root.rglob("*.py")):
            parts = list(path.relative_to(root).with_suffix("").parts)
            parts = parts[:-1] if parts[-1] == "__init__" else parts
            out[".".join([pkg, *parts])] = path
    return out


def _absolute(name: str) -> str:
    if name.split(".")[0] == "attention_kernels":  # installed as mi2v_export.kernels
        return "mi2v_export.kernels" + name[len("attention_kernels"):]
    return f"mi2v_export.{name}" if name.split(".")[0] == "exporters" else name


def _imported(node: ast.Import | ast.ImportFrom, module: str, is_package: bool, modules: dict) -> list[str]:
    if isinstance(node, ast.Import):
        return [_absolute(a.name) for a in node.names]
    base = module.split(".") if is_package else module.split(".")[:-1]
    if node.level:
        base = base[:len(base) - (node.level - 1)]
        source = ".".join(base + ([node.module] if node.module else []))
    else:
        source = _absolute(node.module or "")
    return [f"{source}.{a.name}" if f"{source}.{a.name}" in modules else source for a in node.names]


def import_graph() -> dict[str, set[str]]:
    """module → the project modules it imports, counting imports inside functions (they hide cycles, they do not
    remove them)."""
    modules = project_modules()
    graph: dict[str, set[str]] = {m: set() for m in modules}
    for module, path in modules.items():
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            if not isinstance(node, (ast.Import, ast.ImportFrom)):
                continue
            for target in _imported(node, module, path.name == "__init__.py", modules):
                while target and target not in modules:
                    target = target.rpartition(".")[0]
                if target and target != module:
                    graph[module].add(target)
    return graph


def cycles(graph: dict[str, set[str]]) -> list[set[str]]:
    """The strongly connected components with more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[set[str]] = []
    for root in graph:
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = len(index)
        stack.append(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    work.append((child, iter(sorted(graph[child]))))
                elif child in stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = set()
                while True:
                    member = stack.pop()
                    component.add(member)
                    if member == node:
                        break
                if len(component) > 1:
                    found.append(component)
    return found


def test_the_cycle_finder_sees_imports_inside_functions():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert cycles(graph) == [{"a", "b", "c"}]
    assert "mi2v_export.manifest" in import_graph()["mi2v_export.integrity"]


def test_no_new_import_cycle():
    found = cycles(import_graph())
    new = [sorted(c) for c in found if c not in KNOWN_CYCLES]
    assert not new, f"import cycles among the project's modules: {new}"
    gone = [sorted(c) for c in KNOWN_CYCLES if c not in found]
    assert not gone, f"no longer a cycle, remove from KNOWN_CYCLES: {gone}"


def test_no_module_over_600_lines():
    sizes = {p.relative_to(REPO).as_posix(): len(p.read_text().splitlines()) for p in project_modules().values()}
    over = {k: v for k, v in sizes.items() if v > MAX_MODULE_LINES}
    grown = {k: v for k, v in over.items() if v > LONG_MODULES.get(k, MAX_MODULE_LINES)}
    assert not grown, f"modules over {MAX_MODULE_LINES} lines (or longer than allowed): {grown}"
    fixed = set(LONG_MODULES) - set(over)
    assert not fixed, f"now within {MAX_MODULE_LINES} lines, remove from LONG_MODULES: {sorted(fixed)}"


# ---- exporters own their facts (issue 23) -------------------------------------------------------------------------


def test_central_tables_name_only_registered_exporters():
    """Each target's facts are declared on its exporter (exporters/targets); the few tables left outside the
    exporters name only (target, delegate) pairs the registry has, and agree with what the exporters declare: the
    quantization table (exporters/quantize), the CLI's --target / --delegate choices, the release plan's schema, the
    test-vector formats, the lowering rewrites, and the runtime adapters (one per target at least)."""
    import json

    from mi2v_export import runtimes, schemas, testvectors
    from mi2v_export.commands import bench as bench_command
    from mi2v_export.commands import export as export_command
    from mi2v_export.devices.selection import RUNTIMES
    from mi2v_export.exporters import base, quantize, rewrites

    targets = base.target_names()
    pairs = set(base.kinds())

    unknown = sorted({(t, d) for t, d, _ in quantize.QUANTIZERS} - pairs, key=str)
    assert not unknown, f"exporters/quantize QUANTIZERS names (target, delegate) the registry lacks: {unknown}"
    for t, d in sorted(pairs, key=str):
        declared = {p.value for p in base.get_exporter(t, d).precisions_for(d) if p.quantized}
        tabled = {p for (qt, qd, p) in quantize.QUANTIZERS if (qt, qd) == (t, d)}
        assert declared == tabled, f"{t}/{d}: precisions declared {sorted(declared)} vs quantizers {sorted(tabled)}"

    assert tuple(m.value for m in export_command.Target) == targets
    assert tuple(m.value for m in bench_command.Runtime) == RUNTIMES, "bench --runtime ≠ the benchmarked families"
    assert tuple(m.value for m in export_command.Delegate) == base.delegate_names()
    plan = json.loads(schemas.schema_path("release-plan").read_text())["$defs"]
    assert tuple(plan["target"]["enum"]) == targets, "release-plan.schema.json: target enum ≠ the registry"
    assert tuple(plan["delegate"]["enum"]) == base.delegate_names(), "release-plan.schema.json: delegate enum"

    for t, d in sorted(pairs, key=str):
        exporter = base.get_exporter(t, d)
        assert exporter.test_vector_format in testvectors.FORMATS, (t, d, exporter.test_vector_format)
        named = set(exporter.rewrites) | set(exporter.trace_rewrites)
        assert named <= set(rewrites.LOWERING_REWRITES), (t, d, sorted(named - set(rewrites.LOWERING_REWRITES)))
        assert runtimes.for_target(t, d), f"--target {t} --delegate {d}: no runtime adapter (mi2v_export/runtimes)"
        assert base.runtime_of(t) and exporter.runtime_package, (t, d)


# ---- one dtype table (issue 23) -----------------------------------------------------------------------------------

# Names of element types as numpy, torch and onnx.TensorProto spell their attributes (compared lower-case).
DTYPE_ATTRS = {"bool", "bool_", "uint8", "int8", "int16", "int32", "int64", "float16", "bfloat16", "float32",
               "float64", "half", "float", "double", "long", "int", "short", "single"}
DTYPE_MODULES = {"np", "numpy", "torch", "TensorProto"}
# Modules outside mi2v_export/runtimes/ that still hold a dtype table, with how many: each may only shrink, and the
# list too.
OWN_DTYPE_TABLES: dict[str, int] = {}


def _is_dtype(value: ast.expr) -> bool:
    """`np.float16`, `torch.int8`, `TensorProto.FLOAT`, or onnxruntime's type string "tensor(float)"."""
    if isinstance(value, ast.Constant):
        return isinstance(value.value, str) and value.value.startswith("tensor(")
    if not isinstance(value, ast.Attribute) or value.attr.lower() not in DTYPE_ATTRS:
        return False
    owner = value.value
    return (owner.id if isinstance(owner, ast.Name) else getattr(owner, "attr", None)) in DTYPE_MODULES


def dtype_tables(source: str) -> int:
    """How many dict displays in `source` map 4 or more keys to dtypes (whatever the keys: names or codes)."""
    return sum(1 for node in ast.walk(ast.parse(source))
               if isinstance(node, ast.Dict) and sum(_is_dtype(v) for v in node.values) >= 4)


def test_only_the_runtimes_layer_holds_a_dtype_table():
    """mi2v_export/runtimes/dtypes.py is the one numpy ↔ torch ↔ ONNX ↔ ExecuTorch dtype table; a second one drifts
    (the maps issue 23 found lacked bool, int8, int16 or bf16 each)."""
    assert dtype_tables("T = {0: np.uint8, 1: np.int8, 5: np.float16, 11: np.bool_}") == 1
    assert dtype_tables("T = {'fp32': torch.float32, 'fp16': torch.float16, 'bf16': torch.bfloat16}") == 0
    assert dtype_tables("T = {'float32': 'tensor(float)', 'int8': 'tensor(int8)', 'b': 'tensor(bool)', "
                        "'h': 'tensor(float16)'}") == 1
    found = {}
    for path in project_modules().values():
        rel = path.relative_to(REPO).as_posix()
        if not rel.startswith("mi2v_export/runtimes/") and (count := dtype_tables(path.read_text())):
            found[rel] = count
    grown = {k: v for k, v in found.items() if v > OWN_DTYPE_TABLES.get(k, 0)}
    assert not grown, f"dtype tables outside mi2v_export/runtimes/ (use runtimes.dtypes): {grown}"
    gone = sorted(k for k in OWN_DTYPE_TABLES if k not in found)
    assert not gone, f"no longer holds a dtype table, remove from OWN_DTYPE_TABLES: {gone}"
