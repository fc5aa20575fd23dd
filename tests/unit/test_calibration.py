"""Calibration records what each component sees in the real sampler, is cached by content, and holds out the
validation image."""

from __future__ import annotations

import shutil
import warnings

import pytest
import torch

from mi2v_export import calibration as cal
from mi2v_export.errors import BadInputError
from mi2v_export.pipeline import flow_schedule, torch_stage
from mi2v_export.presets import get_preset
from mi2v_export.shapes import geometry


@pytest.fixture(scope="module")
def stages():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return {c: torch_stage(c, "tiny") for c in ("encoder", "denoiser", "decoder")}


@pytest.fixture(scope="module")
def geo():
    p = get_preset("tiny")
    return geometry(p.height, p.width, p.frames)


def test_records_the_sampler_and_caches_by_content(tmp_path, monkeypatch, stages, geo):
    monkeypatch.setenv("MI2V_CACHE", str(tmp_path / "cache"))
    weights = {"weights": "seeded", "seed": 0}
    first = cal.build(stages, geo, folder=None, weights=weights, decoder="turbo-vaed", preset="tiny")
    n_img = len(cal.list_images(None))
    runs = n_img * len(cal.SEEDS)
    assert not first.cached and first.images == ["astronaut.png", "coffee.png"]
    assert cal.VALIDATION_IMAGE.name not in first.images
    assert len(first.samples["encoder"]) == n_img  # one per image, whatever the seed
    assert len(first.samples["denoiser"]) == runs * sum(cal.STEPS)  # every step of the 1- and 2-step runs
    assert len(first.samples["decoder"]) == runs * len(cal.STEPS)  # the final latent of every run
    timesteps = sorted({float(r["timestep"]) for r in first.samples["denoiser"]})
    expected = sorted({float(t) for n in cal.STEPS for t in flow_schedule(n).timesteps})
    assert timesteps == pytest.approx(expected)
    assert tuple(first.samples["denoiser"][0]["latent"].shape) == tuple(geo.latent_shape)
    assert len(first.held_out["denoiser"]) == 2 and len(first.held_out["decoder"]) == 1
    # the held-out records differ from every calibration record (another image)
    held = first.held_out["encoder"][0]["image"]
    assert all(not torch.equal(held, r["image"]) for r in first.samples["encoder"])

    again = cal.build(stages, geo, folder=None, weights=weights, decoder="turbo-vaed", preset="tiny")
    assert again.cached and again.digest == first.digest
    for a, b in zip(again.samples["denoiser"], first.samples["denoiser"]):
        assert all(torch.equal(a[k], b[k]) for k in b)

    other = cal.set_digest(cal.list_images(None), {"weights": "seeded", "seed": 1}, geo, "turbo-vaed", "tiny")
    assert other != first.digest  # other weights, other set


def test_user_folder_and_bad_folders(tmp_path, geo):
    mine = tmp_path / "mine"
    mine.mkdir()
    shutil.copy(cal.DEFAULT_DIR / "coffee.png", mine / "a.png")
    digest = cal.set_digest(cal.list_images(mine), {}, geo, "turbo-vaed", "tiny")
    assert digest != cal.set_digest(cal.list_images(None), {}, geo, "turbo-vaed", "tiny")
    (tmp_path / "empty").mkdir()
    with pytest.raises(BadInputError, match="no images"):
        cal.list_images(tmp_path / "empty")
    with pytest.raises(BadInputError, match="not a folder"):
        cal.list_images(tmp_path / "nope")


def test_packaged_images_are_package_data():
    import tomllib
    from pathlib import Path

    data = tomllib.loads((Path(__file__).parents[2] / "pyproject.toml").read_text())
    globs = data["tool"]["setuptools"]["package-data"]["mi2v_export"]
    assert "data/calibration/*.png" in globs and "data/validation/*.png" in globs
    assert cal.VALIDATION_IMAGE.is_file() and len(cal.list_images(None)) == 2
