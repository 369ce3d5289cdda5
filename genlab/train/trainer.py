"""The one Trainer: phases, EMA, clipping, logs, grids, atomic checkpoints, exact resume, DDP.

It knows nothing of any model beyond the protocol of genlab.models.base: `phases(lr)` gives each
phase's parameters and optimiser, `forward(batch, phase)` gives its loss dict, `after_step(phase)`
is called after each optimiser step, and `sample(n)` draws the grids.
"""

from __future__ import annotations

import logging
import math
import random
import sys
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor
from torch.nn.parallel import DistributedDataParallel
from tqdm import tqdm

from genlab.config import TrainConfig
from genlab.data.spec import Data
from genlab.errors import GenlabError, TrainingDiverged
from genlab.metrics.evaluate import evaluate
from genlab.models.base import FitsData, GenerativeModel
from genlab.train import checkpoint, distributed
from genlab.train.ema import EMA
from genlab.train.logger import Logger
from genlab.viz.grids import save_samples

log = logging.getLogger(__name__)


@dataclass
class BatchStream:
    """Deterministic minibatches: epoch e is a permutation seeded by (seed, e); no RNG state.

    `batch_size` is the global batch. Under DDP, rank r takes its slice of every global batch, so
    N processes see exactly the examples one process would.
    """

    n: int
    batch_size: int
    seed: int
    rank: int = 0
    world: int = 1
    epoch: int = 0
    pos: int = 0
    perm: Tensor = field(init=False, repr=False)

    def __post_init__(self) -> None:
        if self.batch_size % self.world:
            raise GenlabError(
                f"train.batch_size={self.batch_size} must be divisible by the "
                f"{self.world} processes"
            )
        self.batch_size = min(self.batch_size, self.n - self.n % self.world)
        self.perm = self.permutation(self.epoch)

    def permutation(self, epoch: int) -> Tensor:
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
        return torch.randperm(self.n, generator=g)

    def next(self) -> Tensor:
        if self.pos + self.batch_size > self.n:  # drop the last partial batch
            self.epoch, self.pos = self.epoch + 1, 0
            self.perm = self.permutation(self.epoch)
        rows = self.perm[self.pos : self.pos + self.batch_size]
        self.pos += self.batch_size
        local = self.batch_size // self.world
        return rows[self.rank * local : (self.rank + 1) * local]

    def state(self) -> dict[str, int]:
        return {"epoch": self.epoch, "pos": self.pos}


def rng_state() -> dict[str, Any]:
    state: dict[str, Any] = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def seed_everything(seed: int) -> None:
    """The only place genlab seeds global RNGs (Python, NumPy, torch)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def fit_to_training_split(model: FitsData, data: Data, seed: int) -> dict[str, float]:
    """model.fit_data on the whole training split, transformed as training batches are
    (binarised / dequantised) once, with a generator seeded by `seed`: every process fits the
    same data. Runs on the model's device."""
    g = torch.Generator().manual_seed(seed)
    x = data.transform(data.x_train, g).to(model.device)
    y = None if data.y_train is None else data.y_train.to(model.device)
    return model.fit_data(x, y)


