"""`mi2v export`: the tiny preset to every target that lowers here, checked end to end where a runtime exists
(onnxruntime, the ExecuTorch Python runtime with XNNPACK) and structurally elsewhere (Vulkan / Core ML .pte, Core ML
.mlpackage); the manifest; the rewrites; and every failure mode (bad flags, missing SDK, wrong checkpoint, failing
gate, Ctrl-C, full disk) leaving the output folder as it was.

Default suite budget: ExecuTorch lowering costs 30-100 s per tiny component on 2 cores, so the default suite lowers
one real tiny component to XNNPACK (the encoder) and uses a toy denoiser (same I/O contract) for the Vulkan /
Core ML delegate and failure tests. `-m slow` exports the whole tiny preset to every target and the 720p denoiser
and decoder (golden parity for the denoiser).
"""

from __future__ import annotations

import dataclasses
import errno
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from torch import nn

from mi2v_export import parity, runtimes
from mi2v_export.errors import BadInputError, CheckpointError, Mi2vError, MissingDependencyError, VerificationError
from mi2v_export.exporters import base, components, rewrites
from mi2v_export.models import turbo_vaed
from mi2v_export.runtimes import registry
from mi2v_export.runtimes.sessions import open_session
from mi2v_export.exporters.orchestrate import ExportRequest, prepare, run_export
from mi2v_export.files import tree_digest
from mi2v_export.manifest import (
    MANIFEST_NAME,
    STAGING_PREFIX,
    ArtifactEntry,
    Manifest,
    Staging,
    TensorInfo,
    read_manifest,
)
from mi2v_export.presets import get_preset
from mi2v_export.shapes import geometry

from tests.conftest import GOLDEN, MI2V_EXE, run_cli, tiny_vae_part

TINY = get_preset("tiny")
TINY_GEO = geometry(TINY.height, TINY.width, TINY.frames)

# The real `mi2v` entry point, with the export command registered even before cli.COMMAND_MODULES lists it.
def error_line(proc: subprocess.CompletedProcess) -> str:
    lines = [ln for ln in proc.stderr.splitlines() if ln.startswith("error:")]
    assert len(lines) == 1, proc.stderr[-2000:]
    return lines[0]


# ---------------------------------------------------------------------------------------------------------------
# Toy denoiser with the denoiser's I/O contract (fast to lower; Conv3d, temporal cat padding, softmax attention)


class ToyDenoiser(nn.Module):
    def __init__(self, width: int = 16, diverge: bool = False):
        super().__init__()
        torch.manual_seed(0)
        self.diverge = diverge
        self.conv_in = nn.Conv3d(128, width, 3, padding=(0, 1, 1))
        self.qkv = nn.Linear(width, 3 * width)
        self.t_proj = nn.Linear(2, width)
        self.conv_out = nn.Conv3d(width, 128, 1)

    def forward(self, latent, timestep, flow_score):
        x = torch.cat([latent[:, :, :1], latent, latent[:, :, -1:]], dim=2)
        h = self.conv_in(x)
        b, c, t, hh, ww = h.shape
        tok = h.flatten(2).transpose(1, 2)
        tok = tok + self.t_proj(torch.stack([timestep / 1000.0, flow_score], dim=-1))[:, None]
        q, k, v = self.qkv(tok).chunk(3, dim=-1)
        a = torch.softmax(q @ k.transpose(1, 2) / c ** 0.5, dim=-1) @ v
        out = self.conv_out((tok + a).transpose(1, 2).reshape(b, c, t, hh, ww))
        if self.diverge and torch.compiler.is_exporting():
            out = out + 0.5  # an export that silently computes something else: the gate must catch it
        return out


@pytest.fixture
def toy(monkeypatch):
    monkeypatch.setitem(components.LOADERS, "denoiser", lambda *a: ToyDenoiser())


@pytest.fixture
def diverging_toy(monkeypatch):
    monkeypatch.setitem(components.LOADERS, "denoiser", lambda *a: ToyDenoiser(diverge=True))


def toy_request(out: Path, target: str = "onnx", **kw) -> ExportRequest:
    kw.setdefault("components", "denoiser")
    return ExportRequest(target=target, out_dir=out, preset="tiny", **kw)


def digests(folder: Path) -> dict[str, str]:
    return {p.relative_to(folder).as_posix(): tree_digest(p)[0] for p in sorted(folder.rglob("*")) if p.is_file()}


def staging_left(parent: Path) -> list[Path]:
    return list(parent.glob(f"{STAGING_PREFIX}*"))


def reference_outputs(component: str, decoder: str = "turbo-vaed") -> tuple[dict, np.ndarray]:
    """The seeded inputs and the PyTorch fp32 output of the tiny model, computed independently of the exporter."""
    from mi2v_export import models

    inputs = components.example_inputs(component, TINY_GEO)
    if component == "encoder":
        model = models.load_encoder(preset="tiny")
    elif component == "denoiser":
        model = models.load_denoiser(preset="tiny")
    else:
        model = models.load_decoder(decoder, preset="tiny")
    with torch.no_grad():
        out = model.eval()(*inputs.values())
    return {k: v.numpy() for k, v in inputs.items()}, out.numpy()


# ---------------------------------------------------------------------------------------------------------------
# Units: parity, manifest, registry, rewrites


