"""Shared set-up for the benchmark scripts: one thread, run directories, the machine line.

Import this module before torch/numpy: it sets the thread environment variables first.
"""

from __future__ import annotations

import os

# One compute thread: the other core of the 2-core benchmark machine runs the test suite.
# PASSIVE stops idle OpenMP threads from spinning on that core.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import contextlib  # noqa: E402
import platform  # noqa: E402
import shutil  # noqa: E402
import tempfile  # noqa: E402
from collections.abc import Iterator  # noqa: E402
from pathlib import Path  # noqa: E402

import torch  # noqa: E402

BENCH_DIR = Path(__file__).resolve().parent
IMG_DIR = BENCH_DIR / "img"


def one_thread() -> None:
    torch.set_num_threads(1)
    try:  # numpy / scikit-learn BLAS, in case the environment variables came too late
        from threadpoolctl import threadpool_limits

        threadpool_limits(1)
    except ImportError:
        pass


@contextlib.contextmanager
def run_dir(keep: str | None) -> Iterator[Path]:
    """A fresh directory for one training run: `keep` if given (left in place), else a temp dir."""
    if keep:
        path = Path(keep)
        path.parent.mkdir(parents=True, exist_ok=True)
        yield path
        return
    tmp = Path(tempfile.mkdtemp(prefix="genlab-bench-"))
    try:
        yield tmp / "run"
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    threads = torch.get_num_threads()
    return f"{cpu}, {os.cpu_count()} CPUs, torch {torch.__version__}, {threads} thread"


def minutes(seconds: float) -> str:
    m, s = divmod(round(seconds), 60)
    return f"{m}m{s:02d}s"


# The GAN losses as model overrides; WGAN follows Algorithm 1 (RMSProp, 5 critic steps) and
# WGAN-GP its paper's Adam betas (0, 0.9) with 5 critic steps. Learning rates come separately.
GAN_LOSSES: dict[str, list[str]] = {
    "minimax": ["model.loss=minimax"],
    "ns": ["model.loss=ns"],
    "ls": ["model.loss=ls"],
    "wgan": ["model.loss=wgan", "model.n_critic=5", "model.optimizer=rmsprop"],
    "wgan-gp": ["model.loss=wgan-gp", "model.n_critic=5", "model.beta1=0.0", "model.beta2=0.9"],
    "hinge+sn": ["model.loss=hinge", "model.spectral_norm=true"],
}


def vae_overrides(args) -> list[str]:
    """The model/train keys both VAE benchmarks take from their common arguments."""
    hidden = "[" + ",".join(str(h) for h in args.hidden) + "]"
    return [
        f"model.arch={args.arch}",
        f"model.latent_dim={args.latent}",
        f"model.hidden={hidden}",
        f"train.steps={args.steps}",
        f"train.batch_size={args.batch_size}",
        f"train.lr={args.lr}",
        f"train.seed={args.seed}",
        f"train.checkpoint_every={args.steps}",  # one checkpoint, one grid: time goes to training
        f"train.sample_every={args.steps}",
        "train.log_every=100",
        "train.device=cpu",
    ]
