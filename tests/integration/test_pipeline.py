"""`mi2v generate` / mi2v_export.pipeline on the tiny preset: the sampler schedule, PyTorch vs onnxruntime vs
ExecuTorch pipelines, the first frame against the VAE round trip, determinism, and every bad input.

The ONNX and ExecuTorch artifacts are exported here (module fixtures, static shapes at TEST_GEO) following the
artifact contract of `mi2v export`: DIR/<component>.<onnx|pte> + DIR/manifest.json. The default suite lowers
ExecuTorch programs to the portable kernels (fast to export); the XNNPACK-delegated pipeline is a `slow` test.
"""

from __future__ import annotations

import inspect
import json
import os
import re
import shutil
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

from mi2v_export import pipeline as pl
from mi2v_export.parity import psnr_with_range
from mi2v_export.errors import BadInputError, CheckpointError, MissingDependencyError
from mi2v_export.models import build_part, load_decoder, load_denoiser, load_encoder, seed_part

from tests import cache
from tests.conftest import REPO, TEST_IMAGE, run_cli

TEST_GEO = (32, 40, 9)  # width not a multiple of 32: the decoder makes 32x64 and the pipeline crops (like 736 → 720)
LATENT = (1, 128, 2, 1, 2)


# ---------------------------------------------------------------------------------------------------------------
# fixtures: seeded tiny models, the test image, exported artifacts


@pytest.fixture(scope="module")
def models():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return {"encoder": load_encoder(preset="tiny"), "denoiser": load_denoiser(preset="tiny"),
                "decoder": load_decoder("turbo-vaed", preset="tiny")}


@pytest.fixture(scope="module")
def eager_stages(models):
    return {c: pl.TorchStage(c, m, "seeded tiny") for c, m in models.items()}


@pytest.fixture(scope="module")
def image():
    if not TEST_IMAGE.is_file():
        pytest.fail(f"test image not found at {TEST_IMAGE}")
    return pl.load_image(TEST_IMAGE)


def _config(**kw) -> pl.GenerateConfig:
    h, w, f = TEST_GEO
    return pl.GenerateConfig(height=h, width=w, frames=f, **kw)


class EncoderWithLogvar(nn.Module):
    """An encoder program that also returns the posterior's shared log-variance (extra output `logvar`)."""

    def __init__(self, enc):
        super().__init__()
        self.enc = enc

    def forward(self, image):
        m = self.enc.moments(image)
        c = m.shape[1] // 2
        return m[:, :c], m[:, c:c + 1]


def _example_inputs():
    h, w, _ = TEST_GEO
    g = torch.Generator().manual_seed(1)
    return {"encoder": (torch.rand(1, 3, 1, h, w, generator=g) * 2 - 1,),
            "denoiser": (torch.randn(LATENT, generator=g), torch.tensor([1000.0]), torch.tensor([2.0])),
            "decoder": (torch.randn(LATENT, generator=g),)}


def export_pte_portable(folder: Path) -> Path:
    """ExecuTorch programs on the portable kernels (no delegate: lowering takes seconds instead of minutes), with
    the exporters' own c2d rewrite (ExecuTorch has no 5-D convolution) and an encoder that also returns `logvar`.
    Described by a manifest of the real schema, written with mi2v_export.manifest."""
    from executorch.exir import EdgeCompileConfig, to_edge

    from mi2v_export.exporters.rewrites import Conv3dAsConv2d
    from mi2v_export.files import file_digest
    from mi2v_export.manifest import ArtifactEntry, Manifest, TensorInfo

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        models = {"encoder": load_encoder(preset="tiny"), "denoiser": load_denoiser(preset="tiny"),
                  "decoder": load_decoder("turbo-vaed", preset="tiny")}

    def c2d(module: nn.Module) -> nn.Module:
        for name, child in module.named_children():
            setattr(module, name, Conv3dAsConv2d(child)) if isinstance(child, nn.Conv3d) else c2d(child)
        return module

    folder.mkdir(parents=True, exist_ok=True)
    ex = _example_inputs()
    jobs = {"encoder": ("ltx-encoder", EncoderWithLogvar(c2d(models["encoder"])), ["image"], ["latent", "logvar"]),
            "denoiser": ("denoiser", models["denoiser"], ["latent", "timestep", "flow_score"], ["velocity"]),
            "decoder": ("turbo-vaed", c2d(models["decoder"]), ["latent"], ["video"])}
    entries = []
    for name, (model, module, ins, outs) in jobs.items():
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")
            ep = torch.export.export(module.eval(), ex[name])
            edge = to_edge(ep, compile_config=EdgeCompileConfig(_check_ir_validity=False, _skip_dim_order=True))
            (folder / f"{name}.pte").write_bytes(edge.to_executorch().buffer)
            ref = module(*ex[name])
        ref = ref if isinstance(ref, tuple) else (ref,)
        sha, size = file_digest(folder / f"{name}.pte")
        entries.append(ArtifactEntry(
            component=name, model=model, target="executorch", delegate=None, dtype="fp32", file=f"{name}.pte",
            sha256=sha, bytes=size, inputs=[TensorInfo(n, tuple(t.shape), "float32") for n, t in zip(ins, ex[name])],
            outputs=[TensorInfo(n, tuple(t.shape), "float32") for n, t in zip(outs, ref)], export={},
            parity={"verified_on": None, "reason": "test artifact"}))
    h, w, f = TEST_GEO
    manifest = Manifest(preset="tiny", resolution=(h, w), frames=f, latent_shape=LATENT,
                        source={"weights": "seeded", "seed": 0, "checkpoints": []}, components=entries)
    (folder / "manifest.json").write_text(json.dumps(manifest.to_dict(), indent=2))
    return folder


