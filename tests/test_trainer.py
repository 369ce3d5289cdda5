"""The Trainer: exact resume, NaN guard, atomic/verified checkpoints, phases, EMA, logs."""

from __future__ import annotations

import csv
import json
import shutil
from dataclasses import dataclass

import pytest
import torch
from conftest import tiny_data
from torch import Tensor, nn

from genlab.config import TrainConfig, resolve
from genlab.errors import GenlabError, TrainingDiverged
from genlab.models.base import GenerativeModel, Phase, adam
from genlab.train import Trainer, checkpoint, load_run, train
from genlab.train.trainer import BatchStream


def weights(model: nn.Module) -> dict[str, Tensor]:
    return {k: v.clone() for k, v in model.state_dict().items()}


def run_cfg(steps: int, **train_kw):
    over = [
        f"train.steps={steps}",
        "train.checkpoint_every=5",
        "train.sample_every=1000",
        "train.batch_size=16",
        "model.hidden=[16]",
        "model.latent_dim=2",
        "data.limit=200",
        "train.seed=3",
    ] + [f"train.{k}={v}" for k, v in train_kw.items()]
    return resolve("vae", "moons", None, over)


def test_resume_continues_exactly(tmp_path) -> None:
    train(run_cfg(20, ema=0.9), tmp_path / "full", progress=False)
    part = train(run_cfg(10, ema=0.9), tmp_path / "part", progress=False)
    assert part.step == 10
    resumed = train(run_cfg(20, ema=0.9), tmp_path / "part", resume=True, progress=False)
    assert resumed.step == 20
    a = load_run(tmp_path / "full", weights="model").model
    b = load_run(tmp_path / "part", weights="model").model
    for (k, va), (_, vb) in zip(a.state_dict().items(), b.state_dict().items()):
        assert torch.equal(va, vb), k
    ea, eb = load_run(tmp_path / "full").model, load_run(tmp_path / "part").model
    for (k, va), (_, vb) in zip(ea.state_dict().items(), eb.state_dict().items()):
        assert torch.equal(va, vb), f"EMA {k}"
    # the log has one row per logged step, none duplicated by the resume
    with open(tmp_path / "part" / "metrics.csv") as f:
        steps = [int(r["step"]) for r in csv.DictReader(f)]
    assert steps == sorted(set(steps)) and steps[-1] == 20


def saved_rates(run_dir) -> list[float]:
    state = checkpoint.load_trainer_state(checkpoint.latest(run_dir / "checkpoints"))
    return [g["lr"] for opt in state["optimizers"].values() for g in opt["param_groups"]]


def test_resume_with_another_lr_applies_it(tmp_path) -> None:
    # The optimiser state holds the rates of the saved run; an explicit train.lr on --resume
    # scales them by new / old (before, the override silently did nothing).
    lr = run_cfg(10).train.lr
    train(run_cfg(10), tmp_path / "r", progress=False)
    assert saved_rates(tmp_path / "r") == [lr]
    train(run_cfg(15, lr=lr / 4), tmp_path / "r", resume=True, progress=False)
    assert saved_rates(tmp_path / "r") == pytest.approx([lr / 4], rel=1e-12)
    train(run_cfg(20, lr=lr / 4), tmp_path / "r", resume=True, progress=False)  # unchanged
    assert saved_rates(tmp_path / "r") == pytest.approx([lr / 4], rel=1e-12)
    # a rate lowered by a rollback stays lowered relative to train.lr: it is scaled, not reset
    ckpt = checkpoint.latest(tmp_path / "r" / "checkpoints")
    state = checkpoint.load_trainer_state(ckpt)
    for opt in state["optimizers"].values():
        for group in opt["param_groups"]:
            group["lr"] *= 0.5
    torch.save(state, ckpt.path / "trainer.pt")
    manifest = json.loads((ckpt.path / "manifest.json").read_text())
    manifest["sha256"]["trainer.pt"] = checkpoint.sha256(ckpt.path / "trainer.pt")
    (ckpt.path / "manifest.json").write_text(json.dumps(manifest))
    train(run_cfg(25, lr=lr / 2), tmp_path / "r", resume=True, progress=False)
    assert saved_rates(tmp_path / "r") == pytest.approx([lr / 4], rel=1e-12)  # lr/8 x 2


