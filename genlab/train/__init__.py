"""Training: the one Trainer, checkpoints, EMA, logs, DDP, and run directories."""

from genlab.train.run import Run, load_run, train
from genlab.train.trainer import Trainer

__all__ = ["Trainer", "Run", "load_run", "train"]
