"""Playground runs: one genlab model + the one Trainer per run, stepped by one worker thread.

Every run is built by the function `genlab train` uses (genlab.train.run.prepare_model: seeded
with train.seed, built, optimiser settings checked, fitted models fitted) and trained by
genlab.train.trainer.Trainer.train_step() in a temporary run directory.

Threads. torch's global RNG is process-global, and the Trainer swaps each run's own RNG streams
in and out of it around every forward (rng_stream). So all torch work of all runs (build, steps,
snapshots) happens under ONE lock, `RunManager.torch_lock`: one worker thread steps the running
runs round-robin in short chunks, and the request threads take the same lock for their
synchronous actions (create, step, reset). A run's weights then depend only on its own config
and its number of steps, never on the runs interleaved with it. Snapshots draw with their own
generator inside torch.random.fork_rng, so they change nothing either.

Faults. A step that raises (TrainingDiverged on NaN/inf, any GenlabError, any Exception) puts
the run in state "error" with a one-line message; the worker and the other runs go on.
`close()` stops and joins the worker and removes every run's temporary directory.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from genlab.config import RunConfig, resolve
from genlab.data import load_config
from genlab.errors import GenlabError, first_line
from genlab.models.base import GenerativeModel
from genlab.playground import pictures
from genlab.train.run import prepare_model
from genlab.train.trainer import Trainer

log = logging.getLogger(__name__)

# The 2-D toys of genlab.data.toys: the only data a web page may name (never folder:/npz:).
TOYS = (
    "moons",
    "ring8",
    "grid25",
    "8gaussians",
    "2spirals",
    "checkerboard",
    "circles",
    "pinwheel",
    "swissroll",
)
# Config keys a page may set: model.* (but not the keys naming files: model.first_stage,
# model.weights), train.*, data.limit.
DATA_KEYS = ("data.limit",)
REFUSED_KEYS = ("model.name", "model.first_stage", "model.weights", "data.name", "data.root")
# Playground defaults, under the page's overrides (only keys the model's config has): a 2-D
# latent so the latent / generator pictures show the whole code, CPU (tiny nets are faster
# there), and a long run that the user pauses.
DEFAULTS = {
    "model.latent_dim": 2,
    "train.device": "cpu",
    "train.steps": 20000,
}
# A page must not make the server allocate gigabytes: widths, sizes and batches stay modest.
MAX_WIDTH = 4096  # each entry of a list (hidden, channels)
MAX_MODEL_INT = 100_000  # any other model.* integer (timesteps, latent_dim, components, ...)
MAX_BATCH = 8192  # train.batch_size
STATES = ("idle", "running", "paused", "error", "done")
LOSS_POINTS = 600  # loss history kept per run (pairs of points are merged past it)


def one_line(error: BaseException) -> str:
    """The page's message for an exception: a GenlabError's text, else 'Type: first line'."""
    if isinstance(error, GenlabError):
        return str(error)
    return f"{type(error).__name__}: {first_line(error)}"


def run_config(dataset: str, model: str, overrides: dict[str, Any] | None) -> RunConfig:
    """The RunConfig of a playground run, through genlab's config parser (types checked).

    Only toys; only model.*, train.* and data.limit keys; values as JSON scalars or lists."""
    if not isinstance(dataset, str) or dataset not in TOYS:
        raise GenlabError(
            f"dataset {dataset!r} is not a 2-D toy; choose from {', '.join(TOYS)}"
            if isinstance(dataset, str)
            else "dataset must be a string"
        )
    if not isinstance(model, str) or not model:
        raise GenlabError("model must be a model name (a string)")
    overrides = overrides or {}
    if not isinstance(overrides, dict):
        raise GenlabError("overrides must be an object {key: value}")
    items = []
    for key, value in overrides.items():
        if key in REFUSED_KEYS or not (
            key.startswith("model.") or key.startswith("train.") or key in DATA_KEYS
        ):
            raise GenlabError(
                f"override {key!r} is not allowed here; use model.*, train.* or data.limit"
            )
        items.append(f"{key}={config_value(key, value)}")
    cfg = resolve(model, dataset, overrides=items)  # unknown model: GenlabError with close names
    fields = cfg.to_dict()
    defaults = [
        f"{k}={v}"
        for k, v in DEFAULTS.items()
        if k not in overrides and k.partition(".")[2] in fields[k.partition(".")[0]]
    ]
    cfg = resolve(model, dataset, overrides=defaults + items) if defaults else cfg
    check_sizes(cfg)
    return cfg


def check_sizes(cfg: RunConfig) -> None:
    """Refuse sizes that would make the server allocate gigabytes (MAX_* above)."""
    for key, value in cfg.to_dict()["model"].items():
        if isinstance(value, bool):
            continue
        if isinstance(value, int) and abs(value) > MAX_MODEL_INT:
            raise GenlabError(
                f"model.{key}={value} is too large for the playground (max {MAX_MODEL_INT})"
            )
        if isinstance(value, (tuple, list)) and any(
            isinstance(v, int) and abs(v) > MAX_WIDTH for v in value
        ):
            raise GenlabError(f"model.{key}: each value at most {MAX_WIDTH} in the playground")
    if cfg.train.batch_size > MAX_BATCH:
        raise GenlabError(
            f"train.batch_size={cfg.train.batch_size} is too large for the playground "
            f"(max {MAX_BATCH})"
        )


def config_value(key: str, value: Any) -> str:
    """A JSON value as the text of a key=value override (YAML reads it back with its type)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        if "\n" in value or len(value) > 200:
            raise GenlabError(f"{key}: value too long or on several lines")
        return value
    if isinstance(value, list) and all(
        isinstance(v, (int, float)) and not isinstance(v, bool) for v in value
    ):
        if len(value) > 16:
            raise GenlabError(f"{key}: at most 16 values")
        return "[" + ", ".join(repr(v) for v in value) + "]"
    raise GenlabError(f"{key}: expected a number, string, boolean or list of numbers")


