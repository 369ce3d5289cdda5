"""FID and KID: genlab vs torchmetrics on the same features, and readings on known pairs.

For each dataset (Fashion-MNIST, digits) the genlab feature classifier embeds the test split (the
reference) and four "generated" sets with known relations to it:
  train     -- other real images (the floor a perfect model reaches with finite samples)
  noise     -- test images + N(0, 0.1^2) pixel noise, clipped
  blur      -- test images 2x2 average-pooled and upsampled
  one-class -- real training images of class 0 only (mode collapse)
FID, KID (all rows in one subset, so the estimators see identical inputs) are computed by genlab
and by torchmetrics (FrechetInceptionDistance / KernelInceptionDistance with an identity feature
module fed the same float64 features); the table gives both and their relative difference.
The standard KID protocol (100 subsets of 1000) and IS, precision/recall, density/coverage are
reported for genlab alone.

    python benchmarks/metrics_crosscheck.py            # both datasets, about 2 minutes
    python benchmarks/metrics_crosscheck.py --quick    # digits only
"""

from __future__ import annotations

import argparse
import statistics
import time

import _bench  # noqa: F401  (first: thread settings)
import torch
import torch.nn.functional as F
from torchmetrics.image.fid import FrechetInceptionDistance
from torchmetrics.image.kid import KernelInceptionDistance

from genlab import data as gdata
from genlab.metrics.features import classifier_features
from genlab.metrics.fid import fid, kid
from genlab.metrics.inception_score import inception_score
from genlab.metrics.precision_recall import density_coverage, precision_recall


class Identity(torch.nn.Module):
    """Features are passed in directly (torchmetrics accepts any feature module)."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.num_features = dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x


def reference_fid_kid(real: torch.Tensor, fake: torch.Tensor) -> tuple[float, float]:
    dim = real.shape[1]
    m_fid = FrechetInceptionDistance(feature=Identity(dim)).set_dtype(torch.float64)
    size = min(len(real), len(fake))
    m_kid = KernelInceptionDistance(feature=Identity(dim), subsets=1, subset_size=size)
    for m in (m_fid, m_kid):
        m.update(real, real=True)
        m.update(fake, real=False)
    return float(m_fid.compute()), float(m_kid.compute()[0])


def timed(fn, repeats: int = 3):
    """(result, median seconds over `repeats` calls)."""
    times, out = [], None
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    return out, statistics.median(times)


def candidate_sets(data, n: int, g: torch.Generator) -> dict[str, torch.Tensor]:
    test = data.x_test[:n]
    train = data.x_train[:n]
    low, high = data.spec.value_range
    pooled = F.avg_pool2d(test, 2) if test.shape[-1] % 2 == 0 else test
    blur = F.interpolate(pooled, size=test.shape[-2:], mode="nearest")
    one = data.x_train[data.y_train == 0]
    return {
        "train": train,
        "noise": (test + 0.1 * torch.randn(test.shape, generator=g)).clamp(low, high),
        "blur": blur,
        "one-class": one[torch.arange(n) % len(one)],
    }


def run(name: str, n: int) -> list[str]:
    data = gdata.load(name)
    extractor = classifier_features(data)
    real, _ = extractor.extract(data.x_test[:n])
    rows = [
        f"\n### {name}: {len(real)} test images as reference; "
        f"{extractor.note.removeprefix('features: ')}\n",
        "| generated set | FID genlab | FID torchmetrics | rel. diff | KID genlab (1 subset) "
        "| KID torchmetrics | rel. diff | KID 100x1000 (mean +- std) | IS | precision | recall "
        "| density | coverage |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    g = torch.Generator().manual_seed(0)
    for label, x in candidate_sets(data, n, g).items():
        fake, probs = extractor.extract(x)
        ours_fid, t_ours = timed(lambda: fid(real, fake))  # noqa: B023
        size = min(len(real), len(fake))
        ours_kid = kid(real, fake, subsets=1, subset_size=size)[0]
        (ref_fid, ref_kid), t_ref = timed(lambda: reference_fid_kid(real, fake), 1)  # noqa: B023
        sub = min(1000, size // 2)
        k_mean, k_std = kid(real, fake, subset_size=sub, generator=torch.Generator().manual_seed(0))
        is_mean, _ = inception_score(probs)
        p, r = precision_recall(real=real, fake=fake)
        d, c = density_coverage(real=real, fake=fake)
        rows.append(
            f"| {label} | {ours_fid:.6g} | {ref_fid:.6g} | {abs(ours_fid - ref_fid) / ref_fid:.1e} "
            f"| {ours_kid:.6g} | {ref_kid:.6g} | {abs(ours_kid - ref_kid) / abs(ref_kid):.1e} "
            f"| {k_mean:.4g} +- {k_std:.2g} | {is_mean:.3g} | {p:.3f} | {r:.3f} | {d:.3f} "
            f"| {c:.3f} |"
        )
        print(rows[-1], f"(FID time: genlab {t_ours:.2f} s median of 3)", flush=True)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="digits only")
    args = parser.parse_args()
    _bench.one_thread()
    print(f"machine: {_bench.machine()}")
    jobs = [("digits", 360)] if args.quick else [("digits", 360), ("fashion-mnist", 10000)]
    for name, n in jobs:
        for row in run(name, n):
            print(row)


if __name__ == "__main__":
    main()
