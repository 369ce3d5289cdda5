"""Frechet distance, FID and KID against closed forms, independent formulas and repeated sampling.

Deterministic identities are checked to float64 precision; sampling claims pass within a
number of standard errors computed here from independent repeats.
"""

from __future__ import annotations

import importlib
import math

import numpy as np
import pytest
import scipy.linalg
import torch

from genlab.math.divergences import mmd2_unbiased, polynomial_kernel
from genlab.math.linalg import frechet_distance, gaussian_fit
from genlab.metrics.fid import fid, kid

DT = torch.float64


def _spd(d: int, g: torch.Generator) -> torch.Tensor:
    a = torch.randn(d, d, generator=g, dtype=DT)
    return a @ a.T / d + 0.1 * torch.eye(d, dtype=DT)


def _closed_form_via_eigh(
    mu1: np.ndarray, s1: np.ndarray, mu2: np.ndarray, s2: np.ndarray
) -> float:
    """d^2 with Tr((S1 S2)^{1/2}) = Tr((S1^{1/2} S2 S1^{1/2})^{1/2}), square roots by eigh."""

    def psd_sqrt(a: np.ndarray) -> np.ndarray:
        w, v = np.linalg.eigh(a)
        return (v * np.sqrt(np.clip(w, 0, None))) @ v.T

    r1 = psd_sqrt(s1)
    tr_sqrt = np.sqrt(np.clip(np.linalg.eigvalsh(r1 @ s2 @ r1), 0, None)).sum()
    diff = mu1 - mu2
    return float(diff @ diff + np.trace(s1) + np.trace(s2) - 2 * tr_sqrt)


def test_gaussian_fit_is_mean_and_unbiased_covariance() -> None:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(50, 4, generator=g, dtype=DT)
    mu, sigma = gaussian_fit(x.float())
    assert mu.dtype == sigma.dtype == DT
    np.testing.assert_allclose(mu.numpy(), x.float().double().numpy().mean(0), rtol=1e-12)
    np.testing.assert_allclose(sigma.numpy(), np.cov(x.float().double().numpy().T), rtol=1e-10)


def test_frechet_distance_diagonal_closed_form() -> None:
    # Claim: with diagonal covariances, d^2 = |mu1 - mu2|^2 + sum_i (s1_i + s2_i - 2 sqrt(s1 s2)).
    g = torch.Generator().manual_seed(1)
    mu1, mu2 = torch.randn(5, generator=g, dtype=DT), torch.randn(5, generator=g, dtype=DT)
    v1, v2 = torch.rand(5, generator=g, dtype=DT) + 0.1, torch.rand(5, generator=g, dtype=DT)
    ref = (mu1 - mu2).pow(2).sum() + (v1 + v2 - 2 * (v1 * v2).sqrt()).sum()
    got = frechet_distance(mu1, torch.diag(v1), mu2, torch.diag(v2))
    assert got == pytest.approx(float(ref), rel=1e-10)
    # 1-D: d^2 = (m1 - m2)^2 + (sd1 - sd2)^2.
    one = lambda v: torch.tensor([v], dtype=DT)
    got1 = frechet_distance(one(1.0), one(4.0)[None], one(-0.5), one(0.25)[None])
    assert got1 == pytest.approx(1.5**2 + (2.0 - 0.5) ** 2, rel=1e-12)


def test_frechet_distance_non_commuting_matches_symmetric_form() -> None:
    # Claim: for S1 S2 != S2 S1 the trace term equals Tr((S1^{1/2} S2 S1^{1/2})^{1/2}) (S1 S2 is
    # similar to that PSD matrix), computed here with eigendecompositions only.
    g = torch.Generator().manual_seed(2)
    s1, s2 = _spd(6, g), _spd(6, g)
    assert not torch.allclose(s1 @ s2, s2 @ s1)
    mu1, mu2 = torch.randn(6, generator=g, dtype=DT), torch.randn(6, generator=g, dtype=DT)
    ref = _closed_form_via_eigh(mu1.numpy(), s1.numpy(), mu2.numpy(), s2.numpy())
    assert frechet_distance(mu1, s1, mu2, s2) == pytest.approx(ref, rel=1e-10)
    # Symmetric in its two Gaussians.
    assert frechet_distance(mu2, s2, mu1, s1) == pytest.approx(ref, rel=1e-10)


