"""genlab.math.divergences against closed forms, independent formulas and repeated sampling.

Unbiasedness claims pass when the mean over independent repeats is within 3 standard errors
(computed here from the repeats) of the exact value; identities hold to float64 precision.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.spatial.distance
import scipy.stats
import sklearn.metrics.pairwise
import torch

from genlab.math.divergences import (
    kl_categorical,
    mmd2_unbiased,
    polynomial_kernel,
    rbf_mmd2,
    wasserstein1,
)

DT = torch.float64


def test_wasserstein1_of_a_translate_is_the_shift_length() -> None:
    # Claim: W1(x, x + v) = |v|. Lower bound: E|X - Y| >= |E[X - Y]| = |v| (Jensen) for every
    # coupling; the translation coupling attains it. Rows of the translate are shuffled so the
    # assignment has to find the coupling.
    g = torch.Generator().manual_seed(0)
    x = torch.randn(150, 3, generator=g, dtype=DT)
    v = torch.tensor([0.3, -1.2, 0.5], dtype=DT)
    y = (x + v)[torch.randperm(150, generator=g)]
    assert wasserstein1(x, y) == pytest.approx(float(v.norm()), rel=1e-12)
    assert wasserstein1(x, x) == 0.0
    # Symmetric, and invariant to the order of the points.
    assert wasserstein1(y, x) == pytest.approx(wasserstein1(x, y), rel=1e-12)


def test_wasserstein1_in_one_dimension_matches_sorted_coupling() -> None:
    # Claim: in 1-D the optimal coupling of two equal-size samples pairs order statistics, so
    # W1 = mean |x_(i) - y_(i)| (an independent formula; no assignment problem solved).
    g = torch.Generator().manual_seed(1)
    x = torch.randn(200, 1, generator=g, dtype=DT)
    y = 2.0 * torch.rand(200, 1, generator=g, dtype=DT) - 0.5
    ref = (x.flatten().sort().values - y.flatten().sort().values).abs().mean()
    assert wasserstein1(x, y) == pytest.approx(float(ref), rel=1e-12)
    # scipy's 1-D W1 is a third route to the same number.
    assert wasserstein1(x, y) == pytest.approx(
        scipy.stats.wasserstein_distance(x.flatten().numpy(), y.flatten().numpy()), rel=1e-10
    )


def test_wasserstein1_rejects_unequal_sizes_naming_both() -> None:
    x, y = torch.zeros(7, 2), torch.zeros(5, 2)
    with pytest.raises(ValueError, match="7 and 5"):
        wasserstein1(x, y)


def test_polynomial_kernel_matches_sklearn() -> None:
    # Claim: (gamma x.y + coef)^degree with gamma = 1/D by default (sklearn's same default).
    g = torch.Generator().manual_seed(2)
    x, y = torch.randn(6, 5, generator=g, dtype=DT), torch.randn(4, 5, generator=g, dtype=DT)
    ref = sklearn.metrics.pairwise.polynomial_kernel(x.numpy(), y.numpy(), degree=3, coef0=1.0)
    np.testing.assert_allclose(polynomial_kernel(x, y).numpy(), ref, rtol=1e-12)
    ref2 = sklearn.metrics.pairwise.polynomial_kernel(x.numpy(), y.numpy(), 2, gamma=0.3, coef0=0.5)
    np.testing.assert_allclose(
        polynomial_kernel(x, y, degree=2, gamma=0.3, coef=0.5).numpy(), ref2, rtol=1e-12
    )


def test_mmd2_unbiased_matches_pairwise_sums_with_unequal_sizes() -> None:
    # Claim: the U-statistic averages k over distinct pairs within each sample (m(m-1) and
    # n(n-1) pairs) and over all m n cross pairs; checked by explicit loops, m != n.
    g = torch.Generator().manual_seed(3)
    x, y = torch.randn(5, 2, generator=g, dtype=DT), torch.randn(7, 2, generator=g, dtype=DT)
    kern = lambda a, b: math.exp(-float((a - b).pow(2).sum()))
    m, n = len(x), len(y)
    xx = sum(kern(x[i], x[j]) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
    yy = sum(kern(y[i], y[j]) for i in range(n) for j in range(n) if i != j) / (n * (n - 1))
    xy = sum(kern(x[i], y[j]) for i in range(m) for j in range(n)) / (m * n)
    k = lambda a, b: torch.exp(-torch.cdist(a, b).pow(2))
    got = mmd2_unbiased(k(x, x), k(y, y), k(x, y))
    assert float(got) == pytest.approx(xx + yy - 2 * xy, rel=1e-12)


def _repeat_rbf_mmd2(shift: float, repeats: int, n: int, seed: int) -> tuple[float, float]:
    """Mean and standard error over independent repeats of rbf_mmd2 with a fixed bandwidth."""
    g = torch.Generator().manual_seed(seed)
    vals = []
    for _ in range(repeats):
        x = torch.randn(n, 2, generator=g, dtype=DT)
        y = torch.randn(n, 2, generator=g, dtype=DT) + shift
        # A fixed bandwidth keeps the estimator exactly unbiased (a data-dependent one is not).
        vals.append(rbf_mmd2(x, y, bandwidth=1.0))
    t = torch.tensor(vals)
    return float(t.mean()), float(t.std() / math.sqrt(repeats))


def test_rbf_mmd2_is_unbiased_for_one_distribution_and_positive_for_two() -> None:
    # Claim: E[MMD^2_u] = MMD^2 = 0 when both samples come from one distribution (the plug-in
    # V-statistic would be biased upwards by O(1/n), far more than the SE here).
    mean, se = _repeat_rbf_mmd2(0.0, repeats=300, n=30, seed=4)
    assert abs(mean) < 3 * se, (mean, se)
    # Shifted by 1 in each coordinate: MMD^2 > 0, the mean is many standard errors above 0.
    mean, se = _repeat_rbf_mmd2(1.0, repeats=50, n=30, seed=5)
    assert mean > 10 * se, (mean, se)


def test_rbf_mmd2_default_bandwidth_is_median_distance_of_reference() -> None:
    # Claim: the default h is the median pairwise distance within y (the reference), from scipy.
    g = torch.Generator().manual_seed(6)
    x, y = torch.randn(40, 3, generator=g, dtype=DT), 2 * torch.randn(31, 3, generator=g, dtype=DT)
    h = float(np.median(scipy.spatial.distance.pdist(y.numpy())))
    assert rbf_mmd2(x, y) == pytest.approx(rbf_mmd2(x, y, bandwidth=h), rel=1e-12)
    assert rbf_mmd2(x, y) != pytest.approx(rbf_mmd2(x, y, bandwidth=1.3 * h), rel=1e-3)


def test_kl_categorical_basics() -> None:
    # Claims: KL(p || p) = 0; matches scipy.stats.entropy; 0 log 0 = 0; inf off q's support.
    p = torch.tensor([0.5, 0.5], dtype=DT)
    q = torch.tensor([0.25, 0.75], dtype=DT)
    assert kl_categorical(p, p) == 0.0
    assert kl_categorical(p, q) == pytest.approx(0.5 * math.log(2) + 0.5 * math.log(2 / 3))
    g = torch.Generator().manual_seed(7)
    a, b = torch.rand(6, generator=g, dtype=DT), torch.rand(6, generator=g, dtype=DT)
    a, b = a / a.sum(), b / b.sum()
    assert kl_categorical(a, b) == pytest.approx(scipy.stats.entropy(a, b), rel=1e-12)
    assert kl_categorical(torch.tensor([0.0, 1.0]), torch.tensor([0.5, 0.5])) == pytest.approx(
        math.log(2)
    )
    assert kl_categorical(p, torch.tensor([1.0, 0.0])) == math.inf
    with pytest.raises(ValueError):
        kl_categorical(torch.tensor([0.5, 0.6]), p)
