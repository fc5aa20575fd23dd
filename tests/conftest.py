"""Shared fixtures: where the golden references live, and writers for upstream-style checkpoint files."""

from __future__ import annotations

import os
import random
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("MI2V_SHARED", REPO.parent / "shared"))
GOLDEN = SHARED / "golden"


@pytest.fixture(scope="session")
def golden_dir() -> Path:
    if not GOLDEN.is_dir():
        pytest.fail(f"golden references not found at {GOLDEN} (set MI2V_SHARED)")
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


def run_cli(*args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    """Run the installed `mi2v` console script as a user would."""
    exe = Path(sys.executable).with_name("mi2v")
    return subprocess.run([str(exe), *map(str, args)], capture_output=True, text=True, timeout=timeout)
