"""Without LiteRT installed, every LiteRT command says in one line what to install (issue 26): the exporter's
environment check (exit 3) and the runtime adapter that verify, bench and generate go through."""

from __future__ import annotations

import sys

import pytest

from mi2v_export import runtimes
from mi2v_export.errors import MissingDependencyError
from mi2v_export.exporters.base import ExportOptions, get_exporter

pytestmark = pytest.mark.unit


@pytest.fixture
def no_litert(monkeypatch):
    for module in ("ai_edge_litert", "litert_torch", "ai_edge_quantizer"):
        monkeypatch.setitem(sys.modules, module, None)  # importlib's "not installed" marker


def test_export_names_the_install_line(no_litert):
    with pytest.raises(MissingDependencyError) as err:
        get_exporter("litert").check_environment(ExportOptions(target="litert"))
    assert err.value.exit_code == 3
    message = str(err.value)
    assert "\n" not in message and "pip install -e '.[litert]'" in message


def test_the_runtime_says_why_it_cannot_run(no_litert, tmp_path):
    runtime = runtimes.get("litert")
    assert "pip install -e '.[litert]'" in runtime.available()
    with pytest.raises(MissingDependencyError, match=r"model\.tflite: .*\.\[litert\]"):
        runtime.load(tmp_path / "model.tflite")


def test_npu_models_never_run_here():
    from types import SimpleNamespace

    entry = SimpleNamespace(target="litert", delegate="qualcomm")
    assert [r.name for r in runtimes.for_entry(entry)] == ["litert-npu"]
    assert runtimes.runnable(entry) is None
    assert "phone" in runtimes.why_not(entry)