def test_fid_of_a_set_with_itself_is_zero() -> None:
    g = torch.Generator().manual_seed(3)
    x = torch.randn(500, 16, generator=g, dtype=DT) @ torch.randn(16, 16, generator=g, dtype=DT)
    scale = float(torch.trace(gaussian_fit(x)[1]))
    assert abs(fid(x, x)) < 1e-6 * scale
    # Singular covariance (fewer rows than dimensions): still ~0 at the same relative level.
    y = torch.randn(10, 32, generator=g, dtype=DT)
    assert abs(fid(y, y)) < 1e-6 * float(torch.trace(gaussian_fit(y)[1]))


def test_frechet_distance_retries_with_eps_when_sqrtm_is_not_finite(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Claim: a non-finite sqrtm(S1 S2) is recomputed from (S1 + eps I)(S2 + eps I).
    real_sqrtm = scipy.linalg.sqrtm
    seen = []

    def fake_sqrtm(a: np.ndarray) -> np.ndarray:
        seen.append(a.copy())
        return np.full_like(a, np.nan) if len(seen) == 1 else real_sqrtm(a)

    monkeypatch.setattr(scipy.linalg, "sqrtm", fake_sqrtm)
    s1, s2 = np.diag([1.0, 0.0]), np.diag([0.0, 4.0])
    z = np.zeros(2)
    eps = 1e-3
    got = frechet_distance(z, s1, z, s2, eps=eps)
    np.testing.assert_allclose(seen[1], (s1 + eps * np.eye(2)) @ (s2 + eps * np.eye(2)))
    # Diagonal closed form of the shifted covariances.
    a, b = np.array([1.0, 0.0]) + eps, np.array([0.0, 4.0]) + eps
    assert got == pytest.approx(float(np.sum(a + b - 2 * np.sqrt(a * b))), rel=1e-10)


def test_frechet_distance_rejects_a_large_imaginary_square_root() -> None:
    # diag(1, -1) is not a covariance: sqrt(-1) = i is not round-off.
    z = torch.zeros(2)
    with pytest.raises(ValueError, match="imaginary"):
        frechet_distance(z, torch.diag(torch.tensor([1.0, -1.0])), z, torch.eye(2))


def test_fid_of_gaussian_samples_approaches_closed_form() -> None:
    # Claim: FID of samples from N(mu1, S1), N(mu2, S2) estimates the closed form. The estimator's
    # bias is O(1/n): the mean term alone adds (Tr S1 + Tr S2) / n, and we allow twice that for
    # the trace term; on top of it, 4 standard errors of the mean over independent repeats.
    g = torch.Generator().manual_seed(4)
    d, n, repeats = 3, 2000, 30
    s1, s2 = _spd(d, g), _spd(d, g)
    mu1, mu2 = torch.zeros(d, dtype=DT), torch.tensor([1.0, -0.5, 0.25], dtype=DT)
    exact = frechet_distance(mu1, s1, mu2, s2)
    l1, l2 = torch.linalg.cholesky(s1), torch.linalg.cholesky(s2)
    vals = []
    for _ in range(repeats):
        x = mu1 + torch.randn(n, d, generator=g, dtype=DT) @ l1.T
        y = mu2 + torch.randn(n, d, generator=g, dtype=DT) @ l2.T
        vals.append(fid(x, y))
    t = torch.tensor(vals)
    se = float(t.std()) / math.sqrt(repeats)
    bias = 2 * float(torch.trace(s1) + torch.trace(s2)) / n
    assert abs(float(t.mean()) - exact) < 4 * se + bias, (float(t.mean()), exact, se, bias)


def _poly_mmd2(x: torch.Tensor, y: torch.Tensor) -> float:
    return float(
        mmd2_unbiased(polynomial_kernel(x, x), polynomial_kernel(y, y), polynomial_kernel(x, y))
    )


def test_kid_estimator_is_unbiased_and_detects_a_shift() -> None:
    # Claim: MMD^2_u with the KID kernel has mean 0 over independent samples of one
    # distribution (within 3 SE of the repeats), and a clearly positive mean for a mean shift.
    g = torch.Generator().manual_seed(5)
    same, shifted = [], []
    for _ in range(300):
        x, y = torch.randn(2, 40, 4, generator=g, dtype=DT)
        same.append(_poly_mmd2(x, y))
        shifted.append(_poly_mmd2(x, y + 0.5))
    for vals, ok in ((same, lambda m, se: abs(m) < 3 * se), (shifted, lambda m, se: m > 10 * se)):
        t = torch.tensor(vals)
        mean, se = float(t.mean()), float(t.std()) / math.sqrt(len(t))
        assert ok(mean, se), (mean, se)


def test_kid_with_one_full_subset_is_mmd2_on_the_full_sets() -> None:
    # Claim: subsets=1 with subset_size >= both (equal) sizes uses every row in order, so KID
    # is exactly the full-set estimate (the torchmetrics cross-check relies on this).
    g = torch.Generator().manual_seed(6)
    real, fake = torch.randn(64, 8, generator=g), torch.randn(64, 8, generator=g) + 0.2
    mean, std = kid(real, fake, subsets=1, subset_size=1000)
    assert mean == _poly_mmd2(real, fake)
    assert std == 0.0


def test_kid_subsets_are_drawn_without_replacement_and_reproducibly() -> None:
    g = torch.Generator().manual_seed(7)
    real, fake = torch.randn(50, 3, generator=g, dtype=DT), torch.randn(30, 3, generator=g)
    a = kid(real, fake, subsets=5, subset_size=20, generator=torch.Generator().manual_seed(0))
    b = kid(real, fake, subsets=5, subset_size=20, generator=torch.Generator().manual_seed(0))
    assert a == b and a[1] > 0
    # Sizes differ: subsets are clipped to the smaller set (30 rows, all used in order) and the
    # larger set contributes a random 30 of its rows (a prefix of a permutation: no repeats).
    one = kid(real, fake, subsets=1, subset_size=100, generator=torch.Generator().manual_seed(1))
    g1 = torch.Generator().manual_seed(1)
    idx = torch.randperm(50, generator=g1)[:30]
    assert one[0] == pytest.approx(_poly_mmd2(real[idx], fake), rel=1e-12)


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_fid_and_kid_match_torchmetrics_on_features() -> None:
    # Independent implementations fed the features directly (identity extractor). KID with one
    # subset of all rows: torchmetrics permutes the rows, which only reorders the sums.
    tm_fid = importlib.import_module("torchmetrics.image.fid")  # a test dependency
    tm_kid = importlib.import_module("torchmetrics.image.kid")  # a test dependency

    class Identity(torch.nn.Identity):
        num_features = 8

    g = torch.Generator().manual_seed(8)
    real = torch.randn(64, 8, generator=g, dtype=DT)
    fake = 1.3 * torch.randn(64, 8, generator=g, dtype=DT) + 0.2
    ref = {}
    for name, metric in (
        ("fid", tm_fid.FrechetInceptionDistance(feature=Identity())),
        ("kid", tm_kid.KernelInceptionDistance(feature=Identity(), subsets=1, subset_size=64)),
    ):
        metric.set_dtype(DT)
        metric.update(real, real=True)
        metric.update(fake, real=False)
        out = metric.compute()
        ref[name] = float(out[0] if isinstance(out, tuple) else out)
    assert fid(real, fake) == pytest.approx(ref["fid"], rel=1e-9)
    assert kid(real, fake, subsets=1, subset_size=64)[0] == pytest.approx(ref["kid"], rel=1e-12)