def _export_main(kind: str, folder: str, delegate: str | None = None) -> None:
    """Entry point of a background export process: `mi2v export`'s library for ONNX (and ExecuTorch-XNNPACK), the
    portable helper above for ExecuTorch."""
    if kind == "pte":
        export_pte_portable(Path(folder))
        return
    from mi2v_export.exporters.orchestrate import ExportRequest, run_export

    h, w, f = TEST_GEO
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        run_export(ExportRequest(target="onnx" if kind == "onnx" else "executorch", delegate=delegate,
                                 out_dir=Path(folder), preset="tiny", resolution=f"{h}x{w}", frames=f))


def _artifact_key(kind: str) -> str:
    """Everything the exported test artifacts depend on (tests/cache.py), the export helpers of this file and the
    test size."""
    helpers = (EncoderWithLogvar, _example_inputs, export_pte_portable, _export_main)
    return cache.sources_key(kind, f"{TEST_GEO}{LATENT}", *(inspect.getsource(obj) for obj in helpers))


@pytest.fixture(scope="module", autouse=True)
def _export_jobs(request, tmp_path_factory):
    """Exporting is mostly single-threaded Python (about 40 s of CPU for ONNX, 50 s for ExecuTorch): the two
    exports run in background processes while the cheap tests run, each started only when a selected test needs
    its folder. Finished folders are kept in pytest's cache under a key of everything they depend on
    (`_artifact_key`), so reruns skip the export; MI2V_TEST_NO_CACHE=1 (or `pytest --cache-clear`) re-exports."""
    use_cache = not os.environ.get("MI2V_TEST_NO_CACHE")
    jobs = {}
    for kind in ("onnx", "pte"):
        if not any(f"{kind}_dir" in item.fixturenames for item in request.session.items):
            continue
        cached = Path(request.config.cache.mkdir("mi2v-pipeline-artifacts")) / f"{kind}-{_artifact_key(kind)}"
        if use_cache and (cached / "complete").is_file():
            jobs[kind] = (cached, None, None, None)
            continue
        folder = tmp_path_factory.mktemp(kind) / "artifacts"
        log = folder.parent / "export.log"
        code = "import sys; from tests.integration.test_pipeline import _export_main; _export_main(sys.argv[1], sys.argv[2])"
        with open(log, "w") as fh:
            proc = subprocess.Popen([sys.executable, "-c", code, kind, str(folder)], cwd=REPO, stdout=fh,
                                    stderr=subprocess.STDOUT)
        jobs[kind] = (folder, proc, log, cached if use_cache else None)
    try:
        yield jobs
    finally:
        for _, proc, _, _ in jobs.values():
            if proc is not None and proc.poll() is None:
                proc.kill()
                proc.wait()


def _wait_for(jobs: dict, kind: str) -> Path:
    folder, proc, log, cached = jobs[kind]
    if proc is None:
        return folder
    proc.wait(timeout=1800)
    assert proc.returncode == 0, f"{kind} export failed:\n{log.read_text()[-4000:]}"
    if cached is not None and not cached.exists():
        staging = cached.with_name(f".{cached.name}.{os.getpid()}")
        shutil.copytree(folder, staging)
        (staging / "complete").write_text("ok\n")
        try:
            os.replace(staging, cached)
        except OSError:  # another session cached it meanwhile
            shutil.rmtree(staging, ignore_errors=True)
    return folder


@pytest.fixture(scope="module")
def onnx_dir(_export_jobs):
    return _wait_for(_export_jobs, "onnx")


@pytest.fixture(scope="module")
def pte_dir(_export_jobs):
    return _wait_for(_export_jobs, "pte")