def test_same_seed_same_weights_other_seed_differs(tmp_path) -> None:
    a = train(run_cfg(3), tmp_path / "a", progress=False).model
    b = train(run_cfg(3), tmp_path / "b", progress=False).model
    c = train(run_cfg(3, seed=4), tmp_path / "c", progress=False).model
    assert all(torch.equal(x, y) for x, y in zip(a.parameters(), b.parameters()))
    assert not all(torch.equal(x, y) for x, y in zip(a.parameters(), c.parameters()))


def test_existing_run_needs_resume(tmp_path) -> None:
    train(run_cfg(2), tmp_path / "r", progress=False)
    with pytest.raises(GenlabError, match="--resume"):
        train(run_cfg(2), tmp_path / "r", progress=False)
    with pytest.raises(GenlabError, match="cannot change model"):
        cfg = resolve("vae", "moons", None, ["model.latent_dim=3", "data.limit=200"])
        train(cfg, tmp_path / "r", resume=True, progress=False)


@dataclass
class BombConfig:
    explode_at: int = 7


class Bomb(GenerativeModel):
    """Fits a mean; its loss becomes NaN at a chosen step (for the divergence guard)."""

    config_class = BombConfig

    def __init__(self, cfg: BombConfig, spec) -> None:
        super().__init__(cfg, spec)
        self.mu = nn.Parameter(torch.zeros(spec.shape))

    def forward(self, batch, phase="main"):
        fit = ((batch["x"] - self.mu) ** 2).mean()
        bad = torch.tensor(float("nan")) if self.step >= self.cfg.explode_at else torch.tensor(0.0)
        return {"loss": fit + bad, "fit": fit, "bad": bad}

    def sample(self, n, *, generator=None, labels=None, sampler=None, **kw):
        return self.mu.detach().expand(n, *self.spec.shape).clone()


def test_nan_guard_stops_and_keeps_last_good_checkpoint(tmp_path) -> None:
    data = tiny_data("vector")
    cfg = TrainConfig(steps=20, batch_size=8, checkpoint_every=5, sample_every=100, log_every=1)
    trainer = Trainer(Bomb(BombConfig(), data.spec), data, cfg, tmp_path, progress=False)
    with pytest.raises(TrainingDiverged) as e:
        trainer.fit()
    msg = str(e.value)
    assert "step 8" in msg and "bad=nan" in msg and "step_000005" in msg
    last = checkpoint.latest(tmp_path / "checkpoints")
    assert last is not None and last.step == 5
    checkpoint.verify(last)
    state = checkpoint.load_trainer_state(last)
    assert state["step"] == 5


