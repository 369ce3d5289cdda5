"""FID and KID on feature rows (the feature extractor lives in genlab.metrics.features)."""

from __future__ import annotations

import math

import torch
from torch import Tensor

from genlab.math.divergences import mmd2_unbiased, polynomial_kernel
from genlab.math.linalg import frechet_distance, gaussian_fit


def _check_features(real: Tensor, fake: Tensor) -> None:
    if real.ndim != 2 or fake.ndim != 2 or real.shape[1] != fake.shape[1]:
        raise ValueError(
            "real and fake must be feature rows (N, D) of the same D; got "
            f"{tuple(real.shape)} and {tuple(fake.shape)}"
        )


def fid(real: Tensor, fake: Tensor) -> float:
    """Frechet Inception Distance between two sets of feature rows (N, D) and (M, D).

    FID = ||mu_r - mu_f||^2 + Tr(S_r + S_f - 2 (S_r S_f)^{1/2}), with means and unbiased
    covariances of the rows. Source: Heusel et al. arXiv:1706.08500.
    """
    _check_features(real, fake)
    return frechet_distance(*gaussian_fit(real), *gaussian_fit(fake))


def kid(
    real: Tensor,
    fake: Tensor,
    *,
    subsets: int = 100,
    subset_size: int = 1000,
    generator: torch.Generator | None = None,
) -> tuple[float, float]:
    """Kernel Inception Distance: mean and std over random subsets of the unbiased MMD^2.

    KID = MMD^2_u with k(a, b) = (a.b / D + 1)^3, averaged over `subsets` draws of
    m = min(subset_size, len(real), len(fake)) rows from each set (without replacement within a
    draw); both subsets have m rows, as in the paper. A set with exactly m rows is used whole, in
    its order, so two sets of equal size n <= subset_size with subsets=1 give mmd2_unbiased on the
    full sets (with unequal sizes the larger set is still subsampled to m). The std is the
    population std (ddof = 0) of the per-subset values, 0 for one subset. Source: Binkowski et
    al. arXiv:1801.01401 (section 4).
    """
    _check_features(real, fake)
    if subsets < 1:
        raise ValueError(f"subsets must be >= 1; got {subsets}")
    m = min(subset_size, len(real), len(fake))
    if m < 2:
        raise ValueError(
            f"KID needs subsets of at least 2 rows; got subset_size={subset_size}, "
            f"{len(real)} real and {len(fake)} fake rows"
        )
    real, fake = real.detach().to(torch.float64), fake.detach().to(torch.float64)

    def draw(x: Tensor) -> Tensor:
        if len(x) == m:
            return x
        # The permutation is drawn where the generator lives, then moved to the features.
        dev = generator.device if generator is not None else torch.device("cpu")
        idx = torch.randperm(len(x), generator=generator, device=dev)[:m]
        return x[idx.to(x.device)]

    values = []
    for _ in range(subsets):
        x, y = draw(real), draw(fake)
        k_xx, k_yy, k_xy = polynomial_kernel(x, x), polynomial_kernel(y, y), polynomial_kernel(x, y)
        values.append(float(mmd2_unbiased(k_xx, k_yy, k_xy)))
    mean = sum(values) / len(values)
    std = math.sqrt(sum((v - mean) ** 2 for v in values) / len(values))
    return mean, std
