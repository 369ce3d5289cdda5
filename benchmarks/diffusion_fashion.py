"""Diffusion on Fashion-MNIST: quality against network evaluations per sampler, classifier-free
guidance, and latent against pixel diffusion.

Every task reads trained runs (`genlab train --config configs/<name>.yaml --out RUN`); a RUN that
does not exist yet is trained first from --config. Scores use genlab's Fashion-MNIST classifier
features (FID / KID against the 10,000 test images; NOT comparable to Inception FIDs in papers).
All samplers start from the same noise (one generator seed), so rows differ only by the solver.

--task samplers: one DDPM run; for each sampler/steps pair, n samples, their FID/KID, the network
evaluations (NFE) per sample and the sampling wall time. NFE: ancestral and DDIM call the network
once per step, DPM-Solver++(2M) and its SDE variant once per step too (they reuse the previous
step's output).
--task guidance: one ddpm-cfg run; for each guidance weight w, n samples with labels cycling
through the 10 classes, the classifier's accuracy on them (does it see the class asked for?),
and their FID.
--task latent: a pixel DDPM run and an ldm run, each with its own default sampler; training time
(from the runs' TensorBoard wall times; the ldm's includes its first-stage autoencoder),
sampling time and FID/KID.

    python benchmarks/diffusion_fashion.py --task samplers --run runs/bench/ddpm-fashion-mnist
    python benchmarks/diffusion_fashion.py --task samplers --run R --only ancestral:1000 --n 500
    python benchmarks/diffusion_fashion.py --task samplers --run R --n 1000 --workers 2
    python benchmarks/diffusion_fashion.py --task guidance --run runs/bench/ddpm-cfg-fashion-mnist
    python benchmarks/diffusion_fashion.py --task latent --run runs/bench/ddpm-fashion-mnist \\
        --latent-run runs/bench/ldm-fashion-mnist
    python benchmarks/diffusion_fashion.py --quick             # smoke run on tiny models
"""

from __future__ import annotations

import argparse
import multiprocessing
import time
from pathlib import Path

import _bench  # (first: thread settings)
import torch

from genlab.config import resolve
from genlab.data import load
from genlab.metrics.features import classifier_features
from genlab.metrics.fid import fid, kid
from genlab.train import train
from genlab.train.run import Run, load_run
from genlab.viz.grids import save_samples

CONFIG_DIR = _bench.BENCH_DIR.parent / "configs"
SAMPLERS = ("ancestral:1000", "ddim:10", "ddim:20", "ddim:50", "ddim:100")
SAMPLERS += ("dpm-solver++:10", "dpm-solver++:20", "sde-dpm-solver++:10", "sde-dpm-solver++:20")
WEIGHTS = (0.0, 0.5, 1.0, 2.0, 4.0)
BATCH = 250  # samples per network call: bounds memory, keeps one thread busy


def open_or_train(path: str, config: str, overrides: list[str], weights: str = "auto") -> Run:
    """The run at `path`, trained first from `config` when it has no checkpoint yet; `weights`:
    auto (EMA when present), ema or model (the raw weights)."""
    if not (Path(path) / "checkpoints").is_dir():
        cfg = resolve(None, None, config, [*overrides, "train.device=cpu", "train.log_every=100"])
        train(cfg, path, progress=False)
    return load_run(path, weights=weights)