def test_parity_metrics_and_gates():
    ref = np.linspace(-1, 1, 1000).astype(np.float32)
    same = parity.compare([ref], [ref])
    assert same.max_abs == 0 and same.rel_l2 == 0 and same.psnr_db == float("inf") and same.finite
    noisy = ref + 1e-3 * np.sin(np.arange(1000)).astype(np.float32)
    m = parity.compare({"y": noisy}, {"y": ref})
    assert m.rel_l2 == pytest.approx(np.linalg.norm(noisy - ref) / np.linalg.norm(ref), rel=1e-6)
    assert 60 < m.psnr_db < 70  # rms 7e-4 against a peak of 1
    assert parity.gate_for("fp32").passes(parity.compare([ref * (1 + 5e-5)], [ref]))
    assert not parity.gate_for("fp32").passes(parity.compare([ref * (1 + 5e-3)], [ref]))
    assert parity.gate_for("fp16").passes(m) and not parity.gate_for("fp16").passes(parity.compare([ref + 0.05], [ref]))
    bad = ref.copy()
    bad[3] = np.nan
    assert not parity.gate_for("fp32").passes(parity.compare([bad], [ref]))
    assert parity.compare([bad], [ref]).to_dict()["finite"] is False
    video = np.random.default_rng(0).random((3, 24, 32, 3))
    frames = parity.frame_metrics(video, video)
    assert [f["frame"] for f in frames] == [0, 1, 2] and all(f["ssim"] == pytest.approx(1.0) for f in frames)


def _entry(component: str, file: str, target: str = "onnx") -> ArtifactEntry:
    return ArtifactEntry(component, component, target, None, "fp32", file, "0" * 64, 1,
                         [TensorInfo("latent", (1, 128, 2, 4, 6), "float32")], [], {}, {})


def test_manifest_roundtrip_merge_and_conflicts(tmp_path):
    out = tmp_path / "art"
    source = {"weights": "seeded", "seed": 0, "checkpoints": []}

    def write(entries, **kw):
        m = Manifest(preset="tiny", resolution=(128, 192), frames=9, latent_shape=TINY_GEO.latent_shape,
                     source=source, components=entries, **kw)
        with Staging(out) as st:
            for e in entries:
                (st.path / e.file).write_text(e.file)
            return st.commit(m, [e.file for e in entries])

    write([_entry("encoder", "encoder.onnx"), _entry("denoiser", "denoiser.onnx")])
    merged = write([_entry("denoiser", "denoiser.pte", "executorch"), _entry("denoiser", "denoiser.onnx")])
    back = read_manifest(out)
    assert sorted(e.file for e in back.components) == ["denoiser.onnx", "denoiser.pte", "encoder.onnx"]
    assert back.to_dict() == merged.to_dict()
    assert back.find("encoder").file == "encoder.onnx"
    assert back.find("denoiser", target="executorch").file == "denoiser.pte"
    with pytest.raises(BadInputError, match="2 artifacts"):
        back.find("denoiser")
    with pytest.raises(BadInputError, match="no decoder"):
        back.find("decoder")
    assert not staging_left(tmp_path)
    other = Manifest(preset="tiny", resolution=(256, 192), frames=9, latent_shape=(1, 128, 2, 8, 6), source=source)
    assert "256x192" in back.conflict_with(other)
    assert back.conflict_with(Manifest(preset="tiny", resolution=(128, 192), frames=9,
                                       latent_shape=TINY_GEO.latent_shape, source=dict(source))) is None
    raw = json.loads((out / MANIFEST_NAME).read_text())
    raw["schema_version"] = 99
    (out / MANIFEST_NAME).write_text(json.dumps(raw))
    with pytest.raises(BadInputError, match="schema version 99"):
        read_manifest(out)


def test_staging_left_by_a_killed_export_is_removed(tmp_path):
    stale = tmp_path / f"{STAGING_PREFIX}my-art-999999999-abc_123"  # no such pid
    stale.mkdir()
    (stale / "denoiser.onnx").write_bytes(b"partial")
    mine = tmp_path / f"{STAGING_PREFIX}my-art-{os.getpid()}-xyz"
    mine.mkdir()
    with Staging(tmp_path / "my-art") as st:
        assert st.path.parent == tmp_path and st.path.name.startswith(f"{STAGING_PREFIX}my-art-{os.getpid()}-")
    assert not stale.exists() and mine.exists()  # a live process's staging folder is left alone
    assert not (tmp_path / "my-art").exists()  # nothing committed, nothing created


def test_tree_digest_of_a_folder_is_stable(tmp_path):
    pkg = tmp_path / "m.mlpackage"
    (pkg / "Data").mkdir(parents=True)
    (pkg / "Data" / "w.bin").write_bytes(b"abc")
    (pkg / "Manifest.json").write_text("{}")
    sha, size = tree_digest(pkg)
    assert size == 5 and sha == tree_digest(pkg)[0]
    (pkg / "Data" / "w.bin").write_bytes(b"abd")
    assert tree_digest(pkg)[0] != sha


def test_registry_lists_targets_and_delegates():
    assert base.target_names() == ("onnx", "coreml", "executorch", "litert")  # the CLI's order
    assert base.delegate_names() == ("xnnpack", "vulkan", "qnn", "coreml", "gpu", "qualcomm", "mediatek",
                                     "google-tensor")
    assert list(base.get_exporter("executorch").delegates()) == ["xnnpack", "vulkan", "qnn", "coreml"]
    assert list(base.get_exporter("onnx").delegates()) == ["qnn"]
    assert base.get_exporter("coreml").default_dtype(None) == "fp16"
    assert base.get_exporter("onnx").default_dtype(None) == "fp32"
    assert {t: base.runtime_of(t) for t in base.target_names()} == {
        "onnx": "onnxruntime", "coreml": "coreml", "executorch": "executorch", "litert": "litert"}
    assert base.runtime_of("tflite") is None


def test_what_runs_here_is_the_runtime_layers_answer():
    """The exporters ask mi2v_export/runtimes whether an artifact runs here and which runtime runs it; the family
    each exporter declares is the family of every runtime that accepts its artifacts."""
    def runs(target, delegate=None):
        return runtimes.runnable(SimpleNamespace(target=target, delegate=delegate)) is not None

    assert runs("onnx") and runs("onnx", "qnn") and runs("executorch", None)
    assert runs("executorch", "xnnpack") and not runs("executorch", "vulkan") and not runs("executorch", "qnn")
    assert runs("coreml") == (sys.platform == "darwin") and not runs("tflite")
    for target, delegate in base.kinds():
        exporter = base.get_exporter(target, delegate)
        options = base.ExportOptions(target, delegate, target_options=exporter.target_options(SimpleNamespace()))
        assert exporter.runs_here(options) == runs(target, delegate), (target, delegate)
        accepting = runtimes.for_target(target, delegate)
        assert accepting and {r.family for r in accepting} == {exporter.runtime}, (target, delegate)
        assert exporter.runtime_package == accepting[0].package
    assert base.get_exporter("onnx", "qnn").runtime_package == "onnxruntime-qnn"
    assert base.get_exporter("coreml").runtime_package == "coremltools"


