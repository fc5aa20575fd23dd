"""Usage errors: every command and subcommand of the Typer app (discovered, so new commands are covered) answers a
bad option, a bad value and a missing argument with the usage line and one `error:` line, exit 2, no traceback."""

from __future__ import annotations

import os
import sys
import typing
from enum import Enum

import pytest
import typer
from typer.core import TyperOption

from mi2v_export import cli

pytestmark = pytest.mark.unit  # in-process: no subprocess, no device, no export


def _commands(group, path=()):
    """(command path, click command) for every leaf command, and the groups themselves."""
    for name, cmd in sorted(getattr(group, "commands", {}).items()):
        yield (*path, name), cmd
        yield from _commands(cmd, (*path, name))


COMMANDS = list(_commands(typer.main.get_command(cli.app)))
LEAVES = [(p, c) for p, c in COMMANDS if not getattr(c, "commands", None)]


def _run(argv, capsys) -> tuple[int, str, str]:
    """`mi2v ARGV` in this process (usage errors happen before any command body runs)."""
    old = sys.argv
    sys.argv = ["mi2v", *argv]
    try:
        cli.main()
        rc = 0
    except SystemExit as exc:
        rc = exc.code if isinstance(exc.code, int) else 1
    finally:
        sys.argv = old
    out = capsys.readouterr()
    return rc, out.out, out.err


def _assert_usage_error(rc: int, err: str, mentions: str | None = None) -> None:
    assert rc == 2, err
    assert "Traceback" not in err
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, err
    assert err.strip().splitlines()[-1] == errors[0]  # the error line comes last, after the usage block
    if mentions is not None:
        assert mentions in errors[0], err


def test_every_command_is_discovered():
    names = {" ".join(p) for p, _ in COMMANDS}
    assert {"export", "bench", "bench compare", "generate", "devices list", "info", "inspect"} <= names


@pytest.mark.parametrize("path", [p for p, _ in COMMANDS], ids=" ".join)
def test_unknown_option(path, capsys):
    rc, _, err = _run([*path, "--no-such-option"], capsys)
    _assert_usage_error(rc, err, "--no-such-option")


def _bad_value(param) -> str | None:
    """A value the option's type refuses, or None when it takes any text."""
    kind = param.type_descriptor.annotation
    kinds = [k for k in (typing.get_args(kind) or (kind,)) if k is not type(None)]
    if any(isinstance(k, type) and issubclass(k, Enum) for k in kinds):
        return "no-such-choice"
    if any(k in (int, float) for k in kinds):
        return "x"
    return None


BAD_VALUES = [(p, param) for p, cmd in LEAVES for param in cmd.params
              if isinstance(param, TyperOption) and not param.is_flag and _bad_value(param) is not None]


@pytest.mark.parametrize("path,param", BAD_VALUES, ids=[f"{' '.join(p)} {q.opts[0]}" for p, q in BAD_VALUES])
def test_bad_value(path, param, capsys):
    rc, _, err = _run([*path, param.opts[0], _bad_value(param)], capsys)
    required = [q for q in LEAVES_BY_PATH[path].params if q.required]
    # a required option given earlier in the command's signature may be reported first; either is one line
    _assert_usage_error(rc, err, None if required else param.opts[0])


LEAVES_BY_PATH = dict(LEAVES)


@pytest.mark.parametrize("path", [p for p, c in LEAVES if any(q.required for q in c.params)], ids=" ".join)
def test_missing_required(path, capsys):
    rc, _, err = _run([*path], capsys)
    _assert_usage_error(rc, err, "Missing")


def test_missing_option_value(capsys):
    rc, _, err = _run(["export", "--target"], capsys)
    _assert_usage_error(rc, err, "--target")


def test_unknown_command(capsys):
    rc, _, err = _run(["nosuchcommand"], capsys)
    _assert_usage_error(rc, err, "nosuchcommand")
    rc, _, err = _run(["devices", "nosuchcommand"], capsys)
    _assert_usage_error(rc, err, "nosuchcommand")


