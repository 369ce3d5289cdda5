"""Classic baselines' math [000]: Gaussian log-densities, PPCA's closed-form maximum likelihood."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy.stats import multivariate_normal

from genlab import models
from genlab.data.spec import DataSpec
from genlab.math.gaussian import log_gaussian_mixture, log_mvn, sample_gaussian_mixture


def random_tril(d: int, g: torch.Generator) -> torch.Tensor:
    a = torch.randn(d, d, generator=g, dtype=torch.float64)
    return torch.linalg.cholesky(a @ a.T + 0.5 * torch.eye(d, dtype=torch.float64))


def test_log_mvn_matches_scipy() -> None:
    g = torch.Generator().manual_seed(0)
    d = 5
    mu = torch.randn(d, generator=g, dtype=torch.float64)
    tril = random_tril(d, g)
    x = torch.randn(7, d, generator=g, dtype=torch.float64)
    expected = multivariate_normal(mu.numpy(), (tril @ tril.T).numpy()).logpdf(x.numpy())
    np.testing.assert_allclose(log_mvn(x, mu, tril).numpy(), expected, rtol=1e-12)


def test_mixture_log_density_and_sample_moments() -> None:
    g = torch.Generator().manual_seed(1)
    k, d = 3, 2
    log_w = torch.log_softmax(torch.randn(k, generator=g, dtype=torch.float64), 0)
    means = 3 * torch.randn(k, d, generator=g, dtype=torch.float64)
    trils = torch.stack([random_tril(d, g) for _ in range(k)])
    x = torch.randn(4, d, generator=g, dtype=torch.float64)
    pdf = sum(
        math.exp(w) * multivariate_normal(m.numpy(), (t @ t.T).numpy()).pdf(x.numpy())
        for w, m, t in zip(log_w.tolist(), means, trils)
    )
    got = log_gaussian_mixture(x, log_w, means, trils)
    np.testing.assert_allclose(got.numpy(), np.log(pdf), rtol=1e-10)
    # Sample mean vs the mixture mean, within 4 standard errors per coordinate (level ~1e-4).
    n = 40_000
    s = sample_gaussian_mixture(n, log_w, means, trils, generator=g)
    w = log_w.exp()
    mean = (w[:, None] * means).sum(0)
    second = sum(wi * (t @ t.T + torch.outer(m, m)) for wi, m, t in zip(w, means, trils))
    cov = second - torch.outer(mean, mean)
    se = torch.sqrt(torch.diagonal(cov) / n)
    assert ((s.mean(0) - mean).abs() < 4 * se).all()


def fitted_ppca(x: torch.Tensor, q: int):
    spec = DataSpec("linear-gaussian", (x.shape[1],))
    model = models.build("ppca", spec, factors=q).double()
    model.fit_data(x)
    return model


def test_ppca_likelihood_is_tipping_bishop_closed_form() -> None:
    """Tipping & Bishop (1999) eq. (7)-(8): at the ML solution
    L = -N/2 (D log 2 pi + sum_{j<=q} log lambda_j + (D - q) log sigma^2 + D),
    sigma^2 = mean of the D - q smallest eigenvalues of S (1/N), W W^T = U_q (L_q - sigma^2) U_q^T.
    """
    g = torch.Generator().manual_seed(2)
    n, d, q = 400, 6, 2
    w_true = torch.randn(d, q, generator=g, dtype=torch.float64)
    x = torch.randn(n, q, generator=g, dtype=torch.float64) @ w_true.T
    x = x + 0.3 * torch.randn(n, d, generator=g, dtype=torch.float64) + 1.0
    model = fitted_ppca(x, q)
    xc = (x - x.mean(0)).numpy()
    lam, u = np.linalg.eigh(xc.T @ xc / n)
    lam, u = lam[::-1], u[:, ::-1]
    sigma2 = lam[q:].mean()
    closed = (
        -n
        / 2
        * (d * math.log(2 * math.pi) + np.log(lam[:q]).sum() + (d - q) * math.log(sigma2) + d)
    )
    assert float(model.log_prob(x).sum()) == pytest.approx(closed, rel=1e-10)
    ww = model.loadings @ model.loadings.T
    expected = u[:, :q] @ np.diag(lam[:q] - sigma2) @ u[:, :q].T
    np.testing.assert_allclose(ww.numpy(), expected, atol=1e-10)
    np.testing.assert_allclose(model.noise_variance.numpy(), sigma2, rtol=1e-12)


def test_ppca_fit_is_a_maximum() -> None:
    """Moving W or sigma^2 away from the closed form lowers the training likelihood."""
    g = torch.Generator().manual_seed(3)
    x = torch.randn(300, 5, generator=g, dtype=torch.float64) @ torch.randn(
        5, 5, generator=g, dtype=torch.float64
    )
    model = fitted_ppca(x, 2)
    best = float(model.log_prob(x).sum())
    w, psi, mu = model.loadings, model.noise_variance, model.means[0]
    for _ in range(5):
        dw = 0.05 * torch.randn(w.shape, generator=g, dtype=torch.float64)
        for w2, psi2 in ((w + dw, psi), (w, psi * 1.05), (w, psi * 0.95)):
            tril = torch.linalg.cholesky(w2 @ w2.T + torch.diag(psi2))
            assert float(log_mvn(x, mu, tril).sum()) < best