def test_each_target_declares_its_manifest_flags():
    """The manifest's `flags` of each target come from its options record (exporters/targets), as before."""
    def flags(target, delegate=None, **kw):
        exporter = base.get_exporter(target, delegate)
        request = ExportRequest(target=target, delegate=delegate, out_dir=Path("."), **kw)
        options = base.ExportOptions(target, delegate, target_options=exporter.target_options(request))
        return exporter.manifest_flags(options)

    assert flags("onnx") == {"opset": 18}
    assert flags("onnx", "qnn", soc="SM8750") == {"soc": "SM8750", "allow_cpu_fallback": False, "opset": 18}
    assert flags("coreml", compute_units="cpu_only") == {"compute_units": "cpu_only", "min_ios": 17}
    assert flags("executorch", "xnnpack", etrecord=True) == {"etrecord": True}
    assert flags("executorch", "coreml", min_ios=18) == {"etrecord": False, "compute_units": "all", "min_ios": 18}
    assert flags("executorch", "qnn") == {"etrecord": False, "soc": "SM8650"}


@pytest.mark.parametrize("groups,stride,pad_t,kt", [(1, 1, 0, 3), (1, 2, 0, 3), (4, 1, 0, 5), (1, 1, 1, 3),
                                                     (1, 1, 0, 1), (4, 2, 1, 3)])
def test_conv3d_as_conv2d_is_exact(groups, stride, pad_t, kt):
    torch.manual_seed(0)
    conv = nn.Conv3d(8, 12, (kt, 3, 3), stride=(stride, stride, stride), padding=(pad_t, 1, 1), groups=groups)
    x = torch.randn(2, 8, 7, 10, 12)
    with torch.no_grad():
        want = conv(x)
        got = rewrites.Conv3dAsConv2d(conv)(x)
    assert got.shape == want.shape
    assert (got - want).abs().max() < 1e-5


def test_conv2d_batch_one_for_vulkan_is_exact_and_restored():
    """conv2d_batch1: a batch of frames becomes one batch-1 conv per frame (what Vulkan takes), with the same values;
    F.conv2d is restored afterwards, also when the traced code raises."""
    import torch.nn.functional as F

    torch.manual_seed(0)
    original = F.conv2d
    for conv in (nn.Conv2d(6, 8, 3, padding=1), nn.Conv2d(8, 8, 5, padding=2, groups=8, bias=False),
                 nn.Conv2d(6, 4, 3, stride=2)):
        x = torch.randn(5, conv.in_channels, 9, 11)
        with torch.no_grad():
            want = conv(x)
            with rewrites.conv2d_batch_one():
                got = conv(x)
                gm = torch.export.export(conv, (x,)).graph_module
        assert torch.allclose(got, want, atol=1e-6) and got.shape == want.shape
        convs = [n for n in gm.graph.nodes if n.target == torch.ops.aten.conv2d.default]
        assert len(convs) == 5 and all(n.args[0].meta["val"].shape[0] == 1 for n in convs)
    assert F.conv2d is original
    with pytest.raises(RuntimeError, match="boom"), rewrites.conv2d_batch_one():
        raise RuntimeError("boom")
    assert F.conv2d is original


def test_depth_to_space_roundtrip():
    x = torch.randn(1, 3 * 8, 2, 5, 6)
    factors = [(2, 2), (2, 4), (2, 3)]
    y = rewrites.depth_to_space(x, factors)
    assert y.shape == (1, 3, 4, 10, 12)
    assert torch.equal(rewrites.space_to_depth(y, factors), x)


@pytest.mark.parametrize("part", ["ltx-encoder", "ltx-decoder", "turbo-vaed"])
def test_executorch_and_coreml_rewrites_keep_the_vae_function(part):
    """All export rewrites together (module swaps + trace-time substitutions) compute the same VAE."""
    import copy

    model, x = tiny_vae_part(part)
    with torch.no_grad():
        ref = model(x)
    from mi2v_export.exporters.targets.executorch import DELEGATES

    for target, trace in (("executorch", ()), ("executorch", DELEGATES["vulkan"].extra_trace), ("coreml", ())):
        m = copy.deepcopy(model)
        exporter = base.get_exporter(target)
        counts = rewrites.apply_rewrites(m, exporter.rewrites)
        with rewrites.tracing(exporter.trace_rewrites + trace), torch.no_grad():
            out = m(x)
        assert sum(counts.values()) > 0 or target == "coreml"
        assert parity.rel_l2(out, ref) < 1e-5, (part, target, counts)
    if part != "turbo-vaed":
        assert counts["causal_pad_cat"] > 0  # the LTX causal convs were swapped for the cat-padded form


# ---------------------------------------------------------------------------------------------------------------
# Flag, environment and checkpoint errors: one line, exit code, nothing exported


