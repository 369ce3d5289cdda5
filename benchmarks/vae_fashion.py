"""VAE on Fashion-MNIST: test NLL (IWAE bound) with a Bernoulli and a discretised-logistic decoder.

Settings
  binary:   dynamically binarised data (data.binarize=true), Bernoulli likelihood; the test set
            is binarised once with genlab's fixed seed. NLL in nats/image.
  logistic: the 256 grey levels with a discretised logistic likelihood (a probability mass, so
            no dequantisation offset). NLL in nats/image and bits/dim.

For context each row also gives a factorised pixel model fitted on the training set (independent
Bernoulli per pixel / independent 256-way histogram per pixel, add-1/2 smoothing): the floor any
model that uses correlations between pixels should beat by a wide margin.

Uses only genlab's public API: config.resolve, train.train, metrics.evaluate, run.data().

    python benchmarks/vae_fashion.py                     # both settings, full run (~9 min)
    python benchmarks/vae_fashion.py --setting binary    # one setting
    python benchmarks/vae_fashion.py --quick             # smoke check, < 1 min, nothing saved
"""

from __future__ import annotations

import argparse
import math
import time

import _bench  # noqa: F401  (sets thread environment before torch is imported)
import torch

from genlab.config import resolve
from genlab.metrics import evaluate
from genlab.train import train
from genlab.viz.grids import save_samples

SETTINGS = {
    "binary": ["data.binarize=true", "model.likelihood=bernoulli"],
    "logistic": ["model.likelihood=logistic"],
}


def factorised_nll(x_train: torch.Tensor, x_test: torch.Tensor, binary: bool) -> float:
    """Test NLL (nats/image) of independent per-pixel models fitted on the training images."""
    xtr = x_train.flatten(1).double()
    xte = x_test.flatten(1).double()
    if binary:
        # Under dynamic binarisation P(pixel = 1) is the grey level, so the fit is its mean.
        p = (xtr.sum(0) + 0.5) / (len(xtr) + 1.0)
        ll = xte * p.log() + (1 - xte) * (1 - p).log()
        return float(-ll.sum(1).mean())
    k_tr = torch.round(xtr * 255).long()
    k_te = torch.round(xte * 255).long()
    counts = torch.full((xtr.shape[1], 256), 0.5, dtype=torch.float64)
    counts.scatter_add_(1, k_tr.T.contiguous(), torch.ones_like(k_tr.T, dtype=torch.float64))
    logp = (counts / counts.sum(1, keepdim=True)).log()  # (D, 256)
    ll = logp.gather(1, k_te.T.contiguous()).T  # (N, D)
    return float(-ll.sum(1).mean())


def run_setting(name: str, args: argparse.Namespace) -> dict:
    overrides = [*SETTINGS[name], *_bench.vae_overrides(args)]
    if args.limit:
        overrides.append(f"data.limit={args.limit}")
    cfg = resolve("vae", "fashion-mnist", None, overrides)
    with _bench.run_dir(args.keep_run and f"{args.keep_run}-{name}") as out:
        t0 = time.perf_counter()
        run = train(cfg, out, progress=False)
        train_s = time.perf_counter() - t0
        data = run.data()
        t0 = time.perf_counter()
        report = evaluate(run.model, data, ["nll", "elbo"], n=args.n, k=args.k, seed=0)
        eval_s = time.perf_counter() - t0
        x = run.model.sample(64, generator=torch.Generator().manual_seed(0))
        png = (args.img_dir / f"vae-fashion-{name}.png") if args.img_dir else None
        if png is not None:
            png.parent.mkdir(parents=True, exist_ok=True)
            save_samples(x, run.spec, png)
        n = int(report.values["nll_n"])
        base = factorised_nll(data.x_train, data.x_test[:n], binary=name == "binary")
    v = report.values
    epochs = args.steps * min(args.batch_size, len(data)) / len(data)
    return dict(
        setting=name,
        steps=args.steps,
        epochs=epochs,
        train_s=train_s,
        eval_s=eval_s,
        nll=v["nll"],
        nll_se=v["nll_se"],
        bpd=v.get("bpd"),
        elbo=v["elbo"],
        k=args.k,
        n=n,
        base=base,
        base_bpd=base / (data.spec.dim * math.log(2)),
        notes=report.notes,
        png=png,
        seed=args.seed,
    )


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--setting", choices=["binary", "logistic", "both"], default="both")
    p.add_argument("--steps", type=int, default=12000)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--arch", choices=["mlp", "conv"], default="mlp")
    p.add_argument("--latent", type=int, default=32)
    p.add_argument(
        "--hidden",
        type=lambda s: [int(h) for h in s.split(",")],
        default=[512, 256],
        help="MLP widths, comma-separated (encoder; the decoder mirrors them)",
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--k", type=int, default=100, help="importance samples of the IWAE bound")
    p.add_argument("--n", type=int, default=None, help="test examples (default: all 10,000)")
    p.add_argument("--limit", type=int, default=0, help="training examples (0 = all 60,000)")
    p.add_argument(
        "--quick", action="store_true", help="smoke check: 200 steps, 500 test images, k=10, no PNG"
    )
    p.add_argument("--keep-run", default=None, help="keep the run directories as PREFIX-SETTING")
    p.add_argument("--no-png", action="store_true")
    args = p.parse_args()
    if args.quick:
        args.steps, args.n, args.k = 200, 500, 10
    args.img_dir = None if (args.quick or args.no_png) else _bench.IMG_DIR
    _bench.one_thread()
    print(f"# {_bench.machine()}")
    names = ["binary", "logistic"] if args.setting == "both" else [args.setting]
    rows = [run_setting(name, args) for name in names]
    arch = f"{args.arch} {'-'.join(map(str, args.hidden))}, z={args.latent}"
    print()
    print(
        "| setting | model | steps (epochs) | train time | test NLL nats/image (IWAE) | bits/dim "
        "| -ELBO | k, n | factorised pixels NLL | seed |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        bpd = f"{r['bpd']:.3f}" if r["bpd"] is not None else "-"
        print(
            f"| {r['setting']} | VAE {arch} | {r['steps']} ({r['epochs']:.1f}) "
            f"| {_bench.minutes(r['train_s'])} | {r['nll']:.2f} ± {r['nll_se']:.2f} | {bpd} "
            f"| {-r['elbo']:.2f} | k={r['k']}, n={r['n']} | {r['base']:.1f} ({r['base_bpd']:.3f} "
            f"bpd) | {r['seed']} |"
        )
    for r in rows:
        print(
            f"# {r['setting']}: eval {r['eval_s']:.0f}s; {r['notes']['nll']}"
            + (f"; samples -> {r['png']}" if r["png"] else "")
        )


if __name__ == "__main__":
    main()
