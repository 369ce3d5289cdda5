"""DCGAN on Fashion-MNIST: FID and KID of each GAN loss, with genlab's classifier features.

One small DCGAN (genlab `gan`, arch=dcgan: strided convs 32-64 channels, batch norm in the
generator, LeakyReLU(0.2) critic, tanh output, N(0, 0.02) init, latent 64, batch 64) is trained
with each loss for a fixed number of generator steps, then 10,000 samples are scored against the
10,000 test images. The losses with 5 critic steps per generator step (WGAN, WGAN-GP) get half
the generator steps, so every loss has roughly the same CPU time.

Features: genlab's own Fashion-MNIST classifier (a small conv net trained once on the labels and
cached, 128-d penultimate layer; its test accuracy is printed). These FID/KID values are NOT
comparable to Inception FIDs in papers. The "real data" row scores 10,000 training images
against the test images with the same features: the floor a perfect generator would reach.

    python benchmarks/gan_fashion.py                      # all six losses, ~1 hour on 1 thread
    python benchmarks/gan_fashion.py --only ns,wgan-gp    # some of them
    python benchmarks/gan_fashion.py --quick              # smoke run, nothing saved
"""

from __future__ import annotations

import argparse
import time

import _bench  # (first: thread settings)
import torch

from genlab.config import resolve
from genlab.data import load
from genlab.metrics import evaluate
from genlab.metrics.features import classifier_features
from genlab.metrics.fid import fid, kid
from genlab.train import train
from genlab.viz.grids import save_samples

# Learning rates from each loss's paper: DCGAN 2e-4, WGAN 5e-5, WGAN-GP 1e-4.
LR = {"minimax": 2e-4, "ns": 2e-4, "ls": 2e-4, "wgan": 5e-5, "wgan-gp": 1e-4, "hinge+sn": 2e-4}
N_EVAL = 10_000


def run_loss(name: str, args: argparse.Namespace) -> dict:
    steps = args.steps // 2 if name in ("wgan", "wgan-gp") else args.steps
    overrides = [
        *_bench.GAN_LOSSES[name],
        "model.arch=dcgan",
        "model.latent_dim=64",
        "model.channels=[32,64]",
        f"train.steps={steps}",
        "train.batch_size=64",
        f"train.lr={LR[name]}",
        f"train.seed={args.seed}",
        f"train.checkpoint_every={steps}",
        f"train.sample_every={steps}",
        "train.log_every=200",
        "train.device=cpu",
    ]
    cfg = resolve("gan", "fashion-mnist", None, overrides)
    with _bench.run_dir(args.keep_run and f"{args.keep_run}-{name}") as out:
        t0 = time.perf_counter()
        run = train(cfg, out, progress=False)
        train_s = time.perf_counter() - t0
        report = evaluate(run.model, run.data(), ["fid", "kid"], n=args.n, seed=0)
        if args.img_dir:
            x = run.model.sample(64, generator=torch.Generator().manual_seed(0))
            save_samples(x, run.spec, args.img_dir / f"gan-fashion-{name}.png")
    v = report.values
    return dict(
        name=name,
        steps=steps,
        train_s=train_s,
        fid=v["fid"],
        kid=v["kid"],
        kid_std=v["kid_std"],
        n=int(v["fid_n"]),
        note=report.notes["fid"],
    )


def real_data_row(n: int) -> dict:
    """Training images against test images: the score of a generator that copies the data."""
    data = load("fashion-mnist")
    features = classifier_features(data)
    real, _ = features.extract(data.x_test[:n])
    train_x, _ = features.extract(data.x_train[:n])
    g = torch.Generator().manual_seed(0)
    mean, std = kid(real, train_x, subsets=100, subset_size=min(1000, n // 2), generator=g)
    return dict(
        name="real data (train vs test)",
        steps=0,
        train_s=0.0,
        fid=fid(real, train_x),
        kid=mean,
        kid_std=std,
        n=n,
        note=features.note,
    )


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--steps", type=int, default=5000, help="generator steps (WGANs: half)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--n", type=int, default=N_EVAL, help="generated and test images scored")
    p.add_argument("--only", help="comma-separated losses: " + ",".join(LR))
    p.add_argument("--quick", action="store_true", help="2 losses, 100 steps, n=1000, no PNG")
    p.add_argument("--keep-run", default=None, help="keep the run directories as PREFIX-LOSS")
    p.add_argument("--no-png", action="store_true")
    args = p.parse_args()
    names = args.only.split(",") if args.only else list(LR)
    if args.quick:
        names, args.steps, args.n = ["ns", "wgan-gp"], 100, 1000
    args.img_dir = None if (args.quick or args.no_png) else _bench.IMG_DIR
    if args.img_dir:
        args.img_dir.mkdir(parents=True, exist_ok=True)
    _bench.one_thread()
    print(f"# {_bench.machine()}")
    rows = [real_data_row(args.n)]
    for name in names:
        rows.append(run_loss(name, args))
        r = rows[-1]
        print(f"# {name}: {r['steps']} steps in {_bench.minutes(r['train_s'])}", flush=True)
    print(f"\n# {rows[0]['note']}")
    print("\n| loss | lr | generator steps | train time | FID | KID | n | seed |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        lr = LR.get(r["name"], "-")
        print(
            f"| {r['name']} | {lr} | {r['steps']} | {_bench.minutes(r['train_s'])} "
            f"| {r['fid']:.2f} | {r['kid']:.4g} ± {r['kid_std']:.2g} | {r['n']} "
            f"| {args.seed} |"
        )


if __name__ == "__main__":
    main()