@pytest.mark.parametrize("kw,match", [
    ({"target": "tflite"}, "unknown target 'tflite'; choose one of: "),
    ({"target": "executorch", "delegate": "metal"}, "unknown delegate 'metal'"),
    ({"target": "onnx", "delegate": "xnnpack"}, "unknown delegate .xnnpack. for --target onnx; choose one of: qnn"),
    ({"target": "coreml", "delegate": "qnn"}, "--delegate does not apply to --target coreml"),
    ({"target": "onnx", "components": "vae"}, "unknown component 'vae'"),
    ({"target": "onnx", "decoder": "taesd"}, "unknown decoder 'taesd'"),
    ({"target": "onnx", "dtype": "int8"}, "unknown dtype 'int8'"),
    ({"target": "onnx", "resolution": "721x1280"}, "height 721 is not a multiple of 4"),
    ({"target": "onnx", "resolution": "720p"}, "is not HEIGHTxWIDTH"),
    ({"target": "onnx", "frames": 16}, "frames 16 is not 8k\\+1"),
    ({"target": "onnx", "attention": "flash"}, "unknown attention 'flash'"),
    ({"target": "onnx", "rewrite": ["softmax"]}, "use NAME=VALUE"),
    ({"target": "onnx", "rewrite": ["grid=1"]}, "unknown option 'grid'"),
    ({"target": "onnx", "rewrite": ["query_chunk=-4"]}, "query_chunk takes a whole number"),
    ({"target": "onnx", "rewrite": ["linear_attention=maybe"]}, "linear_attention takes true or false"),
    ({"target": "onnx", "rewrite": ["softmax=flash"]}, "softmax takes native or split"),
    ({"target": "onnx", "etrecord": True}, "--etrecord applies to --target executorch only"),
    ({"target": "coreml", "compute_units": "npu"}, "unknown compute units 'npu'"),
])
def test_bad_flags_fail_before_any_work(tmp_path, kw, match):
    kw.setdefault("preset", "tiny")
    with pytest.raises(BadInputError, match=match):
        prepare(ExportRequest(out_dir=tmp_path / "out", **kw))
    assert not (tmp_path / "out").exists() and not staging_left(tmp_path)


def test_cli_errors_are_one_line_with_exit_codes(tmp_path):
    proc = run_cli("export", "--target", "tflite", "--preset", "tiny", "--out", tmp_path / "o")
    assert proc.returncode == 2 and "'--target': 'tflite' is not one of 'onnx', 'coreml', 'executorch'" in error_line(proc)
    env = {k: v for k, v in os.environ.items() if k != "QNN_SDK_ROOT"}
    proc = run_cli("export", "--target", "executorch", "--delegate", "qnn", "--preset", "tiny",
                   "--out", tmp_path / "o", timeout=300, env=env)
    assert proc.returncode == 3 and "QNN_SDK_ROOT" in error_line(proc)
    assert "Downloading" not in proc.stderr and "softwarecenter.qualcomm.com" not in proc.stderr
    assert not (tmp_path / "o").exists() and not staging_left(tmp_path)


def test_qnn_without_sdk_fails_at_once_and_never_downloads(tmp_path, monkeypatch):
    monkeypatch.delenv("QNN_SDK_ROOT", raising=False)
    before = "executorch.backends.qualcomm" in sys.modules
    with pytest.raises(MissingDependencyError, match="QNN_SDK_ROOT"):
        prepare(toy_request(tmp_path / "o", "executorch", delegate="qnn", dtype="fp16"))
    assert ("executorch.backends.qualcomm" in sys.modules) == before  # nothing that could download was imported
    monkeypatch.setenv("QNN_SDK_ROOT", str(tmp_path / "no-sdk"))
    with pytest.raises(MissingDependencyError, match="libQnnHtp.so"):
        prepare(toy_request(tmp_path / "o", "executorch", delegate="qnn", dtype="fp16"))
    fake = tmp_path / "sdk" / "lib" / "x86_64-linux-clang"
    fake.mkdir(parents=True)
    (fake / "libQnnHtp.so").write_bytes(b"")
    monkeypatch.setenv("QNN_SDK_ROOT", str(tmp_path / "sdk"))
    monkeypatch.setenv("LD_LIBRARY_PATH", "")
    with pytest.raises(MissingDependencyError, match="LD_LIBRARY_PATH"):
        prepare(toy_request(tmp_path / "o", "executorch", delegate="qnn", dtype="fp16"))


def test_checkpoint_must_match_the_component(tmp_path):
    from mi2v_export import models
    from mi2v_export.checkpoints import write_safetensors

    turbo = write_safetensors(models.load_decoder("turbo-vaed", preset="tiny").state_dict(), tmp_path / "turbo.st")
    with pytest.raises(CheckpointError, match="no checkpoint holds the denoiser"):
        prepare(toy_request(tmp_path / "o", components="denoiser", checkpoints=[turbo]))
    with pytest.raises(CheckpointError, match="no checkpoint holds the ltx-encoder for the encoder"):
        prepare(ExportRequest(target="onnx", out_dir=tmp_path / "o", components="encoder", preset="tiny",
                              checkpoints=[turbo]))
    enc = write_safetensors(models.load_encoder(preset="tiny").state_dict(), tmp_path / "enc.st")
    with pytest.raises(CheckpointError, match="enc.st holds ltx-encoder, which matches none of the exported"):
        prepare(ExportRequest(target="onnx", out_dir=tmp_path / "o", components="decoder", preset="tiny",
                              checkpoints=[turbo, enc]))
    plan = prepare(ExportRequest(target="onnx", out_dir=tmp_path / "o", components="decoder", preset="tiny",
                                 checkpoints=[turbo]))
    assert plan.routing == {"decoder": turbo}
    rec = plan.manifest.source["checkpoints"][0]
    assert plan.manifest.source["weights"] == "checkpoint" and rec["parts"] == ["turbo-vaed"]
    assert rec["sha256"] == tree_digest(turbo)[0]
    with pytest.raises(CheckpointError):
        prepare(toy_request(tmp_path / "o", checkpoints=[tmp_path / "missing.pth"]))


def test_output_folder_of_another_configuration_is_refused(tmp_path, toy):
    out = tmp_path / "art"
    run_export(toy_request(out))
    with pytest.raises(BadInputError, match="already holds other artifacts"):
        prepare(toy_request(out, resolution="256x192"))
    (tmp_path / "file").write_text("x")
    with pytest.raises(BadInputError, match="not a folder"):
        prepare(toy_request(tmp_path / "file"))


# ---------------------------------------------------------------------------------------------------------------
# The tiny preset, end to end