def test_corrupt_checkpoint_is_refused(tmp_path) -> None:
    run = train(run_cfg(5), tmp_path / "r", progress=False)
    ckpt = checkpoint.latest(run.dir / "checkpoints")
    f = ckpt.path / "model.safetensors"
    raw = bytearray(f.read_bytes())
    raw[-3] ^= 0xFF
    f.write_bytes(bytes(raw))
    with pytest.raises(GenlabError, match="corrupt"):
        load_run(run.dir)
    f.write_bytes(bytes(raw[: len(raw) // 2]))
    with pytest.raises(GenlabError, match="corrupt"):
        load_run(run.dir)


def test_shape_mismatch_names_both_shapes(tmp_path) -> None:
    data = tiny_data("vector")
    small = Bomb(BombConfig(), data.spec)
    ckpt = checkpoint.save(tmp_path, 1, small, {"step": 1})
    from genlab.data.spec import DataSpec

    big = Bomb(BombConfig(), DataSpec("x", (3,)))
    with pytest.raises(GenlabError, match=r"\(2,\).*\(3,\)"):
        checkpoint.load_weights(big, ckpt.path / "model.safetensors")


def test_killed_writer_leaves_previous_checkpoint(tmp_path) -> None:
    data = tiny_data("vector")
    model = Bomb(BombConfig(), data.spec)
    checkpoint.save(tmp_path, 1, model, {"step": 1})
    # a writer killed mid-save leaves only a temporary directory behind
    (tmp_path / ".tmp-step_000002-999").mkdir()
    (tmp_path / ".tmp-step_000002-999" / "model.safetensors").write_bytes(b"\x00" * 10)
    last = checkpoint.latest(tmp_path)
    assert last.step == 1
    checkpoint.verify(last)


class TwoPhase(GenerativeModel):
    """Two parameters, each fitted in its own phase; phase b runs twice per step."""

    config_class = BombConfig

    def __init__(self, cfg, spec) -> None:
        super().__init__(cfg, spec)
        self.a = nn.Parameter(torch.zeros(()))
        self.b = nn.Parameter(torch.zeros(()))
        self.calls: list[str] = []

    def phases(self, lr):
        return [Phase("a", [self.a], adam(lr)), Phase("b", [self.b], adam(lr), repeat=2)]

    def forward(self, batch, phase="main"):
        p = self.a if phase == "a" else self.b
        return {"loss": ((batch["x"] - p) ** 2).mean()}

    def after_step(self, phase: str) -> None:
        self.calls.append(phase)

    def sample(self, n, *, generator=None, labels=None, sampler=None, **kw):
        return torch.zeros(n, *self.spec.shape)


def test_phases_run_in_order_with_repeats(tmp_path) -> None:
    data = tiny_data("vector")
    model = TwoPhase(BombConfig(), data.spec)
    cfg = TrainConfig(steps=3, batch_size=8, checkpoint_every=100, sample_every=100, log_every=1)
    Trainer(model, data, cfg, tmp_path, progress=False).fit()
    assert model.calls == ["a", "b", "b"] * 3
    with open(tmp_path / "metrics.csv") as f:
        header = next(csv.reader(f))
    assert header == ["step", "a/loss", "b/loss"]


def test_batch_stream_covers_epoch_and_shards() -> None:
    one = BatchStream(10, 4, seed=1)
    seen = torch.cat([*one.next(), *one.next()])
    assert len(set(seen.tolist())) == 8  # no repeats within an epoch; the last 2 are dropped
    epochs = [BatchStream(10, 4, 1, epoch=e).next()[0] for e in range(3)]
    assert not torch.equal(epochs[0], epochs[1]) and not torch.equal(epochs[1], epochs[2])
    # 2 processes x 2 micro-batches: shard s = rank * 2 + m holds the s-th quarter of each
    # global batch, on any layout with 4 shards
    whole = BatchStream(10, 8, 1)
    ranks = [BatchStream(10, 8, 1, rank=r, world=2, accum=2) for r in (0, 1)]
    accum4 = BatchStream(10, 8, 1, accum=4)
    for _ in range(5):
        global_batch = whole.next()[0]
        shards = [s for r in ranks for s in r.next()]
        assert [len(s) for s in shards] == [2, 2, 2, 2]
        assert torch.equal(torch.cat(shards), global_batch)
        assert all(torch.equal(a, b) for a, b in zip(shards, accum4.next()))
    with pytest.raises(GenlabError, match="divisible"):
        BatchStream(10, 5, 1, world=2)
    with pytest.raises(GenlabError, match="grad_accum=3"):
        BatchStream(10, 8, 1, accum=3)


def test_ema_warm_up_forgets_the_initial_weights() -> None:
    """After the weights jump from 0 to 1, the average is 1 - prod_k d_k with
    d_k = min(decay, (1 + k) / (10 + k)): far closer to 1 than 1 - decay^n without warm-up."""
    from genlab.train.ema import EMA

    model = nn.Linear(1, 1, bias=False).double()
    nn.init.zeros_(model.weight)
    ema = EMA(model, decay=0.999)
    with torch.no_grad():
        model.weight.fill_(1.0)
    n = 2000
    for k in range(1, n + 1):
        ema.update(model, k)
    left = 1.0
    for k in range(1, n + 1):
        left *= min(0.999, (1 + k) / (10 + k))
    assert ema.model.weight.item() == pytest.approx(1.0 - left, rel=1e-12)
    assert left < 0.1 * 0.999**n  # the initial weights' share: 13.5% without warm-up
    assert ema.decay_at(1) == pytest.approx(2 / 11) and ema.decay_at(10**6) == 0.999


def test_resume_between_log_rows_logs_the_same_means(tmp_path) -> None:
    """A run killed at step 7 (newest checkpoint 5, rows up to 6 written) resumes and logs the
    row of step 8 as the mean over steps 7-8 and the row of step 6 as the mean over 5-6: the
    running sums of the next row travel in the checkpoint."""
    cfg = run_cfg(10, log_every=2, keep_checkpoints=0)
    full, part = tmp_path / "full", tmp_path / "part"
    train(cfg, full, progress=False)
    (part / "checkpoints").mkdir(parents=True)
    for name in ("config.yaml", "spec.json", "metrics.csv"):
        shutil.copy(full / name, part / name)
    shutil.copytree(full / "checkpoints/step_000005", part / "checkpoints/step_000005")
    (part / "checkpoints/latest").write_text("step_000005\n")
    train(cfg, part, resume=True, progress=False)
    rows = [(full / "metrics.csv").read_text(), (part / "metrics.csv").read_text()]
    assert rows[0] == rows[1]