@pytest.fixture(scope="module")
def reference_runs(eager_stages, image):
    """PyTorch fp32 runs at TEST_GEO, seed 0: with the posterior sampled and with its mean."""
    pipe = pl.Pipeline(eager_stages)
    return {mode: pipe.generate(image, _config(posterior=mode)) for mode in ("sample", "mean")}


def _one_error_line(proc: subprocess.CompletedProcess) -> str:
    lines = [ln for ln in proc.stderr.splitlines() if ln.startswith("error:")]
    assert proc.returncode != 0, proc.stdout + proc.stderr
    assert len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr
    return lines[0]


def _no_video_left(folder: Path) -> None:
    leftovers = [p.name for p in folder.iterdir() if p.suffix in (".mp4", ".png", ".json") or "partial" in p.name]
    assert not leftovers, leftovers


# ---------------------------------------------------------------------------------------------------------------
# schedule


@pytest.mark.unit
@pytest.mark.parametrize("steps", [1, 2, 3, 4, 7, 30, 50])
def test_flow_schedule_is_diffusers_shift3_bit_for_bit(steps):
    from diffusers import FlowMatchEulerDiscreteScheduler

    ref = FlowMatchEulerDiscreteScheduler(shift=3.0)
    ref.set_timesteps(steps)
    ours = pl.flow_schedule(steps)
    assert torch.equal(ours.timesteps, ref.timesteps) and torch.equal(ours.sigmas, ref.sigmas)


@pytest.mark.unit
def test_flow_schedule_known_values():
    assert pl.flow_schedule(1).timesteps.tolist() == [1000.0]
    assert pl.flow_schedule(1).sigmas.tolist() == [1.0, 0.0]
    two = pl.flow_schedule(2)
    assert two.timesteps[0] == 1000.0 and abs(float(two.timesteps[1]) - 8.929) < 1e-3
    assert two.sigmas[-1] == 0.0
    four = pl.flow_schedule(4).timesteps.tolist()
    assert np.allclose(four, [1000, 857.69, 602.15, 8.929], atol=1e-2)
    for bad in (0, -1, 2.5, 1001):
        with pytest.raises(BadInputError):
            pl.flow_schedule(bad)


@pytest.mark.unit
def test_io_contract_has_one_home():
    from mi2v_export import contract
    from mi2v_export.exporters import components

    assert pl.IO is contract.IO is components.IO and pl.COMPONENTS is contract.COMPONENTS is components.COMPONENTS


# ---------------------------------------------------------------------------------------------------------------
# input image


@pytest.mark.unit
def test_image_modes_are_converted(tmp_path):
    rgb = np.asarray(Image.open(TEST_IMAGE).convert("RGB").resize((96, 64)))
    variants = {
        "gray.png": Image.fromarray(rgb).convert("L"),
        "gray_alpha.png": Image.fromarray(rgb).convert("LA"),
        "palette.png": Image.fromarray(rgb).convert("P"),
        "gray16.png": Image.fromarray((rgb[..., 0].astype(np.uint16) * 257)),
        "cmyk.jpg": Image.fromarray(rgb).convert("CMYK"),
    }
    rgba = np.concatenate([rgb, np.full(rgb.shape[:2] + (1,), 255, np.uint8)], axis=-1)
    rgba[:, :48, 3] = 0  # left half fully transparent → white
    rgba[:, :48, :3] = 0
    variants["alpha.png"] = Image.fromarray(rgba, "RGBA")
    for name, img in variants.items():
        img.save(tmp_path / name)
        loaded = pl.load_image(tmp_path / name)
        assert loaded.mode == "RGB" and loaded.size == (96, 64), name
        x = pl.preprocess_image(loaded, 48, 80)
        assert x.shape == (1, 3, 1, 48, 80) and x.dtype == torch.float32, name
        assert -1.0 <= float(x.min()) and float(x.max()) <= 1.0, name
    alpha = np.asarray(pl.load_image(tmp_path / "alpha.png"))
    assert (alpha[:, :48] == 255).all() and (alpha[:, 48:] == rgb[:, 48:]).all()
    gray16 = np.asarray(pl.load_image(tmp_path / "gray16.png"))
    assert np.abs(gray16[..., 0].astype(int) - rgb[..., 0]).max() <= 1


@pytest.mark.unit
def test_preprocess_stretch_and_cover():
    img = Image.new("RGB", (200, 100), (255, 0, 0))
    img.paste((0, 0, 255), (0, 0, 50, 100))  # blue left quarter
    stretch = pl.preprocess_image(img, 64, 64)
    cover = pl.preprocess_image(img, 64, 64, fit="cover")  # centre square: all red
    assert stretch[0, 2, 0, :, :8].mean() > 0.9  # blue survives at the left edge when stretched
    assert cover[0, 0].min() > 0.9 and cover[0, 2].max() < -0.9