@pytest.fixture(scope="module")
def onnx_dir(tmp_path_factory, exported) -> Path:
    """`mi2v export --target onnx --preset tiny` through the real CLI (all three components; tests/cache.py)."""
    out, stdout = exported(tmp_path_factory.mktemp("onnx") / "artifacts", "--target", "onnx", "--preset", "tiny", "--json")
    data = json.loads(stdout)  # --json: nothing but JSON on stdout
    assert [a["file"] for a in data["artifacts"]] == ["encoder.onnx", "denoiser.onnx", "decoder.onnx"]
    return out


def test_onnx_tiny_end_to_end(onnx_dir):
    import onnxruntime as ort

    m = read_manifest(onnx_dir)
    m.check_files()
    assert (m.preset, m.resolution, m.frames) == ("tiny", (128, 192), 9)
    assert m.source == {"weights": "seeded", "seed": 0, "checkpoints": []}
    assert m.libraries["torch"] and m.libraries["onnxruntime"] and m.tool["name"] == "mi2v-export"
    contract = {"encoder": (["image"], ["latent"]), "denoiser": (["latent", "timestep", "flow_score"], ["velocity"]),
                "decoder": (["latent"], ["video"])}
    for e in m.components:
        assert e.target == "onnx" and e.delegate is None and e.dtype == "fp32"
        assert ([t.name for t in e.inputs], [t.name for t in e.outputs]) == tuple(contract[e.component])
        assert [r["runtime"] for r in e.verified_on] == ["onnxruntime"] and e.parity["gate"]["passed"]
        assert e.parity["reference"] == "pytorch-fp32" and e.parity["rel_l2"] <= 1e-4
        assert e.export["stages_s"]["reference"] > 0
        assert e.export["wall_s"] > 0 and e.export["peak_rss_bytes"] > 100 * 2 ** 20
        assert e.target_info["opset"] == 18 and e.verified
        # independent check: onnxruntime on the artifact vs the PyTorch model, nothing shared with the exporter
        feeds, want = reference_outputs(e.component)
        got = ort.InferenceSession(str(m.path_of(e)), providers=["CPUExecutionProvider"]).run(None, feeds)[0]
        assert got.shape == want.shape == tuple(e.outputs[0].shape)
        assert parity.rel_l2(got, want) <= 1e-4
    assert m.find("decoder").model == "turbo-vaed"
    assert m.find("encoder").inputs[0].shape == (1, 3, 1, 128, 192)
    assert m.find("decoder").outputs[0].shape == (1, 3, 9, 128, 192)


class NormToy(nn.Module):
    """The models' small constants: Turbo-VAED's channel RMS norm (+ 1e-8) and a near-identity scale."""

    def forward(self, latent, timestep, flow_score):
        return turbo_vaed.channel_rms_norm(latent) * 1.000001 + 0.0 * (timestep + flow_score)[:, None, None, None, None]


@pytest.mark.parametrize("target, delegate", [
    ("onnx", None),  # onnxscript's no-op rule dropped the 1e-8 here: 0/0 = NaN at every zero pixel
    pytest.param("executorch", "xnnpack", marks=pytest.mark.slow),
    pytest.param("litert", None, marks=pytest.mark.slow),
])
def test_exports_keep_epsilons_an_all_zero_pixel_stays_zero(tmp_path, monkeypatch, target, delegate):
    monkeypatch.setitem(components.LOADERS, "denoiser", lambda *a: NormToy())
    (e,) = run_export(toy_request(tmp_path / "art", target, delegate=delegate)).entries
    feeds = {k: v.numpy().copy() for k, v in components.example_inputs("denoiser", TINY_GEO).items()}
    feeds["latent"][:] = 0.0
    feeds["latent"][..., 0, 0] = 2.0  # one pixel with signal: the scale is kept too
    runtime = registry.get(e.verified_on[0]["runtime"])
    with open_session(runtime, tmp_path / "art" / e.file, e) as session:
        got = session.run(feeds)[e.outputs[0].name]
    want = NormToy()(*(torch.from_numpy(feeds[k]) for k in ("latent", "timestep", "flow_score"))).numpy()
    assert np.isfinite(got).all()
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=0)


def test_executorch_xnnpack_tiny_encoder_runs_on_the_executorch_runtime(tmp_path):
    from executorch.runtime import Runtime

    out = tmp_path / "pte"
    report = run_export(ExportRequest(target="executorch", out_dir=out, components="encoder", preset="tiny",
                                      etrecord=True))
    (e,) = report.entries
    assert e.file == "encoder.pte" and e.delegate == "xnnpack"
    assert [r["runtime"] for r in e.verified_on] == ["executorch-xnnpack"] and e.parity["gate"]["passed"]
    assert {f.role for f in e.extra_files} == {"bundled_program", "etrecord"}
    assert e.test_vectors["verified_on_host"] is True and e.test_vectors["format"] == "bundled-program"
    d = e.delegation
    assert d["backends"] == {"XnnpackBackend": d["delegated_subgraphs"]} and d["ops_delegated"] > 100
    assert d["flops_share_delegated"] == 1.0  # every convolution runs in XNNPACK (conv3d_as_conv2d rewrite)
    # op names as ExecuTorch's get_delegation_info spells them: every convolution delegated, no alias copy left
    assert d["delegated_ops"]["aten_convolution_default"] > 0
    assert d["ops_delegated"] == sum(d["delegated_ops"].values()) and d["ops_portable"] == sum(d["portable_ops"].values())
    assert "aten_convolution_default" not in d["portable_ops"] and "aten_alias_copy_default" not in d["portable_ops"]
    assert {"conv3d_as_conv2d", "shuffle_rank5", "causal_pad_cat"} <= {k for k, v in e.target_info["rewrites"].items() if v}
    feeds, want = reference_outputs("encoder")
    method = Runtime.get().load_program(out / "encoder.pte").load_method("forward")
    got = method.execute([torch.from_numpy(feeds["image"])])[0].numpy()
    assert parity.rel_l2(got, want) <= 1e-4
    read_manifest(out).check_files()


