"""Run directories: create or resume a training run, and load a trained run back.

RUN/config.yaml (resolved config), spec.json (the DataSpec, so a run loads without its data),
metrics.csv, tensorboard/, samples/, checkpoints/, eval.json; a latent model (model.first_stage
set, e.g. ldm) also keeps first_stage/{config.yaml, spec.json}, a copy of its first stage's.

First stages. Models never import genlab.train, so the run layer injects a latent model's first
stage: build_model builds the model, then, when model.first_stage names a run, hands it the
frozen first-stage model with `model.attach_first_stage(...)`. The first stage's weights are part
of the latent model's state dict, hence of every checkpoint: loading or resuming a latent run
rebuilds the first stage's architecture from RUN/first_stage and takes all weights from the
run's own checkpoint, so it keeps working if the first-stage run is moved, retrained or deleted.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import shutil
from dataclasses import dataclass
from pathlib import Path

from genlab import models
from genlab.config import RunConfig, read_yaml, resolve, write_text_atomic
from genlab.data import load_config
from genlab.data.spec import Data, DataSpec
from genlab.errors import GenlabError, TrainingDiverged, first_line
from genlab.models.base import FitsData, GenerativeModel
from genlab.registry import METRICS
from genlab.train import checkpoint, distributed
from genlab.train.trainer import (
    BatchStream,
    Trainer,
    fit_to_training_split,
    seed_everything,
)

log = logging.getLogger(__name__)


@dataclass
class Run:
    """A trained run: its directory, config, data spec, and model (EMA weights when present)."""

    dir: Path
    config: RunConfig
    spec: DataSpec
    model: GenerativeModel
    step: int

    def data(self) -> Data:
        return load_config(self.config.data)


FIRST_STAGE = "first_stage"  # RUN/first_stage: the first stage's config.yaml and spec.json


def build_model(
    cfg: RunConfig, spec: DataSpec, *, first_stage_copy: Path | None = None
) -> GenerativeModel:
    """The model of a run config; a latent model gets its first stage (module doc): the trained
    run model.first_stage, or only its architecture from `first_stage_copy` when a checkpoint
    will supply the weights."""
    model = models.build(cfg.model, spec, **dataclasses.asdict(cfg.model_cfg))
    path = getattr(cfg.model_cfg, "first_stage", None)
    if path:
        model.attach_first_stage(load_first_stage(path, first_stage_copy))
    elif path is not None:  # the untrained stand-in of models.build is for unit tests only
        raise GenlabError(
            f"model.first_stage is empty: {cfg.model} needs a trained ae or vae run; "
            "set model.first_stage=RUN, or to a first-stage config (.yaml) to train it first"
        )
    return model


def load_first_stage(path: str, copy: Path | None = None) -> GenerativeModel:
    """The frozen, eval-mode first stage: the trained run at `path` (EMA weights when present),
    or, given `copy` (RUN/first_stage of a latent run), its architecture with untrained weights."""
    if copy is not None:
        model = build_model(resolve(base=read_yaml(copy / "config.yaml")), read_spec(copy))
    else:
        if not (Path(path) / "config.yaml").is_file():
            raise GenlabError(
                f"model.first_stage: {path} is not a trained genlab run (no config.yaml); "
                "train an ae or vae there first"
            )
        model = load_run(path).model
    return model.eval().requires_grad_(False)


def first_stage_copy(run_dir: Path) -> Path | None:
    copy = run_dir / FIRST_STAGE
    if not (copy / "config.yaml").is_file():
        return None
    for name in ("config.yaml", "spec.json"):
        checkpoint.confined(copy / name, run_dir)
    return copy


def save_first_stage_copy(cfg: RunConfig, run_dir: Path) -> None:
    """Copy the first stage's config.yaml and spec.json into RUN/first_stage (module doc)."""
    path = getattr(cfg.model_cfg, "first_stage", None)
    if path and first_stage_copy(run_dir) is None:
        (run_dir / FIRST_STAGE).mkdir(exist_ok=True)
        for name in ("config.yaml", "spec.json"):
            shutil.copyfile(Path(path) / name, run_dir / FIRST_STAGE / name)


