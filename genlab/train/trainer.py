"""The one Trainer: phases, EMA, clipping, logs, grids, atomic checkpoints, exact resume, DDP.

It knows nothing of any model beyond the protocol of genlab.models.base: `phases(lr)` gives each
phase's parameters and optimiser, `forward(batch, phase)` gives its loss dict, `after_step(phase)`
is called after each optimiser step, and `sample(n)` draws the grids.

Shards. Every global batch (`train.batch_size`) is cut into W x A shards, W processes times
`train.grad_accum` micro-batches; process r runs shards r*A .. r*A+A-1 and each shard's forward
draws from its own torch RNG stream (seeded train.seed + shard, saved in every checkpoint). So the
noise a model draws (VAE eps, diffusion t, GAN z) belongs to the examples, not to the process:
2 processes and 1 process with grad_accum=2 train the same weights, and a run resumes exactly on
another number of processes when W x A stays the same.
"""

from __future__ import annotations

import logging
import math
import random
import signal
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext
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
from genlab.errors import GenlabError, TrainingDiverged, TrainingStopped, first_line
from genlab.metrics.evaluate import evaluate
from genlab.models.base import FitsData, GenerativeModel
from genlab.nn.sync import micro_batch
from genlab.train import checkpoint, distributed
from genlab.train.ema import EMA
from genlab.train.logger import Logger
from genlab.viz.grids import save_samples

log = logging.getLogger(__name__)


@dataclass
class BatchStream:
    """Deterministic minibatches: epoch e is a permutation seeded by (seed, e); no RNG state.

    `batch_size` is the global batch, cut into world x accum shards (module doc). Rank r takes
    its `accum` consecutive shards of every global batch, so N processes see exactly the
    examples one process would (the DistributedSampler contract, with exact mid-epoch resume).
    """

    n: int
    batch_size: int
    seed: int
    rank: int = 0
    world: int = 1
    accum: int = 1
    epoch: int = 0
    pos: int = 0
    perm: Tensor = field(init=False, repr=False)

    def __post_init__(self) -> None:
        shards = self.world * self.accum
        if self.batch_size % shards:
            raise GenlabError(
                f"train.batch_size={self.batch_size} must be divisible by {shards} shards "
                f"({self.world} processes x train.grad_accum={self.accum})"
            )
        if self.n < shards:
            raise GenlabError(f"{self.n} training examples cannot fill {shards} shards")
        self.batch_size = min(self.batch_size, self.n - self.n % shards)
        self.perm = self.permutation(self.epoch)

    def permutation(self, epoch: int) -> Tensor:
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
        return torch.randperm(self.n, generator=g)

    def next(self) -> list[Tensor]:
        """This process's shards of the next global batch: `accum` index tensors."""
        if self.pos + self.batch_size > self.n:  # drop the last partial batch
            self.epoch, self.pos = self.epoch + 1, 0
            self.perm = self.permutation(self.epoch)
        rows = self.perm[self.pos : self.pos + self.batch_size]
        self.pos += self.batch_size
        local = self.batch_size // self.world
        return list(rows[self.rank * local : (self.rank + 1) * local].chunk(self.accum))

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


HOOK_STREAM = 2**40  # seed offset of the after_step stream, far from any shard's


@contextmanager
def rng_stream(streams: list[dict[str, Any]], i: int) -> Iterator[None]:
    """torch's global RNG is streams[i] inside the block, which then holds where it got to."""
    set_rng_state(streams[i])
    try:
        yield
    finally:
        streams[i] = rng_state()


def seeded_rng_state(seed: int) -> dict[str, Any]:
    """The RNG state torch.manual_seed(seed) gives, without touching the current one."""
    with torch.random.fork_rng(devices=range(torch.cuda.device_count())):
        torch.manual_seed(seed)
        return rng_state()


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


