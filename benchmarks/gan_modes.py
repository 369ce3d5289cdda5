"""Mode collapse on ring8 and grid25: GAN losses and tricks under the VEEGAN / PacGAN protocol.

Each configuration trains an MLP GAN for a fixed number of steps on one toy with seeds 0..S-1,
then draws 2,500 samples: modes captured (a mode with at least one sample within 3 std), the
percentage of high-quality samples (within 3 std of the nearest mode), and KL of the mode
histogram of high-quality samples to uniform (genlab.metrics.toy.mode_metrics). The table gives
means over seeds, the worst seed's modes and high-quality %, and the training time.

    python benchmarks/gan_modes.py --data ring8 --seeds 5               # every configuration
    python benchmarks/gan_modes.py --data grid25 --only ns,ns+pack2     # some of them
    python benchmarks/gan_modes.py --config configs/gan-grid25.yaml     # a saved config as it is
    python benchmarks/gan_modes.py --only ns --steps 12000 --set train.ema=0.999
    python benchmarks/gan_modes.py --quick                               # smoke run
"""

from __future__ import annotations

import argparse
import statistics
import time

import _bench  # (first: thread settings)
import torch

from genlab.config import resolve
from genlab.data.toys import MIXTURES
from genlab.metrics.toy import mode_metrics
from genlab.train import train

# name -> model overrides (on top of the common MLP settings below)
CONFIGS: dict[str, list[str]] = {
    **_bench.GAN_LOSSES,
    "ns+smooth": ["model.loss=ns", "model.label_smoothing=0.1"],
    "ns+mbdisc": ["model.loss=ns", "model.minibatch_discrimination=8"],
    "ns+mbstd": ["model.loss=ns", "model.minibatch_stddev=true"],
    "ns+replay": ["model.loss=ns", "model.replay=0.25"],
    "ns+pack2": ["model.loss=ns", "model.pack=2"],
    "ns+unrolled5": ["model.loss=ns", "model.unrolled=5"],
    "minimax+pack2": ["model.loss=minimax", "model.pack=2"],
}

COMMON = [
    "model.arch=mlp",
    "model.hidden=[256,256]",
    "model.latent_dim=16",
    "train.batch_size=256",
    "train.log_every=500",
    "train.device=cpu",
]


def table_overrides(name: str, steps: int, lr: float) -> list[str]:
    """A configuration of the table: its loss/trick keys on the common MLP settings."""
    return [*CONFIGS[name], *COMMON, f"train.steps={steps}", f"train.lr={lr}"]


def run_one(data: str, config_file: str | None, overrides: list[str], seed: int):
    """Train once with `seed`; mode metrics of 2,500 samples and the training time."""
    model, data = (None, None) if config_file else ("gan", data)
    overrides = [*overrides, f"train.seed={seed}", "train.device=cpu", "train.log_every=500"]
    steps = resolve(model, data, config_file, overrides).train.steps
    last_only = [f"train.checkpoint_every={steps}", f"train.sample_every={steps}"]
    cfg = resolve(model, data, config_file, overrides + last_only)
    with _bench.run_dir(None) as out:
        t0 = time.perf_counter()
        run = train(cfg, out, progress=False)
        seconds = time.perf_counter() - t0
        g = torch.Generator().manual_seed(1000 + seed)
        x = run.model.sample(2500, generator=g).double()
    means, std = MIXTURES[cfg.data.name]
    return mode_metrics(x, torch.as_tensor(means), std), seconds, cfg


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", choices=sorted(MIXTURES), default="ring8")
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--first-seed", type=int, default=0, help="seeds first..first+seeds-1")
    parser.add_argument("--steps", type=int, default=3000)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--only", help="comma-separated configuration names")
    parser.add_argument("--config", help="measure this config file as it is (only the seed varies)")
    parser.add_argument(
        "--set", action="append", default=[], metavar="KEY=VALUE", help="extra override, repeatable"
    )
    parser.add_argument("--quick", action="store_true", help="2 configs, 1 seed, 200 steps")
    args = parser.parse_args()
    _bench.one_thread()
    if args.config:
        jobs = [(args.config, args.config, args.set)]
    else:
        names = args.only.split(",") if args.only else list(CONFIGS)
        if args.quick:
            names, args.seeds, args.steps = ["ns", "ns+pack2"], 1, 200
        jobs = [
            (name, None, table_overrides(name, args.steps, args.lr) + args.set) for name in names
        ]
    print(f"machine: {_bench.machine()}")
    table = [
        "| config | modes | worst seed | high quality % | worst seed % | KL modes | time / seed |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, config_file, overrides in jobs:
        rows = []
        for seed in range(args.first_seed, args.first_seed + args.seeds):
            metrics, seconds, cfg = run_one(args.data, config_file, overrides, seed)
            rows.append((metrics, seconds))
            print(
                f"# {name} {cfg.data.name} seed {seed}: {cfg.train.steps} steps, "
                f"lr {cfg.train.lr}: "
                f"modes {metrics['modes']:.0f}, high quality {100 * metrics['hq']:.1f}%, "
                f"KL {metrics['kl_modes']:.3f}, {seconds:.0f} s",
                flush=True,
            )
        k = len(MIXTURES[cfg.data.name][0])
        modes = [r["modes"] for r, _ in rows]
        hq = [100 * r["hq"] for r, _ in rows]
        kl = [r["kl_modes"] for r, _ in rows]
        t = statistics.median(s for _, s in rows)
        table.append(
            f"| {name} | {statistics.mean(modes):.1f} / {k} | {min(modes):.0f} "
            f"| {statistics.mean(hq):.1f} | {min(hq):.1f} | {statistics.mean(kl):.3f} "
            f"| {_bench.minutes(t)} |"
        )
    print("\n" + "\n".join(table))


if __name__ == "__main__":
    main()
