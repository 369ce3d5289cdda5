"""DDP under torchrun (2 CPU processes, gloo) matches 1 process with the same global batch."""

from __future__ import annotations

import shutil
import subprocess
import sys

import pytest
from conftest import SUBPROCESS_ENV
from safetensors.torch import load_file

ARGS = [
    "train",
    "ae",
    "--data",
    "moons",
    "train.steps=20",
    "train.batch_size=32",
    "train.checkpoint_every=20",
    "train.sample_every=20",
    "model.hidden=[16]",
    "data.limit=256",
    "--no-progress",
]


@pytest.mark.skipif(shutil.which("torchrun") is None, reason="torchrun not on PATH")
def test_two_processes_match_one(tmp_path) -> None:
    one, two = tmp_path / "one", tmp_path / "two"
    subprocess.run(
        [sys.executable, "-m", "genlab", *ARGS, "--out", str(one)],
        check=True,
        env=SUBPROCESS_ENV,
        timeout=300,
        capture_output=True,
    )
    proc = subprocess.run(
        [
            "torchrun",
            "--standalone",
            "--nproc_per_node=2",
            "-m",
            "genlab",
            *ARGS,
            "--out",
            str(two),
        ],
        env=SUBPROCESS_ENV,
        timeout=300,
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    a = load_file(str(one / "checkpoints" / "step_000020" / "model.safetensors"))
    b = load_file(str(two / "checkpoints" / "step_000020" / "model.safetensors"))
    params = [k for k in a if not k.startswith("code_")]  # code_* are per-rank running stats
    assert params
    for k in params:
        diff = (a[k] - b[k]).abs().max().item()
        assert diff < 1e-5, f"{k} differs by {diff}"
    assert proc.stdout.count("trained ae") == 1  # only rank 0 reports


@pytest.mark.skipif(shutil.which("torchrun") is None, reason="torchrun not on PATH")
def test_fitted_baseline_under_two_processes(tmp_path) -> None:
    """A phase-less model (fitted by fit_data) trains under torchrun: no DDP wrapper, the same
    fit on every rank, one checkpoint from rank 0."""
    out = tmp_path / "gmm"
    args = ["train", "gmm", "--data", "moons", "train.steps=1", "data.limit=256"]
    proc = subprocess.run(
        ["torchrun", "--standalone", "--nproc_per_node=2", "-m", "genlab", *args]
        + ["model.components=3", "--no-progress", "--out", str(out)],
        env=SUBPROCESS_ENV,
        timeout=300,
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    weights = load_file(str(out / "checkpoints" / "step_000001" / "model.safetensors"))
    assert weights["means"].abs().sum() > 0  # fitted, not the unfitted standard normal
    assert proc.stdout.count("trained gmm") == 1