def training_seconds(run_dir: Path) -> float:
    """Training wall time from the TensorBoard scalars (first to last logged step, scaled to
    all steps)."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(run_dir / "tensorboard"))
    acc.Reload()
    events = acc.Scalars("loss")
    first, last = events[0], events[-1]
    return (last.wall_time - first.wall_time) * last.step / max(1, last.step - first.step)


def first_stage_dir(run: Run) -> Path | None:
    """The run a latent model's first stage was trained in: RUN/first_stage_run, or the run
    named by model.first_stage."""
    for path in (Path(run.dir) / "first_stage_run", Path(run.config.model_cfg.first_stage)):
        if (path / "tensorboard").is_dir():
            return path
    return None


class Scorer:
    """Classifier features of the test split, and FID / KID / class accuracy of a sample set."""

    def __init__(self, data) -> None:
        self.features = classifier_features(data)
        self.real, _ = self.features.extract(data.x_test)
        self.x_train = data.x_train

    def score(self, x: torch.Tensor, labels: torch.Tensor | None = None) -> dict[str, float]:
        feats, probs = self.features.extract(x)
        g = torch.Generator().manual_seed(0)
        size = min(1000, len(x) // 2)
        kid_mean, kid_std = kid(self.real, feats, subsets=100, subset_size=size, generator=g)
        out = dict(fid=fid(self.real, feats), kid=kid_mean, kid_std=kid_std)
        if labels is not None:
            out["acc"] = (probs.argmax(1) == labels).float().mean().item()
        return out

    def floor(self, n: int) -> dict[str, float]:
        """n training images against the test set: what a model that copies the data scores."""
        return self.score(self.x_train[:n])


def sample(
    run: Run, n: int, seed: int, labels: torch.Tensor | None = None, **kw
) -> tuple[torch.Tensor, float]:
    """n samples in batches of BATCH from one seeded generator; the samples and wall seconds."""
    g = torch.Generator().manual_seed(seed)
    t0 = time.perf_counter()
    parts = []
    for start in range(0, n, BATCH):
        part = None if labels is None else labels[start : start + BATCH]
        parts.append(run.model.sample(min(BATCH, n - start), generator=g, labels=part, **kw))
    return torch.cat(parts), time.perf_counter() - t0


def _sample_share(run_dir: str, weights: str, n: int, seed: int, kw: dict) -> torch.Tensor:
    """One worker's share of a row: a spawned process with one thread."""
    _bench.one_thread()
    return sample(load_run(run_dir, weights=weights), n, seed, **kw)[0]