@dataclass
class Run:
    """One playground run: its config, model, Trainer, state, losses and latest snapshot."""

    id: str
    dataset: str
    model_name: str
    overrides: dict[str, Any]
    cfg: RunConfig
    run_dir: Path
    model: GenerativeModel | None = None
    trainer: Trainer | None = None
    state: str = "idle"
    error: str | None = None
    losses: list[list[Any]] = field(default_factory=list)  # [step, {name: value}]
    loss_stride: int = 1  # steps merged per kept loss point
    pending: dict[str, float] = field(default_factory=dict)
    pending_count: int = 0
    snapshot: dict[str, Any] | None = None
    snapshot_time: float = 0.0
    snapshot_cost: float = 0.0  # seconds the last snapshot took
    view: dict[str, Any] = field(default_factory=dict)
    last_seen: float = field(default_factory=time.monotonic)
    kind: str = "samples"
    real: torch.Tensor | None = None
    reference: torch.Tensor | None = None
    bounds: list[float] = field(default_factory=list)
    version: int = 0  # bumped at every reset: a page can tell a fresh model

    @property
    def step(self) -> int:
        return self.trainer.step if self.trainer is not None else 0

    @property
    def trainable(self) -> bool:
        """False for models fitted by fit_data alone (gmm, kde, ...): nothing to step."""
        return bool(self.trainer is not None and self.trainer.phases)

    def summary(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "dataset": self.dataset,
            "model": self.model_name,
            "state": self.state,
            "step": self.step,
            "kind": self.kind,
        }


