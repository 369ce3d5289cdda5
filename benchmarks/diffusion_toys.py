"""Diffusion on 2-D toys: exact test NLL through the probability-flow ODE, and DDPM mode coverage.

--task nll: for each FFJORD toy, train a VP score SDE with an MLP (configs/score-sde-<toy>.yaml
when it exists, else configs/score-sde-moons.yaml with data.name=<toy>; --set overrides apply to
every toy), then the exact NLL of the first n test points (default 2,000, to bound the ODE cost):
evaluate's nll metric, i.e. -log p_{t_eps}(x) by the probability-flow ODE (scipy RK45, rtol =
atol = 1e-5, exact divergence in 2-D; genlab.samplers.likelihood.ode_log_likelihood), in nats.
It is compared with the dataset's differential entropy, the best achievable expected NLL (values
of issue 5); the target is a gap below 0.1 nats. With --ddpm, a DDPM (configs/ddpm-moons.yaml
with data.name=<toy>) is also trained and its variational bound (one trajectory per point) is
reported on the same n points.

--task modes: a saved DDPM config (configs/ddpm-ring8.yaml, configs/ddpm-grid25.yaml, or --config
FILE) over seeds 0..S-1, then 2,500 samples with the config's sampler: modes captured, high-quality
% and KL of the mode histogram to uniform (genlab.metrics.toy.mode_metrics; VEEGAN / PacGAN
protocol, within 3 std of a mode), the worst seed, training and sampling time.

    python benchmarks/diffusion_toys.py --task nll                        # six toys
    python benchmarks/diffusion_toys.py --task nll --only moons,8gaussians --n 1000
    python benchmarks/diffusion_toys.py --task nll --only moons --set train.steps=40000
    python benchmarks/diffusion_toys.py --task modes                      # both saved configs
    python benchmarks/diffusion_toys.py --task modes --config configs/ddpm-ring8.yaml --seeds 5
    python benchmarks/diffusion_toys.py --quick                           # smoke run, both tasks
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import _bench  # (first: thread settings)
import torch

from genlab.config import resolve
from genlab.data.load import load_config
from genlab.data.toys import MIXTURES
from genlab.metrics.evaluate import evaluate
from genlab.metrics.toy import mode_metrics
from genlab.train import train

CONFIG_DIR = _bench.BENCH_DIR.parent / "configs"

# Differential entropy of each toy in nats (issue 5): the lowest expected NLL any model can reach.
ENTROPY: dict[str, float] = {
    "8gaussians": 2.835,
    "checkerboard": 3.466,  # log 32: uniform on 8 squares of side 2
    "moons": 2.391,
    "circles": 3.269,
    "swissroll": 2.672,
    "2spirals": 2.645,
}
TARGET_GAP = 0.1
MODE_CONFIGS = ("ddpm-ring8.yaml", "ddpm-grid25.yaml")


def train_once(config_file: str, overrides: list[str], seed: int):
    """Train `config_file` + overrides with `seed` (one checkpoint at the end); the run and its
    training time. The run directory is a temporary one, removed afterwards."""
    overrides = [*overrides, f"train.seed={seed}", "train.device=cpu", "train.log_every=500"]
    steps = resolve(None, None, config_file, overrides).train.steps
    last_only = [f"train.checkpoint_every={steps}", f"train.sample_every={steps}"]
    cfg = resolve(None, None, config_file, overrides + last_only)
    with _bench.run_dir(None) as out:
        t0 = time.perf_counter()
        run = train(cfg, out, progress=False)
        seconds = time.perf_counter() - t0
    return run, seconds, cfg


def nll_config(toy: str) -> tuple[str, list[str]]:
    """The toy's own score-SDE config, else the moons one pointed at the toy."""
    own = CONFIG_DIR / f"score-sde-{toy}.yaml"
    if own.is_file():
        return str(own), []
    return str(CONFIG_DIR / "score-sde-moons.yaml"), [f"data.name={toy}"]


def test_nll(run, cfg, n: int, seed: int) -> tuple[float, float, float]:
    """evaluate's nll metric on the first n test points: (mean NLL, its standard error, seconds)."""
    t0 = time.perf_counter()
    report = evaluate(run.model, load_config(cfg.data), ["nll"], n=n, seed=seed)
    seconds = time.perf_counter() - t0
    if "nll" in report.skipped:
        raise RuntimeError(report.skipped["nll"])
    return report.values["nll"], report.values["nll_se"], seconds


