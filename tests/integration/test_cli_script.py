"""The installed `mi2v` console script: `--version`, `mi2v` alone, and a usage error end to end."""

from __future__ import annotations

import subprocess
import sys

from tests.conftest import run_cli


def test_version_and_plain_mi2v_as_installed():
    """The console script itself: `--version`, and `mi2v` alone (help, no traceback)."""
    from importlib.metadata import version

    proc = run_cli("--version", timeout=60)
    assert proc.returncode == 0 and proc.stdout.strip() == f"mi2v {version('mi2v-export')}"
    proc = run_cli(timeout=60)
    assert proc.returncode == 0 and "Usage: mi2v" in proc.stdout and "Traceback" not in proc.stderr
    proc = run_cli("bench", "--iterations", "x", timeout=60)
    assert proc.returncode == 2 and proc.stderr.strip().splitlines()[-1].startswith("error: Invalid value for "
                                                                                    "'--iterations'")


def test_every_help_page_is_built_without_torch():
    """`mi2v --help` and the help of every command and subcommand (the options of commands/_options.py, their
    choices from the registries) come without importing torch or a runtime: the CLI starts in a fraction of a
    second."""
    code = (
        "import sys, typer.main\n"
        "from mi2v_export.cli import app\n"
        "def walk(cmd, ctx):\n"
        "    cmd.get_help(ctx)\n"
        "    for name, sub in getattr(cmd, 'commands', {}).items():\n"
        "        walk(sub, sub.context_class(sub, info_name=name, parent=ctx))\n"
        "root = typer.main.get_command(app)\n"
        "walk(root, root.context_class(root, info_name='mi2v'))\n"
        "heavy = [m for m in ('torch', 'executorch', 'onnxruntime', 'coremltools') if m in sys.modules]\n"
        "assert not heavy, heavy\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
