"""Checkpoint reading: upstream layouts, safe unpickling, component detection, clear errors, inspect/convert."""

from __future__ import annotations

import json
import os
import pickle
import warnings

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from mi2v_export.checkpoints import read_checkpoint
from mi2v_export.errors import CheckpointError
from mi2v_export.models import build_part, load_decoder, load_denoiser, load_encoder, seed_part
from mi2v_export.models.ltx_vae import build_ltx_vae
from mi2v_export.models.seeded import seeded_state_dict
from mi2v_export.presets import get_preset

from tests.conftest import run_cli, save_upstream_pth


@pytest.fixture(scope="module")
def tiny_denoiser_sd():
    return seed_part(build_part("denoiser", "tiny"), seed=7).state_dict()


@pytest.fixture()
def upstream_tiny_pth(tmp_path, tiny_denoiser_sd):
    buffers = {"pos_embed": torch.zeros(1, 24, 144), "pos_embed_temporal": torch.zeros(1, 17, 144)}
    return save_upstream_pth(tiny_denoiser_sd, tmp_path / "tiny_upstream.pth", unused_buffers=buffers)


def _forward(model):
    x = torch.randn(1, 128, 2, 4, 6, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        return model(x, torch.tensor([1000.0]), torch.tensor([2.0]))


@pytest.mark.unit
def test_upstream_pth_with_rng_state_loads_safely(upstream_tiny_pth, tiny_denoiser_sd):
    ckpt = read_checkpoint(upstream_tiny_pth)
    assert ckpt.format == "pytorch-zip" and ckpt.parts == ["denoiser"]
    assert set(ckpt.ignored_keys) == {"pos_embed", "pos_embed_temporal"}
    assert {"rng_state", "epoch", "optimizer"} <= set(ckpt.extras)
    model = load_denoiser(upstream_tiny_pth, preset="tiny")
    ref = build_part("denoiser", "tiny")
    ref.load_state_dict(tiny_denoiser_sd)
    assert torch.equal(_forward(model), _forward(ref.eval()))


@pytest.mark.parametrize("layout", ["safetensors", "raw-state-dict", "ddp-prefix", "legacy-zip-off"])
def test_other_layouts(tmp_path, tiny_denoiser_sd, layout):
    sd = {k: v.clone() for k, v in tiny_denoiser_sd.items()}
    path = tmp_path / "ckpt.bin"
    if layout == "safetensors":
        save_file(sd, path)
    elif layout == "raw-state-dict":
        torch.save(sd, path)
    elif layout == "ddp-prefix":
        torch.save({"state_dict": {f"module.{k}": v for k, v in sd.items()}, "epoch": 1}, path)
    else:
        torch.save({"state_dict": sd}, path, _use_new_zipfile_serialization=False)
    ckpt = read_checkpoint(path)
    assert ckpt.parts == ["denoiser"]
    ref = build_part("denoiser", "tiny")
    ref.load_state_dict(tiny_denoiser_sd)
    assert torch.equal(_forward(load_denoiser(path, preset="tiny")), _forward(ref.eval()))


def test_turbo_vaed_published_plain_layout_matches_golden(golden_dir, tmp_path):
    meta = json.loads((golden_dir / "turbo_vaed_seed0.json").read_text())
    sd = seeded_state_dict({k: tuple(v) for k, v in meta["keys"].items()}, meta["seed"])
    plain = {k.removeprefix("decoder."): v for k, v in sd.items()}
    save_file(plain, tmp_path / "turbo_vaed.safetensors")
    torch.save(plain, tmp_path / "turbo_vaed.pth")
    golden = np.load(golden_dir / "turbo_vaed_seed0.npz")
    z, video_ref = torch.from_numpy(golden["z"]), torch.from_numpy(golden["video"])
    for name in ("turbo_vaed.safetensors", "turbo_vaed.pth"):
        ckpt = read_checkpoint(tmp_path / name)
        assert ckpt.parts == ["turbo-vaed"]
        decoder = load_decoder("turbo-vaed", checkpoint=tmp_path / name)
        with torch.no_grad():
            video = decoder(z)
        err = ((video - video_ref).norm() / video_ref.norm()).item()
        print(f"golden turbo-vaed via {name}: rel_l2={err:.2e} max_abs={(video - video_ref).abs().max():.2e}")
        assert err <= 1e-4 and (video - video_ref).abs().max() <= 1e-3


def test_diffusers_vae_file_serves_encoder_and_decoder(tmp_path):
    vae = build_ltx_vae(get_preset("tiny").ltx_vae)
    torch.manual_seed(0)
    for p in vae.parameters():
        p.data.normal_(0, 0.05)
    save_file({k: v.contiguous() for k, v in vae.state_dict().items()}, tmp_path / "diffusion_pytorch_model.safetensors")
    path = tmp_path / "diffusion_pytorch_model.safetensors"
    ckpt = read_checkpoint(path)
    assert ckpt.parts == ["ltx-encoder", "ltx-decoder"]
    encoder = load_encoder(path, preset="tiny")
    decoder = load_decoder("ltx", path, preset="tiny")
    image = torch.rand(1, 3, 1, 128, 192) * 2 - 1
    with torch.no_grad():
        assert torch.allclose(encoder(image), vae.encode(image).latent_dist.mode(), atol=1e-5)
        z = torch.randn(1, 128, 2, 4, 6)
        assert torch.allclose(decoder(z), vae.decode(z).sample, atol=1e-5)


def test_wrong_component_and_wrong_shapes(upstream_tiny_pth, tmp_path):
    with pytest.raises(CheckpointError, match="holds denoiser, not the Turbo-VAED decoder"):
        load_decoder("turbo-vaed", checkpoint=upstream_tiny_pth, preset="tiny")
    with pytest.raises(CheckpointError, match=r"mis-shaped \(.*x_embedder.proj.weight: file \[144, 128, 1, 1\]"):
        load_denoiser(upstream_tiny_pth, preset="mobilei2v-270m")
    sd = seed_part(build_part("denoiser", "tiny")).state_dict()
    del sd["blocks.0.attn.qkv.weight"]
    sd["blocks.0.attn.extra"] = torch.zeros(1)
    save_file(sd, tmp_path / "broken.safetensors")
    with pytest.raises(CheckpointError, match="1 missing .*blocks.0.attn.qkv.weight.*1 unexpected .*blocks.0.attn.extra"):
        load_denoiser(tmp_path / "broken.safetensors", preset="tiny")


class _RunsCode:
    """A pickle payload that would create a file when unpickled."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def _bad_files(tmp_path, good_pth):
    data = good_pth.read_bytes()
    truncated = tmp_path / "truncated.pth"
    truncated.write_bytes(data[: len(data) // 2])
    text = tmp_path / "notes.pth"
    text.write_text("these are not the weights you are looking for\n" * 20)
    marker = tmp_path / "PWNED"
    evil = tmp_path / "evil.pth"
    torch.save({"state_dict": {"x_embedder.proj.weight": torch.zeros(1)}, "payload": _RunsCode(marker)}, evil)
    evil_plain = tmp_path / "evil_plain.pkl"
    evil_plain.write_bytes(pickle.dumps({"w": _RunsCode(marker)}, protocol=2))
    st = tmp_path / "cut.safetensors"
    save_file({"a": torch.zeros(1000)}, st)
    st.write_bytes(st.read_bytes()[:-100])
    return {"truncated": truncated, "text": text, "evil": evil, "evil_plain": evil_plain, "cut_safetensors": st,
            "empty": _empty(tmp_path)}, marker


def _empty(tmp_path):
    p = tmp_path / "empty.safetensors"
    p.write_bytes(b"")
    return p


EXPECTED = {
    "truncated": "truncated or corrupt",
    "text": "not a PyTorch",
    "evil": "refused to unpickle",
    "evil_plain": "refused to unpickle",
    "cut_safetensors": "truncated or corrupt safetensors",
    "empty": "empty",
}


@pytest.mark.unit
def test_bad_files_library(tmp_path, upstream_tiny_pth):
    files, marker = _bad_files(tmp_path, upstream_tiny_pth)
    for name, path in files.items():
        with pytest.raises(CheckpointError, match=EXPECTED[name]):
            read_checkpoint(path)
    assert not marker.exists(), "a checkpoint ran code while being read"


def test_bad_files_cli_one_line_nonzero_no_code_runs(tmp_path, upstream_tiny_pth):
    files, marker = _bad_files(tmp_path, upstream_tiny_pth)
    for name, path in files.items():
        cmds = [["inspect", path]]
        if name in ("evil", "truncated"):
            cmds.append(["convert", path, "--out", tmp_path / "out.safetensors"])
        for cmd in cmds:
            proc = run_cli(*cmd)
            assert proc.returncode != 0, (name, proc.stdout)
            lines = proc.stderr.strip().splitlines()
            assert len(lines) == 1 and lines[0].startswith("error: ") and EXPECTED[name] in lines[0], (name, lines)
            assert "Traceback" not in proc.stderr
    assert not marker.exists()
    assert not (tmp_path / "out.safetensors").exists()
    # the wrong component, asked for by part
    proc = run_cli("convert", upstream_tiny_pth, "--part", "turbo-vaed", "--out", tmp_path / "x.safetensors")
    assert proc.returncode != 0 and "holds denoiser, not turbo-vaed" in proc.stderr


def test_inspect_and_convert_cli(tmp_path, upstream_tiny_pth, tiny_denoiser_sd):
    proc = run_cli("inspect", upstream_tiny_pth, "--json")
    assert proc.returncode == 0, proc.stderr
    info = json.loads(proc.stdout)
    assert info["parts"][0]["part"] == "denoiser" and info["parts"][0]["preset_match"] == ["tiny"]
    assert info["parameters"] == sum(v.numel() for v in tiny_denoiser_sd.values())
    assert {"rng_state", "epoch", "optimizer"} <= set(info["extras"])
    assert info["dtypes"] == {"float32": len(tiny_denoiser_sd)}
    out = tmp_path / "clean.safetensors"
    proc = run_cli("convert", upstream_tiny_pth, "--out", out, "--dtype", "fp16", "--json")
    assert proc.returncode == 0, proc.stderr
    clean = read_checkpoint(out)
    assert clean.format == "safetensors" and not clean.extras and clean.dtypes() == {"float16": len(tiny_denoiser_sd)}
    assert clean.metadata["mi2v_source_sha256"] == info["sha256"]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        half = load_denoiser(out, preset="tiny", dtype=torch.float16)
    assert half.x_embedder.proj.weight.dtype == torch.float16
    human = run_cli("inspect", upstream_tiny_pth)
    assert human.returncode == 0 and "denoiser" in human.stdout and "tiny" in human.stdout


# ---- issue 22: complete error lines, the refused call named, inspect against the closest preset ------------------


class _Calls:
    """A pickle payload whose unpickling would call `fn(*args)` (os.system, subprocess.check_output, eval)."""

    def __init__(self, fn, *args):
        self.fn, self.args = fn, args

    def __reduce__(self):
        return (self.fn, self.args)


def _malicious(kind: str, path, marker):
    """One malicious file per way a pickle can name its callable: GLOBAL in a torch zip (protocol 2), in a legacy
    .pth, STACK_GLOBAL in a protocol-4 plain pickle, and a builtin."""
    import subprocess

    system = _Calls(os.system, f"touch {marker}")
    if kind == "zip-os.system":
        torch.save({"state_dict": {"x_embedder.proj.weight": torch.zeros(1)}, "payload": system}, path)
    elif kind == "legacy-os.system":
        torch.save({"payload": system}, path, _use_new_zipfile_serialization=False)
    elif kind == "protocol4-subprocess":
        path.write_bytes(pickle.dumps({"w": _Calls(subprocess.check_output, ["touch", str(marker)])}, protocol=4))
    else:
        torch.save({"payload": _Calls(eval, f"open({str(marker)!r}, 'w')")}, path)
    return path


CALLS = {"zip-os.system": f"{os.system.__module__}.system", "legacy-os.system": f"{os.system.__module__}.system",
         "protocol4-subprocess": "subprocess.check_output", "builtin-eval": "builtins.eval"}


@pytest.mark.parametrize("kind", list(CALLS))
def test_refused_pickle_names_the_call(tmp_path, kind):
    path = _malicious(kind, tmp_path / f"{kind}.pth", tmp_path / "PWNED")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch notes that protocol 4 is not its default
        with pytest.raises(CheckpointError) as caught:
            read_checkpoint(path)
    message = str(caught.value)
    assert f"(it wants to call {CALLS[kind]})" in message and "failed" not in message, message
    assert not (tmp_path / "PWNED").exists()


def test_refused_pickle_cli_line_names_the_call(tmp_path):
    path = _malicious("protocol4-subprocess", tmp_path / "evil.pkl", tmp_path / "PWNED")
    proc = run_cli("inspect", path)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert proc.stderr.strip().splitlines() == [proc.stderr.strip()], proc.stderr  # one line: no warning either
    assert "it wants to call subprocess.check_output" in proc.stderr and not (tmp_path / "PWNED").exists()


def _complete(message: str) -> bool:
    """Whole sentences: the line ends as mi2v's own text ends, every parenthesis it opens is closed, and the
    library's reason inside is not cut (the zip reader's went on "… If you are seeing this error, there is a high")."""
    ends = ("download or copy it again", "not a PyTorch (.pth/.pt) or safetensors checkpoint")
    return message.endswith(ends) and message.count("(") == message.count(")") and "there is a high" not in message


@pytest.mark.parametrize("layout", ["zip", "legacy"])
def test_truncated_pth_message_is_complete(tmp_path, tiny_denoiser_sd, layout):
    """Cut anywhere, a .pth is one complete CheckpointError line: the zip reader's message was once cut inside its
    own hint ("… there is a high"), and the legacy reader raised IndexError / struct.error tracebacks."""
    whole = tmp_path / "whole.pth"
    torch.save({"state_dict": tiny_denoiser_sd}, whole, _use_new_zipfile_serialization=(layout == "zip"))
    data = whole.read_bytes()
    cut = tmp_path / "cut.pth"
    for n in sorted({*range(3, 400, 7), *(len(data) * k // 10 for k in range(1, 10))}):
        cut.write_bytes(data[:n])
        with pytest.raises(CheckpointError) as caught:
            read_checkpoint(cut)
        message = str(caught.value)
        assert "\n" not in message and _complete(message), (n, message)
        assert "truncated or corrupt" in message or "not a PyTorch" in message, (n, message)
    proc = run_cli("inspect", cut)
    assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert _complete(proc.stderr.strip()), proc.stderr


def test_inspect_compares_with_the_closest_preset(tmp_path, tiny_denoiser_sd):
    sd = {k: v.clone() for k, v in tiny_denoiser_sd.items()}
    del sd["blocks.0.attn.qkv.weight"]
    sd["blocks.0.attn.extra"] = torch.zeros(1)
    path = tmp_path / "tiny_broken.safetensors"
    save_file(sd, path)
    info = json.loads(run_cli("inspect", path, "--json").stdout)["parts"][0]
    assert info["preset_match"] == [] and info["compared_with"] == "tiny" and info["picked_by"] == "closest match"
    assert info["differences"] == "1 missing (blocks.0.attn.qkv.weight); 1 unexpected (blocks.0.attn.extra)"
    human = run_cli("inspect", path)
    assert human.returncode == 0 and "tiny (closest match): 1 missing (blocks.0.attn.qkv.weight)" in human.stdout
    named = json.loads(run_cli("inspect", path, "--preset", "mobilei2v-270m", "--json").stdout)["parts"][0]
    assert named["compared_with"] == "mobilei2v-270m" and named["picked_by"] == "--preset"
    assert "mis-shaped (x_embedder.proj.weight: file [144, 128, 1, 1] vs model [1152" in named["differences"]
    human = run_cli("inspect", path, "--preset", "mobilei2v-270m")
    assert "mobilei2v-270m (named with --preset)" in human.stdout