class Trainer:
    """Train `model` on `data` with `cfg`, writing logs, grids and checkpoints under `run_dir`."""

    def __init__(
        self,
        model: GenerativeModel,
        data: Data,
        cfg: TrainConfig,
        run_dir: str | Path,
        *,
        resume: bool = False,
        progress: bool = True,
        fitted: dict[str, float] | None = None,
    ) -> None:
        """`fitted`: what fit_to_training_split returned, when the caller already fitted `model`
        (genlab.train.run does, before writing the run, so a fit that fails writes nothing)."""
        self.cfg = cfg
        self.fitted = fitted
        self.data = data
        self.run_dir = Path(run_dir)
        self.device = distributed.resolve_device(cfg.device)
        self.dist = distributed.setup(self.device)
        if self.dist.enabled and self.device.type == "cuda":
            self.device = torch.device(f"cuda:{self.dist.local_rank}")
            torch.cuda.set_device(self.device)
        seed_everything(cfg.seed + self.dist.rank)
        self.model = model.to(self.device)
        self.phases = model.phases(cfg.lr)
        self.optimizers = {p.name: p.optimizer(p.params) for p in self.phases}
        self.ema = EMA(model, cfg.ema) if cfg.ema > 0 else None
        self.net: torch.nn.Module = model
        # A model fitted by fit_data alone (no phases) has no gradients to synchronise, and DDP
        # refuses a module without trainable parameters: every rank fits the same data instead.
        if self.dist.enabled and self.phases:
            # Multi-phase models leave the other phase's parameters without gradients.
            self.net = DistributedDataParallel(model, find_unused_parameters=len(self.phases) > 1)
        self.batches = BatchStream(
            len(data), cfg.batch_size, cfg.seed, self.dist.rank, self.dist.world
        )
        self.step = 0
        self.progress = progress
        self.ckpt_root = self.run_dir / "checkpoints"
        self.last_checkpoint: checkpoint.Checkpoint | None = None
        self.scaler = torch.amp.GradScaler(
            self.device.type, enabled=cfg.precision == "fp16" and self.device.type == "cuda"
        )
        if resume:
            self.restore()
        self.logger = Logger(self.run_dir, self.step) if self.dist.main else None
        self.eval_logger = (
            Logger(self.run_dir, self.step, tensorboard=False, name="eval.csv")
            if self.dist.main and cfg.eval_every
            else None
        )
        self.sample_dir = self.run_dir / "samples"
        if self.dist.main:
            self.sample_dir.mkdir(parents=True, exist_ok=True)

    # ----------------------------------------------------------------------------------- state
    def trainer_state(self) -> dict[str, Any]:
        return {
            "step": self.step,
            "optimizers": {k: o.state_dict() for k, o in self.optimizers.items()},
            "scaler": self.scaler.state_dict(),
            "batches": self.batches.state(),
            "rng": distributed.gather_objects(rng_state()),  # one entry per rank
        }

    def restore(self) -> None:
        """Continue exactly from the latest checkpoint: weights, EMA, optimisers, data, RNG."""
        ckpt = checkpoint.latest(self.ckpt_root)
        if ckpt is None:
            log.info("no checkpoint in %s; starting from step 0", self.ckpt_root)
            return
        digests = checkpoint.verify(ckpt)
        checkpoint.load_weights(self.model, ckpt.path / "model.safetensors")
        if self.ema is not None:
            source = "ema.safetensors" if "ema.safetensors" in digests else "model.safetensors"
            checkpoint.load_weights(self.ema.model, ckpt.path / source)
        state = checkpoint.load_trainer_state(ckpt)
        for name, opt in self.optimizers.items():
            if name in state["optimizers"]:
                opt.load_state_dict(state["optimizers"][name])
        self.scaler.load_state_dict(state["scaler"])
        self.step = int(state["step"])
        self.batches.epoch = int(state["batches"]["epoch"])
        self.batches.pos = int(state["batches"]["pos"])
        self.batches.perm = self.batches.permutation(self.batches.epoch)
        states = state["rng"]
        if self.dist.rank < len(states):
            set_rng_state(states[self.dist.rank])
        else:  # more processes than when saved: fresh, distinct streams for the new ranks
            torch.manual_seed(self.cfg.seed + self.dist.rank + 7919 * self.step)
        self.last_checkpoint = ckpt
        log.info("resumed from %s (step %d)", ckpt.path, self.step)

    def save_checkpoint(self) -> None:
        state = self.trainer_state()  # collective (gathers RNG states): every rank calls it
        if self.dist.main:
            self.last_checkpoint = checkpoint.save(
                self.ckpt_root,
                self.step,
                self.model,
                state,
                ema=self.ema.model if self.ema else None,
                keep=self.cfg.keep_checkpoints,
            )
        distributed.barrier()

    # -------------------------------------------------------------------------------- training
    def autocast(self) -> Any:
        if self.cfg.precision == "fp32":
            return nullcontext()
        dtype = torch.bfloat16 if self.cfg.precision == "bf16" else torch.float16
        return torch.autocast(self.device.type, dtype=dtype)

    def next_batch(self) -> dict[str, Tensor]:
        batch = self.data.batch(self.batches.next())
        return {k: v.to(self.device, non_blocking=True) for k, v in batch.items()}

    def check_finite(self, phase: str, parts: dict[str, Tensor]) -> None:
        values = torch.stack([v.detach().float().reshape(()) for v in parts.values()])
        ok = bool(torch.isfinite(values).all())
        if distributed.all_true(ok, self.device):
            return
        bad = [f"{k}={v.item():.4g}" for k, v in zip(parts, values) if not math.isfinite(v)]
        kept = (
            f"last good checkpoint {self.last_checkpoint.path} (step {self.last_checkpoint.step})"
            if self.last_checkpoint
            else "no checkpoint was written yet"
        )
        where = ", ".join(bad) if bad else "on another process"
        raise TrainingDiverged(
            f"training diverged at step {self.step + 1}, phase {phase!r}: {where}; "
            f"stopped without saving; {kept}"
        )

    def train_phase(self, phase_index: int) -> dict[str, float]:
        phase = self.phases[phase_index]
        opt = self.optimizers[phase.name]
        out: dict[str, float] = {}
        for _ in range(phase.repeat):
            batch = self.next_batch()
            with self.autocast():
                parts = self.net(batch, phase=phase.name)
            self.check_finite(phase.name, parts)
            opt.zero_grad(set_to_none=True)
            self.scaler.scale(parts["loss"]).backward()
            if self.cfg.grad_clip > 0:
                self.scaler.unscale_(opt)
                torch.nn.utils.clip_grad_norm_(phase.params, self.cfg.grad_clip)
            self.scaler.step(opt)
            self.scaler.update()
            self.model.after_step(phase.name)
            out = {k: float(v.detach()) for k, v in parts.items()}
        prefix = "" if len(self.phases) == 1 else f"{phase.name}/"
        return {prefix + k: v for k, v in out.items()}

    def fit_data(self) -> dict[str, float]:
        """FitsData models: one fit to the whole training split at the start of a new run
        (done already, before the run's files were written, when `fitted` was given)."""
        if self.step > 0 or not isinstance(self.model, FitsData):
            return {}
        values = self.fitted
        if values is None:
            values = fit_to_training_split(self.model, self.data, self.cfg.seed)
            if self.ema is not None:  # average from the fitted state, not the initial one
                self.ema = EMA(self.model, self.cfg.ema)
        log.info("fitted to %d training examples: %s", len(self.data), values)
        if self.logger:
            self.logger.scalars(0, values, prefix="fit/")
        return values

    def fit(self) -> dict[str, float]:
        """Train until cfg.steps; returns the last logged values."""
        cfg = self.cfg
        fitted = self.fit_data()
        if not self.phases:  # fitted by fit_data alone: record it as the whole run
            return self.finish_fitted(fitted)
        self.model.train()
        sums: dict[str, float] = {}
        count = 0
        last: dict[str, float] = {}
        bar = tqdm(
            total=cfg.steps,
            initial=self.step,
            # a bar on a terminal only, never in logs and pipes
            disable=not (self.progress and self.dist.main and sys.stderr.isatty()),
            dynamic_ncols=True,
            leave=False,
        )
        try:
            while self.step < cfg.steps:
                self.model.step = self.step
                values: dict[str, float] = {}
                for i in range(len(self.phases)):
                    values.update(self.train_phase(i))
                if self.ema is not None:
                    self.ema.update(self.model, self.step + 1)
                self.step += 1
                self.model.step = self.step
                for k, v in values.items():
                    sums[k] = sums.get(k, 0.0) + v
                count += 1
                bar.update(1)
                if self.step % cfg.log_every == 0 or self.step == cfg.steps:
                    last = {k: v / count for k, v in sums.items()}
                    if self.logger:
                        self.logger.log(self.step, last)
                    bar.set_postfix({k: f"{v:.4g}" for k, v in list(last.items())[:3]})
                    sums, count = {}, 0
                if self.step % cfg.sample_every == 0 or self.step == cfg.steps:
                    self.save_sample_grid()
                if cfg.eval_every and (self.step % cfg.eval_every == 0 or self.step == cfg.steps):
                    self.evaluate()
                if self.step % cfg.checkpoint_every == 0 or self.step == cfg.steps:
                    self.save_checkpoint()
        finally:
            bar.close()
            for logger in (self.logger, self.eval_logger):
                if logger:
                    logger.close()
        return last

    def finish_fitted(self, fitted: dict[str, float]) -> dict[str, float]:
        """A model without gradient phases: its fit is the run, logged and saved at cfg.steps."""
        if self.step >= self.cfg.steps:  # resumed a finished run: nothing to do
            return {}
        self.step = self.model.step = self.cfg.steps
        try:
            if self.logger:
                self.logger.log(self.step, fitted)
            self.save_sample_grid()
            if self.cfg.eval_every:
                self.evaluate()
            self.save_checkpoint()
        finally:
            for logger in (self.logger, self.eval_logger):
                if logger:
                    logger.close()
        return fitted

    @property
    def sampling_model(self) -> GenerativeModel:
        return self.ema.model if self.ema is not None else self.model

    def evaluate(self) -> None:
        """Held-out metrics of the sampling model into eval.csv and TensorBoard (rank 0 only)."""
        if self.dist.main:
            cfg = self.cfg
            metrics = cfg.eval_metrics or None
            report = evaluate(self.sampling_model, self.data, metrics, n=cfg.eval_n, seed=cfg.seed)
            assert self.eval_logger is not None and self.logger is not None
            self.eval_logger.log(self.step, report.values)
            self.logger.scalars(self.step, report.values, prefix="eval/")
        distributed.barrier()

    def save_sample_grid(self) -> None:
        """Samples with a fixed generator (the same noise at every step; global RNG untouched)."""
        if not self.dist.main:
            return
        model = self.sampling_model
        was_training = model.training
        model.eval()
        g = torch.Generator(self.device).manual_seed(self.cfg.seed)
        x = model.sample(self.cfg.num_samples if model.spec.is_image else 1000, generator=g)
        model.train(was_training)
        reference = self.data.x_test[:2000] if not model.spec.is_image else None
        save_samples(
            x,
            model.spec,
            self.sample_dir / f"step_{self.step:06d}.png",
            reference,
            title=f"step {self.step}",
        )
