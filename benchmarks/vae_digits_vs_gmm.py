"""VAE vs Gaussian mixture on `digits`: held-out NLL in nats/image, one dequantisation convention.

Both models are densities on [0, 1)^64 of uniformly dequantised digits, y = (k + u) / 17
(Theis et al. arXiv:1511.01844). The discrete NLL reported is
    -E[log p(y)] + 64 log 17 >= -log P(k)   (genlab/metrics/likelihood.py),
on the test split (360 images) that genlab dequantises once with its fixed seed.

VAE: genlab `vae` with a Gaussian likelihood trained on freshly dequantised batches
(data.dequantize=true); NLL from the IWAE bound with k samples (evaluate(..., ["nll"])).
GMM: scikit-learn GaussianMixture on the train split dequantised with a fixed generator
(`copies` independent dequantisations stacked). n_components / covariance_type / reg_covar /
copies are chosen on a validation split: the first 1150 training rows fit, the last 287 score
(dequantised once with another fixed seed). The chosen setting is then refitted on all 1437
training rows and scored once on the test split.

--validate does the same for the VAE (trains on the first 1150 rows via data.limit and reports
the NLL on the last 287): that is how the VAE settings below were chosen, never on test.

    python benchmarks/vae_digits_vs_gmm.py               # full run
    python benchmarks/vae_digits_vs_gmm.py --validate    # VAE and GMM scored on validation only
    python benchmarks/vae_digits_vs_gmm.py --quick       # smoke check, < 1 min
"""

from __future__ import annotations

import argparse
import itertools
import math
import time
import warnings

import _bench  # noqa: F401  (sets thread environment before numpy/torch are imported)
import numpy as np
import torch

import genlab.data
from genlab.config import resolve
from genlab.metrics import evaluate
from genlab.train import train
from genlab.viz.grids import save_samples

N_FIT = 1150  # first N_FIT training rows fit, the rest validate (data.limit keeps the first N)
LEVELS = 17
OFFSET = 64 * math.log(LEVELS)  # D log L


def dequantised(data: genlab.data.Data, x: torch.Tensor, seed: int, copies: int = 1) -> np.ndarray:
    g = torch.Generator().manual_seed(seed)
    ys = [data.transform(x, g).flatten(1) for _ in range(copies)]
    return torch.cat(ys).double().numpy()


def gmm_nll(gmm, y: np.ndarray) -> float:
    """Discrete NLL in nats/image: density NLL on [0,1)^64 plus 64 log 17."""
    return float(-gmm.score_samples(y).mean() + OFFSET)


