"""`genlab demo`: a few minutes on embedded data, one model per family so far, figures written.

Today: a conv VAE on `digits` (samples, reconstructions, interpolations, loss curves), a VAE with
a 2-D latent on `digits` (Kingma & Welling's manifold plot), a VAE on the `moons` toy, a GAN
on the 8-Gaussian ring with the settings of configs/gan-ring8.yaml, and a DDPM on `moons` (an MLP
eps-network, T = 200 linear betas, about 40 s of CPU) with its diffusion figure: forward and
reverse chains and the learned score field (genlab.viz.diffusion). Each run is evaluated
(likelihood, reconstruction, and FID/KID/IS/precision-recall on the genlab classifier's features,
or modes/MMD/W1 on the toys; the DDPM's likelihood is its variational bound), and the demo ends
with `report.html`, the `genlab compare` page of all of them."""

from __future__ import annotations

import time
from pathlib import Path

from genlab.compare import compare, save_report
from genlab.config import resolve
from genlab.errors import GenlabError
from genlab.metrics import evaluate
from genlab.models.base import Encoder
from genlab.models.ddpm import DDPM
from genlab.train import train
from genlab.viz.diffusion import diffusion_figure
from genlab.viz.figures import interpolations, latent_manifold, reconstructions, sample_figure
from genlab.viz.plots import loss_curves

# (name, model, data, overrides, steps, quick steps)
DEQ = "data.dequantize=true"  # so the digits NLL is a discrete NLL, in bits/dim
GAN_TOY = [  # the settings of configs/gan-ring8.yaml (benchmarks/RESULTS.md section 4)
    "model.arch=mlp",
    "model.loss=minimax",
    "model.hidden=[256,256]",
    "model.latent_dim=16",
    "train.lr=1e-3",
    "train.batch_size=256",
    "train.ema=0.999",
]
DDPM_TOY = [  # small and short: T = 200 (linear betas rescaled) keeps sampling and the bound fast
    "model.arch=mlp",
    "model.hidden=[128,128,128]",
    "model.timesteps=200",
    "model.schedule=linear",
    "train.lr=2e-3",
    "train.batch_size=256",
    "train.ema=0.995",
]
JOBS = [
    ("vae-digits", "vae", "digits", [DEQ, "model.latent_dim=16", "train.lr=2e-3"], 3000, 60),
    ("vae2d-digits", "vae", "digits", [DEQ, "model.latent_dim=2", "model.arch=mlp"], 3000, 60),
    ("vae-moons", "vae", "moons", ["model.latent_dim=2", "model.hidden=[128,128]"], 3000, 60),
    # a GAN on the 8-Gaussian ring: its report row shows the mode-collapse metrics
    ("gan-ring8", "gan", "ring8", GAN_TOY, 12000, 60),
    # a DDPM on the moons toy: its figure shows the forward/reverse chains and the score field
    ("ddpm-moons", "ddpm", "moons", DDPM_TOY, 8000, 60),
]


def run_demo(out: Path, quick: bool = False) -> list[Path]:
    """Train the demo runs into `out`, write their figures, and end with out/report.html."""
    if out.exists() and any(out.iterdir()):
        raise GenlabError(f"demo output {out} is not empty; pass another --out")
    written: list[Path] = []
    runs = []
    for name, model, data, overrides, steps, quick_steps in JOBS:
        n = quick_steps if quick else steps
        cfg = resolve(
            model,
            data,
            None,
            overrides
            + [f"train.steps={n}", f"train.sample_every={n}", f"train.checkpoint_every={n}"],
        )
        t0 = time.perf_counter()
        run = train(cfg, out / name, progress=True)
        seconds = time.perf_counter() - t0
        runs.append(run.dir)
        data_obj = run.data()
        test = data_obj.split("test")
        x, y = test["x"][:32], test.get("y")
        reference = None if run.spec.is_image else test["x"][:2000]
        figs = [
            sample_figure(run.model, out / f"{name}-samples.png", reference=reference, title=name),
            loss_curves(run.dir / "metrics.csv", out / f"{name}-loss.png"),
        ]
        if isinstance(run.model, Encoder):
            y32 = None if y is None else y[:32]
            figs.append(reconstructions(run.model, x, y32, out / f"{name}-reconstructions.png"))
            figs.append(
                interpolations(
                    run.model, test["x"][:8], test["x"][8:16], out / f"{name}-interpolations.png"
                )
            )
        if run.spec.is_image and getattr(run.model.cfg, "latent_dim", 0) == 2:
            figs.append(latent_manifold(run.model, out / f"{name}-manifold.png"))
        if isinstance(run.model, DDPM) and tuple(run.spec.shape) == (2,):
            figs.append(
                diffusion_figure(run.model, reference, out / f"{name}-diffusion.png", title=name)
            )
        report = evaluate(run.model, data_obj, k=5 if quick else 50, n=200 if quick else None)
        save_report(run.dir, report)
        summary = ", ".join(
            f"{k}={v:.4g}"
            for k, v in report.values.items()
            if k
            in (
                "nll",
                "nll_density",
                "bpd",
                "recon_mse",
                "fid",
                "precision",
                "recall",
                "w1",
                "modes",
                "hq",
            )
        )
        print(f"{name}: {n} steps in {seconds:.0f} s; test {summary}")
        for f in figs:
            print(f"  {f}")
        written += figs
    report_path = compare(
        runs,
        out / "report.html",
        title="genlab demo",
        footer="metrics: genlab evaluate protocol (see docs/metrics.md); IWAE k="
        + ("5, 200 test examples (--quick)" if quick else "50, whole test splits"),
    )
    written.append(report_path)
    print(f"demo finished: runs and figures in {out}; comparison page {report_path}")
    return written