@pytest.mark.unit
def test_bad_images(tmp_path):
    (tmp_path / "notes.png").write_text("this is not an image")
    Image.new("RGB", (64, 64)).save(tmp_path / "ok.png")
    (tmp_path / "truncated.png").write_bytes((tmp_path / "ok.png").read_bytes()[:60])
    Image.new("RGB", (8, 8)).save(tmp_path / "tiny.png")
    for name, msg in [("missing.png", "no such file"), ("notes.png", "not an image"),
                      ("truncated.png", "truncated.png"), (".", "folder")]:
        with pytest.raises(BadInputError, match=msg):
            pl.load_image(tmp_path / name)
    with pytest.raises(BadInputError, match="at least 32"):
        pl.preprocess_image(pl.load_image(tmp_path / "tiny.png"), 48, 80)


@pytest.mark.unit
def test_bad_generate_settings():
    for kw, msg in [(dict(height=50, width=80, frames=9), "multiple of 4"), (dict(height=16, width=80, frames=9),
                    "too small"), (dict(height=48, width=80, frames=10), "8k\\+1"),
                    (dict(height=48, width=80, frames=9, posterior="mode"), "posterior"),
                    (dict(height=48, width=80, frames=9, steps=0), "steps"),
                    (dict(height=48, width=80, frames=9, flow_score=float("nan")), "flow score")]:
        with pytest.raises(BadInputError, match=msg):
            pl.GenerateConfig(**kw)


# ---------------------------------------------------------------------------------------------------------------
# the sampler on PyTorch


def test_same_seed_same_video_other_seed_differs(eager_stages, image, reference_runs):
    pipe = pl.Pipeline(eager_stages)
    again = pipe.generate(image, _config(posterior="sample"))
    first = reference_runs["sample"]
    assert np.array_equal(again.frames, first.frames) and torch.equal(again.final_latent, first.final_latent)
    other = pipe.generate(image, _config(seed=1, posterior="sample"))
    assert not np.array_equal(other.frames, first.frames)
    assert first.frames.shape == (9, 32, 40, 3) and first.frames.dtype == np.uint8
    assert len(first.latents) == 2 and first.posterior == "sample" and not first.notes


def test_conditioning_latent_is_the_encoded_image_in_frame_0(models, image, reference_runs):
    """Frame 0 of every step's latent is the reference latent, bit for bit; mean mode = the encoder's mean, sample
    mode = mean + exp(logvar/2)·ε with ε the generator's draw after the (1,128,T,h,w) noise (upstream samples)."""
    x = pl.preprocess_image(image, 32, 40)
    with torch.no_grad():
        moments = models["encoder"].moments(x)
    mean, logvar = moments[:, :128], moments[:, 128:129]
    g = torch.Generator().manual_seed(0)
    noise = torch.randn(LATENT, generator=g)
    eps = torch.randn(mean.shape, generator=g)
    expected = {"mean": mean, "sample": mean + torch.exp(0.5 * logvar.clamp(-30, 20)) * eps}
    for mode, run in reference_runs.items():
        assert torch.allclose(run.cond_latent, expected[mode], atol=1e-6, rtol=0), mode
        for latent in run.latents:
            assert torch.equal(latent[:, :, :1], run.cond_latent)
        assert not torch.equal(run.final_latent[:, :, 1:], noise[:, :, 1:])
    assert not torch.equal(reference_runs["mean"].cond_latent, reference_runs["sample"].cond_latent)


class BlockEncoder(nn.Module):
    """A VAE encoder whose round trip is known: the 32x32 block mean of the image in latent channels 0-2."""

    def forward(self, image):
        lat = F.avg_pool2d(image[:, :, 0], 32)  # (1,3,h,w)
        return torch.cat([lat, torch.zeros(1, 125, *lat.shape[-2:])], 1)[:, :, None]


class BlockDecoder(nn.Module):
    """Its decoder: latent frame 0 → pixel frame 0, latent frame k ≥ 1 → pixel frames 8k-7..8k, upsampled 32x."""

    def forward(self, latent):
        frames = [latent[:, :3, :1]] + [latent[:, :3, k:k + 1].expand(-1, -1, 8, -1, -1)
                                         for k in range(1, latent.shape[2])]
        video = torch.cat(frames, dim=2)
        b, c, t, h, w = video.shape
        up = F.interpolate(video.transpose(1, 2).reshape(b * t, c, h, w), scale_factor=32, mode="nearest")
        return up.reshape(b, t, c, h * 32, w * 32).transpose(1, 2)


