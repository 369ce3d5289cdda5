"""DDP under torchrun (2 CPU processes, gloo) matches 1 process with the same global batch."""

from __future__ import annotations

import re
import shutil
import signal
import subprocess
import sys
import time

import pytest
from conftest import SUBPROCESS_ENV
from safetensors.torch import load_file

from genlab.train import checkpoint

pytestmark = pytest.mark.xdist_group("torchrun")  # one launch at a time (test_ddp_families)

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


def launch(*args: str, procs: int = 1) -> subprocess.CompletedProcess:
    """`genlab ARGS` in one process or under torchrun with `procs`; it must succeed."""
    launcher = (
        [sys.executable]
        if procs == 1
        else ["torchrun", "--standalone", f"--nproc_per_node={procs}"]
    )
    proc = subprocess.run(
        [*launcher, "-m", "genlab", *args],
        env=SUBPROCESS_ENV,
        timeout=300,
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    return proc


@pytest.mark.skipif(shutil.which("torchrun") is None, reason="torchrun not on PATH")
def test_two_processes_match_one(tmp_path) -> None:
    one, two = tmp_path / "one", tmp_path / "two"
    launch(*ARGS, "--out", str(one))
    proc = launch(*ARGS, "--out", str(two), procs=2)
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
    proc = launch(*args, "model.components=3", "--no-progress", "--out", str(out), procs=2)
    weights = load_file(str(out / "checkpoints" / "step_000001" / "model.safetensors"))
    assert weights["means"].abs().sum() > 0  # fitted, not the unfitted standard normal
    assert proc.stdout.count("trained gmm") == 1


VAE = [
    "train",
    "vae",
    "--data",
    "moons",
    "train.batch_size=32",
    "train.checkpoint_every=10",
    "train.sample_every=1000",
    "train.ema=0.9",
    "model.hidden=[16]",
    "model.latent_dim=2",
    "data.limit=256",
    "--no-progress",
]


def genlab_run(out, *args: str, procs: int = 1) -> None:
    launch(*VAE, *args, "--out", str(out), procs=procs)


def assert_same_weights(a, b, step: int) -> None:
    for name in ("model", "ema"):
        wa = load_file(str(a / "checkpoints" / f"step_{step:06d}" / f"{name}.safetensors"))
        wb = load_file(str(b / "checkpoints" / f"step_{step:06d}" / f"{name}.safetensors"))
        assert wa.keys() == wb.keys()
        for k in wa:
            diff = (wa[k] - wb[k]).abs().max().item()
            assert diff < 1e-5, f"{name} {k} differs by {diff} at step {step}"


@pytest.mark.skipif(shutil.which("torchrun") is None, reason="torchrun not on PATH")
def test_stochastic_model_and_resume_on_another_process_count(tmp_path) -> None:
    """A VAE draws noise: 2 processes equal 1 process with grad_accum=2 (the same 2 shards, each
    with its RNG stream), and a run resumes exactly from 2 processes onto 1 and back."""
    ref, down, up = tmp_path / "ref", tmp_path / "down", tmp_path / "up"
    genlab_run(ref, "train.steps=20", "train.grad_accum=2")
    genlab_run(down, "train.steps=10", procs=2)
    assert_same_weights(ref, down, 10)  # 2 processes == 1 process x 2 micro-batches
    genlab_run(down, "train.steps=20", "train.grad_accum=2", "--resume")
    assert_same_weights(ref, down, 20)
    genlab_run(up, "train.steps=10", "train.grad_accum=2")
    genlab_run(up, "train.steps=20", "--resume", procs=2)
    assert_same_weights(ref, up, 20)


@pytest.mark.skipif(shutil.which("torchrun") is None, reason="torchrun not on PATH")
def test_sigterm_to_torchrun_stops_every_rank_at_one_saved_step(tmp_path) -> None:
    out = tmp_path / "run"
    args = ["train.steps=100000", "train.checkpoint_every=100000", "train.log_every=1"]
    proc = subprocess.Popen(
        ["torchrun", "--standalone", "--nproc_per_node=2", "-m", "genlab", *VAE, *args]
        + ["--out", str(out)],
        env=SUBPROCESS_ENV,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    metrics = out / "metrics.csv"
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None:
        if metrics.is_file() and len(metrics.read_text().splitlines()) > 3:
            break
        time.sleep(0.1)
    proc.send_signal(signal.SIGTERM)  # torchrun passes it to both workers
    _, err = proc.communicate(timeout=120)
    # a rank that stops on the other's flag before its own signal arrives says so
    stops = re.findall(r"genlab: stopped: (SIGTERM|a signal on another process) at step (\d+)", err)
    assert len(stops) == 2 and stops[0][1] == stops[1][1], err[-3000:]
    assert "SIGTERM" in {name for name, _ in stops}
    step = int(stops[0][1])
    last = checkpoint.latest(out / "checkpoints")
    assert last is not None and last.step == step
    checkpoint.verify(last)
    assert int(metrics.read_text().splitlines()[-1].split(",")[0]) == step