class StopSignals:
    """SIGTERM / SIGINT while training: note it, so the Trainer ends the step, saves and stops.

    The handlers are restored by the first signal, so a second one acts at once as usual."""

    SIGNALS = (signal.SIGTERM, signal.SIGINT)

    def __init__(self) -> None:
        self.received: signal.Signals | None = None
        self.previous: dict[signal.Signals, Any] = {}

    def __enter__(self) -> StopSignals:
        if threading.current_thread() is threading.main_thread():  # signal() works there only
            self.previous = {sig: signal.signal(sig, self.handle) for sig in self.SIGNALS}
        return self

    def handle(self, signum: int, frame: Any) -> None:
        self.received = signal.Signals(signum)
        self.restore()

    def restore(self) -> None:
        for sig, handler in self.previous.items():
            signal.signal(sig, handler)
        self.previous = {}

    def __exit__(self, *exc: object) -> None:
        self.restore()


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
        if cfg.compile:
            # one batch shape per run: static shapes (a symbolic batch size breaks
            # torch.randn(shape, generator=...) in the samplers)
            self.net = torch.compile(self.net, dynamic=False)
        self.batches = BatchStream(
            len(data), cfg.batch_size, cfg.seed, self.dist.rank, self.dist.world, cfg.grad_accum
        )
        # this process's shards and their RNG streams (module doc)
        self.shards = [self.dist.rank * cfg.grad_accum + m for m in range(cfg.grad_accum)]
        self.shard_rng = [seeded_rng_state(cfg.seed + s) for s in self.shards]
        # after_step hooks that draw (codebook restarts) share one stream on every process, so
        # their draws do not depend on how the batch is split
        self.hook_rng = [seeded_rng_state(cfg.seed + HOOK_STREAM)]
        self.step = 0
        # steps since the last metrics.csv row (their loss sums): saved with each checkpoint so
        # that a resumed run logs the same averages as one never interrupted
        self.log_sums: dict[str, float] = {}
        self.log_count = 0
        self.rollbacks = 0
        self.progress = progress
        self.ckpt_root = self.run_dir / "checkpoints"
        self.last_checkpoint: checkpoint.Checkpoint | None = None
        # fp16 needs loss scaling on any device (its gradients underflow); bf16 has fp32's range
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=cfg.precision == "fp16")
        if resume:
            ckpt = checkpoint.latest(self.ckpt_root)
            if ckpt is None:
                log.info("no checkpoint in %s; starting from step 0", self.ckpt_root)
            else:
                self.restore(ckpt)
        self.logger: Logger | None = None
        self.eval_logger: Logger | None = None
        self.open_loggers()
        self.sample_dir = self.run_dir / "samples"
        if self.dist.main:
            self.sample_dir.mkdir(parents=True, exist_ok=True)

    def open_loggers(self) -> None:
        """metrics.csv / eval.csv and TensorBoard from self.step on (later rows are dropped)."""
        self.close_loggers()
        if self.dist.main:
            self.logger = Logger(self.run_dir, self.step)
            if self.cfg.eval_every:
                self.eval_logger = Logger(
                    self.run_dir, self.step, tensorboard=False, name="eval.csv"
                )

    def close_loggers(self) -> None:
        for logger in (self.logger, self.eval_logger):
            if logger:
                logger.close()
        self.logger = self.eval_logger = None

    # ----------------------------------------------------------------------------------- state
    def trainer_state(self) -> dict[str, Any]:
        per_rank = distributed.gather_objects(self.shard_rng)  # collective: every rank calls it
        return {
            "step": self.step,
            "train_lr": self.cfg.lr,  # the train.lr the optimisers' rates derive from
            "optimizers": {k: o.state_dict() for k, o in self.optimizers.items()},
            "scaler": self.scaler.state_dict(),
            "batches": self.batches.state(),
            "rng": [state for rank in per_rank for state in rank],  # one entry per shard
            "hook_rng": self.hook_rng,
            "log_window": {"sums": dict(self.log_sums), "count": self.log_count},
        }

    def restore(self, ckpt: checkpoint.Checkpoint) -> None:
        """Continue exactly from `ckpt`: weights, EMA, optimisers, data position, RNG streams."""
        digests = checkpoint.verify(ckpt)
        checkpoint.load_weights(self.model, ckpt.path / "model.safetensors")
        if self.ema is not None:
            source = "ema.safetensors" if "ema.safetensors" in digests else "model.safetensors"
            checkpoint.load_weights(self.ema.model, ckpt.path / source)
        state = checkpoint.load_trainer_state(ckpt)
        try:
            self.apply_state(state)
            with torch.random.fork_rng(devices=[]):  # a bad RNG entry fails now, not mid-run
                for rng in [*self.shard_rng, *self.hook_rng]:
                    set_rng_state(rng)
        except (KeyError, TypeError, ValueError, IndexError, AttributeError, RuntimeError) as e:
            first = first_line(e, 200)
            raise GenlabError(
                f"{ckpt.path / 'trainer.pt'} is not a genlab trainer state "
                f"({type(e).__name__}: {first})"
            ) from None
        self.last_checkpoint = ckpt
        log.info("resumed from %s (step %d)", ckpt.path, self.step)

    def apply_state(self, state: dict[str, Any]) -> None:
        """Optimisers, step, data position and RNG streams from a loaded trainer.pt."""
        for name, opt in self.optimizers.items():
            if name in state["optimizers"]:
                opt.load_state_dict(state["optimizers"][name])
        saved_lr = state.get("train_lr")  # older checkpoints: none, their rates are kept
        if saved_lr is not None and float(saved_lr) != self.cfg.lr:
            # train.lr changed on --resume: the optimiser state brought the old rates back, so
            # scale them (which keeps rollback cuts and the ratio between a model's phases)
            scale = self.cfg.lr / float(saved_lr)
            self.scale_learning_rates(scale)
            log.info("train.lr %g -> %g: learning rates scaled x%g", saved_lr, self.cfg.lr, scale)
        if state["scaler"]:  # empty from a disabled scaler (fp16 on CPU before it was enabled)
            self.scaler.load_state_dict(state["scaler"])
        self.step = int(state["step"])
        self.batches.epoch = int(state["batches"]["epoch"])
        self.batches.pos = int(state["batches"]["pos"])
        self.batches.perm = self.batches.permutation(self.batches.epoch)
        saved = state["rng"]
        if len(saved) == self.dist.world * self.cfg.grad_accum:
            self.shard_rng = [saved[s] for s in self.shards]
        else:  # another shard count: the data order continues, the noise streams start afresh
            log.warning(
                "checkpoint has %d RNG streams, this run %d shards: new noise streams from "
                "step %d (the same processes x train.grad_accum resumes exactly)",
                len(saved),
                self.dist.world * self.cfg.grad_accum,
                self.step,
            )
            self.shard_rng = [
                seeded_rng_state(self.cfg.seed + s + 7919 * self.step) for s in self.shards
            ]
        self.hook_rng = state.get("hook_rng", self.hook_rng)  # older checkpoints: none
        window = state.get("log_window", {"sums": {}, "count": 0})  # older checkpoints: none
        self.log_sums, self.log_count = dict(window["sums"]), int(window["count"])

    def kept(self) -> str:
        """What a stop leaves: the last checkpoint, named."""
        if self.last_checkpoint is None:
            return "no checkpoint was written yet"
        ckpt = self.last_checkpoint
        return f"the last checkpoint {ckpt.path} (step {ckpt.step}) is intact"

    def write_on_rank0(self, what: str, write: Callable[[], None]) -> None:
        """Rank 0 runs `write`; if it fails (full disk, no permission) every rank stops, and the
        message names the last checkpoint, which the atomic writes left intact."""
        kept = self.kept()
        failure = ""
        if self.dist.main:
            try:
                write()
            except OSError as e:
                failure = f"{e.strerror or e}" + (f": {e.filename}" if e.filename else "")
        if not distributed.all_true(not failure, self.device):
            raise GenlabError(
                f"could not write {what} ({failure or 'on rank 0'}); {kept}; free space or fix "
                "permissions, then continue with --resume"
            )

    def save_checkpoint(self) -> None:
        state = self.trainer_state()  # collective (gathers the RNG streams): every rank calls it

        def write() -> None:
            self.last_checkpoint = checkpoint.save(
                self.ckpt_root,
                self.step,
                self.model,
                state,
                ema=self.ema.model if self.ema else None,
                keep=self.cfg.keep_checkpoints,
            )

        self.write_on_rank0(f"the checkpoint of step {self.step} in {self.ckpt_root}", write)

    # -------------------------------------------------------------------------------- training
    def autocast(self) -> Any:
        if self.cfg.precision == "fp32":
            return nullcontext()
        dtype = torch.bfloat16 if self.cfg.precision == "bf16" else torch.float16
        return torch.autocast(self.device.type, dtype=dtype)

    def load(self, rows: Tensor) -> dict[str, Tensor]:
        batch = self.data.batch(rows)
        return {k: v.to(self.device, non_blocking=True) for k, v in batch.items()}

    def reduce_parts(self, phase: str, parts: dict[str, Tensor]) -> dict[str, float]:
        """Loss parts averaged over all processes; TrainingDiverged when any is NaN/inf."""
        values = torch.stack([v.detach().float().reshape(()) for v in parts.values()])
        values = distributed.mean(values)
        if bool(torch.isfinite(values).all()):
            return dict(zip(parts, values.tolist()))
        bad = [f"{k}={v.item():.4g}" for k, v in zip(parts, values) if not math.isfinite(v)]
        raise TrainingDiverged(
            f"training diverged at step {self.step + 1}, phase {phase!r}: {', '.join(bad)}; "
            f"stopped without saving; {self.kept()}"
        )

    def train_phase(self, phase_index: int) -> dict[str, float]:
        """One phase, `repeat` optimiser steps, each on a fresh global batch of A micro-batches."""
        phase = self.phases[phase_index]
        opt = self.optimizers[phase.name]
        accum = self.cfg.grad_accum
        out: dict[str, float] = {}
        for _ in range(phase.repeat):
            opt.zero_grad(set_to_none=True)
            sums: dict[str, float] = {}
            for m, rows in enumerate(self.batches.next()):
                # gradients are all-reduced once, at the last micro-batch
                last = m == accum - 1
                defer_sync = self.net.no_sync if self.dist.enabled and not last else nullcontext
                with rng_stream(self.shard_rng, m), defer_sync(), micro_batch(m):
                    batch = self.load(rows)
                    with self.autocast():
                        parts = self.net(batch, phase=phase.name)
                    values = self.reduce_parts(phase.name, parts)
                    self.scaler.scale(parts["loss"] / accum).backward()
                for k, v in values.items():
                    sums[k] = sums.get(k, 0.0) + v / accum
            if self.cfg.grad_clip > 0:
                self.scaler.unscale_(opt)
                torch.nn.utils.clip_grad_norm_(phase.params, self.cfg.grad_clip)
            self.scaler.step(opt)
            self.scaler.update()
            with rng_stream(self.hook_rng, 0):
                self.model.after_step(phase.name)
            out = sums
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

    def scale_learning_rates(self, factor: float) -> None:
        for opt in self.optimizers.values():
            for group in opt.param_groups:
                group["lr"] *= factor

    def roll_back(self, error: TrainingDiverged) -> bool:
        """train.on_divergence=rollback: reload the last good checkpoint and lower the learning
        rate; False when that is not allowed (then the caller stops)."""
        cfg = self.cfg
        ckpt = self.last_checkpoint
        if cfg.on_divergence != "rollback" or ckpt is None or self.rollbacks >= cfg.max_rollbacks:
            return False
        self.rollbacks += 1
        self.restore(ckpt)
        self.scale_learning_rates(cfg.rollback_lr_factor)
        self.open_loggers()  # rows after the checkpoint's step are dropped
        log.warning(
            "%s; rolled back to step %d with the learning rate x%g (rollback %d of %d)",
            str(error).split("; stopped")[0],
            ckpt.step,
            cfg.rollback_lr_factor,
            self.rollbacks,
            cfg.max_rollbacks,
        )
        return True

    def train_step(self) -> dict[str, float]:
        """Every phase once (each `repeat` times), then EMA; advances self.step."""
        self.model.step = self.step
        values: dict[str, float] = {}
        for i in range(len(self.phases)):
            values.update(self.train_phase(i))
        if self.ema is not None:
            self.ema.update(self.model, self.step + 1)
        self.step += 1
        self.model.step = self.step
        return values

    def fit(self) -> dict[str, float]:
        """Train until cfg.steps; returns the last logged values. SIGTERM or SIGINT ends the
        step, saves a checkpoint and raises TrainingStopped (continue with --resume)."""
        cfg = self.cfg
        fitted = self.fit_data()
        if not self.phases:  # fitted by fit_data alone: record it as the whole run
            return self.finish_fitted(fitted)
        self.model.train()
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
            with StopSignals() as signals:
                while self.step < cfg.steps:
                    try:
                        values = self.train_step()
                    except TrainingDiverged as e:
                        if not self.roll_back(e):
                            raise
                        bar.reset(total=cfg.steps)
                        bar.update(self.step)
                        continue
                    for k, v in values.items():
                        self.log_sums[k] = self.log_sums.get(k, 0.0) + v
                    self.log_count += 1
                    bar.update(1)
                    if self.step % cfg.log_every == 0 or self.step == cfg.steps:
                        last = {k: v / self.log_count for k, v in self.log_sums.items()}
                        if self.logger:
                            self.logger.log(self.step, last)
                        bar.set_postfix({k: f"{v:.4g}" for k, v in list(last.items())[:3]})
                        self.log_sums, self.log_count = {}, 0
                    if self.step % cfg.sample_every == 0 or self.step == cfg.steps:
                        self.save_sample_grid()
                    if cfg.eval_every and (
                        self.step % cfg.eval_every == 0 or self.step == cfg.steps
                    ):
                        self.evaluate()
                    saved = self.step % cfg.checkpoint_every == 0 or self.step == cfg.steps
                    if saved:
                        self.save_checkpoint()
                    if distributed.any_true(signals.received is not None, self.device):
                        self.stop(signals.received, saved)
        finally:
            bar.close()
            self.close_loggers()
        return last

    def stop(self, received: signal.Signals | None, saved: bool) -> None:
        """After a stop signal (on any process): checkpoint this step, then TrainingStopped."""
        if not saved:
            self.save_checkpoint()
        name = received.name if received is not None else "a signal on another process"
        where = self.last_checkpoint.path if self.dist.main else f"{self.ckpt_root} (rank 0's)"
        raise TrainingStopped(
            f"{name} at step {self.step}; checkpoint {where} saved; continue with --resume",
            received or signal.SIGTERM,
        )

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
            self.close_loggers()
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
        path = self.sample_dir / f"step_{self.step:06d}.png"

        def write() -> None:
            model = self.sampling_model
            was_training = model.training
            model.eval()
            g = torch.Generator(self.device).manual_seed(self.cfg.seed)
            x = model.sample(self.cfg.num_samples if model.spec.is_image else 1000, generator=g)
            model.train(was_training)
            reference = self.data.x_test[:2000] if not model.spec.is_image else None
            save_samples(x, model.spec, path, reference, title=f"step {self.step}")

        self.write_on_rank0(f"the sample grid {path}", write)
