"""The CLI reference page, rendered from the Typer app (`mi2v_export.cli.app`) so that it cannot drift from it.

The app is turned into its click command tree (`typer.main.get_command`) and walked: every visible command and
group, its help text, usage line, arguments and options with the help record `--help` prints (type, choices,
default, range). Hidden commands and options (`hidden=True`) are left out, as `--help` leaves them out. Importing
the CLI needs no torch (the command modules import heavy libraries inside their functions).
"""

from __future__ import annotations

import typer.main

from gen_common import code, escape, table
from mi2v_export import errors
from mi2v_export.cli import app

PAGE = "reference/cli.md"

INTRO = """# CLI reference

Generated from the Typer app (`mi2v_export.cli.app`) when the docs are built; `mi2v COMMAND --help` prints the
same. Options common to every command go before it (`mi2v -q export …`). Usage errors (an unknown command or
option, a value of the wrong type or outside its choices, a missing argument) print the usage line and one
`error: …` line and exit 2; `mi2v` alone, or a group such as `mi2v devices` alone, prints its help and exits 0;
Ctrl-C or SIGTERM exits 130 with nothing half-written. A traceback is a bug.
"""


def command_tree() -> list[tuple[str, object, object]]:
    """(command path, click command, its context) for the root and every visible subcommand, depth first."""
    root = typer.main.get_command(app)
    found: list[tuple[str, object, object]] = []

    def walk(cmd, ctx, path: str) -> None:
        found.append((path, cmd, ctx))
        for name in getattr(cmd, "list_commands", lambda _ctx: [])(ctx):
            sub = cmd.get_command(ctx, name)
            if sub is not None and not sub.hidden:
                walk(sub, sub.make_context(name, [], parent=ctx, resilient_parsing=True), f"{path} {name}")

    walk(root, root.make_context("mi2v", [], resilient_parsing=True), "mi2v")
    return found


def anchor(path: str) -> str:
    return path.replace(" ", "-")


def _param_rows(cmd, ctx, kind: str) -> list[tuple[str, str]]:
    rows = []
    for param in cmd.get_params(ctx):
        if param.name == "help" or getattr(param, "hidden", False) or param.param_type_name != kind:
            continue
        record = param.get_help_record(ctx)
        if record is not None:
            rows.append((code(record[0]), escape(record[1] or "", in_table=True)))
    return rows


def render_command(path: str, cmd, ctx) -> str:
    """One command's section: usage, help, arguments, options, subcommands."""
    out = [f"## `{path}` {{#{anchor(path)}}}\n", "```text", cmd.get_usage(ctx), "```\n"]
    if cmd.help:
        out.append(escape(cmd.help.strip()) + "\n")
    arguments = _param_rows(cmd, ctx, "argument")
    if arguments:
        out.append("**Arguments**\n\n" + table(["argument", "description"], arguments))
    options = _param_rows(cmd, ctx, "option")
    if options:
        out.append("**Options**\n\n" + table(["option", "description"], options))
    subs = [n for n in getattr(cmd, "list_commands", lambda _c: [])(ctx) if not cmd.get_command(ctx, n).hidden]
    if subs:
        out.append("**Commands**: " + ", ".join(f"[`{path} {n}`](#{anchor(f'{path} {n}')})" for n in subs) + "\n")
    return "\n".join(out)


def exit_codes() -> str:
    """The exit code of each user-facing error class (`mi2v_export/errors.py`)."""
    classes, todo = [], [errors.Mi2vError]
    while todo:  # every subclass loaded with the CLI, depth first
        cls = todo.pop(0)
        classes.append(cls)
        todo[:0] = cls.__subclasses__()
    rows = [(code(c.exit_code), code(c.__name__), escape((c.__doc__ or "").strip(), in_table=True))
            for c in classes]
    return "## Exit codes {#exit-codes}\n\n" + table(["exit", "error class", "meaning"], rows)


def page() -> str:
    tree = command_tree()
    index = [f"- [`{path}`](#{anchor(path)}): {escape(cmd.get_short_help_str(limit=150))}" for path, cmd, _ctx in tree]
    sections = [render_command(path, cmd, ctx) for path, cmd, ctx in tree]
    return "\n".join([INTRO, "\n".join(index) + "\n", exit_codes(), *sections])


def pages() -> dict[str, str]:
    return {PAGE: page()}


def command_paths() -> list[str]:
    """Every visible command path (what the reference must contain; used by tests/unit/test_docs.py)."""
    return [path for path, _cmd, _ctx in command_tree()]
