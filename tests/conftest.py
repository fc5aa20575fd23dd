"""Shared fixtures: where the golden references live, writers for upstream-style checkpoint files, the CLI as a
user runs it, and a private adb server with a simulated phone."""

from __future__ import annotations

import os
import random
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from mi2v_export import models
from mi2v_export.exporters import components
from mi2v_export.presets import get_preset
from mi2v_export.shapes import geometry
from tests import cache

REPO = cache.REPO
DATA = REPO / "tests" / "data"  # the project's test data: a clone alone passes its tests
GOLDEN = DATA / "golden"  # upstream reference outputs (tests/data/golden/README.md says how they were made)
TEST_IMAGE = DATA / "images" / "mobilei2v_test_image.png"


@pytest.fixture(scope="session")
def golden_dir() -> Path:
    return GOLDEN


def save_upstream_pth(state_dict: dict, path: Path, *, unused_buffers: dict | None = None, epoch: int = 371) -> Path:
    """Write a checkpoint the way upstream's save_checkpoint_ddp does: weights under `state_dict` plus pickled
    torch/numpy/python RNG states, the epoch and an optimizer entry."""
    sd = dict(state_dict)
    sd.update(unused_buffers or {})
    torch.save({
        "state_dict": sd,
        "rng_state": {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate()},
        "epoch": epoch,
        "optimizer": {"state": {}, "param_groups": [{"lr": 2e-5, "params": [0, 1]}]},
    }, path)
    return path


def tiny_vae_part(part: str) -> tuple[torch.nn.Module, torch.Tensor]:
    """A tiny-preset VAE part ("ltx-encoder", "ltx-decoder" or "turbo-vaed", seeded weights) and its example input
    at the tiny preset's size: the subject of the rewrite-exactness tests of every target."""
    tiny = get_preset("tiny")
    geo = geometry(tiny.height, tiny.width, tiny.frames)
    if part == "ltx-encoder":
        return models.load_encoder(preset="tiny"), components.example_inputs("encoder", geo)["image"]
    kind = "ltx" if part == "ltx-decoder" else "turbo-vaed"
    return models.load_decoder(kind, preset="tiny"), components.example_inputs("decoder", geo)["latent"]


MI2V_EXE = Path(sys.executable).with_name("mi2v")  # the installed console script


def run_cli(*args, timeout: float = 900, env: dict | None = None, cwd: Path = REPO) -> subprocess.CompletedProcess:
    """Run the installed `mi2v` console script as a user would, in a wide terminal without colours (`env`, when
    given, is the whole environment)."""
    full = dict(os.environ if env is None else env)
    full.update(COLUMNS="200", TERM="dumb", NO_COLOR="1")
    return subprocess.run([str(MI2V_EXE), *map(str, args)], capture_output=True, text=True, timeout=timeout,
                          env=full, cwd=cwd)


@pytest.fixture(scope="session")
def exported(pytestconfig):
    """`exported(dst, *args)`: a private copy at `dst` of what `mi2v export *args` writes, and its stdout. The
    export runs once per source version for every test file that asks for the same arguments (tests/cache.py)."""
    def get(dst: Path, *args) -> tuple[Path, str]:
        args = tuple(map(str, args))
        env = {**os.environ, "COLUMNS": "200", "TERM": "dumb", "NO_COLOR": "1"}
        folder = cache.cached(pytestconfig, "export", cache.export_cli(MI2V_EXE, args, env), *args)
        return cache.copy_export(folder, dst)
    return get


# ---- a private adb server (real client and server, loopback only) and the simulated phone -------------------------


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def adb_env(home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ANDROID_", "ADB"))}
    env.pop("MI2V_ADB", None)
    # HOME: the server's adbkey goes there. No mDNS, USB or emulator scanning: loopback only, nothing of the host's.
    env.update(HOME=str(home), TMPDIR=str(home), ADB_MDNS="0", ADB_USB="0", ADB_EMU="0")
    return env


def private_adb(home: Path):
    """An adb server of our own on a free port (skips the test when no adb binary exists)."""
    from mi2v_export.devices.adb import Adb, find_adb
    from mi2v_export.errors import DeviceError

    try:
        path = find_adb()
    except DeviceError as exc:
        pytest.skip(f"no adb binary: {exc}")
    home.mkdir(parents=True, exist_ok=True)
    adb = Adb(path, server_port=free_port(), env=adb_env(home), timeout=20)
    adb.start_server()
    return adb


@pytest.fixture(scope="module")
def adb(tmp_path_factory):
    client = private_adb(tmp_path_factory.mktemp("adb-home"))
    try:
        yield client
    finally:
        client.kill_server()  # only the server on our private port


@pytest.fixture(scope="module")
def phone(adb):
    from mi2v_export.simulator.phone import SimulatedPhone

    with SimulatedPhone() as p:
        assert adb.connect(p.serial).state == "device"
        yield p
        adb.disconnect(p.serial)