def test_vulkan_pte_is_structurally_checked_and_merges_into_an_existing_folder(tmp_path, onnx_dir, toy):
    out = tmp_path / "art"
    shutil.copytree(onnx_dir, out)
    (e,) = run_export(toy_request(out, "executorch", delegate="vulkan")).entries
    assert e.file == "denoiser.pte" and e.parity["verified_on"] == []
    assert "VulkanBackend" in e.parity["reason"]
    assert any("VulkanBackend" in c for c in e.structure["checks"])
    assert e.delegation["backends"].get("VulkanBackend", 0) >= 1
    # the toy's Conv3d runs over 2 frames: only the per-frame batch-1 form (conv2d_batch1) lets Vulkan take it
    assert "conv2d_batch1" in e.target_info["trace_rewrites"] and e.delegation["flops_share_delegated"] == 1.0
    m = read_manifest(out)
    assert sorted(x.file for x in m.components) == ["decoder.onnx", "denoiser.onnx", "denoiser.pte", "encoder.onnx"]
    assert m.find("denoiser", target="executorch").delegate == "vulkan"


def test_coreml_delegate_pte_is_structurally_checked(tmp_path, toy):
    (e,) = run_export(toy_request(tmp_path / "art", "executorch", delegate="coreml")).entries
    assert e.dtype == "fp16" and e.target_info["backend_precision"] == "fp16"
    assert e.target_info["compute_units"] == "all" and e.target_info["minimum_deployment_target"] == "iOS17"
    assert e.parity["verified_on"] == [] and "CoreMLBackend" in e.parity["reason"]
    assert e.delegation["backends"] == {"CoreMLBackend": 1} and e.delegation["ops_portable"] == 0
    # not runnable here, but its test vectors (a BundledProgram) travel with it for a Mac to check
    assert e.test_vectors["format"] == "bundled-program" and (tmp_path / "art" / "denoiser.bpte").is_file()
    (e,) = run_export(toy_request(tmp_path / "bare", "executorch", delegate="coreml", test_vectors=False)).entries
    assert "reference" not in e.export["stages_s"]  # nothing here compares against it: not computed
    assert e.test_vectors is None and e.extra_files == [] and not (tmp_path / "bare" / "denoiser.bpte").exists()


def test_coreml_mlpackage_of_the_tiny_denoiser_loads_as_a_spec(tmp_path):
    import coremltools as ct

    (e,) = run_export(ExportRequest(target="coreml", out_dir=tmp_path / "art", components="denoiser",
                                    preset="tiny", compute_units="cpu_and_ne")).entries
    assert e.file == "denoiser.mlpackage" and e.dtype == "fp16"
    info = e.target_info
    assert info["minimum_deployment_target"] == "iOS17" and info["spec_version"] >= 8
    assert info["compute_units"] == "cpu_and_ne" and info["format"] == "mlprogram" and info["mil_ops"]
    if sys.platform != "darwin":
        assert e.parity["verified_on"] == [] and "macOS" in e.parity["reason"]
    spec = ct.models.MLModel(str(tmp_path / "art" / e.file), skip_model_load=True).get_spec()
    assert [i.name for i in spec.description.input] == ["latent", "timestep", "flow_score"]
    assert [o.name for o in spec.description.output] == ["velocity"]
    assert e.sha256 == tree_digest(tmp_path / "art" / e.file)[0]
    # Core ML's test vectors: an .npz in the model's I/O dtypes, read back with numpy alone
    from mi2v_export import testvectors

    assert e.test_vectors["format"] == "npz" and e.test_vectors["file"] == "testdata/denoiser.mlpackage.npz"
    sets = testvectors.read(tmp_path / "art", e)
    assert len(sets) == e.test_vectors["sets"] == 2
    assert {n: a.shape for n, a in sets[0].inputs.items()} == {t.name: t.shape for t in e.inputs}
    assert sets[0].outputs["velocity"].shape == e.outputs[0].shape


def test_onnx_weights_above_the_protobuf_limit_go_to_external_data(tmp_path, toy, monkeypatch):
    """The >2 GB path, with the limit lowered so the toy crosses it: weights in denoiser.onnx.data, listed in the
    manifest with its sha256, moved into place with the model, and still verified on onnxruntime."""
    import onnxruntime as ort

    from mi2v_export.exporters.targets import onnx as onnx_exporter

    monkeypatch.setattr(onnx_exporter, "PROTOBUF_LIMIT", 1024)
    out = tmp_path / "art"
    (e,) = run_export(toy_request(out, "onnx")).entries
    assert e.target_info["external_data"] is True and "external data" in e.target_info["simplifier"]["result"]
    extra, vectors = e.extra_files
    assert extra.role == "external_data" and extra.file == "denoiser.onnx.data"
    assert vectors.role == "test_vectors" and vectors.file == "testdata/denoiser"
    assert (out / "denoiser.onnx.data").stat().st_size == extra.bytes > 0
    assert (out / "denoiser.onnx").stat().st_size < extra.bytes  # the graph file holds no weights
    assert [r["runtime"] for r in e.verified_on] == ["onnxruntime"] and e.parity["rel_l2"] <= 1e-4
    read_manifest(out).check_files()
    feeds = {n: x.numpy() for n, x in components.example_inputs("denoiser", TINY_GEO).items()}
    got = ort.InferenceSession(str(out / "denoiser.onnx"), providers=["CPUExecutionProvider"]).run(None, feeds)[0]
    with torch.no_grad():
        want = ToyDenoiser()(*(torch.from_numpy(v) for v in feeds.values())).numpy()
    assert parity.rel_l2(got, want) <= 1e-4
    assert not staging_left(tmp_path)


def test_no_verify_is_recorded(tmp_path, toy):
    (e,) = run_export(toy_request(tmp_path / "art", verify=False)).entries
    assert e.parity["verified_on"] == [] and "--no-verify" in e.parity["reason"] and e.parity["gate"] is None
    assert e.flags["verify"] is False and not e.verified


# ---------------------------------------------------------------------------------------------------------------
# Failures leave nothing that looks valid and never touch earlier artifacts