def test_first_frame_reproduces_the_image_as_closely_as_the_vae_round_trip(models, image):
    """With seeded weights the LTX VAE is no autoencoder, so `image ≈ frame 0` cannot be tested on it. This pipeline
    runs instead with a VAE whose round trip is known exactly (32x32 block means) and the seeded denoiser: the first
    frame must equal decode(encode(image)) — the round trip — while the denoised frames differ from it."""
    stages = {"encoder": pl.TorchStage("encoder", BlockEncoder()),
              "denoiser": pl.TorchStage("denoiser", models["denoiser"]),
              "decoder": pl.TorchStage("decoder", BlockDecoder())}
    cfg = pl.GenerateConfig(height=128, width=192, frames=9, steps=2)
    result = pl.Pipeline(stages).generate(image, cfg)
    assert result.posterior == "mean" and result.notes  # no log-variance → the mean, and it says so
    x = pl.preprocess_image(image, 128, 192)
    round_trip = pl.to_uint8_frames(BlockDecoder()(BlockEncoder()(x)))[0]
    original = pl.to_uint8_frames(x)[0]
    assert np.array_equal(result.frames[0], round_trip)
    psnr_first = psnr_with_range(result.frames[0] / 255.0, original / 255.0, 1.0)
    psnr_round_trip = psnr_with_range(round_trip / 255.0, original / 255.0, 1.0)
    assert psnr_first == psnr_round_trip and psnr_first > 14.0
    later = [psnr_with_range(f / 255.0, original / 255.0, 1.0) for f in result.frames[1:]]
    assert max(later) < psnr_round_trip - 3.0  # the seeded denoiser moved frames 1-8 away from the image


# ---------------------------------------------------------------------------------------------------------------
# back-ends


def subset_folder(dst: Path, picks: list[tuple[Path, str, str]]) -> Path:
    """A new artifacts folder holding the chosen (folder, component, target) entries of existing ones (files
    copied, manifest entries merged); the folders must share preset, size and weights."""
    from mi2v_export.manifest import read_manifest

    dst.mkdir(parents=True)
    merged = None
    for folder, component, target in picks:
        m = read_manifest(folder)
        entry = m.find(component, target)
        for name in entry.files():  # files, and folders (.mlpackage, test vectors)
            (dst / name).parent.mkdir(parents=True, exist_ok=True)
            if (folder / name).is_dir():
                shutil.copytree(folder / name, dst / name, dirs_exist_ok=True)
            else:
                shutil.copy2(folder / name, dst / name)
        if merged is None:
            merged, m.components = m, []
        merged.components.append(entry)
    (dst / "manifest.json").write_text(json.dumps(merged.to_dict(), indent=2))
    return dst


def _check_against_reference(run, reference_runs, what: str) -> None:
    report = pl.compare_runs(run, reference_runs[run.posterior], pl.VIDEO_PSNR_MIN_DB["fp32"])
    assert report["summary"]["passed"], (what, report["summary"])
    assert all(s["latent_rel_err"] < 1e-4 for s in report["steps"]), (what, report["steps"])
    assert report["conditioning"]["latent_rel_err"] < 1e-5, what
    assert all(fr["ssim"] > 0.999 for fr in report["frames"]), what
    assert len(report["frames"]) == 9 and len(report["steps"]) == 2


def test_onnxruntime_pipeline_matches_pytorch(onnx_dir, image, reference_runs):
    stages = pl.build_stages("tiny", "turbo-vaed", pl.geometry(*TEST_GEO), [onnx_dir])
    assert {s.backend for s in stages.values()} == {"onnxruntime"}
    run = pl.Pipeline(stages).generate(image, _config(posterior="sample"))
    # `mi2v export`'s encoder returns the posterior mean only (the contract) → the pipeline uses the mean and says
    # so; the comparison runs the PyTorch reference in the same mode
    assert run.posterior == "mean" and "mean" in run.notes[0]
    _check_against_reference(run, reference_runs, "onnxruntime")


