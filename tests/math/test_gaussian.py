"""Closed forms of genlab.math.gaussian checked against Monte Carlo, scipy and direct formulas.

Monte-Carlo checks pass when the estimate is within 5 standard errors (computed here from the
samples) of the closed form; deterministic identities are checked to float64 precision.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.stats
import torch
from torch.distributions import Normal

from genlab.math.gaussian import (
    iwae_bound,
    kl_normal,
    kl_normal_standard,
    log_bernoulli,
    log_discretized_logistic,
    log_normal,
    log_standard_normal,
    reparameterize,
)

DT = torch.float64
N_MC = 200_000


def _mc_check(samples: torch.Tensor, exact: torch.Tensor, n_se: float = 5.0) -> None:
    """samples (N, B) of an unbiased estimator of exact (B,): |mean - exact| < n_se * SE."""
    mean = samples.mean(0)
    se = samples.std(0) / math.sqrt(samples.shape[0])
    assert torch.all((mean - exact).abs() < n_se * se), (mean, exact, se)


def test_kl_normal_standard_matches_monte_carlo() -> None:
    # Claim [001]: KL(N(mu, sigma^2) || N(0, I)) = 0.5 sum(mu^2 + sigma^2 - 1 - log sigma^2).
    g = torch.Generator().manual_seed(0)
    mu = torch.randn(4, 3, generator=g, dtype=DT)
    logvar = torch.randn(4, 3, generator=g, dtype=DT)
    q = Normal(mu, torch.exp(0.5 * logvar))
    z = mu + torch.exp(0.5 * logvar) * torch.randn(N_MC, 4, 3, generator=g, dtype=DT)
    # log q(z) - log p(z), with densities from torch.distributions (independent of the code tested).
    log_ratio = (q.log_prob(z) - Normal(0.0, 1.0).log_prob(z)).sum(-1)  # (N, B)
    _mc_check(log_ratio, kl_normal_standard(mu, logvar))


def test_kl_normal_matches_monte_carlo() -> None:
    # Claim: KL between diagonal Gaussians in closed form equals E_q1[log q1 - log q2].
    g = torch.Generator().manual_seed(1)
    mu1, lv1, mu2, lv2 = (torch.randn(4, 3, generator=g, dtype=DT) for _ in range(4))
    q1 = Normal(mu1, torch.exp(0.5 * lv1))
    q2 = Normal(mu2, torch.exp(0.5 * lv2))
    z = mu1 + torch.exp(0.5 * lv1) * torch.randn(N_MC, 4, 3, generator=g, dtype=DT)
    log_ratio = (q1.log_prob(z) - q2.log_prob(z)).sum(-1)
    _mc_check(log_ratio, kl_normal(mu1, lv1, mu2, lv2))
    # The general form reduces to the standard one when q2 = N(0, I) (same formula, two codings).
    zeros = torch.zeros_like(mu1)
    torch.testing.assert_close(
        kl_normal(mu1, lv1, zeros, zeros), kl_normal_standard(mu1, lv1), rtol=1e-12, atol=1e-12
    )


@pytest.mark.parametrize("logvar_shape", [(), (1, 1, 1), (2, 3, 4)])
def test_log_normal_matches_scipy(logvar_shape: tuple[int, ...]) -> None:
    # Claim: log_normal is the diagonal Gaussian log density summed over all non-batch dims,
    # with logvar broadcast (scalar, per-channel, full).
    g = torch.Generator().manual_seed(2)
    x, mu = torch.randn(2, 5, 2, 3, 4, generator=g, dtype=DT)
    logvar = torch.randn(logvar_shape, generator=g, dtype=DT)
    got = log_normal(x, mu, logvar)
    sd = np.exp(0.5 * np.broadcast_to(logvar.numpy(), x.shape))
    ref = scipy.stats.norm.logpdf(x.numpy(), mu.numpy(), sd).reshape(5, -1).sum(1)
    assert got.shape == (5,)
    np.testing.assert_allclose(got.numpy(), ref, rtol=1e-12)
    # log N(z; 0, I) is log_normal with mu = 0, logvar = 0.
    ref0 = scipy.stats.norm.logpdf(x.numpy()).reshape(5, -1).sum(1)
    np.testing.assert_allclose(log_standard_normal(x).numpy(), ref0, rtol=1e-12)


def test_log_bernoulli_matches_direct_formula_and_is_stable() -> None:
    # Claim: log_bernoulli = sum x log sigmoid(l) + (1 - x) log sigmoid(-l), also for soft x.
    g = torch.Generator().manual_seed(3)
    logits = 4.0 * torch.randn(6, 2, 7, generator=g, dtype=DT)
    for x in (torch.bernoulli(torch.full_like(logits, 0.5), generator=g), torch.rand_like(logits)):
        direct = x * torch.log(torch.sigmoid(logits)) + (1 - x) * torch.log(torch.sigmoid(-logits))
        torch.testing.assert_close(
            log_bernoulli(x, logits), direct.sum((1, 2)), rtol=1e-12, atol=1e-12
        )
    # Where the direct formula underflows (sigmoid(-800) = 0 -> log 0 = -inf), the stable form
    # gives log sigmoid(-l) = -l - log(1 + e^-l) = -800 to float64 precision.
    big = torch.tensor([[800.0], [-800.0]], dtype=DT)
    x = torch.tensor([[0.0], [1.0]], dtype=DT)
    torch.testing.assert_close(log_bernoulli(x, big), torch.full((2,), -800.0, dtype=DT))


@pytest.mark.parametrize("levels", [2, 17, 256])
def test_discretized_logistic_masses_sum_to_one(levels: int) -> None:
    # Claim: the masses of all `levels` grid values sum to 1 for any mean and scale, including
    # means far outside [0, 1] and scales from 1e-13 to 1e13 (edge bins extended to +-inf).
    grid = torch.linspace(0.0, 1.0, levels, dtype=DT).reshape(levels, 1)
    for mean in (-30.0, -2.0, 0.0, 0.3, 0.5, 1.0, 7.0, 1e4):
        for log_scale in (-30.0, -12.0, -4.0, 0.0, 3.0, 30.0):
            m = torch.full_like(grid, mean)
            ls = torch.full_like(grid, log_scale)
            log_p = log_discretized_logistic(grid, m, ls, levels)  # (levels,): one per value
            assert torch.isfinite(log_p).all(), (mean, log_scale)
            total = torch.logsumexp(log_p, 0)
            assert abs(total.item()) < 1e-12, (levels, mean, log_scale, total.item())


def test_discretized_logistic_is_the_bin_mass_of_the_logistic() -> None:
    # Claim: inner bins get CDF(x + h) - CDF(x - h) of logistic(mean, s), the first CDF(h), the last
    # 1 - CDF(1 - h); checked against scipy's logistic CDF at moderate parameters, per element and
    # summed over the non-batch dims.
    levels = 9
    h = 0.5 / (levels - 1)
    g = torch.Generator().manual_seed(4)
    x = torch.randint(0, levels, (3, 2, levels), generator=g).to(DT) / (levels - 1)
    mean = torch.rand(3, 2, levels, generator=g, dtype=DT)
    log_scale = torch.randn(3, 2, levels, generator=g, dtype=DT) - 1.5
    xs, ms, ss = x.numpy(), mean.numpy(), np.exp(log_scale.numpy())
    logistic = scipy.stats.logistic
    cdf_up = np.where(xs > 1 - h, 1.0, logistic.cdf(xs + h, ms, ss))
    cdf_lo = np.where(xs < h, 0.0, logistic.cdf(xs - h, ms, ss))
    sf_up = np.where(xs > 1 - h, 0.0, logistic.sf(xs + h, ms, ss))
    sf_lo = np.where(xs < h, 1.0, logistic.sf(xs - h, ms, ss))
    # Right of the mean CDF(x + h) - CDF(x - h) is a difference of two numbers near 1; there the
    # same mass is taken as SF(x - h) - SF(x + h) so the reference itself does not cancel.
    mass = np.where(xs > ms, sf_lo - sf_up, cdf_up - cdf_lo)
    ref = np.log(mass).reshape(3, -1).sum(1)
    got = log_discretized_logistic(x, mean, log_scale, levels)
    np.testing.assert_allclose(got.numpy(), ref, rtol=1e-10)


def test_discretized_logistic_gradients_finite_at_extremes() -> None:
    # Claim ("numerically stable"): gradients stay finite when the mass of x is ~e^-1000, where a
    # direct difference of sigmoids would be 0 and its log -inf.
    x = torch.tensor([[0.0, 0.5, 1.0]], dtype=DT).repeat(2, 1)
    mean = torch.tensor([[1e3, -1e3, -1e3], [0.5, 0.5, 0.5]], dtype=DT, requires_grad=True)
    log_scale = torch.tensor([[0.0, 0.0, 0.0], [-20.0, 20.0, 20.0]], dtype=DT, requires_grad=True)
    out = log_discretized_logistic(x, mean, log_scale, 256)
    out.sum().backward()
    assert torch.isfinite(out).all()
    assert torch.isfinite(mean.grad).all() and torch.isfinite(log_scale.grad).all()


def test_iwae_bound_identities() -> None:
    # Claims: L_1 = log w (the ELBO integrand); L_k(log w + c) = L_k(log w) + c (so huge log weights
    # do not overflow); L_k = log((1/k) sum_i w_i) computed directly in float64.
    g = torch.Generator().manual_seed(5)
    log_w = 3.0 * torch.randn(7, 4, generator=g, dtype=DT)
    torch.testing.assert_close(iwae_bound(log_w[:1]), log_w[0], rtol=0, atol=0)
    direct = np.log(np.mean(np.exp(log_w.numpy()), axis=0))
    np.testing.assert_allclose(iwae_bound(log_w).numpy(), direct, rtol=1e-12)
    c = torch.tensor([1e3, -1e3, 0.0, 12.5], dtype=DT)
    torch.testing.assert_close(iwae_bound(log_w + c), iwae_bound(log_w) + c, rtol=1e-12, atol=1e-9)


def _sum_square(z: torch.Tensor) -> torch.Tensor:
    return z.pow(2).sum(-1)


def _sum_sin(z: torch.Tensor) -> torch.Tensor:
    return torch.sin(z).sum(-1)


@pytest.mark.parametrize("fname", ["square", "sin"])
def test_reparameterised_gradient_is_unbiased_and_beats_score_function(fname: str) -> None:
    # Claims ([001] reparametrization trick): the average of d f(mu + sigma eps) / d(mu, logvar)
    # matches the analytic gradient of E_q f within 5 SE; the score-function (REINFORCE) estimator
    # f(z) d log q(z) / d(mu, logvar) is also unbiased but its variance is larger, by more than 5
    # standard errors of the variance difference.
    # E_q sum z^2 = sum mu^2 + s2 -> grads 2 mu, s2;
    # E_q sum sin z = sum sin(mu) exp(-s2 / 2) -> cos(mu) e^{-s2/2}, -s2/2 sin(mu) e^{-s2/2}.
    n = 100_000
    g = torch.Generator().manual_seed(6 if fname == "square" else 7)
    mu = torch.tensor([0.5, -1.0, 2.0], dtype=DT)
    logvar = torch.tensor([0.0, -1.0, 0.5], dtype=DT)
    s2 = torch.exp(logvar)
    if fname == "square":
        f = _sum_square
        exact = torch.cat([2 * mu, s2])
    else:
        f = _sum_sin
        damp = torch.exp(-s2 / 2)
        exact = torch.cat([torch.cos(mu) * damp, -0.5 * s2 * torch.sin(mu) * damp])

    # One copy of (mu, logvar) per sample, so .grad holds the per-sample gradients.
    mu_n = mu.expand(n, 3).clone().requires_grad_(True)
    lv_n = logvar.expand(n, 3).clone().requires_grad_(True)
    z = reparameterize(mu_n, lv_n, generator=g)
    f(z).sum().backward()
    grad_rep = torch.cat([mu_n.grad, lv_n.grad], dim=1)  # (n, 6)

    mu_n.grad, lv_n.grad = None, None
    z = z.detach()
    log_q = log_normal(z, mu_n, lv_n)  # (n,) per-sample log q(z)
    (f(z) * log_q).sum().backward()
    grad_sf = torch.cat([mu_n.grad, lv_n.grad], dim=1)

    _mc_check(grad_rep, exact)
    _mc_check(grad_sf, exact)

    def var_and_se(s: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        c = s - s.mean(0)
        v = c.pow(2).mean(0)
        return v, torch.sqrt((c.pow(4).mean(0) - v.pow(2)) / s.shape[0])  # SE of the variance

    v_rep, se_rep = var_and_se(grad_rep)
    v_sf, se_sf = var_and_se(grad_sf)
    assert torch.all(v_sf - v_rep > 5 * torch.sqrt(se_rep**2 + se_sf**2)), (v_rep, v_sf)


def test_reparameterize_uses_generator_and_moments() -> None:
    # Claims: the draw is reproducible from the generator; z has mean mu and variance exp(logvar)
    # (each within 5 SE), in the dtype of mu.
    mu = torch.tensor([[1.0, -2.0]], dtype=DT).expand(50_000, 2)
    logvar = torch.tensor([[0.3, -1.2]], dtype=DT).expand(50_000, 2)
    z1 = reparameterize(mu, logvar, generator=torch.Generator().manual_seed(8))
    z2 = reparameterize(mu, logvar, generator=torch.Generator().manual_seed(8))
    assert z1.dtype == DT and torch.equal(z1, z2)
    _mc_check(z1, mu[0])
    _mc_check((z1 - mu).pow(2), torch.exp(logvar[0]))