def fit_gmm(y: np.ndarray, n_components: int, cov: str, reg: float, seed: int):
    from sklearn.mixture import GaussianMixture

    gmm = GaussianMixture(
        n_components, covariance_type=cov, reg_covar=reg, max_iter=500, n_init=1, random_state=seed
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # ConvergenceWarning: reported through gmm.converged_
        gmm.fit(y)
    return gmm


def gmm_benchmark(args: argparse.Namespace) -> dict:
    data = genlab.data.load("digits", dequantize=True)
    x_tr = data.x_train
    y_fit_by_copies = {c: dequantised(data, x_tr[:N_FIT], seed=0, copies=c) for c in args.copies}
    y_val = dequantised(data, x_tr[N_FIT:], seed=1)
    sweep = []
    t_sweep = time.perf_counter()
    grid = [(nc, "full", reg) for nc in args.components for reg in args.reg]
    grid += [(nc, "diag", 1e-6) for nc in args.components]
    for copies, (nc, cov, reg) in itertools.product(args.copies, grid):
        t0 = time.perf_counter()
        gmm = fit_gmm(y_fit_by_copies[copies], nc, cov, reg, args.seed)
        sweep.append(
            dict(
                copies=copies,
                n=nc,
                cov=cov,
                reg=reg,
                val=gmm_nll(gmm, y_val),
                fit_s=time.perf_counter() - t0,
                converged=gmm.converged_,
            )
        )
    sweep_s = time.perf_counter() - t_sweep
    best = min(sweep, key=lambda r: r["val"])
    result = dict(sweep=sweep, sweep_s=sweep_s, best=best)
    if not args.validate:
        y_train = dequantised(data, x_tr, seed=0, copies=best["copies"])
        t0 = time.perf_counter()
        gmm = fit_gmm(y_train, best["n"], best["cov"], best["reg"], args.seed)
        result["fit_s"] = time.perf_counter() - t0
        y_test = data.x_test.flatten(1).double().numpy()  # dequantised once by genlab (seed 12345)
        per = -gmm.score_samples(y_test) + OFFSET
        result.update(
            test=float(per.mean()),
            test_se=float(per.std(ddof=1) / math.sqrt(len(per))),
            n_test=len(per),
        )
    return result


def vae_benchmark(args: argparse.Namespace) -> dict:
    overrides = ["data.dequantize=true", "model.likelihood=gaussian", *_bench.vae_overrides(args)]
    if args.validate:
        overrides.append(f"data.limit={N_FIT}")
    cfg = resolve("vae", "digits", None, overrides)
    with _bench.run_dir(args.keep_run) as out:
        t0 = time.perf_counter()
        run = train(cfg, out, progress=False)
        train_s = time.perf_counter() - t0
        data = run.data()
        if args.validate:  # score the held-out training rows, dequantised once (fixed seed)
            full = genlab.data.load("digits")
            data = genlab.data.Data(
                data.spec,
                data.x_train,
                data.y_train,
                full.x_train[N_FIT:],
                full.y_train[N_FIT:],
                dequantize=True,
            )
        t0 = time.perf_counter()
        report = evaluate(run.model, data, ["nll", "elbo"], k=args.k, seed=0)
        eval_s = time.perf_counter() - t0
        png = None
        if not (args.quick or args.validate or args.no_png):
            png = _bench.IMG_DIR / "vae-digits-dequantised.png"
            png.parent.mkdir(parents=True, exist_ok=True)
            x = run.model.sample(64, generator=torch.Generator().manual_seed(0))
            save_samples(x, run.spec, png)
    v = report.values
    return dict(
        train_s=train_s,
        eval_s=eval_s,
        nll=v["nll"],
        nll_se=v["nll_se"],
        bpd=v["bpd"],
        elbo=v["elbo"],  # evaluate applies the dequantisation offset to elbo too
        n=int(v["nll_n"]),
        note=report.notes["nll"],
        png=png,
        epochs=args.steps * min(args.batch_size, len(data)) / len(data),
    )


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ints = lambda s: [int(v) for v in s.split(",")]  # noqa: E731
    p.add_argument("--steps", type=int, default=4000)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--arch", choices=["mlp", "conv"], default="mlp")
    p.add_argument("--latent", type=int, default=16)
    p.add_argument("--hidden", type=ints, default=[128, 128])
    p.add_argument("--seed", type=int, default=0, help="VAE training seed and GMM random_state")
    p.add_argument("--k", type=int, default=1000, help="importance samples of the IWAE bound")
    p.add_argument("--components", type=ints, default=[1, 2, 5, 10, 20, 40])
    p.add_argument(
        "--reg",
        type=lambda s: [float(v) for v in s.split(",")],
        default=[1e-5, 1e-4, 1e-3, 1e-2],
        help="reg_covar values for full covariance",
    )
    p.add_argument(
        "--copies",
        type=ints,
        default=[1, 10],
        help="dequantised copies of the training images the GMM is fitted on",
    )
    p.add_argument(
        "--validate",
        action="store_true",
        help="fit on the first 1150 training rows, report NLL on the other 287 only",
    )
    p.add_argument("--skip-vae", action="store_true")
    p.add_argument("--skip-gmm", action="store_true")
    p.add_argument("--quick", action="store_true", help="smoke check: 300 VAE steps, k=50, 3 GMMs")
    p.add_argument("--keep-run", default=None, help="keep the VAE run directory here")
    p.add_argument("--no-png", action="store_true")
    args = p.parse_args()
    if args.quick:
        args.steps, args.k = 300, 50
        args.components, args.reg, args.copies = [1, 5], [1e-3], [1]
    _bench.one_thread()
    print(f"# {_bench.machine()}")
    where = "validation (287 train rows)" if args.validate else "test (360)"

    vae = None if args.skip_vae else vae_benchmark(args)
    gmm = None if args.skip_gmm else gmm_benchmark(args)

    if gmm is not None:
        print("\nGMM sweep (fit on 1150 train rows, NLL nats/image on 287 validation rows):\n")
        print("| copies | n_components | covariance | reg_covar | val NLL | fit time | converged |")
        print("|---|---|---|---|---|---|---|")
        for r in gmm["sweep"]:
            mark = " **(best)**" if r is gmm["best"] else ""
            print(
                f"| {r['copies']} | {r['n']} | {r['cov']} | {r['reg']:g} | {r['val']:.2f}{mark} "
                f"| {r['fit_s']:.1f}s | {r['converged']} |"
            )
        print(f"\n# GMM sweep: {len(gmm['sweep'])} fits in {gmm['sweep_s']:.0f}s")

    print(f"\n| model | setting | train time | NLL nats/image on {where} | bits/dim | seed |")
    print("|---|---|---|---|---|---|")
    if vae is not None:
        arch = f"{args.arch} {'-'.join(map(str, args.hidden))}, z={args.latent}"
        print(
            f"| VAE (Gaussian lik.) | {arch}, {args.steps} steps ({vae['epochs']:.0f} epochs), "
            f"batch {args.batch_size}, lr {args.lr:g}; IWAE k={args.k}, n={vae['n']} "
            f"| {_bench.minutes(vae['train_s'])} | {vae['nll']:.2f} ± {vae['nll_se']:.2f} "
            f"(-ELBO {-vae['elbo']:.2f}) | {vae['bpd']:.3f} | {args.seed} |"
        )
    if gmm is not None:
        b = gmm["best"]
        setting = (
            f"{b['n']} components, {b['cov']} cov, reg_covar {b['reg']:g}, "
            f"{b['copies']} dequantised cop{'y' if b['copies'] == 1 else 'ies'}"
        )
        if args.validate:
            print(
                f"| GMM (best on val) | {setting} | {b['fit_s']:.2f}s | {b['val']:.2f} "
                f"| {b['val'] / (64 * math.log(2)):.3f} | {args.seed} |"
            )
        else:
            print(
                f"| GMM (chosen on val) | {setting}; refit on 1437 | {gmm['fit_s']:.2f}s "
                f"| {gmm['test']:.2f} ± {gmm['test_se']:.2f} "
                f"| {gmm['test'] / (64 * math.log(2)):.3f} | {args.seed} |"
            )
    if vae is not None:
        print(
            f"\n# VAE: eval {vae['eval_s']:.0f}s; {vae['note']}"
            + (f"; samples -> {vae['png']}" if vae["png"] else "")
        )


if __name__ == "__main__":
    main()