def test_artifact_checks(onnx_dir, tmp_path):
    geo = pl.geometry(*TEST_GEO)
    art = pl.read_artifacts(onnx_dir)
    assert {e.component for e in art.components} == set(pl.COMPONENTS)
    assert tuple(art.resolution) == (32, 40) and art.frames == 9 and pl.decoder_kind_of(art) == "turbo-vaed"
    pl.check_artifacts(art, geo, "tiny", "turbo-vaed")
    cases = [(pl.geometry(64, 96, 9), "tiny", "turbo-vaed", "exported for 32x40, not 64x96"),
             (pl.geometry(32, 40, 17), "tiny", "turbo-vaed", "exported for 9 frames, not 17"),
             (geo, "mobilei2v-270m", "turbo-vaed", "holds the 'tiny' preset"),
             (geo, "tiny", "ltx", "holds the turbo-vaed decoder, not ltx")]
    for g, preset, decoder, msg in cases:
        with pytest.raises(BadInputError, match=msg):
            pl.check_artifacts(art, g, preset, decoder)
    # the files' own static shapes are checked too
    stage = pl.OnnxStage("denoiser", onnx_dir / "denoiser.onnx")
    with pytest.raises(BadInputError, match="input 'latent' is \\[1, 128, 2, 1, 2\\]"):
        pl.check_stage_shapes(stage, pl.geometry(96, 128, 9))
    # --use
    assert pl.parse_use(["onnx", "denoiser=executorch"]) == {"encoder": "onnx", "denoiser": "executorch",
                                                             "decoder": "onnx"}
    for bad in ("tensorrt", "vae=onnx"):
        with pytest.raises(BadInputError):
            pl.parse_use([bad])
    with pytest.raises(BadInputError, match="no executorch artifact of the encoder"):
        pl.build_stages("tiny", "turbo-vaed", geo, [art], use={"encoder": "executorch"})
    # broken folders and files
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(BadInputError, match="no manifest.json"):
        pl.read_artifacts(empty)
    with pytest.raises(BadInputError, match="no such"):
        pl.read_artifacts(tmp_path / "nope")
    (empty / "manifest.json").write_text("{not json")
    with pytest.raises(BadInputError, match="not valid JSON"):
        pl.read_artifacts(empty)
    (empty / "manifest.json").write_text(json.dumps({"components": []}))
    with pytest.raises(BadInputError, match="not an mi2v export manifest"):
        pl.read_artifacts(empty)
    broken = subset_folder(tmp_path / "broken", [(onnx_dir, "decoder", "onnx")])
    (broken / "decoder.onnx").unlink()
    with pytest.raises(BadInputError, match="decoder.onnx but the file is missing"):
        pl.read_artifacts(broken)
    (empty / "decoder.onnx").write_bytes(b"\x00garbage")
    (empty / "decoder.pte").write_bytes(b"\x00garbage")
    with pytest.raises(BadInputError, match="onnxruntime cannot load it"):
        pl.OnnxStage("decoder", empty / "decoder.onnx")
    with pytest.raises(BadInputError, match="ExecuTorch runtime cannot load it"):
        pl.ExecuTorchStage("decoder", empty / "decoder.pte")
    with pytest.raises(BadInputError, match="does not follow the artifact contract for the encoder"):
        pl.OnnxStage("encoder", onnx_dir / "decoder.onnx")
    if sys.platform != "darwin":
        (empty / "decoder.mlpackage").mkdir()
        with pytest.raises(MissingDependencyError, match="only on macOS"):
            pl.CoreMLStage("decoder", empty / "decoder.mlpackage")


def test_checkpoints_feed_the_pytorch_stages(tmp_path):
    from safetensors.torch import save_file

    sd = seed_part(build_part("denoiser", "tiny"), seed=5).state_dict()
    save_file({k: v.contiguous() for k, v in sd.items()}, tmp_path / "den.safetensors")
    save_file({k: v.contiguous() for k, v in sd.items()}, tmp_path / "den2.safetensors")
    parts = pl.checkpoint_parts([tmp_path / "den.safetensors"])
    assert list(parts) == ["denoiser"]
    stage = pl.torch_stage("denoiser", "tiny", parts=parts)
    assert "den.safetensors" in stage.source
    assert all(torch.equal(v, stage.module.state_dict()[k]) for k, v in sd.items())
    with pytest.raises(CheckpointError, match="two checkpoints hold the denoiser"):
        pl.checkpoint_parts([tmp_path / "den.safetensors", tmp_path / "den2.safetensors"])


def test_outputs_are_atomic(tmp_path, monkeypatch):
    yy, xx = np.mgrid[0:48, 0:80]
    frames = np.stack([np.stack([xx * 3, yy * 5, np.full_like(xx, 20 * i)], -1) for i in range(9)]).astype(np.uint8)
    out = tmp_path / "clip.mp4"
    pl.write_video(frames, out, fps=17)
    back = pl.read_video(out)
    assert back.shape == frames.shape  # every frame, no resize to a macro-block multiple
    assert np.abs(back.astype(int) - frames.astype(int)).mean() < 3  # H.264 is lossy, but a smooth clip survives
    pl.write_contact_sheet(frames, pl.contact_sheet_path(out))
    assert Image.open(tmp_path / "clip_contact.png").size[0] > 80

    import imageio.v2 as imageio

    real_get_writer = imageio.get_writer

    def failing_writer(*args, **kw):
        writer = real_get_writer(*args, **kw)

        def boom(frame):
            raise KeyboardInterrupt  # e.g. Ctrl-C in the middle of encoding

        writer.append_data = boom
        return writer

    monkeypatch.setattr(imageio, "get_writer", failing_writer)
    target = tmp_path / "second.mp4"
    with pytest.raises(KeyboardInterrupt):
        pl.write_video(frames, target)
    assert not target.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["clip.mp4", "clip_contact.png"]