def task_nll(args) -> list[str]:
    toys = args.only.split(",") if args.only else list(ENTROPY)
    unknown = [t for t in toys if t not in ENTROPY]
    if unknown:
        raise SystemExit(f"unknown toy(s) {unknown}; choose from {', '.join(ENTROPY)}")
    ddpm_col = " DDPM bound |" if args.ddpm else ""
    table = [
        f"| toy | steps | test NLL (nats) | entropy | gap | < {TARGET_GAP} |{ddpm_col} "
        "train time | ODE NLL time |",
        "|---|---|---|---|---|---|" + ("---|" if args.ddpm else "") + "---|---|",
    ]
    for toy in toys:
        config_file, data_override = nll_config(toy)
        run, seconds, cfg = train_once(config_file, [*data_override, *args.set], args.seed)
        nll, se, nll_seconds = test_nll(run, cfg, args.n, args.seed)
        gap = nll - ENTROPY[toy]
        bound = ""
        if args.ddpm:
            ddpm_file = str(CONFIG_DIR / "ddpm-moons.yaml")
            d_run, d_seconds, d_cfg = train_once(ddpm_file, [f"data.name={toy}", *args.set], 0)
            b, b_se, b_seconds = test_nll(d_run, d_cfg, args.n, args.seed)
            bound = f" {b:.3f} +- {b_se:.3f}"
            print(
                f"# ddpm {toy} seed {args.seed}: {d_cfg.train.steps} steps: variational bound "
                f"{b:.3f} +- {b_se:.3f} nats (n={args.n}), train {d_seconds:.0f} s, "
                f"bound {b_seconds:.0f} s",
                flush=True,
            )
        name = " ".join([Path(config_file).name, *data_override])
        print(
            f"# score-sde {toy} seed {args.seed} [{name}]: {cfg.train.steps} steps, "
            f"lr {cfg.train.lr}, hidden {list(cfg.model_cfg.hidden)}: test NLL {nll:.3f} +- "
            f"{se:.3f} nats (n={args.n}), entropy {ENTROPY[toy]:.3f}, gap {gap:+.3f}, "
            f"train {seconds:.0f} s, ODE NLL {nll_seconds:.0f} s",
            flush=True,
        )
        table.append(
            f"| {toy} | {cfg.train.steps} | {nll:.3f} +- {se:.3f} | {ENTROPY[toy]:.3f} "
            f"| {gap:+.3f} | {'yes' if gap < TARGET_GAP else 'no'} |"
            + (f"{bound} |" if args.ddpm else "")
            + f" {_bench.minutes(seconds)} | {_bench.minutes(nll_seconds)} |"
        )
    return table


def task_modes(args) -> list[str]:
    files = args.config or [str(CONFIG_DIR / name) for name in MODE_CONFIGS]
    table = [
        "| config | modes | worst seed | high quality % | worst seed % | KL modes | "
        "train time / seed | sampling time |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for config_file in files:
        rows = []
        for seed in range(args.first_seed, args.first_seed + args.seeds):
            run, seconds, cfg = train_once(config_file, args.set, seed)
            t0 = time.perf_counter()
            g = torch.Generator().manual_seed(1000 + seed)
            with torch.no_grad():
                x = run.model.sample(
                    args.samples, generator=g, sampler=args.sampler, steps=args.sample_steps
                ).double()
            sample_seconds = time.perf_counter() - t0
            means, std = MIXTURES[cfg.data.name]
            m = mode_metrics(x, torch.as_tensor(means), std)
            rows.append((m, seconds, sample_seconds))
            mc = cfg.model_cfg
            sampler = args.sampler or mc.sampler
            print(
                f"# {Path(config_file).name} {cfg.data.name} seed {seed}: {cfg.train.steps} "
                f"steps, lr {cfg.train.lr}, hidden {list(mc.hidden)}, T {mc.timesteps}, "
                f"sampler {sampler} {args.sample_steps or mc.sample_steps or 'default'}: "
                f"modes {m['modes']:.0f}, high quality {100 * m['hq']:.1f}%, "
                f"KL {m['kl_modes']:.3f}, train {seconds:.0f} s, sample {sample_seconds:.1f} s",
                flush=True,
            )
        k = len(MIXTURES[cfg.data.name][0])
        modes = [r["modes"] for r, _, _ in rows]
        hq = [100 * r["hq"] for r, _, _ in rows]
        kl = [r["kl_modes"] for r, _, _ in rows]
        t = statistics.median(s for _, s, _ in rows)
        ts = statistics.median(s for _, _, s in rows)
        table.append(
            f"| {Path(config_file).name} | {statistics.mean(modes):.1f} / {k} | {min(modes):.0f} "
            f"| {statistics.mean(hq):.1f} | {min(hq):.1f} | {statistics.mean(kl):.3f} "
            f"| {_bench.minutes(t)} | {ts:.1f} s / {args.samples} |"
        )
    return table


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--task", choices=("nll", "modes", "all"), default="all")
    parser.add_argument("--only", help="nll: comma-separated toys (default: all six)")
    parser.add_argument("--n", type=int, default=2000, help="nll: test points (ODE cost)")
    parser.add_argument("--seed", type=int, default=0, help="nll: training seed")
    parser.add_argument("--ddpm", action="store_true", help="nll: also a DDPM and its bound")
    parser.add_argument(
        "--config", action="append", help="modes: config file (repeatable; default: both saved)"
    )
    parser.add_argument("--seeds", type=int, default=5, help="modes: seeds first..first+S-1")
    parser.add_argument("--first-seed", type=int, default=0)
    parser.add_argument("--samples", type=int, default=2500, help="modes: samples (protocol)")
    parser.add_argument("--sampler", help="modes: sampler (default: the config's)")
    parser.add_argument("--sample-steps", type=int, help="modes: sampler steps")
    parser.add_argument(
        "--set", action="append", default=[], metavar="KEY=VALUE", help="extra override, repeatable"
    )
    parser.add_argument("--quick", action="store_true", help="smoke run: tiny budgets, 1 seed")
    args = parser.parse_args()
    _bench.one_thread()
    if args.quick:
        args.only, args.n, args.seeds = args.only or "moons", min(args.n, 200), 1
        args.set = [*args.set, "train.steps=200"]
        args.config = args.config or [str(CONFIG_DIR / MODE_CONFIGS[0])]
        args.sample_steps = args.sample_steps or 100
        args.sampler = args.sampler or "ancestral"
    print(f"machine: {_bench.machine()}")
    if args.task in ("nll", "all"):
        print("\n" + "\n".join(task_nll(args)) + "\n", flush=True)
    if args.task in ("modes", "all"):
        print("\n" + "\n".join(task_modes(args)) + "\n", flush=True)


if __name__ == "__main__":
    main()
