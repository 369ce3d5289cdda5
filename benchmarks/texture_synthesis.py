"""Gram-matrix texture synthesis: the Gram loss reached from noise, per example texture (issue 6).

For each procedural texture of the `textures` dataset (bricks, weave, dots, waves), train
configs/texture-textures.yaml with model.example pointing at it (fit_data stores the example's
Gram matrices; training optimises the canvases), then draw n new textures with the model's
sampler (L-BFGS from noise drawn with a fixed generator). Reported, as the texture loss
L(x) = sum_l w_l mean_ij (G^l(x) - A^l)^2 of genlab.math.gram (median over images):
- noise: the starting points of the synthesis (u ~ N(0, I) mapped through the sigmoid),
- synthesised: the samples,
- same kind: the other training variants of the same texture (a real "new texture" reference),
- other kinds: the training images of the three other textures.
A synthesis is good when its loss is far below the other kinds' and near or below the same
kind's. A PNG (example, then samples) per texture goes to benchmarks/img/ unless --no-png.

    python benchmarks/texture_synthesis.py
    python benchmarks/texture_synthesis.py --only bricks --n 4 --no-png
"""

from __future__ import annotations

import argparse
import time

import _bench  # (first: thread settings)
import torch

from genlab.config import resolve
from genlab.data.load import load_config
from genlab.data.textures import KINDS, TRAIN_VARIANTS
from genlab.train import train
from genlab.viz.grids import save_grid

CONFIG = _bench.BENCH_DIR.parent / "configs" / "texture-textures.yaml"


def median_loss(model, x: torch.Tensor) -> float:
    with torch.no_grad():
        return float(model.gram_loss_of(x.to(model.device)).median())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", default="", help="comma-separated kinds")
    parser.add_argument("--n", type=int, default=8, help="textures synthesised per kind")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-png", action="store_true")
    args = parser.parse_args()
    _bench.one_thread()
    print(f"# {_bench.machine()}", flush=True)
    kinds = args.only.split(",") if args.only else list(KINDS)
    table = [
        "| texture | noise | synthesised | same kind (7 variants) | other kinds | train | sample |",
        "|---|---|---|---|---|---|---|",
    ]
    for kind in kinds:
        k = KINDS.index(kind)
        example = k * TRAIN_VARIANTS
        cfg = resolve(
            None, None, str(CONFIG), [f"model.example={example}", f"train.seed={args.seed}"]
        )
        with _bench.run_dir(None) as out:
            t0 = time.perf_counter()
            run = train(cfg, out, progress=False)
            train_s = time.perf_counter() - t0
        model = run.model
        data = load_config(cfg.data)
        x, y = data.x_train, data.y_train
        same = x[(y == k) & (torch.arange(len(x)) != example)]
        other = x[y != k]
        g = torch.Generator().manual_seed(args.seed)
        noise = model.to_data(torch.randn(args.n, *data.spec.shape, generator=g))
        t0 = time.perf_counter()
        samples = model.sample(args.n, generator=torch.Generator().manual_seed(args.seed))
        sample_s = time.perf_counter() - t0
        line = (
            f"| {kind} | {median_loss(model, noise):.2e} | {median_loss(model, samples):.2e} | "
            f"{median_loss(model, same):.2e} | {median_loss(model, other):.2e} | "
            f"{train_s:.0f} s | {sample_s:.0f} s ({args.n} images) |"
        )
        table.append(line)
        print(line, flush=True)
        if not args.no_png:
            _bench.IMG_DIR.mkdir(exist_ok=True)
            grid = torch.cat([x[example : example + 1], samples.cpu()])
            save_grid(grid, _bench.IMG_DIR / f"texture-{kind}.png", value_range=(0.0, 1.0))
    print("\n".join(table))


if __name__ == "__main__":
    main()