def check_resume_config(saved: RunConfig, new: RunConfig) -> None:
    """A resumed run may change train.* (e.g. more steps), never the model or data."""
    old, cur = saved.to_dict(), new.to_dict()
    for section in ("model", "data"):
        for key, value in cur[section].items():
            if old[section].get(key) != value:
                raise GenlabError(
                    f"--resume cannot change {section}.{key} ({old[section].get(key)!r} -> "
                    f"{value!r}); use a new --out"
                )


def train_first_stage(cfg: RunConfig, run_dir: Path, progress: bool) -> RunConfig:
    """When model.first_stage names a config file (.yaml), train that first stage into
    RUN/first_stage_run (continuing it if it is there) and return cfg pointing at that run, so
    one `genlab train --config configs/ldm-*.yaml` trains both stages. Otherwise cfg as it is."""
    path = getattr(cfg.model_cfg, "first_stage", None)
    if not path or Path(path).suffix not in (".yaml", ".yml"):
        return cfg
    if not Path(path).is_file():
        raise GenlabError(f"model.first_stage: no config file {path}")
    load_config(cfg.data)  # the second stage's data must load before the first stage trains
    first_cfg = resolve(None, None, path)
    if first_cfg.data.name != cfg.data.name:
        raise GenlabError(
            f"model.first_stage {path} trains on {first_cfg.data.name}, not {cfg.data.name}"
        )
    first_dir = run_dir / "first_stage_run"
    log.info("training the first stage %s into %s", path, first_dir)
    train(first_cfg, first_dir, resume=(first_dir / "config.yaml").exists(), progress=progress)
    model_cfg = dataclasses.replace(cfg.model_cfg, first_stage=str(first_dir))
    return dataclasses.replace(cfg, model_cfg=model_cfg)


def check_optimizers(model: GenerativeModel, cfg: RunConfig) -> None:
    """Build each phase's optimiser once: torch checks its settings (model.beta1=nan, a negative
    lr) only then, and the Trainer builds them after the run directory is written."""
    try:
        for phase in model.phases(cfg.train.lr):
            phase.optimizer(phase.params)
    except (ValueError, TypeError) as e:
        first = first_line(e)
        raise GenlabError(f"model {cfg.model}: optimiser settings refused: {first}") from None


def prepare_model(
    cfg: RunConfig, data: Data, *, first_stage_copy: Path | None = None, fit: bool = True
) -> tuple[GenerativeModel, dict[str, float] | None]:
    """The model of a new run, before anything is written: seeded (the same initial weights for
    the same seed), built, its optimiser settings checked, and fitted when it FitsData (a fit
    that fails, too few examples or a bad model.example, leaves no half-made run behind).
    Returns (model, what the fit returned or None)."""
    seed_everything(cfg.train.seed)
    model = build_model(cfg, data.spec, first_stage_copy=first_stage_copy)
    check_optimizers(model, cfg)
    if not (fit and isinstance(model, FitsData)):
        return model, None
    try:
        return model, fit_to_training_split(model, data, cfg.train.seed)
    except (ValueError, ArithmeticError, RuntimeError) as e:  # sklearn refuses settings
        raise GenlabError(f"model {cfg.model}: fitting failed: {first_line(e)}") from None


def remove_unfinished(run_dir: Path) -> bool:
    """Remove a run directory this call created when training stopped before any checkpoint:
    what is left would be a run that can neither sample nor resume. A trained first stage
    inside it is kept (with the whole directory). Returns whether it was removed."""
    if checkpoint.latest(run_dir / "checkpoints") or (run_dir / "first_stage_run").exists():
        return False
    checkpoint.discard(run_dir)
    return True


