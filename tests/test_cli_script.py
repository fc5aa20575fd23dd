"""The installed `mi2v` console script: `--version`, `mi2v` alone, and a usage error end to end."""

from __future__ import annotations

from .conftest import run_cli


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
