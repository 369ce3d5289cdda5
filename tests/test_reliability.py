"""Reliability: stop signals, failed checkpoint writes, divergence (stop or roll back), runs that
point outside themselves, gradient accumulation, compile and mixed precision (issue 7)."""

from __future__ import annotations

import csv
import errno
import math
import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
from conftest import SUBPROCESS_ENV, tiny_data
from torch import nn

from genlab.config import TrainConfig, resolve
from genlab.errors import GenlabError, TrainingDiverged
from genlab.models.base import GenerativeModel, Phase
from genlab.train import Trainer, checkpoint, load_run, train
from genlab.train.trainer import BatchStream


def tiny_vae(steps: int, *extra: str):
    over = [
        f"train.steps={steps}",
        "train.batch_size=16",
        "train.checkpoint_every=5",
        "train.sample_every=1000",
        "model.hidden=[16]",
        "model.latent_dim=2",
        "data.limit=200",
        *extra,
    ]
    return resolve("vae", "moons", None, over)


def same_weights(a: Path, b: Path) -> bool:
    wa = load_run(a, weights="model").model.state_dict()
    wb = load_run(b, weights="model").model.state_dict()
    return wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)


def logged_steps(run: Path) -> list[int]:
    with open(run / "metrics.csv") as f:
        return [int(r["step"]) for r in csv.DictReader(f)]


