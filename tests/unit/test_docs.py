"""The docs cannot drift: the generators (docs/gen/) render every CLI command, every JSON Schema property and every
results file, nothing generated is stored in docs/, every page of the nav exists, every `mi2v` example in the
README and the docs uses only options its command has, and the README stays short.

The generators run here into a temporary folder, as `python docs/gen/generate.py OUT` runs them; `make docs` runs
the same code inside mkdocs (docs/gen/mkdocs_hooks.py) and fails on any warning.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import typer.main
import yaml

from mi2v_export.cli import app

pytestmark = pytest.mark.unit

REPO = Path(__file__).resolve().parents[2]
DOCS = REPO / "docs"
RESULT_DIRS = (REPO / "benchmarks" / "results", REPO / "benchmarks" / "sample_reports")
README_MAX_LINES = 250

sys.path.insert(0, str(DOCS / "gen"))
import generate  # noqa: E402  (docs/gen is a folder of scripts, not a package)
import gen_results  # noqa: E402


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("docs")
    generate.write(out)
    return out


def visible_commands() -> list[tuple[str, object, object]]:
    """Every visible command of the Typer app with its context, found here independently of the generator."""
    found = []

    def walk(cmd, ctx, path):
        found.append((path, cmd, ctx))
        for name in getattr(cmd, "list_commands", lambda _ctx: [])(ctx):
            sub = cmd.get_command(ctx, name)
            if not sub.hidden:
                walk(sub, sub.make_context(name, [], parent=ctx, resilient_parsing=True), f"{path} {name}")

    root = typer.main.get_command(app)
    walk(root, root.make_context("mi2v", [], resilient_parsing=True), "mi2v")
    return found


def test_every_cli_command_and_option_is_in_the_cli_reference(built):
    page = (built / "reference" / "cli.md").read_text()
    commands = visible_commands()
    assert len(commands) > 10
    for path, cmd, ctx in commands:
        assert f"## `{path}`" in page, f"{path} missing from the CLI reference"
        for param in cmd.get_params(ctx):
            if not getattr(param, "hidden", False):
                for opt in param.opts:
                    assert opt in page, f"{path} {opt} missing from the CLI reference"


def schema_property_names(node) -> set[str]:
    """Every key of every `properties` object anywhere in a JSON Schema (definitions included)."""
    names = set()
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "properties" and isinstance(value, dict):
                names |= set(value)
            names |= schema_property_names(value)
    elif isinstance(node, list):
        for value in node:
            names |= schema_property_names(value)
    return names


@pytest.mark.parametrize("schema", sorted((REPO / "mi2v_export" / "schemas").glob("*.schema.json")),
                         ids=lambda p: p.name)
def test_every_schema_property_is_in_its_reference_page(built, schema):
    page = (built / "reference" / "schemas" / (schema.name.removesuffix(".schema.json") + ".md")).read_text()
    names = schema_property_names(json.loads(schema.read_text()))
    assert names
    missing = sorted(n for n in names if f"{n}`" not in page)  # each row's path is a code span ending in the name
    assert not missing, f"{schema.name}: properties missing from the reference: {missing}"


def test_every_results_file_is_on_a_results_page(built):
    pages = "\n".join(p.read_text() for p in (built / "results").glob("*.md"))
    files = [p for folder in RESULT_DIRS for p in sorted(folder.glob("*.json"))]
    assert files
    for path in files:
        assert f"`{path.relative_to(REPO).as_posix()}`" in pages, f"{path.name} is on no results page"


def test_figures_are_pngs_beside_their_pages(built):
    figures = list((built / "results" / "img").glob("*.png"))
    assert figures
    assert all(f.read_bytes().startswith(b"\x89PNG") for f in figures)
    pages = "\n".join(p.read_text() for p in (built / "results").glob("*.md"))
    assert all(f"img/{f.name}" in pages for f in figures)


def test_a_new_kind_of_results_file_still_gets_a_section(tmp_path):
    """An attention run (benchmarks/attention.py's documented JSON) and a file of an unknown shape."""
    (tmp_path / "attention_tiny.json").write_text(json.dumps({
        "machine": {"cpu": "Test CPU", "flags": ["avx2"]}, "gemm_gflops": 100.0,
        "cases": [{"name": "linear_attention", "runtime": "ort", "shape": [1, 2, 3], "reference_ms": 2.0,
                   "rewritten_ms": 1.0, "speedup": 2.0, "gflops": 10.0}]}))
    (tmp_path / "mystery.json").write_text(json.dumps({"something": 1}))
    pages = gen_results.pages([tmp_path])
    assert "linear_attention" in pages["results/attention.md"] and "Test CPU" in pages["results/attention.md"]
    assert "mystery.json`" in pages["results/other.md"]
    assert "results/img/attention_tiny.png" in pages


def generated_names(built: Path) -> set[str]:
    return {p.relative_to(built).as_posix() for p in built.rglob("*") if p.is_file()}


def test_nothing_generated_is_stored_in_docs(built):
    generated = generated_names(built)
    stored = {p.relative_to(DOCS).as_posix() for p in DOCS.rglob("*") if p.is_file()}
    assert not generated & stored, f"generated pages committed into docs/: {sorted(generated & stored)}"


def nav_pages(nav) -> list[str]:
    out = []
    for item in nav:
        value = next(iter(item.values())) if isinstance(item, dict) else item
        out += nav_pages(value) if isinstance(value, list) else [value]
    return out


def test_every_nav_page_exists(built):
    config = yaml.safe_load((REPO / "mkdocs.yml").read_text())
    generated = generated_names(built)
    for page in nav_pages(config["nav"]):
        assert (DOCS / page).is_file() or page in generated, f"mkdocs.yml nav names a missing page: {page}"


def test_readme_is_a_guide_not_a_notebook():
    lines = (REPO / "README.md").read_text().splitlines()
    assert len(lines) <= README_MAX_LINES, f"README.md has {len(lines)} lines (at most {README_MAX_LINES})"


def documented_invocations() -> list[tuple[str, str]]:
    """(file, command line) of every `mi2v …` line in the README's and the docs' code blocks, continuation lines
    joined and comments dropped."""
    found = []
    for path in [REPO / "README.md", *sorted(DOCS.rglob("*.md"))]:
        in_code, pending = False, ""
        for line in path.read_text().splitlines():
            if line.lstrip().startswith("```"):
                in_code, pending = not in_code, ""
                continue
            if not in_code:
                continue
            text = pending + line.split(" #", 1)[0].strip()
            pending = text[:-1] + " " if text.endswith("\\") else ""
            if not pending and text.startswith("mi2v "):
                found.append((path.relative_to(REPO).as_posix(), text))
    return found


def test_every_documented_flag_exists():
    """A command example in the README or the docs uses only options its command has (`mi2v CMD --help`)."""
    commands = {path: {o for p in cmd.get_params(ctx) for o in (*p.opts, *getattr(p, "secondary_opts", []))}
                for path, cmd, ctx in visible_commands()}
    invocations = documented_invocations()
    assert len(invocations) > 20
    for where, line in invocations:
        words = line.replace("|", " ").split()
        path = "mi2v"
        for word in words[1:]:
            if f"{path} {word}" not in commands:
                break
            path = f"{path} {word}"
        allowed = commands[path] | commands["mi2v"]
        flags = [w.split("=", 1)[0] for w in words if w.startswith("-") and w not in ("-", "--")]
        unknown = [f for f in flags if f not in allowed]
        assert not unknown, f"{where}: `{line}` uses {unknown}, which `{path}` does not have"
