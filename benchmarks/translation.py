"""pix2pix and CycleGAN on the image-to-image tasks: PSNR / SSIM on the test split, sample grids.

Each run trains from a ready config (configs/{pix2pix,cyclegan}-{digits,fashion-mnist}.yaml:
pix2pix on the paired task `inpaint`, CycleGAN on the unpaired task `invert`), then scores
translate(source(x)) against x over the whole test split with genlab's `recon` metric (PSNR in
dB, SSIM, MS-SSIM, outputs clamped to the data range) and FID with genlab's classifier features.
The "source" columns score the task input itself against the target: the do-nothing baseline.
A grid of sources / translations / targets (rows of 8) goes to benchmarks/img/.

    python benchmarks/translation.py                         # the four runs, ~20 min on 1 thread
    python benchmarks/translation.py --only pix2pix-digits   # one of them
    python benchmarks/translation.py --quick                 # smoke run, nothing saved
"""

from __future__ import annotations

import argparse
import time

import _bench  # (first: thread settings)
import torch

from genlab.config import resolve
from genlab.metrics import evaluate
from genlab.metrics.image_quality import psnr, ssim
from genlab.train import train
from genlab.viz.figures import reconstructions

RUNS = ("pix2pix-digits", "cyclegan-digits", "pix2pix-fashion-mnist", "cyclegan-fashion-mnist")
CONFIG_DIR = _bench.BENCH_DIR.parent / "configs"


def source_scores(model, x: torch.Tensor) -> tuple[float, float]:
    """PSNR and SSIM of the task sources themselves against the targets (no model)."""
    low, high = model.spec.value_range
    source = model.source_of(x.to(model.device)).cpu()
    return (
        float(psnr(source, x, data_range=high - low).double().mean()),
        float(ssim(source, x, data_range=high - low).double().mean()),
    )


def run_one(name: str, args: argparse.Namespace) -> dict:
    overrides = [f"train.seed={args.seed}", "train.device=cpu", "train.log_every=100"]
    if args.steps:
        overrides += [f"train.steps={args.steps}", f"train.checkpoint_every={args.steps}"]
    cfg = resolve(None, None, str(CONFIG_DIR / f"{name}.yaml"), overrides)
    with _bench.run_dir(args.keep_run and f"{args.keep_run}-{name}") as out:
        t0 = time.perf_counter()
        run = train(cfg, out, progress=False)
        train_s = time.perf_counter() - t0
        task = run.model.cfg.task
        data = run.data()
        metrics = ["recon"] if args.quick else ["recon", "fid"]
        report = evaluate(run.model, data, metrics, n=args.n, seed=0)
        x_test = data.x_test[: int(report.values["recon_n"])]
        with torch.no_grad():
            src_psnr, src_ssim = source_scores(run.model, x_test)
        if args.img_dir:
            y = None if data.y_test is None else data.y_test[:24]
            reconstructions(run.model, data.x_test[:24], y, args.img_dir / f"{name}.png")
    v = report.values
    return dict(
        name=name,
        task=f"{task} ({'paired' if name.startswith('pix2pix') else 'unpaired'})",
        steps=cfg.train.steps,
        train_s=train_s,
        psnr=v["psnr"],
        ssim=v["ssim"],
        ms_ssim=v["ms_ssim"],
        fid=v.get("fid"),
        n=int(v["recon_n"]),
        src_psnr=src_psnr,
        src_ssim=src_ssim,
    )


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--only", help="comma-separated runs: " + ",".join(RUNS))
    p.add_argument("--steps", type=int, default=0, help="override the configs' steps (0 = keep)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--n", type=int, default=None, help="test examples scored (default: all)")
    p.add_argument("--quick", action="store_true", help="digits only, 50 steps, no FID, no PNG")
    p.add_argument("--keep-run", default=None, help="keep the run directories as PREFIX-RUN")
    p.add_argument("--no-png", action="store_true")
    args = p.parse_args()
    names = args.only.split(",") if args.only else list(RUNS)
    if args.quick:
        names, args.steps = ["pix2pix-digits", "cyclegan-digits"], 50
    args.img_dir = None if (args.quick or args.no_png) else _bench.IMG_DIR
    if args.img_dir:
        args.img_dir.mkdir(parents=True, exist_ok=True)
    _bench.one_thread()
    print(f"# {_bench.machine()}")
    rows = []
    for name in names:
        rows.append(run_one(name, args))
        print(f"# {name}: {rows[-1]['steps']} steps in {_bench.minutes(rows[-1]['train_s'])}")
    print(
        "\n| run | task | steps | train time | PSNR dB | SSIM | MS-SSIM | FID (classifier) "
        "| source PSNR dB | source SSIM | n |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        fid = "-" if r["fid"] is None else f"{r['fid']:.2f}"
        print(
            f"| {r['name']} | {r['task']} | {r['steps']} | {_bench.minutes(r['train_s'])} "
            f"| {r['psnr']:.2f} | {r['ssim']:.3f} | {r['ms_ssim']:.3f} | {fid} "
            f"| {r['src_psnr']:.2f} | {r['src_ssim']:.3f} | {r['n']} |"
        )


if __name__ == "__main__":
    main()