# ---------------------------------------------------------------------------------------------------------------
# CLI


def _invoke(*args: str):
    """The `mi2v` app in-process (cheap); user-facing errors come back as `result.exception`."""
    from typer.testing import CliRunner

    from mi2v_export.cli import app
    from mi2v_export.commands import generate

    if not any(getattr(c, "name", None) == "generate" for c in app.registered_commands):
        generate.register(app)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return CliRunner().invoke(app, list(map(str, args)), terminal_width=200)


@pytest.mark.unit
def test_cli_help_says_cfg_is_a_no_op():
    res = _invoke("generate", "--help")
    text = " ".join(res.output.split())
    assert res.exit_code == 0 and "classifier-free guidance" in text and "no-op" in text and "--flow-score" in text


def test_cli_generate_compare_to_reference(onnx_dir, tmp_path):
    out, report = tmp_path / "clip.mp4", tmp_path / "report.json"
    res = _invoke("generate", "--image", TEST_IMAGE, "--artifacts", onnx_dir, "--compare-to", "reference",
                  "--report", report, "--out", out)
    assert res.exit_code == 0, res.output + repr(res.exception)
    assert "per-stage timings" in res.output and "PASS" in res.output
    frames = pl.read_video(out)
    assert frames.shape == (9, 32, 40, 3)  # the manifest's preset / size / frames were adopted
    assert (tmp_path / "clip_contact.png").is_file()
    data = json.loads(report.read_text())
    assert data["posterior"] == "mean" and data["precision"] == "fp32" and data["summary"]["passed"]
    assert [s["step"] for s in data["steps"]] == [0, 1] and all("latent_rel_err" in s for s in data["steps"])
    assert len(data["frames"]) == 9 and all({"psnr_db", "ssim"} <= set(f) for f in data["frames"])
    assert data["backends"]["denoiser"].startswith("onnxruntime")


def test_cli_compare_gate_failure_still_writes_the_report(onnx_dir, tmp_path):
    from mi2v_export.errors import VerificationError

    out, report = tmp_path / "clip.mp4", tmp_path / "report.json"
    res = _invoke("generate", "--image", TEST_IMAGE, "--artifacts", onnx_dir, "--compare-to", "reference",
                  "--report", report, "--out", out, "--min-psnr", "1000", "--steps", "1")
    assert isinstance(res.exception, VerificationError) and res.exception.exit_code == 4
    assert "diverges from PyTorch fp32" in str(res.exception)
    data = json.loads(report.read_text())
    assert out.is_file() and data["summary"]["passed"] is False and data["num_steps"] == 1


@pytest.mark.unit
@pytest.mark.parametrize("args,msg", [
    (["--resolution", "50x80"], "not a multiple of 4"),
    (["--resolution", "32x40", "--frames", "10"], "not 8k\\+1"),
    (["--report", "r.json"], "use it with --compare-to reference"),
    (["--compare-to", "reference"], "pass --artifacts DIR"),
])
def test_cli_bad_options(args, msg, tmp_path):
    out = tmp_path / "clip.mp4"
    res = _invoke("generate", "--image", TEST_IMAGE, "--out", out, "--preset", "tiny", *args)
    assert isinstance(res.exception, BadInputError), res.output
    assert re.search(msg, str(res.exception))
    _no_video_left(tmp_path)


@pytest.mark.unit
def test_cli_output_must_be_mp4(tmp_path):
    res = _invoke("generate", "--image", TEST_IMAGE, "--out", tmp_path / "clip.avi", "--preset", "tiny")
    assert isinstance(res.exception, BadInputError) and ".mp4" in str(res.exception)


def test_cli_bad_input_is_one_line_and_leaves_no_output(onnx_dir, tmp_path):
    """Through the installed console script: one `error:` line, exit 2, nothing under the output name."""
    out = tmp_path / "clip.mp4"
    proc = run_cli("generate", "--image", TEST_IMAGE, "--out", out, "--artifacts", onnx_dir, "--resolution", "64x96")
    assert proc.returncode == 2
    assert "exported for 32x40, not 64x96" in _one_error_line(proc)
    _no_video_left(tmp_path)


@pytest.mark.parametrize("case", ["not-an-image", "missing-component"])
def test_cli_bad_inputs_leave_no_output(case, onnx_dir, tmp_path):
    out = tmp_path / "out" / "clip.mp4"
    out.parent.mkdir()
    args = ["generate", "--image", TEST_IMAGE, "--out", out, "--preset", "tiny"]
    if case == "not-an-image":
        (tmp_path / "fake.png").write_text("hello")
        args[2] = tmp_path / "fake.png"
        expect = "fake.png: not an image"
    else:
        partial = subset_folder(tmp_path / "partial", [(onnx_dir, "encoder", "onnx"), (onnx_dir, "denoiser", "onnx")])
        args += ["--artifacts", partial]
        expect = "no decoder in"
    res = _invoke(*args)
    assert isinstance(res.exception, BadInputError) and expect in str(res.exception)
    _no_video_left(out.parent)