def test_failing_gate_exits_nonzero_and_writes_nothing(tmp_path, diverging_toy):
    out = tmp_path / "fresh"
    with pytest.raises(VerificationError, match="fails the parity gate on onnxruntime: rel_l2"):
        run_export(toy_request(out))
    assert not out.exists() and not staging_left(tmp_path)
    assert VerificationError.exit_code != 0


def test_failing_gate_leaves_earlier_artifacts_untouched(tmp_path, onnx_dir, diverging_toy):
    out = tmp_path / "art"
    shutil.copytree(onnx_dir, out)
    before = digests(out)
    with pytest.raises(VerificationError):
        run_export(toy_request(out))  # would replace denoiser.onnx
    assert digests(out) == before and not staging_left(tmp_path)


def test_artifact_the_runtime_cannot_run_fails_the_gate(tmp_path, toy, monkeypatch):
    def broken(self, *a):
        raise RuntimeError("Failed to load method forward, error: 0x:1")

    monkeypatch.setattr(type(base.get_exporter("onnx")), "run", broken)
    with pytest.raises(VerificationError, match="could not run denoiser.onnx: Failed to load method"):
        run_export(toy_request(tmp_path / "art"))
    assert not (tmp_path / "art").exists() and not staging_left(tmp_path)


@pytest.mark.parametrize("fault", ["interrupt", "disk-full"])
def test_interrupt_and_full_disk_leave_the_folder_untouched(tmp_path, onnx_dir, toy, monkeypatch, fault):
    out = tmp_path / "art"
    shutil.copytree(onnx_dir, out)
    before = digests(out)
    exporter = base.get_exporter("onnx")

    def half_written(self, spec, folder, options, progress):
        (folder / "denoiser.onnx").write_bytes(b"half a model")
        if fault == "interrupt":
            raise KeyboardInterrupt
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(type(exporter), "export", half_written)
    if fault == "interrupt":
        with pytest.raises(KeyboardInterrupt):
            run_export(toy_request(out))
    else:
        with pytest.raises(Mi2vError, match="no space left"):
            run_export(toy_request(out))
    assert digests(out) == before and not staging_left(tmp_path)