# ------------------------------------------------------------------------------- stop signals
CLI_ARGS = [
    "train",
    "vae",
    "--data",
    "moons",
    "train.batch_size=16",
    "train.checkpoint_every=1000",
    "train.sample_every=100000",
    "train.log_every=1",
    "model.hidden=[16]",
    "model.latent_dim=2",
    "data.limit=200",
    "--no-progress",
]


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_stop_signal_saves_and_exits_cleanly(sig: signal.Signals, tmp_path: Path) -> None:
    run = tmp_path / "run"
    proc = subprocess.Popen(
        [sys.executable, "-m", "genlab", *CLI_ARGS, "train.steps=100000", "--out", str(run)],
        env=SUBPROCESS_ENV,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None:  # wait until it is training
        if (run / "metrics.csv").is_file() and len(logged_steps(run)) >= 3:
            break
        time.sleep(0.1)
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 128 + sig, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in err, err
    assert lines[0].startswith(f"genlab: stopped: {sig.name} at step "), err
    step = int(lines[0].split(" at step ")[1].split(";")[0])
    last = checkpoint.latest(run / "checkpoints")
    assert last is not None and last.step == step  # saved at the step it stopped
    checkpoint.verify(last)
    assert logged_steps(run)[-1] == step
    if sig == signal.SIGTERM:  # resuming gives exactly the uninterrupted run
        steps = f"train.steps={step + 4}"
        for out, resume in ((run, ["--resume"]), (tmp_path / "ref", [])):
            subprocess.run(
                [sys.executable, "-m", "genlab", *CLI_ARGS, steps, "--out", str(out), *resume],
                env=SUBPROCESS_ENV,
                check=True,
                capture_output=True,
                timeout=120,
            )
        assert same_weights(run, tmp_path / "ref")


# ------------------------------------------------------------------- failed checkpoint writes
@pytest.mark.parametrize(
    "target, error",
    [
        ("save_file", OSError(errno.ENOSPC, "No space left on device")),
        ("fsync_file", OSError(errno.ENOSPC, "No space left on device")),
        ("save_file", PermissionError(errno.EACCES, "Permission denied")),
    ],
)
def test_failed_checkpoint_write_keeps_the_previous_one(
    target: str, error: OSError, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    original, original_prune = getattr(checkpoint, target), checkpoint.prune
    armed = []  # the first checkpoint is written whole; every later write fails

    def arm_after_first_checkpoint(*args, **kwargs):
        original_prune(*args, **kwargs)
        armed.append(True)

    def fail_once_armed(*args, **kwargs):
        if armed:
            raise error
        return original(*args, **kwargs)

    monkeypatch.setattr(checkpoint, "prune", arm_after_first_checkpoint)
    monkeypatch.setattr(checkpoint, target, fail_once_armed)
    with pytest.raises(GenlabError) as e:
        train(tiny_vae(20), tmp_path / "run", progress=False)
    msg = str(e.value)
    assert error.strerror in msg and "step 10" in msg, msg
    assert "step_000005 (step 5) is intact" in msg and "--resume" in msg, msg
    root = tmp_path / "run" / "checkpoints"
    last = checkpoint.latest(root)
    assert last is not None and last.step == 5
    checkpoint.verify(last)
    assert sorted(p.name for p in root.iterdir()) == ["latest", "step_000005"]  # no leftovers
    armed.clear()
    monkeypatch.setattr(checkpoint, "prune", original_prune)  # the disk has space again
    assert train(tiny_vae(20), tmp_path / "run", resume=True, progress=False).step == 20
    train(tiny_vae(20), tmp_path / "ref", progress=False)
    assert same_weights(tmp_path / "run", tmp_path / "ref")


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes to read-only directories")
def test_read_only_run_directory(tmp_path: Path) -> None:
    train(tiny_vae(5), tmp_path / "run", progress=False)
    root = tmp_path / "run" / "checkpoints"
    root.chmod(0o555)
    try:
        with pytest.raises(GenlabError, match="step_000005 .step 5. is intact"):
            train(tiny_vae(10), tmp_path / "run", resume=True, progress=False)
    finally:
        root.chmod(0o755)
    checkpoint.verify(checkpoint.latest(root))


# -------------------------------------------------------------------------------- divergence
@dataclass
class SlopeConfig:
    limit: float = 4.0


class Slope(GenerativeModel):
    """Gradient descent on (w - 1)^2 with plain SGD: e = w - 1 becomes e (1 - 2 lr) each step, so
    lr = 1.5 doubles |e| (the loss is made inf once |e| > limit) and lr = 0.75 halves it."""

    config_class = SlopeConfig

    def __init__(self, cfg: SlopeConfig, spec) -> None:
        super().__init__(cfg, spec)
        self.w = nn.Parameter(torch.zeros(()))

    def phases(self, lr):
        return [Phase("main", [self.w], lambda ps: torch.optim.SGD(ps, lr=lr))]

    def forward(self, batch, phase="main"):
        e = self.w - 1
        fit = torch.where(e.abs() > self.cfg.limit, torch.tensor(float("inf")), e**2)
        return {"loss": fit, "fit": fit}

    def sample(self, n, *, generator=None, labels=None, sampler=None, **kw):
        return self.w.detach().expand(n, *self.spec.shape).clone()


def slope_trainer(tmp_path: Path, **kw) -> Trainer:
    data = tiny_data("vector")
    cfg = TrainConfig(
        steps=12, batch_size=8, lr=1.5, checkpoint_every=2, sample_every=100, log_every=1, **kw
    )
    return Trainer(Slope(SlopeConfig(), data.spec), data, cfg, tmp_path, progress=False)


def test_divergence_stops_with_the_step_and_the_part(tmp_path: Path) -> None:
    # e: -1, 2, -4, 8 -> the 4th step's loss is inf; the checkpoint of step 2 stays
    with pytest.raises(TrainingDiverged) as e:
        slope_trainer(tmp_path).fit()
    msg = str(e.value)
    assert "step 4" in msg and "loss=inf" in msg and "fit=inf" in msg and "step_000002" in msg
    assert checkpoint.latest(tmp_path / "checkpoints").step == 2


def test_rollback_lowers_the_lr_and_finishes(tmp_path: Path, caplog) -> None:
    trainer = slope_trainer(tmp_path, on_divergence="rollback", rollback_lr_factor=0.5)
    trainer.fit()
    assert trainer.step == 12 and trainer.rollbacks == 1
    assert "rolled back to step 2" in caplog.text
    assert abs(trainer.model.w.item() - 1) < 1e-2  # lr 0.75 converges
    opt = trainer.optimizers["main"]
    assert opt.param_groups[0]["lr"] == pytest.approx(0.75)
    steps = logged_steps(tmp_path)
    assert steps == list(range(1, 13))  # rows of the diverged attempt were dropped
    with open(tmp_path / "metrics.csv") as f:
        assert all(math.isfinite(float(r["loss"])) for r in csv.DictReader(f))
    # the lowered lr is in the checkpoint, so a resume keeps it
    state = checkpoint.load_trainer_state(checkpoint.latest(tmp_path / "checkpoints"))
    assert state["optimizers"]["main"]["param_groups"][0]["lr"] == pytest.approx(0.75)


def test_rollbacks_are_limited(tmp_path: Path) -> None:
    trainer = slope_trainer(
        tmp_path, on_divergence="rollback", rollback_lr_factor=0.9, max_rollbacks=2
    )
    with pytest.raises(TrainingDiverged, match="loss=inf"):  # lr 1.35, 1.215 still diverge
        trainer.fit()
    assert trainer.rollbacks == 2


def test_nan_in_the_data_stops_at_the_first_batch_holding_it(tmp_path: Path) -> None:
    data = tiny_data("vector")
    data.x_train[5] = float("nan")
    cfg = TrainConfig(steps=20, batch_size=8, checkpoint_every=1, sample_every=100, seed=2)
    model = resolve("vae", "moons", None, ["model.hidden=[8]", "model.latent_dim=2"])
    from genlab.train.run import build_model

    stream = BatchStream(len(data), 8, seed=2)
    first = next(t for t in range(1, 20) if 5 in stream.next()[0].tolist())
    trainer = Trainer(build_model(model, data.spec), data, cfg, tmp_path, progress=False)
    with pytest.raises(TrainingDiverged, match=rf"at step {first}, phase 'main': loss=nan"):
        trainer.fit()
    if first > 1:
        assert checkpoint.latest(tmp_path / "checkpoints").step == first - 1


def test_a_new_run_diverging_before_any_checkpoint_leaves_nothing(tmp_path: Path) -> None:
    """No checkpoint yet: the directory could neither sample nor resume, and would block
    `genlab train` with the same --out; the message names it as removed."""
    out = tmp_path / "run"
    with pytest.raises(TrainingDiverged, match=rf"at step \d+.*; removed {out}$"):
        train(tiny_vae(20, "train.lr=1e30"), out, progress=False)
    assert not out.exists()
    assert list(tmp_path.iterdir()) == []  # no .tmp-discard-* left either


def test_a_directory_the_user_made_is_never_removed(tmp_path: Path) -> None:
    """An --out that existed before the run (e.g. holding other files) is left as it is."""
    out = tmp_path / "mine"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    with pytest.raises(TrainingDiverged) as info:
        train(tiny_vae(20, "train.lr=1e30"), out, progress=False)
    assert "removed" not in str(info.value)
    assert (out / "notes.txt").read_text() == "mine"


def test_a_run_diverging_after_a_checkpoint_is_kept(tmp_path: Path, monkeypatch) -> None:
    """With a checkpoint (the last good step) the run directory stays, ready for --resume."""
    from genlab.models.vae import VAE

    forward = VAE.forward

    def nan_from_step_7(self, batch, phase="main"):
        out = forward(self, batch, phase)
        return {**out, "loss": out["loss"] * math.nan} if self.step >= 7 else out

    monkeypatch.setattr(VAE, "forward", nan_from_step_7)
    out = tmp_path / "run"
    with pytest.raises(TrainingDiverged, match="at step 8") as info:
        train(tiny_vae(20), out, progress=False)
    assert "removed" not in str(info.value)
    assert checkpoint.latest(out / "checkpoints").step == 5


# ------------------------------------------------------------------- runs that point outside
@pytest.fixture
def small_run(tmp_path: Path) -> Path:
    return train(tiny_vae(5), tmp_path / "run", progress=False).dir


def move_out_and_link(path: Path, outside: Path) -> None:
    """Replace `path` by a symlink to an identical copy outside the run (checksums still hold)."""
    shutil.move(path, outside)
    path.symlink_to(outside.resolve(), target_is_directory=outside.is_dir())


@pytest.mark.parametrize(
    "inside",
    ["checkpoints/step_000005/model.safetensors", "checkpoints/step_000005", "config.yaml"],
)
def test_symlinks_out_of_the_run_are_refused(small_run: Path, inside: str, tmp_path: Path) -> None:
    load_run(small_run)  # loads while everything is inside
    move_out_and_link(small_run / inside, tmp_path / "elsewhere")
    with pytest.raises(GenlabError, match="points outside"):
        load_run(small_run)
    out = tmp_path / "grid.png"
    proc = subprocess.run(
        [sys.executable, "-m", "genlab", "sample", str(small_run), "-n", "4", "--out", str(out)],
        env=SUBPROCESS_ENV,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert "points outside" in proc.stderr and not out.exists()


def test_manifest_naming_a_path_is_refused(small_run: Path) -> None:
    ckpt = checkpoint.latest(small_run / "checkpoints")
    manifest = ckpt.path / "manifest.json"
    manifest.write_text(manifest.read_text().replace('"model.safetensors"', '"../../config.yaml"'))
    with pytest.raises(GenlabError, match="lists a file outside it"):
        checkpoint.verify(ckpt)


# ------------------------------------------------- gradient accumulation, compile, precision
def test_gradient_accumulation_matches_the_whole_batch(tmp_path: Path) -> None:
    """A deterministic model: 4 micro-batches of 4 give the weights of one batch of 16 (its
    parameters: running statistics such as the code fit are updated once per forward)."""
    args = ["model.hidden=[16]", "data.limit=200", "train.batch_size=16", "train.steps=8"]
    runs = {}
    for accum in (1, 4):
        cfg = resolve("ae", "moons", None, [*args, f"train.grad_accum={accum}"])
        model = train(cfg, tmp_path / f"a{accum}", progress=False).model
        runs[accum] = dict(model.named_parameters())
    for k, v in runs[1].items():
        assert torch.allclose(v, runs[4][k], atol=1e-6), k
    with pytest.raises(GenlabError, match="divisible by 3 shards"):
        train(resolve("ae", "moons", None, [*args, "train.grad_accum=3"]), tmp_path / "b")
    assert not (tmp_path / "b").exists()


def test_compiled_training_matches_eager(tmp_path: Path) -> None:
    args = ["model.hidden=[16]", "data.limit=200", "train.batch_size=16", "train.steps=3"]
    eager = train(resolve("ae", "moons", None, args), tmp_path / "e", progress=False)
    cfg = resolve("ae", "moons", None, [*args, "train.compile=true"])
    compiled = train(cfg, tmp_path / "c", progress=False)
    for (k, a), b in zip(eager.model.state_dict().items(), compiled.model.state_dict().values()):
        assert torch.allclose(a, b, atol=1e-5), k


def test_bf16_autocast_on_cpu(tmp_path: Path) -> None:
    run = train(tiny_vae(5, "train.precision=bf16", "train.log_every=1"), tmp_path / "r")
    assert all(p.dtype == torch.float32 for p in run.model.parameters())  # weights stay fp32
    with open(run.dir / "metrics.csv") as f:
        losses = [float(r["loss"]) for r in csv.DictReader(f)]
    assert len(losses) == 5 and all(math.isfinite(v) for v in losses)


def test_fp16_with_loss_scaling_on_cpu_resumes_exactly(tmp_path: Path) -> None:
    """train.precision=fp16 autocasts and scales the loss (GradScaler, as on CUDA); the scale
    travels in the checkpoint, so a resumed run equals an uninterrupted one."""
    whole = train(tiny_vae(6, "train.precision=fp16", "train.checkpoint_every=3"), tmp_path / "a")
    assert all(p.dtype == torch.float32 for p in whole.model.parameters())
    state = checkpoint.load_trainer_state(checkpoint.latest(whole.dir / "checkpoints"))
    assert state["scaler"]["scale"] > 0  # an enabled scaler saves its scale
    train(tiny_vae(3, "train.precision=fp16", "train.checkpoint_every=3"), tmp_path / "b")
    cfg = tiny_vae(6, "train.precision=fp16", "train.checkpoint_every=3")
    train(cfg, tmp_path / "b", resume=True)
    assert same_weights(tmp_path / "a", tmp_path / "b")
    with open(whole.dir / "metrics.csv") as f:
        assert all(math.isfinite(float(r["loss"])) for r in csv.DictReader(f))


@pytest.fixture
def small_disk(tmp_path: Path):
    """A 2 MB tmpfs (root only, where mounting is allowed), unmounted afterwards."""
    mount = tmp_path / "disk"
    mount.mkdir()
    if (
        os.geteuid() != 0
        or subprocess.run(
            ["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(mount)], capture_output=True
        ).returncode
    ):
        pytest.skip("cannot mount a tmpfs here")
    yield mount
    subprocess.run(["umount", "-l", str(mount)], check=False)


def test_real_full_disk_during_a_save(small_disk: Path) -> None:
    """The disk fills after the checkpoint of step 5: the next write (the sample grid of step 10,
    then its checkpoint) fails with one line naming the intact checkpoint; nothing partial."""
    run = small_disk / "run"
    cmd = [sys.executable, "-m", "genlab", *CLI_ARGS, "train.checkpoint_every=5", "--out", str(run)]
    subprocess.run([*cmd, "train.steps=5"], env=SUBPROCESS_ENV, check=True, capture_output=True)
    free = shutil.disk_usage(small_disk).free
    with open(small_disk / "filler", "wb") as f:  # leave 8 KB: less than a checkpoint needs
        f.write(b"\0" * (free - 8192))
    proc = subprocess.run(
        [*cmd, "train.steps=10", "--resume"], env=SUBPROCESS_ENV, capture_output=True, text=True
    )
    assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert "No space left on device" in proc.stderr and "step 5) is intact" in proc.stderr
    root = run / "checkpoints"
    checkpoint.verify(checkpoint.latest(root))
    assert checkpoint.latest(root).step == 5
    assert sorted(p.name for p in root.iterdir()) == ["latest", "step_000005"]
    assert [p.name for p in (run / "samples").iterdir()] == ["step_000005.png"]  # no partial one
    (small_disk / "filler").unlink()  # space again: the run goes on
    subprocess.run([*cmd, "train.steps=10", "--resume"], env=SUBPROCESS_ENV, check=True)
    assert checkpoint.latest(root).step == 10