def train(cfg: RunConfig, out: str | Path, *, resume: bool = False, progress: bool = True) -> Run:
    """Train a run described by `cfg` into `out` (continuing it with resume=True)."""
    run_dir = Path(out)
    # Checked before anything is trained or written (a first stage, then rank 0's files).
    has_run = checkpoint.latest(run_dir / "checkpoints") or (run_dir / "config.yaml").exists()
    if not resume and has_run:
        raise GenlabError(
            f"run directory {run_dir} already holds a run; add --resume or pick another --out"
        )
    # a fresh run that fails before its first checkpoint leaves nothing behind (see below)
    created = not run_dir.exists()
    cfg = train_first_stage(cfg, run_dir, progress)
    ranks = distributed.setup(distributed.resolve_device(cfg.train.device))
    try:
        if resume and (run_dir / "config.yaml").exists():
            check_resume_config(resolve(base=read_yaml(run_dir / "config.yaml")), cfg)
        for name in cfg.train.eval_metrics:
            METRICS.entry(name)  # an unknown metric fails before anything is written
        data = load_config(cfg.data)  # before writing anything: bad data means nothing written
        t = cfg.train  # the global batch must split into shards (checked again by the Trainer)
        BatchStream(len(data), t.batch_size, t.seed, ranks.rank, ranks.world, t.grad_accum)
        # resuming from a checkpoint: it holds the first stage's weights too (module doc)
        resumed = resume and checkpoint.latest(run_dir / "checkpoints") is not None
        copy = first_stage_copy(run_dir) if resumed else None
        model, fitted = prepare_model(cfg, data, first_stage_copy=copy, fit=not resumed)
        distributed.barrier()
        if ranks.main:
            run_dir.mkdir(parents=True, exist_ok=True)
            cfg.save(run_dir / "config.yaml")
            write_text_atomic(run_dir / "spec.json", json.dumps(dataclasses.asdict(data.spec)))
            save_first_stage_copy(cfg, run_dir)
        distributed.barrier()
        try:
            trainer = Trainer(
                model, data, cfg.train, run_dir, resume=resume, progress=progress, fitted=fitted
            )
            if trainer.step >= cfg.train.steps:
                log.info("run %s already reached step %d", run_dir, trainer.step)
            trainer.fit()
        except BaseException as e:
            if not (created and ranks.main and remove_unfinished(run_dir)):
                raise
            if type(e) in (GenlabError, TrainingDiverged):
                raise type(e)(f"{e}; removed {run_dir}") from None
            raise
    finally:
        distributed.teardown()
    return Run(run_dir, cfg, data.spec, trainer.sampling_model.eval(), trainer.step)


def read_spec(run_dir: Path) -> DataSpec:
    try:
        raw = json.loads((run_dir / "spec.json").read_text())
        raw["shape"] = tuple(raw["shape"])
        if raw.get("value_range") is not None:
            raw["value_range"] = tuple(raw["value_range"])
        return DataSpec(**raw)
    except (OSError, ValueError, TypeError, KeyError):
        raise GenlabError(f"{run_dir} is not a genlab run (missing or bad spec.json)") from None


def load_run(run_dir: str | Path, device: str = "cpu", weights: str = "auto") -> Run:
    """Load a trained run; weights: auto (EMA when present), ema, or model. Executes no code."""
    run_dir = Path(run_dir)
    if not (run_dir / "config.yaml").is_file():
        raise GenlabError(f"{run_dir} is not a genlab run (no config.yaml)")
    for name in ("config.yaml", "spec.json", "checkpoints"):
        checkpoint.confined(run_dir / name, run_dir)  # no symlink out of the run
    cfg = resolve(base=read_yaml(run_dir / "config.yaml"))
    spec = read_spec(run_dir)
    ckpt = checkpoint.latest(run_dir / "checkpoints")
    if ckpt is None:
        raise GenlabError(f"run {run_dir} has no checkpoint yet")
    digests = checkpoint.verify(ckpt)
    name = (
        "ema.safetensors"
        if weights in ("auto", "ema") and "ema.safetensors" in digests
        else "model.safetensors"
    )
    if weights == "ema" and name != "ema.safetensors":
        raise GenlabError(f"run {run_dir} has no EMA weights")
    model = build_model(cfg, spec, first_stage_copy=first_stage_copy(run_dir))
    checkpoint.load_weights(model, ckpt.path / name)
    model.step = ckpt.step
    model.to(distributed.resolve_device(device)).eval()
    return Run(run_dir, cfg, spec, model, ckpt.step)