class RunManager:
    """The runs of one playground server and the worker thread that trains them.

    max_runs: runs at once (a clear error beyond); idle_seconds: a run no page asked about for
    that long is closed; chunk_seconds: the worker's turn on one run before the next;
    snapshot_seconds: how often a running run's snapshot is refreshed.
    """

    def __init__(
        self,
        *,
        max_runs: int = 8,
        idle_seconds: float = 600.0,
        chunk_seconds: float = 0.05,
        snapshot_seconds: float = 0.25,
        snapshot_points: int = 300,
        root: str | Path | None = None,
    ) -> None:
        self.max_runs = max_runs
        self.idle_seconds = idle_seconds
        self.chunk_seconds = chunk_seconds
        self.snapshot_seconds = snapshot_seconds
        self.snapshot_points = snapshot_points
        self.root = Path(tempfile.mkdtemp(prefix="genlab-playground-", dir=root))
        self.torch_lock = threading.RLock()  # every torch call of every run (module doc)
        self.meta = threading.Lock()  # the run table and each run's public fields
        self.runs: dict[str, Run] = {}
        self.stop_event = threading.Event()
        self.wake = threading.Event()
        self.closed = False
        self._turn = 0
        self.worker = threading.Thread(
            target=self._work, name="genlab-playground-worker", daemon=True
        )
        self.worker.start()

    # ------------------------------------------------------------------------------ runs
    def create(
        self, dataset: str, model: str, overrides: dict[str, Any] | None = None
    ) -> dict[str, Any]:
        """Build a run (idle, step 0, with a first snapshot); GenlabError for bad input."""
        if self.closed:
            raise GenlabError("the playground is shutting down")
        cfg = run_config(dataset, model, overrides)
        self.drop_idle()
        with self.meta:
            if len(self.runs) >= self.max_runs:
                raise TooManyRuns(
                    f"{len(self.runs)} runs are open, the limit is {self.max_runs}; delete one "
                    "(or close a tab) first"
                )
            run_id = uuid.uuid4().hex[:12]
            run = Run(run_id, dataset, model, dict(overrides or {}), cfg, self.root / run_id)
            self.runs[run_id] = run  # reserves the slot while it builds
        try:
            with self.torch_lock:
                self._build(run)
        except BaseException:
            with self.meta:
                self.runs.pop(run_id, None)
            shutil.rmtree(run.run_dir, ignore_errors=True)
            raise
        return self.describe(run_id)

    def _build(self, run: Run) -> None:
        """Model and Trainer as genlab.train.run.train makes them, then a first snapshot."""
        cfg = run.cfg
        data = load_config(cfg.data)
        model, fitted = prepare_model(cfg, data)
        run.run_dir.mkdir(parents=True, exist_ok=True)
        trainer = Trainer(model, data, cfg.train, run.run_dir, progress=False, fitted=fitted)
        trainer.close_loggers()  # train_step logs nothing; no TensorBoard writer thread per run
        model.train()
        run.model, run.trainer = model, trainer
        run.kind = pictures.picture_kind(model)
        g = torch.Generator().manual_seed(0)
        pick = torch.randperm(len(data.x_test), generator=g)
        run.real = data.x_test[pick[: self.snapshot_points]].clone()
        run.reference = data.x_test[pick[-1000:]].clone()
        box = data.x_test
        if run.kind == "score":  # chains start from the N(0, I) prior: keep +-2.5 in view
            box = torch.cat([box, torch.tensor([[-2.5, -2.5], [2.5, 2.5]])])
        run.bounds = pictures.data_bounds(box, pad=0.1 if run.kind == "score" else 0.2)
        if not run.view:
            samplers = pictures.samplers_of(model)
            default = getattr(model.cfg, "sampler", None)
            sampler = default if default in samplers else (samplers[0] if samplers else None)
            run.view = {
                "sampler": sampler,
                "steps": pictures.SNAPSHOT_STEPS.get(sampler) if sampler else None,
                "noise": 0.2,
            }
        run.losses, run.pending, run.pending_count, run.loss_stride = [], {}, 0, 1
        run.error = None
        run.state = "idle" if run.trainable else "done"
        self._refresh(run)

    def get(self, run_id: str) -> Run:
        with self.meta:
            run = self.runs.get(run_id)
        if run is None:
            raise UnknownRun(f"no run {run_id!r} (finished, deleted, or dropped after idling)")
        run.last_seen = time.monotonic()
        return run

    def describe(self, run_id: str, with_losses: bool = True) -> dict[str, Any]:
        """What a page polls: state, step, error, losses, latest snapshot (no torch work)."""
        run = self.get(run_id)
        with self.meta:
            out = {
                **run.summary(),
                "error": run.error,
                "version": run.version,
                "trainable": run.trainable,
                "bounds": run.bounds,
                "view": dict(run.view),
                "samplers": pictures.samplers_of(run.model) if run.model is not None else [],
                "config": run.cfg.to_dict(),
                "real": pictures.to_list(run.real, 3) if run.real is not None else [],
                "snapshot": run.snapshot,
            }
            if with_losses:
                out["losses"] = [list(p) for p in run.losses]
        return out

    def list(self) -> list[dict[str, Any]]:
        with self.meta:
            return [r.summary() for r in self.runs.values()]

    def start(self, run_id: str) -> dict[str, Any]:
        run = self.get(run_id)
        with self.meta:
            self._check_can_train(run)
            run.state = "running"
        self.wake.set()
        return self.describe(run_id)

    def pause(self, run_id: str) -> dict[str, Any]:
        run = self.get(run_id)
        with self.torch_lock:  # the worker finishes its chunk first: no step after pause returns
            with self.meta:
                if run.state == "running":
                    run.state = "paused"
        return self.describe(run_id)

    def step(self, run_id: str, n: int = 1) -> dict[str, Any]:
        """n training steps now (the run ends paused), then a fresh snapshot."""
        if not isinstance(n, int) or isinstance(n, bool) or not 1 <= n <= 1000:
            raise GenlabError(f"n must be an integer in 1..1000; got {n!r}")
        run = self.get(run_id)
        with self.torch_lock:
            with self.meta:
                self._check_can_train(run)
                run.state = "paused"
            self._train(run, steps=n)
            self._refresh(run)
        return self.describe(run_id)

    def reset(self, run_id: str) -> dict[str, Any]:
        """A fresh model and Trainer with the same config (the same initial weights): idle."""
        run = self.get(run_id)
        with self.torch_lock:
            self._release(run)
            try:
                self._build(run)
            except Exception as e:  # e.g. the data vanished; the run stays, in error
                self._fail(run, e)
            with self.meta:
                run.version += 1
        return self.describe(run_id)

    def set_view(self, run_id: str, view: dict[str, Any]) -> dict[str, Any]:
        """Sampler, steps and noise level of the score picture; takes effect at once."""
        run = self.get(run_id)
        if not isinstance(view, dict):
            raise GenlabError("view must be an object {sampler, steps, noise}")
        new = dict(run.view)
        samplers = pictures.samplers_of(run.model) if run.model is not None else []
        if "sampler" in view:
            if view["sampler"] not in samplers:
                raise GenlabError(
                    f"sampler {view['sampler']!r} does not apply to {run.model_name}; "
                    f"choose from {', '.join(samplers) or 'none'}"
                )
            new["sampler"] = view["sampler"]
            new["steps"] = pictures.SNAPSHOT_STEPS.get(view["sampler"], 50)
        if "steps" in view:
            steps = view["steps"]
            if not isinstance(steps, int) or isinstance(steps, bool) or not 1 <= steps <= 1000:
                raise GenlabError(f"steps must be an integer in 1..1000; got {steps!r}")
            new["steps"] = steps
        if "noise" in view:
            noise = view["noise"]
            if (
                not isinstance(noise, (int, float))
                or isinstance(noise, bool)
                or not 0 <= noise <= 1
            ):
                raise GenlabError(f"noise must be a number in [0, 1]; got {noise!r}")
            new["noise"] = float(noise)
        unknown = set(view) - {"sampler", "steps", "noise"}
        if unknown:
            raise GenlabError(f"unknown view key {sorted(unknown)[0]!r}; use sampler, steps, noise")
        with self.torch_lock:
            run.view = new
            if run.state != "error":
                self._refresh(run)
        return self.describe(run_id)

    def delete(self, run_id: str) -> None:
        run = self.get(run_id)
        with self.torch_lock:
            with self.meta:
                self.runs.pop(run_id, None)
            self._release(run)
            shutil.rmtree(run.run_dir, ignore_errors=True)

    def drop_idle(self) -> list[str]:
        """Close the runs no page asked about for idle_seconds."""
        now = time.monotonic()
        with self.meta:
            stale = [i for i, r in self.runs.items() if now - r.last_seen > self.idle_seconds]
        for run_id in stale:
            log.info("dropping idle playground run %s", run_id)
            try:
                self.delete(run_id)
            except UnknownRun:
                pass
        return stale

    def close(self) -> None:
        """Stop and join the worker, close every run, remove the temporary directories."""
        if self.closed:
            return
        self.closed = True
        self.stop_event.set()
        self.wake.set()
        if self.worker.is_alive() and self.worker is not threading.current_thread():
            self.worker.join()
        with self.torch_lock:
            with self.meta:
                runs = list(self.runs.values())
                self.runs.clear()
            for run in runs:
                self._release(run)
        shutil.rmtree(self.root, ignore_errors=True)

    # --------------------------------------------------------------------------- internals
    @staticmethod
    def _check_can_train(run: Run) -> None:
        if run.state == "error":
            raise GenlabError(f"run {run.id} stopped with an error; reset it: {run.error}")
        if not run.trainable:
            raise GenlabError(
                f"{run.model_name} is fitted to the data at creation, not trained by steps"
            )
        if run.state == "done":
            raise GenlabError(
                f"run {run.id} reached train.steps={run.cfg.train.steps}; reset it, or create a "
                "run with more train.steps"
            )

    def _release(self, run: Run) -> None:
        if run.trainer is not None:
            run.trainer.close_loggers()
        run.trainer = run.model = None
        shutil.rmtree(run.run_dir, ignore_errors=True)

    def _fail(self, run: Run, error: BaseException) -> None:
        if not isinstance(error, GenlabError):
            log.warning("playground run %s failed", run.id, exc_info=error)
        with self.meta:
            run.state = "error"
            run.error = one_line(error)

    def _record(self, run: Run, values: dict[str, float]) -> None:
        """Losses of one step, averaged over loss_stride steps per kept point."""
        for k, v in values.items():
            run.pending[k] = run.pending.get(k, 0.0) + v
        run.pending_count += 1
        if run.pending_count < run.loss_stride:
            return
        point = {k: v / run.pending_count for k, v in run.pending.items()}
        run.pending, run.pending_count = {}, 0
        with self.meta:
            run.losses.append([run.step, point])
            if len(run.losses) > LOSS_POINTS:  # merge neighbours: the curve keeps its length
                merged = []
                for a, b in zip(run.losses[0::2], run.losses[1::2]):
                    keys = set(a[1]) | set(b[1])
                    avg = {
                        k: (a[1].get(k, b[1].get(k)) + b[1].get(k, a[1].get(k))) / 2 for k in keys
                    }
                    merged.append([b[0], avg])
                if len(run.losses) % 2:
                    merged.append(run.losses[-1])
                run.losses = merged
                run.loss_stride *= 2

    def _train(self, run: Run, *, steps: int | None = None, seconds: float | None = None) -> None:
        """Train `steps` steps, or for about `seconds`; under torch_lock. Errors -> "error"."""
        assert run.trainer is not None
        trainer = run.trainer
        end = time.monotonic() + (seconds or 0.0)
        done = 0
        try:
            while True:
                if trainer.step >= run.cfg.train.steps:
                    with self.meta:
                        run.state = "done"
                    return
                values = trainer.train_step()
                self._record(run, values)
                done += 1
                if trainer.step >= run.cfg.train.steps:
                    with self.meta:
                        run.state = "done"
                    return
                if steps is not None and done >= steps:
                    return
                if seconds is not None and time.monotonic() >= end:
                    return
        except Exception as e:  # TrainingDiverged, GenlabError, any bug: the run stops, we go on
            self._fail(run, e)

    def _refresh(self, run: Run) -> None:
        """A new snapshot of the run (under torch_lock); a failure puts the run in error."""
        if run.model is None or run.state == "error":  # keep the last good snapshot
            return
        began = time.monotonic()
        try:
            snap = pictures.snapshot(
                run.model,
                run.real,
                run.reference,
                run.bounds,
                run.dataset,
                run.view,
                n=self.snapshot_points,
                seed=run.cfg.train.seed,
            )
        except Exception as e:
            self._fail(run, e)
            return
        snap["step"] = run.step
        with self.meta:
            run.snapshot = snap
            run.snapshot_time = time.monotonic()
            run.snapshot_cost = run.snapshot_time - began

    def _next_running(self) -> Run | None:
        with self.meta:
            running = [r for r in self.runs.values() if r.state == "running"]
            if not running:
                return None
            self._turn = (self._turn + 1) % len(running)
            return running[self._turn]

    def _work(self) -> None:
        """The worker: round-robin chunks of train_step over the running runs."""
        last_sweep = time.monotonic()
        while not self.stop_event.is_set():
            if time.monotonic() - last_sweep > 5.0:
                last_sweep = time.monotonic()
                self.drop_idle()
            run = self._next_running()
            if run is None:
                self.wake.wait(0.2)
                self.wake.clear()
                continue
            try:
                self._turn_of(run)
            except Exception:  # a bug here must not stop the other runs: log it, go on
                log.exception("playground worker: run %s", run.id)
                self._fail(run, RuntimeError("internal error in the playground worker"))
            time.sleep(0.002)  # let request threads take the lock between chunks

    def _turn_of(self, run: Run) -> None:
        """One chunk of training of a running run, and its snapshot when due."""
        with self.torch_lock:
            if self.stop_event.is_set() or run.state != "running" or run.trainer is None:
                return
            self._train(run, seconds=self.chunk_seconds)
            # slow pictures (long sampler chains) come less often: training keeps >= 2/3
            wait = max(self.snapshot_seconds, 2 * run.snapshot_cost)
            due = time.monotonic() - run.snapshot_time >= wait
            if due or run.state != "running":
                self._refresh(run)


class TooManyRuns(GenlabError):
    """The playground's run limit is reached."""


class UnknownRun(GenlabError):
    """No run with that id."""
