"""GAN theory of the notes, executed: optimal discriminator, -log 4, non-saturating gradients,
the earth-mover examples, spectral normalisation and the gradient penalty ([001], [004])."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy import integrate, stats

from genlab.math.divergences import kl_categorical, wasserstein1
from genlab.math.gan_losses import critic_loss, generator_loss, gradient_penalty

DT = torch.float64
P = stats.norm(0.0, 1.0)  # p: the data density
Q = stats.norm(1.5, 0.7)  # q: a generator's density


def jsd(p, q) -> float:
    """Jensen-Shannon divergence by quadrature (independent of any genlab code)."""

    def term(d, x):
        m = 0.5 * (p.pdf(x) + q.pdf(x))
        return d.pdf(x) * (d.logpdf(x) - np.log(m))

    kl_pm = integrate.quad(lambda x: term(p, x), -12, 12, limit=200)[0]
    kl_qm = integrate.quad(lambda x: term(q, x), -12, 12, limit=200)[0]
    return 0.5 * (kl_pm + kl_qm)


def value(d_of_x, log_d=None, log_1md=None) -> float:
    """V(D) = E_p log D(x) + E_q log(1 - D(x)) by quadrature (log D given directly if known)."""
    log_d = log_d or (lambda x: np.log(d_of_x(x)))
    log_1md = log_1md or (lambda x: np.log1p(-d_of_x(x)))
    vp = integrate.quad(lambda x: P.pdf(x) * log_d(x), -12, 12, limit=200)[0]
    vq = integrate.quad(lambda x: Q.pdf(x) * log_1md(x), -12, 12, limit=200)[0]
    return vp + vq


def d_star(x):
    return P.pdf(x) / (P.pdf(x) + Q.pdf(x))


def value_at_d_star() -> float:
    # log D* = log p - log(p + q), log(1 - D*) = log q - log(p + q): stable in the tails
    log_sum = lambda x: np.logaddexp(P.logpdf(x), Q.logpdf(x))
    return value(None, lambda x: P.logpdf(x) - log_sum(x), lambda x: Q.logpdf(x) - log_sum(x))


def test_optimal_discriminator_value_is_minus_log4_plus_2jsd() -> None:
    # [004]: max_D V(D, G) = -log 4 + 2 JSD(p || q), attained at D* = p / (p + q).
    best = value_at_d_star()
    assert best == pytest.approx(-math.log(4) + 2 * jsd(P, Q), abs=1e-7)
    # D* is the maximiser: perturbing it in any of these directions lowers V.
    for bump in (lambda x: 0.05 * np.sin(x), lambda x: -0.05 * np.exp(-(x**2)), lambda x: 0.03):
        perturbed = lambda x, b=bump: np.clip(d_star(x) + b(x), 1e-9, 1 - 1e-9)
        assert value(perturbed) < best


def test_critic_loss_at_d_star_estimates_the_same_value() -> None:
    # genlab's minimax critic loss is -V; with logits log(p/q) (i.e. D = D*) its Monte Carlo
    # estimate matches -(-log 4 + 2 JSD) within 4 standard errors.
    rng = np.random.default_rng(0)
    n = 200_000
    xr, xf = P.rvs(n, random_state=rng), Q.rvs(n, random_state=rng)
    logit = lambda x: torch.tensor(P.logpdf(x) - Q.logpdf(x), dtype=DT)
    loss = float(critic_loss("minimax", logit(xr), logit(xf)))
    per = np.concatenate(
        [
            -np.log(d_star(xr)),  # the two halves of the estimator, for its standard error
            -np.log1p(-d_star(xf)),
        ]
    )
    se = math.sqrt(np.var(per[:n]) / n + np.var(per[n:]) / n)
    assert loss == pytest.approx(math.log(4) - 2 * jsd(P, Q), abs=4 * se)


def test_at_p_equals_q_the_value_is_minus_log4() -> None:
    # p = q: D* = 1/2 everywhere (logit 0) and V = -log 4 exactly.
    zeros = torch.zeros(7, dtype=DT)
    assert float(critic_loss("minimax", zeros, zeros)) == pytest.approx(math.log(4), abs=1e-15)
    assert value(lambda x: np.full_like(np.asarray(x, dtype=float), 0.5)) == pytest.approx(
        -math.log(4), abs=1e-12
    )


def test_non_saturating_loss_has_the_larger_gradient_where_d_is_near_zero() -> None:
    # [002]: early in training D(G(z)) ~ 0; log(1 - D) saturates there, -log D does not.
    for logit_value in (-8.0, -5.0, -3.0):
        grads = {}
        for kind in ("minimax", "ns"):
            f = torch.tensor([logit_value], dtype=DT, requires_grad=True)
            generator_loss(kind, f).backward()
            grads[kind] = abs(float(f.grad))
        d = 1 / (1 + math.exp(-logit_value))
        assert grads["minimax"] == pytest.approx(d, rel=1e-12)  # |d/dl log(1 - s(l))| = s(l)
        assert grads["ns"] == pytest.approx(1 - d, rel=1e-12)  # |d/dl -log s(l)| = 1 - s(l)
        assert grads["ns"] > 10 * grads["minimax"]


def _mixture_cdf(x):
    """mu = 1/4 U[1,2] + 1/4 U[3,4] + 1/2 U[9,10] (the earth-mover example of [001])."""
    u = lambda a, b: np.clip((x - a) / (b - a), 0, 1)
    return 0.25 * u(1, 2) + 0.25 * u(3, 4) + 0.5 * u(9, 10)


def test_earth_mover_example_of_001_is_3() -> None:
    # In 1-D, W1 = integral |F_mu - F_mu'| dx; mu' has density 1/2 on [5, 7].
    cdf_prime = lambda x: np.clip((x - 5) / 2, 0, 1)
    w_quad = integrate.quad(
        lambda x: abs(_mixture_cdf(x) - cdf_prime(x)), 0, 11, points=[1, 2, 3, 4, 5, 7, 9, 10]
    )[0]
    assert w_quad == pytest.approx(3.0, abs=1e-9)
    # The same with genlab's exact optimal-assignment W1 on quantile samples (equal sizes).
    n = 2000
    qs = (np.arange(n) + 0.5) / n
    comp = np.where(
        qs < 0.25, 1 + qs / 0.25, np.where(qs < 0.5, 3 + (qs - 0.25) / 0.25, 9 + (qs - 0.5) / 0.5)
    )
    x = torch.tensor(comp, dtype=DT)[:, None]
    y = torch.tensor(5 + 2 * qs, dtype=DT)[:, None]
    assert wasserstein1(x, y) == pytest.approx(3.0, abs=1e-9)


def test_parallel_lines_kl_infinite_w_equals_theta() -> None:
    # [004] / WGAN: P0 = (0, U[0,1]), P_theta = (theta, U[0,1]). For theta != 0 the supports are
    # disjoint: KL = +inf and JS = log 2 whatever theta is, while W1 = |theta| shrinks smoothly.
    g = torch.Generator().manual_seed(0)
    y = torch.rand(500, generator=g, dtype=DT)
    p0 = torch.stack([torch.zeros_like(y), y], 1)
    for theta in (1.0, 0.3, -0.05):
        p_theta = torch.stack([torch.full_like(y, theta), y], 1)
        assert wasserstein1(p0, p_theta) == pytest.approx(abs(theta), abs=1e-12)
        # histograms over x-coordinate bins: disjoint mass
        edges = torch.tensor([-2.0, -1e-9, 1e-9, 2.0], dtype=DT)
        h0 = torch.histogram(p0[:, 0], edges).hist / len(y)
        h1 = torch.histogram(p_theta[:, 0], edges).hist / len(y)
        assert math.isinf(kl_categorical(h0, h1))
        m = 0.5 * (h0 + h1)
        js = 0.5 * kl_categorical(h0, m) + 0.5 * kl_categorical(h1, m)
        assert js == pytest.approx(math.log(2), abs=1e-12)


def test_spectral_normalisation_gives_unit_spectral_norm() -> None:
    # Miyato et al.: W_SN = W / sigma(W) has largest singular value 1 ([003]).
    g = torch.Generator().manual_seed(1)
    w = torch.randn(30, 17, generator=g, dtype=DT)
    assert float(torch.linalg.matrix_norm(w / torch.linalg.matrix_norm(w, 2), 2)) == pytest.approx(
        1.0, abs=1e-12
    )
    # torch's parametrisation (power iteration) converges to the same in training mode.
    torch.manual_seed(1)
    layer = torch.nn.utils.parametrizations.spectral_norm(
        torch.nn.Linear(17, 30).double(), n_power_iterations=1
    )
    x = torch.randn(4, 17, dtype=DT)
    for _ in range(200):
        layer(x)
    assert float(torch.linalg.matrix_norm(layer.weight.detach(), 2)) == pytest.approx(1.0, abs=1e-6)


def test_gradient_penalty_is_zero_for_a_unit_norm_linear_critic() -> None:
    # D(x) = w . x with |w|_2 = 1 is 1-Lipschitz with gradient norm exactly 1 everywhere.
    g = torch.Generator().manual_seed(2)
    for shape in ((16, 5), (8, 1, 6, 6)):
        real = torch.randn(*shape, generator=g, dtype=DT)
        fake = torch.randn(*shape, generator=g, dtype=DT)
        w = torch.randn(real[0].numel(), generator=g, dtype=DT)
        unit = w / w.norm()
        critic = lambda x, v=unit: x.flatten(1) @ v
        assert float(gradient_penalty(critic, real, fake, generator=g)) == pytest.approx(
            0.0, abs=1e-24
        )
        # and (|w| - 1)^2 for a linear critic of another norm: the norm is over all of x's dims
        scaled = lambda x, v=3 * unit: x.flatten(1) @ v
        assert float(gradient_penalty(scaled, real, fake, generator=g)) == pytest.approx(
            4.0, rel=1e-12
        )