@pytest.mark.parametrize("argv", [[], ["devices"]])
def test_no_arguments_prints_help(argv, capsys):
    rc, out, err = _run(argv, capsys)
    assert rc == 0 and "Usage:" in out and "Traceback" not in err


def test_bad_choice_names_the_choices(capsys):
    rc, _, err = _run(["export", "--target", "tflite"], capsys)
    _assert_usage_error(rc, err, "'onnx', 'coreml', 'executorch'")
    rc, _, err = _run(["bench", "--artifacts", ".", "--component", "vae"], capsys)
    _assert_usage_error(rc, err, "--component")
    rc, _, err = _run(["bench", "--artifacts", ".", "--compute-units", "cpuOnly"], capsys)
    _assert_usage_error(rc, err, "cpu_only")


def test_verbose_and_quiet_exclude_each_other(capsys):
    rc, _, err = _run(["-v", "-q", "info"], capsys)
    _assert_usage_error(rc, err, "--quiet")


@pytest.mark.parametrize("flag,level", [("-v", "DEBUG"), ("--quiet", "WARNING"), (None, "INFO")])
def test_verbosity_sets_the_log_level(flag, level, capsys):
    """-v / -q are logging levels of the `mi2v` logger (progress notes are INFO, shown by default)."""
    import logging

    rc, out, _ = _run([*([flag] if flag else []), "devices", "profile"], capsys)
    assert rc == 0 and out.lstrip().startswith("{")
    log = logging.getLogger("mi2v")
    assert logging.getLevelName(log.level) == level
    logging.getLogger("mi2v.bench").info("a progress note")
    logging.getLogger("mi2v.bench").warning("a warning")
    err = capsys.readouterr().err
    assert ("a progress note" in err) == (level != "WARNING") and "warning: a warning" in err


def test_a_library_basic_config_adds_no_info_lines():
    """ExecuTorch's Core ML partitioner logs INFO lines ("Skipping op ...") that reached the user once some library
    had called logging.basicConfig(): the CLI's own root handler makes that call a no-op and shows warnings only."""
    import subprocess

    script = ("import logging; from mi2v_export.cli import configure_logging; configure_logging(False, False); "
              "logging.basicConfig(level=logging.INFO); lib = logging.getLogger('some.library'); "
              "lib.setLevel(logging.INFO); lib.info('skipping op'); lib.warning('spec version 8')")
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and "skipping op" not in proc.stderr, proc.stderr
    assert "warning: spec version 8" in proc.stderr


@pytest.mark.parametrize("flag,quiet,verbose", [("-q", True, False), ("-v", False, True), (None, False, False)])
def test_quiet_and_verbose_are_read_from_one_place(flag, quiet, verbose, capsys):
    """Commands ask commands/_render.py (is_quiet / is_verbose), which reads the level -v / -q set: one record."""
    from mi2v_export.commands import _render

    rc, _, _ = _run([*([flag] if flag else []), "devices", "profile"], capsys)
    assert rc == 0 and (_render.is_quiet(), _render.is_verbose()) == (quiet, verbose)


@pytest.mark.parametrize("verbose", [False, True])
def test_python_warnings_become_log_lines(verbose):
    """No raw `path.py:N: UserWarning: …` pair ever: mi2v's own UserWarnings are one `warning:` line; a library's
    warning, or numpy's RuntimeWarning in mi2v's code, is a debug line (shown with -v only)."""
    import subprocess

    script = (
        "import warnings, mi2v_export.checkpoints as own; from mi2v_export.cli import configure_logging; "
        f"configure_logging({verbose}, False); "
        "warnings.warn_explicit('seeded weights, noise', UserWarning, own.__file__, 5); "
        "warnings.warn_explicit('divide by zero', RuntimeWarning, own.__file__, 6); "
        "warnings.warn_explicit('library internals', UserWarning, warnings.__file__, 7)")
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120,
                          env={**os.environ, "COLUMNS": "200"})
    assert proc.returncode == 0, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert lines[0] == "warning: seeded weights, noise" and all(": UserWarning: " not in x for x in lines), lines
    assert ("library internals" in proc.stderr) == verbose and ("divide by zero" in proc.stderr) == verbose
    assert len(lines) == (3 if verbose else 1), lines


