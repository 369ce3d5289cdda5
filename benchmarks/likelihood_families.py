"""Held-out log-likelihood across families: classic baselines against deep models (issue 6).

--task digits: every density model on `digits` with the same split (1,437 train / 360 test) and the
same uniform dequantisation (data.dequantize=true, a density NLL + 64 log 17; evaluate's nll), in
nats per image and bits/dim. Deep models train with their saved configs (configs/NAME-digits.yaml),
one seed. The classic baselines' hyperparameters (GMM components and covariance, PPCA / FA factors;
KDE's bandwidth is already cross-validated) are chosen on a validation split, the last 20% of the
training split, then refitted on the whole training split; the test split is never used for a
choice. Categorical models (PixelCNN with a 17-way softmax) give a probability mass and need no
dequantisation. The RBM models binary data only, so it has its own rows on binarised digits
(data.binarize=true), beside a PixelCNN on the same binarised digits.

--task fashion: bits/dim on Fashion-MNIST (10,000 test images, 256 levels) for the flows, PixelCNN
and the VAE, with their saved configs.

--task toys: exact test NLL of RealNVP on the six FFJORD toys (configs/realnvp-moons.yaml with
data.name=<toy>), against each toy's differential entropy.

    python benchmarks/likelihood_families.py --task digits
    python benchmarks/likelihood_families.py --task digits --only gmm,kde,ppca,fa
    python benchmarks/likelihood_families.py --task fashion --only realnvp,pixelcnn
    python benchmarks/likelihood_families.py --task toys
    python benchmarks/likelihood_families.py --task toys --set train.steps=20000
"""

from __future__ import annotations

import argparse
import math
import time
from pathlib import Path

import _bench  # (first: thread settings)
import torch

from genlab import models
from genlab.config import resolve
from genlab.data.load import load_config
from genlab.metrics.evaluate import evaluate
from genlab.train import train

CONFIG_DIR = _bench.BENCH_DIR.parent / "configs"

DIGITS_DEEP = ("vae", "hvae", "realnvp", "glow", "made", "pixelcnn")
CLASSIC = ("gmm", "kde", "ppca", "fa")
FASHION = ("realnvp", "glow", "pixelcnn", "vae")
# Candidate settings, chosen on the validation split (never on the test split).
CLASSIC_GRID: dict[str, list[dict]] = {
    "gmm": [
        *(
            {"components": k, "covariance": "full", "reg_covar": r}
            for r in (1e-6, 1e-3)
            for k in (1, 2, 3, 5, 10)
        ),
        *({"components": k, "covariance": "diag"} for k in (5, 10, 20, 50, 100, 200)),
    ],
    "ppca": [{"factors": q} for q in (4, 8, 16, 32, 48, 56, 60)],
    "fa": [{"factors": q} for q in (4, 8, 16, 32, 48, 56, 60)],
    "kde": [{}],  # its bandwidth is cross-validated inside the fit
}
# Differential entropy of each toy in nats (issue 6): the lowest expected NLL a model can reach.
ENTROPY: dict[str, float] = {
    "8gaussians": 2.835,
    "checkerboard": 3.466,
    "moons": 2.391,
    "circles": 3.269,
    "swissroll": 2.672,
    "2spirals": 2.645,
}


def train_config(config_file: Path, overrides: list[str], seed: int):
    """Train a saved config (one checkpoint at the end) in a temporary directory."""
    overrides = [*overrides, f"train.seed={seed}", "train.device=cpu", "train.log_every=500"]
    steps = resolve(None, None, str(config_file), overrides).train.steps
    last_only = [f"train.checkpoint_every={steps}", f"train.sample_every={steps}"]
    cfg = resolve(None, None, str(config_file), overrides + last_only)
    with _bench.run_dir(None) as out:
        t0 = time.perf_counter()
        run = train(cfg, out, progress=False)
        seconds = time.perf_counter() - t0
    return run, cfg, seconds


def test_nll(run, cfg, seed: int, k: int = 100) -> tuple[dict, str, float]:
    """evaluate's nll metric on the whole test split: (values, note, seconds)."""
    t0 = time.perf_counter()
    report = evaluate(run.model, load_config(cfg.data), ["nll"], seed=seed, k=k)
    if "nll" in report.skipped:
        raise RuntimeError(report.skipped["nll"])
    return report.values, report.notes["nll"], time.perf_counter() - t0