# ---------------------------------------------------------------------------------------------------------------
# ExecuTorch (last: its programs are lowered in a background process while the tests above run)


def test_executorch_pipeline_matches_pytorch(pte_dir, image, reference_runs):
    stages = pl.build_stages("tiny", "turbo-vaed", pl.geometry(*TEST_GEO), [pte_dir])
    assert {s.backend for s in stages.values()} == {"executorch"}
    run = pl.Pipeline(stages).generate(image, _config(posterior="sample"))
    # this encoder program also returns the log-variance → the posterior is sampled like upstream
    assert run.posterior == "sample" and not run.notes
    _check_against_reference(run, reference_runs, "executorch")


def test_mixed_backends_and_fallback(onnx_dir, pte_dir, tmp_path, image, reference_runs):
    """One folder holding ONNX and ExecuTorch artifacts: ONNX by default, `--use denoiser=executorch` mixes; a
    folder without a decoder needs --fallback pytorch."""
    geo = pl.geometry(*TEST_GEO)
    both = subset_folder(tmp_path / "both", [(onnx_dir, c, "onnx") for c in pl.COMPONENTS]
                         + [(pte_dir, c, "executorch") for c in pl.COMPONENTS])
    stages = pl.build_stages("tiny", "turbo-vaed", geo, [both])
    assert [stages[c].backend for c in pl.COMPONENTS] == ["onnxruntime"] * 3
    stages = pl.build_stages("tiny", "turbo-vaed", geo, [both], use=pl.parse_use(["denoiser=executorch"]))
    assert [stages[c].backend for c in pl.COMPONENTS] == ["onnxruntime", "executorch", "onnxruntime"]
    _check_against_reference(pl.Pipeline(stages).generate(image, _config()), reference_runs, "onnx+et")

    no_decoder = subset_folder(tmp_path / "nodec", [(pte_dir, "encoder", "executorch"),
                                                    (onnx_dir, "denoiser", "onnx")])
    with pytest.raises(BadInputError, match="no decoder in .*--fallback pytorch"):
        pl.build_stages("tiny", "turbo-vaed", geo, [no_decoder])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        stages = pl.build_stages("tiny", "turbo-vaed", geo, [no_decoder], fallback="pytorch")
    assert [stages[c].backend for c in pl.COMPONENTS] == ["executorch", "onnxruntime", "pytorch"]
    run = pl.Pipeline(stages).generate(image, _config())
    assert run.posterior == "sample"
    _check_against_reference(run, reference_runs, "et+onnx+pytorch")


# ---------------------------------------------------------------------------------------------------------------
# slow: `mi2v export --target executorch` (XNNPACK) end to end (lowering takes minutes on a 2-core host)


@pytest.mark.slow
def test_executorch_xnnpack_pipeline_matches_pytorch(image, reference_runs, tmp_path):
    folder = tmp_path / "xnnpack"
    _export_main("executorch", str(folder), delegate="xnnpack")
    stages = pl.build_stages("tiny", "turbo-vaed", pl.geometry(*TEST_GEO), [folder])
    assert {s.backend for s in stages.values()} == {"executorch"}
    run = pl.Pipeline(stages).generate(image, _config())
    _check_against_reference(run, reference_runs, "executorch-xnnpack")


def test_ssim_properties():
    """SSIM is 1 for identical frames (never above, despite float32 rounding), symmetric, and falls with noise."""
    from mi2v_export.parity import ssim

    g = torch.Generator().manual_seed(3)
    frame = torch.rand(48, 64, 3, generator=g)
    assert ssim(frame, frame) == pytest.approx(1.0, abs=1e-6) and ssim(frame, frame) <= 1.0
    bright = (frame * 0.999 + 0.0005).clamp(0, 1)
    assert ssim(bright, frame) <= 1.0
    noisy = (frame + 0.05 * torch.randn(48, 64, 3, generator=g)).clamp(0, 1)
    very = (frame + 0.3 * torch.randn(48, 64, 3, generator=g)).clamp(0, 1)
    assert ssim(noisy, frame) == pytest.approx(ssim(frame, noisy), abs=1e-6)
    assert 1.0 > ssim(noisy, frame) > ssim(very, frame) > 0.0
    tiny = torch.rand(5, 7, 3, generator=g)  # smaller than the 11x11 window
    assert ssim(tiny, tiny) == pytest.approx(1.0, abs=1e-6)