def sample_in_workers(args, run: Run, **kw) -> tuple[torch.Tensor, float]:
    """args.n samples and the wall seconds: from this process with one generator (seed), or with
    --workers K from K processes of one thread each, worker k drawing from seed + 1000 k (the
    1,000-step chain: 3.9 ms per image and step with two such processes, 4.7 ms with one process
    of 2 threads, RESULTS 7c). Wall time with workers includes their start and the loading of
    the run (several seconds)."""
    if args.workers == 1:
        return sample(run, args.n, args.seed, **kw)
    k_all = args.workers
    shares = [args.n // k_all + (k < args.n % k_all) for k in range(k_all)]
    jobs = [(args.run, args.weights, m, args.seed + 1000 * k, kw) for k, m in enumerate(shares)]
    t0 = time.perf_counter()
    with multiprocessing.get_context("spawn").Pool(k_all) as pool:
        parts = pool.starmap(_sample_share, jobs)
    return torch.cat(parts), time.perf_counter() - t0


def row(name: str, nfe: int | str, seconds: float, n: int, s: dict[str, float]) -> str:
    acc = f" | {100 * s['acc']:.1f}" if "acc" in s else ""
    return (
        f"| {name} | {nfe} | {_bench.minutes(seconds)} | {s['fid']:.2f} "
        f"| {s['kid']:.4g} ± {s['kid_std']:.2g}{acc} | {n} |"
    )


def task_samplers(args, scorer: Scorer) -> None:
    config = args.config or str(CONFIG_DIR / "ddpm-fashion-mnist.yaml")
    run = open_or_train(args.run, config, [], args.weights)
    print(f"# run {args.run}: step {run.step}, {args.weights} weights", flush=True)
    print("| sampler | NFE | sampling time | FID | KID | n |\n|---|---|---|---|---|---|")
    print(row("real data (train vs test)", 0, 0.0, args.n, scorer.floor(args.n)), flush=True)
    for item in args.only.split(",") if args.only else SAMPLERS:
        name, steps = item.split(":")
        x, seconds = sample_in_workers(args, run, sampler=name, steps=int(steps))
        print(row(f"{name} {steps} steps", steps, seconds, args.n, scorer.score(x)), flush=True)
        if args.png:
            save_samples(x[:64], run.spec, _bench.IMG_DIR / f"ddpm-fashion-{name}-{steps}.png")


def task_guidance(args, scorer: Scorer) -> None:
    config = args.config or str(CONFIG_DIR / "ddpm-cfg-fashion-mnist.yaml")
    run = open_or_train(args.run, config, [], args.weights)
    print(f"# run {args.run}: step {run.step}, {args.weights} weights", flush=True)
    labels = torch.arange(args.n) % run.spec.num_classes
    print("| guidance w | NFE | sampling time | FID | KID | class accuracy % | n |")
    print("|---|---|---|---|---|---|---|")
    weights = [float(w) for w in args.only.split(",")] if args.only else WEIGHTS
    for w in weights:
        x, seconds = sample(run, args.n, args.seed, labels, guidance=w)
        nfe = run.config.model_cfg.sample_steps * (1 if w == 0 else 2)
        print(row(f"{w:g}", nfe, seconds, args.n, scorer.score(x, labels)), flush=True)
        if args.png:
            save_samples(x[:100], run.spec, _bench.IMG_DIR / f"ddpm-cfg-fashion-w{w:g}.png")


def task_latent(args, scorer: Scorer) -> None:
    pixel = open_or_train(args.run, str(CONFIG_DIR / "ddpm-fashion-mnist.yaml"), [], args.weights)
    config = str(CONFIG_DIR / "ldm-fashion-mnist.yaml")
    latent = open_or_train(args.latent_run, config, [], args.weights)
    print(
        "| model | parameters (trained / all) | train steps | train time | sampler "
        "| sampling time | FID | KID | n |\n|---|---|---|---|---|---|---|---|---|"
    )
    for name, run in (("pixel DDPM", pixel), ("latent DDPM (ldm)", latent)):
        x, seconds = sample(run, args.n, args.seed)
        s = scorer.score(x)
        params = sum(p.numel() for p in run.model.parameters() if p.requires_grad)
        total = sum(p.numel() for p in run.model.parameters())
        m = run.config.model_cfg
        train_s = training_seconds(Path(run.dir))
        stage = first_stage_dir(run) if run is latent else None
        train_s += training_seconds(stage) if stage else 0.0
        print(
            f"| {name} | {params / 1e6:.2f}M / {total / 1e6:.2f}M | {run.step} "
            f"| {_bench.minutes(train_s)} | {m.sampler} {m.sample_steps} "
            f"| {_bench.minutes(seconds)} | {s['fid']:.2f} | {s['kid']:.4g} ± {s['kid_std']:.2g} "
            f"| {args.n} |",
            flush=True,
        )
        if args.png:
            tag = "ldm" if run is latent else "ddpm"
            save_samples(x[:64], run.spec, _bench.IMG_DIR / f"{tag}-fashion-samples.png")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--task", choices=("samplers", "guidance", "latent"), default="samplers")
    p.add_argument("--run", default="runs/bench/ddpm-fashion-mnist")
    p.add_argument("--latent-run", default="runs/bench/ldm-fashion-mnist")
    p.add_argument("--config", help="config to train --run from when it does not exist")
    p.add_argument(
        "--weights", choices=("auto", "ema", "model"), default="auto", help="EMA or raw weights"
    )
    p.add_argument("--only", help="samplers as NAME:STEPS,... or guidance weights w,...")
    p.add_argument("--n", type=int, default=1000, help="generated images scored per row")
    p.add_argument("--seed", type=int, default=0, help="the sampling noise")
    p.add_argument("--no-png", dest="png", action="store_false")
    p.add_argument("--quick", action="store_true", help="tiny runs in a temp dir, nothing saved")
    p.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    p.add_argument(
        "--workers", type=int, default=1, help="--task samplers: sampling processes of 1 thread"
    )
    args = p.parse_args()
    _bench.one_thread()
    torch.set_num_threads(args.threads)  # e.g. 2 for a long chain on an otherwise idle machine
    print(f"# {_bench.machine()}")
    data = load("fashion-mnist")
    scorer = Scorer(data)
    print(f"# {scorer.features.note}", flush=True)
    if args.quick:
        quick(args, scorer)
        return
    _bench.IMG_DIR.mkdir(parents=True, exist_ok=True)
    {"samplers": task_samplers, "guidance": task_guidance, "latent": task_latent}[args.task](
        args, scorer
    )


def quick(args, scorer: Scorer) -> None:
    """Each task on 20-step models with T = 20 and 100 samples: a smoke run of the script."""
    tiny = [
        "model.channels=[8,8]",
        "model.num_res_blocks=1",
        "model.timesteps=20",
        "train.steps=20",
        "train.checkpoint_every=20",
        "train.sample_every=20",
    ]
    args.n, args.png = 100, False
    with _bench.run_dir(None) as out:
        args.run, args.only = str(out / "ddpm"), "ancestral:20,ddim:5,dpm-solver++:5"
        args.config = str(CONFIG_DIR / "ddpm-fashion-mnist.yaml")
        open_or_train(args.run, args.config, tiny)
        task_samplers(args, scorer)
        args.run, args.only = str(out / "cfg"), "0,2"
        args.config = str(CONFIG_DIR / "ddpm-cfg-fashion-mnist.yaml")
        open_or_train(args.run, args.config, tiny)
        task_guidance(args, scorer)


if __name__ == "__main__":
    main()
