"""Mode collapse on ring8 and grid25: GAN losses and tricks under the VEEGAN / PacGAN protocol.

Each configuration trains an MLP GAN for a fixed number of steps on one toy with seeds 0..S-1,
then draws 2,500 samples: modes captured (a mode with at least one sample within 3 std), the
percentage of high-quality samples (within 3 std of the nearest mode), and KL of the mode
histogram of high-quality samples to uniform (genlab.metrics.toy.mode_metrics). The table gives
means over seeds, the worst seed's modes and high-quality %, and the training time.

    python benchmarks/gan_modes.py --data ring8 --seeds 5              # every configuration
    python benchmarks/gan_modes.py --data grid25 --only ns,ns+pack2    # some of them
    python benchmarks/gan_modes.py --quick                              # smoke run
"""

from __future__ import annotations

import argparse
import statistics
import time

import _bench  # noqa: F401  (first: thread settings)
import torch

from genlab.config import resolve
from genlab.data.toys import MIXTURES
from genlab.metrics.toy import mode_metrics
from genlab.train import train

# name -> model overrides (on top of the common MLP settings below)
CONFIGS: dict[str, list[str]] = {
    "minimax": ["model.loss=minimax"],
    "ns": ["model.loss=ns"],
    "ls": ["model.loss=ls"],
    "wgan": ["model.loss=wgan", "model.n_critic=5", "model.optimizer=rmsprop"],
    "wgan-gp": ["model.loss=wgan-gp", "model.n_critic=5", "model.beta1=0.0", "model.beta2=0.9"],
    "hinge+sn": ["model.loss=hinge", "model.spectral_norm=true"],
    "ns+smooth": ["model.loss=ns", "model.label_smoothing=0.1"],
    "ns+mbdisc": ["model.loss=ns", "model.minibatch_discrimination=8"],
    "ns+mbstd": ["model.loss=ns", "model.minibatch_stddev=true"],
    "ns+replay": ["model.loss=ns", "model.replay=0.25"],
    "ns+pack2": ["model.loss=ns", "model.pack=2"],
    "ns+pack4": ["model.loss=ns", "model.pack=4"],
    "ns+unrolled5": ["model.loss=ns", "model.unrolled=5"],
    "ns+pack4+mbstd": ["model.loss=ns", "model.pack=4", "model.minibatch_stddev=true"],
}

COMMON = [
    "model.arch=mlp",
    "model.hidden=[256,256]",
    "model.latent_dim=16",
    "train.batch_size=256",
    "train.log_every=500",
    "train.device=cpu",
]


def run_one(data: str, name: str, seed: int, steps: int, lr: float) -> tuple[dict, float]:
    overrides = (
        CONFIGS[name]
        + COMMON
        + [
            f"train.steps={steps}",
            f"train.lr={lr}",
            f"train.seed={seed}",
            f"train.checkpoint_every={steps}",
            f"train.sample_every={steps}",
        ]
    )
    cfg = resolve("gan", data, None, overrides)
    with _bench.run_dir(None) as out:
        t0 = time.perf_counter()
        run = train(cfg, out, progress=False)
        seconds = time.perf_counter() - t0
        g = torch.Generator().manual_seed(1000 + seed)
        x = run.model.sample(2500, generator=g).double()
    means, std = MIXTURES[data]
    return mode_metrics(x, torch.as_tensor(means), std), seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", choices=sorted(MIXTURES), default="ring8")
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--steps", type=int, default=5000)
    parser.add_argument("--lr", type=float, default=2e-4)
    parser.add_argument("--only", help="comma-separated configuration names")
    parser.add_argument("--quick", action="store_true", help="2 configs, 1 seed, 200 steps")
    args = parser.parse_args()
    _bench.one_thread()
    names = args.only.split(",") if args.only else list(CONFIGS)
    if args.quick:
        names, args.seeds, args.steps = ["ns", "ns+pack2"], 1, 200
    k = len(MIXTURES[args.data][0])
    print(f"machine: {_bench.machine()}")
    print(f"{args.data}: {args.steps} steps, lr {args.lr}, seeds 0..{args.seeds - 1}")
    print(
        f"\n| config | modes (of {k}) | worst seed | high quality % | worst seed % | KL modes "
        "| train time / seed |"
    )
    print("|---|---|---|---|---|---|---|")
    for name in names:
        rows = [run_one(args.data, name, s, args.steps, args.lr) for s in range(args.seeds)]
        modes = [r["modes"] for r, _ in rows]
        hq = [100 * r["hq"] for r, _ in rows]
        kl = [r["kl_modes"] for r, _ in rows]
        t = statistics.median(s for _, s in rows)
        print(
            f"| {name} | {statistics.mean(modes):.1f} | {min(modes):.0f} "
            f"| {statistics.mean(hq):.1f} | {min(hq):.1f} | {statistics.mean(kl):.3f} "
            f"| {_bench.minutes(t)} |",
            flush=True,
        )


if __name__ == "__main__":
    main()