def select_classic(name: str, data_name: str, seed: int) -> tuple[dict, float]:
    """The grid setting with the best NLL on the last 20% of the training split (fitted on the
    rest)."""
    cfg = resolve(None, None, str(CONFIG_DIR / f"{name}-{data_name}.yaml"), [])
    data = load_config(cfg.data)
    g = torch.Generator().manual_seed(seed)
    x = data.transform(data.x_train, g)
    n_fit = int(0.8 * len(x))
    best, best_nll = {}, math.inf
    for setting in CLASSIC_GRID[name]:
        model = models.build(name, data.spec, **{**vars(cfg.model_cfg), **setting}).double()
        model.fit_data(x[:n_fit])
        nll = float(-model.log_prob(x[n_fit:].double()).mean())
        print(f"#   {name} {setting}: validation density NLL {nll:.2f}", flush=True)
        if nll < best_nll:
            best, best_nll = setting, nll
    return best, best_nll


def duration(seconds: float) -> str:
    return f"{seconds:.1f} s" if seconds < 60 else _bench.minutes(seconds)


def row(label: str, values: dict, seconds: float, note: str, dim: int) -> str:
    nll = values.get("nll", math.nan)
    se = values.get("nll_se", math.nan)
    return (
        f"| {label} | {nll:.2f} ± {se:.2f} | {values.get('bpd', nll / dim / math.log(2)):.3f} | "
        f"{duration(seconds)} | {note} |"
    )


def task_digits(args) -> list[str]:
    names = args.only.split(",") if args.only else [*CLASSIC, *DIGITS_DEEP, "rbm"]
    table = [
        "| model | test NLL nats/image | bits/dim | fit/train time | how |",
        "|---|---|---|---|---|",
    ]
    for name in names:
        overrides: list[str] = []
        label = name
        if name in CLASSIC:
            best, val_nll = select_classic(name, "digits", args.seed)
            overrides = [f"model.{k}={v}" for k, v in best.items()]
            label = f"{name} {' '.join(f'{k}={v}' for k, v in best.items())}".strip()
        if name == "rbm":
            for model_name in ("rbm", "pixelcnn"):
                run, cfg, seconds = train_config(
                    CONFIG_DIR / f"{model_name}-digits.yaml", ["data.binarize=true"], args.seed
                )
                values, note, _ = test_nll(run, cfg, args.seed)
                table.append(row(f"{model_name} (binarised digits)", values, seconds, note, 64))
                print(table[-1], flush=True)
            continue
        run, cfg, seconds = train_config(CONFIG_DIR / f"{name}-digits.yaml", overrides, args.seed)
        values, note, _ = test_nll(run, cfg, args.seed)
        table.append(row(label, values, seconds, note, 64))
        print(table[-1], flush=True)
    return table


def task_fashion(args) -> list[str]:
    names = args.only.split(",") if args.only else list(FASHION)
    table = [
        "| model | steps | test NLL nats/image | bits/dim | train time | how |",
        "|---|---|---|---|---|---|",
    ]
    for name in names:
        config_file = CONFIG_DIR / f"{name}-fashion-mnist.yaml"
        run, cfg, seconds = train_config(config_file, args.set, args.seed)
        values, note, _ = test_nll(run, cfg, args.seed)
        line = row(f"{name} | {cfg.train.steps}", values, seconds, note, 784)
        table.append(line)
        print(line, flush=True)
    return table


def task_toys(args) -> list[str]:
    toys = args.only.split(",") if args.only else list(ENTROPY)
    table = [
        "| toy | test NLL (nats) | entropy | gap | train time |",
        "|---|---|---|---|---|",
    ]
    for toy in toys:
        run, cfg, seconds = train_config(
            CONFIG_DIR / "realnvp-moons.yaml", [f"data.name={toy}", *args.set], args.seed
        )
        values, _, _ = test_nll(run, cfg, args.seed)
        nll, se = values["nll"], values["nll_se"]
        line = (
            f"| {toy} | {nll:.3f} ± {se:.3f} | {ENTROPY[toy]:.3f} | {nll - ENTROPY[toy]:+.3f} | "
            f"{duration(seconds)} |"
        )
        table.append(line)
        print(line, flush=True)
    return table


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--task", choices=("digits", "fashion", "toys"), required=True)
    parser.add_argument("--only", default="", help="comma-separated models (or toys)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--set", nargs="*", default=[], help="config overrides (key=value) for every deep model"
    )
    args = parser.parse_args()
    _bench.one_thread()
    print(f"# {_bench.machine()}", flush=True)
    t0 = time.perf_counter()
    table = {"digits": task_digits, "fashion": task_fashion, "toys": task_toys}[args.task](args)
    print(f"# {args.task}: {_bench.minutes(time.perf_counter() - t0)} in all")
    print("\n".join(table))


if __name__ == "__main__":
    main()