def test_ctrl_c_on_the_cli_cleans_up(tmp_path, onnx_dir):
    out = tmp_path / "art"
    shutil.copytree(onnx_dir, out)
    before = digests(out)
    proc = subprocess.Popen([str(MI2V_EXE), "export", "--target", "onnx", "--component", "decoder",
                             "--preset", "tiny", "--out", str(out)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    deadline = time.time() + 180
    while not staging_left(tmp_path) and time.time() < deadline and proc.poll() is None:
        time.sleep(0.2)
    assert staging_left(tmp_path), "the export never started"
    time.sleep(1.0)  # inside the ONNX export (about 4 s of the tiny decoder's 5 s here)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err[-2000:]
    assert "interrupted; nothing was written" in error_line(subprocess.CompletedProcess(proc.args, 130, "", err))
    assert digests(out) == before and not staging_left(tmp_path)


class _StopOnCall:
    """stop_requested that answers yes from its n-th question on (None: never), counting the questions."""

    def __init__(self, n: int | None):
        self.n, self.asked = n, 0

    def __call__(self) -> bool:
        self.asked += 1
        return self.n is not None and self.asked >= self.n


def test_a_stop_request_whose_interrupt_was_lost_still_writes_nothing(tmp_path, onnx_dir):
    """Python drops a signal handler's KeyboardInterrupt raised inside a weakref callback ("Exception ignored"):
    the export must still stop at its next stage, and at the latest just before the commit."""
    request = ExportRequest(target="onnx", components="decoder", preset="tiny", out_dir=tmp_path / "full")
    counting, all_events = _StopOnCall(None), []
    run_export(request, all_events.append, stop_requested=counting)  # how many questions a whole export asks
    for n in (1, counting.asked):
        out, events = tmp_path / f"stop-at-{n}", []
        shutil.copytree(onnx_dir, out)
        before = digests(out)
        with pytest.raises(KeyboardInterrupt):
            run_export(dataclasses.replace(request, out_dir=out), events.append, stop_requested=_StopOnCall(n))
        assert digests(out) == before and not staging_left(tmp_path)
        assert len(events) == (0 if n == 1 else len(all_events))  # the last question: after every stage, the commit


# ---------------------------------------------------------------------------------------------------------------
# Slow: the whole tiny preset on every target, fp16, the LTX decoder, mobile attention, 720p


@pytest.mark.slow
@pytest.mark.parametrize("target,delegate", [("executorch", "xnnpack"), ("executorch", "vulkan"),
                                             ("executorch", "coreml"), ("coreml", None)])
def test_tiny_preset_on_every_target(tmp_path, target, delegate):
    report = run_export(ExportRequest(target=target, delegate=delegate, out_dir=tmp_path / "art", preset="tiny"))
    assert [e.component for e in report.entries] == ["encoder", "denoiser", "decoder"]
    for e in report.entries:
        assert e.structure["ok"]
        if delegate == "xnnpack":
            assert e.parity["gate"]["passed"]
            assert e.delegation["flops_share_delegated"] > 0.99
        else:
            assert e.parity["verified_on"] == [] and e.parity["reason"]
    read_manifest(tmp_path / "art").check_files()


@pytest.mark.slow
@pytest.mark.parametrize("target", ["onnx", "executorch"])
def test_tiny_fp16_passes_the_psnr_gate(tmp_path, target):
    report = run_export(ExportRequest(target=target, out_dir=tmp_path / "art", preset="tiny", dtype="fp16",
                                      components="denoiser,decoder"))
    for e in report.entries:
        assert e.dtype == "fp16" and e.inputs[0].dtype == "float16"
        assert e.parity["gate"]["metric"] == "psnr_db" and e.parity["psnr_db"] >= 40


@pytest.mark.slow
@pytest.mark.parametrize("target", ["onnx", "executorch"])
def test_tiny_ltx_decoder(tmp_path, target):
    (e,) = run_export(ExportRequest(target=target, out_dir=tmp_path / "art", preset="tiny", components="decoder",
                                    decoder="ltx")).entries
    assert e.model == "ltx-decoder" and e.parity["gate"]["passed"] and e.flags["decoder"] == "ltx"


@pytest.mark.slow
@pytest.mark.parametrize("target", ["onnx", "executorch"])
def test_tiny_mobile_attention(tmp_path, target):
    (e,) = run_export(ExportRequest(target=target, out_dir=tmp_path / "art", preset="tiny", components="denoiser",
                                    attention="mobile")).entries
    assert e.parity["gate"]["passed"] and e.attention["plan"].startswith("mobile") and e.attention["applied"]


def test_cli_attention_plan_with_rewrite_overrides(tmp_path):
    """`--attention ane --rewrite channels_first=false --rewrite softmax=split`: the plan minus one rewrite plus one
    knob, exported to ONNX, verified on onnxruntime against the unrewritten PyTorch model, recorded in the manifest."""
    out = tmp_path / "art"
    proc = run_cli("export", "--target", "onnx", "--preset", "tiny", "--component", "denoiser", "--attention", "ane",
                "--rewrite", "channels_first=false", "--rewrite", "softmax=split", "--out", out)
    assert proc.returncode == 0, proc.stderr
    (e,) = read_manifest(out).components
    assert e.verified and [r["runtime"] for r in e.verified_on] == ["onnxruntime"] and e.parity["rel_l2"] <= 1e-4
    rec = e.attention
    assert rec["plan"].startswith("ane+") and "channels_first=False" in rec["plan"] and "softmax=split" in rec["plan"]
    assert "channels_first" not in rec["applied"]
    assert {"linear_attention", "softmax_attention", "rope_tables"} <= set(rec["applied"])
    assert rec["settings"]["softmax"] == "split" and rec["settings"]["query_chunk"] == 512
    assert e.flags["attention"] == "ane" and e.flags["rewrite"] == {"channels_first": False, "softmax": "split"}


def _golden_denoiser():
    meta = json.loads((GOLDEN / "denoiser_720p_seed0.json").read_text())
    golden = np.load(GOLDEN / "denoiser_720p_seed0.npz")
    feeds = {"latent": golden["x"].astype(np.float32), "timestep": np.array([meta["timestep"]], np.float32),
             "flow_score": np.array([meta["flow_score"]], np.float32)}
    return feeds, golden["v"]


@pytest.mark.slow
@pytest.mark.parametrize("target", ["onnx", "executorch"])
def test_720p_denoiser_matches_the_golden_output(tmp_path, target):
    """The released geometry with seeded weights (the golden recipe): the artifact on its runtime reproduces the
    authors' own code on the golden input (rel_l2 ≤ 1e-4)."""
    out = tmp_path / "art"
    (e,) = run_export(ExportRequest(target=target, out_dir=out, components="denoiser", preset="mobilei2v-270m",
                                    resolution="720x1280", frames=17)).entries
    assert e.parity["gate"]["passed"]
    feeds, want = _golden_denoiser()
    if target == "onnx":
        import onnxruntime as ort

        got = ort.InferenceSession(str(out / e.file), providers=["CPUExecutionProvider"]).run(None, feeds)[0]
    else:
        from executorch.runtime import Runtime

        method = Runtime.get().load_program(out / e.file).load_method("forward")
        got = method.execute([torch.from_numpy(feeds[k]) for k in ("latent", "timestep", "flow_score")])[0].numpy()
    err = parity.rel_l2(got, want)
    print(f"720p denoiser {target}: export {e.export['wall_s']:.0f}s, peak RSS "
          f"{e.export['peak_rss_bytes'] / 2**30:.2f} GiB, {e.bytes / 2**20:.0f} MiB, golden rel_l2 {err:.2e}")
    assert err <= 1e-4


@pytest.mark.slow
@pytest.mark.parametrize("target", ["onnx", "executorch"])
def test_720p_turbo_vaed_decoder(tmp_path, target):
    (e,) = run_export(ExportRequest(target=target, out_dir=tmp_path / "art", components="decoder",
                                    preset="mobilei2v-270m", resolution="720x1280", frames=17)).entries
    print(f"720p turbo-vaed {target}: export {e.export['wall_s']:.0f}s, peak RSS "
          f"{e.export['peak_rss_bytes'] / 2**30:.2f} GiB, {e.bytes / 2**20:.0f} MiB, rel_l2 {e.parity['rel_l2']:.2e}")
    assert e.parity["gate"]["passed"] and e.outputs[0].shape == (1, 3, 17, 736, 1280)


def test_a_core_ml_export_prints_no_library_chatter(tmp_path):
    """Off macOS coremltools warns at import that its native proxies are missing and that our torch is untested
    (10 lines before every `--json` export, measured before cli.LIBRARY_CHATTER_LOGGERS named it): not the
    user's concern, but `-v` shows them."""
    chatter = ("Failed to load _MLModelProxy", "has not been tested with coremltools", "scikit-learn version")
    args = ("export", "--target", "coreml", "--preset", "tiny", "--component", "encoder", "--no-test-vectors",
            "--no-verify", "--json")
    proc = run_cli(*args, "--out", tmp_path / "art")
    assert proc.returncode == 0 and json.loads(proc.stdout)["artifacts"], proc.stderr[-2000:]
    assert not [c for c in chatter if c in proc.stderr], proc.stderr[-2000:]
    verbose = run_cli("-v", *args, "--out", tmp_path / "art-v")
    assert verbose.returncode == 0 and all(c in verbose.stderr for c in chatter[:2]), verbose.stderr[-2000:]


def test_an_onnx_export_prints_no_torchvision_notice(tmp_path):
    """torch.onnx's registry warns four times per export that torchvision (which mi2v does not use) is missing."""
    proc = run_cli("export", "--target", "onnx", "--preset", "tiny", "--component", "encoder", "--no-test-vectors",
                   "--no-verify", "--out", tmp_path / "art")
    assert proc.returncode == 0 and "torchvision is not installed" not in proc.stderr, proc.stderr[-2000:]