# ---- options declared once, one progress / notes convention (issue 23) -------------------------------------------

# different options that happen to share a flag name (another value set in each command): declared where used
# (`--profile`: bench's per-op profile switch; `devices simulate`'s device profile file)
SAME_NAME_OTHER_OPTION = {"--runtime", "--dtype", "--precision", "--compute-units", "--profile"}


def _declared_flags(path) -> set[str]:
    """The flags a command module declares itself: each `typer.Option(...)` default of a command's parameter."""
    import ast

    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            continue
        params = node.args.args + node.args.kwonlyargs
        defaults = [None] * (len(node.args.args) - len(node.args.defaults)) + node.args.defaults + node.args.kw_defaults
        for param, default in zip(params, defaults):
            if isinstance(default, ast.Call) and getattr(default.func, "attr", None) == "Option":
                flags = [a.value for a in default.args if isinstance(a, ast.Constant) and str(a.value).startswith("-")]
                found.update(flags or ["--" + param.arg.replace("_", "-")])
    return found


def test_shared_options_are_declared_once():
    """An option two or more commands take is an `Annotated` type of commands/_options.py (flag, type, choices,
    help); no command module re-declares it with typer.Option."""
    import importlib
    from collections import Counter
    from pathlib import Path

    uses = Counter(opt for _, cmd in COMMANDS for q in cmd.params if isinstance(q, TyperOption) for opt in q.opts)
    shared = {flag for flag, n in uses.items() if n > 1} - SAME_NAME_OTHER_OPTION
    assert {"--json", "--out", "--preset", "--checkpoint", "--allow-modified"} <= shared
    for name in cli.COMMAND_MODULES:
        module = importlib.import_module(name if "." in name else f"mi2v_export.commands.{name}")
        again = _declared_flags(Path(module.__file__)) & shared
        assert not again, f"{module.__name__} declares {sorted(again)} itself: use commands/_options.py"


def test_quantize_takes_the_registries_choices(capsys):
    """`quantize analyze` takes the choices the other commands take (presets, components, decoder kinds) and the
    recipe precisions, not free text: a bad value is a usage error that names them."""
    from mi2v_export.contract import COMPONENTS, DECODER_KINDS
    from mi2v_export.precision import RECIPE_PRECISIONS
    from mi2v_export.presets import PRESETS

    for flag, choices in (("--preset", PRESETS), ("--component", COMPONENTS), ("--decoder", DECODER_KINDS),
                          ("--precision", RECIPE_PRECISIONS)):
        rc, _, err = _run(["quantize", "analyze", "--out", "r.json", flag, "no-such-choice"], capsys)
        _assert_usage_error(rc, err, flag)
        assert all(repr(c) in err for c in choices), err


@pytest.mark.parametrize("quiet", [False, True])
def test_progress_and_notes_follow_one_convention(quiet, capsys):
    """Progress (`say`, the live views) and notes before a run go to stderr and are dropped with -q; notes that
    qualify the result go to stdout, with -q too (commands/_render.py)."""
    from mi2v_export.commands import _render

    cli.configure_logging(verbose=False, quiet=quiet)
    try:
        _render.say("a progress line")
        _render.note("a note")
        with _render.bars_view() as view:
            _render.stage_bars(view, {"encode": "encode image"})("encode", 1, 1)
        _render.result_notes(["seeded weights"])
    finally:
        cli.configure_logging(verbose=False, quiet=False)
    out, err = capsys.readouterr()
    assert out.strip() == "note: seeded weights"
    assert ["a progress line" in err, "note: a note" in err, "encode image" in err] == [not quiet] * 3, err
