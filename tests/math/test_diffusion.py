"""Closed forms of genlab.diffusion checked against the claims of [001] (DDPM, score SDEs).

Deterministic identities are checked to float64 round-off. Monte-Carlo checks pass when the
estimate lies within 5 standard errors (computed here from the samples) of the exact value.
Log-densities that are not the code under test come from torch.distributions.Normal.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.integrate
import scipy.stats
import torch
from torch.distributions import Normal

from genlab.diffusion import (
    VESDE,
    VPSDE,
    NoiseSchedule,
    SubVPSDE,
    cosine_betas,
    geometric_sigmas,
    linear_betas,
    make_betas,
    vlb_terms,
)
from genlab.math.gaussian import log_discretized_gaussian

DT = torch.float64
N_SE = 5.0


def _t(i: int, n: int) -> torch.Tensor:
    return torch.full((n,), i, dtype=torch.long)


def _close_mc(samples: torch.Tensor, exact: torch.Tensor | float) -> None:
    """Mean of samples (N, ...) within N_SE standard errors of exact, elementwise."""
    mean = samples.mean(0)
    se = samples.std(0) / math.sqrt(samples.shape[0])
    assert torch.all((mean - exact).abs() < N_SE * se), (mean, exact, se)


# ----- schedules -----


def test_linear_schedule_endpoints_and_monotone() -> None:
    # Claim (Ho et al. sec. 4, [001]): beta rises linearly from 1e-4 to 0.02 over T = 1000 steps,
    # so alpha_bar falls strictly from ~1 and q(x_T | x_0) is close to N(0, I).
    betas = linear_betas(1000)
    assert betas.dtype == DT and betas.shape == (1000,)
    assert float(betas[0]) == pytest.approx(1e-4, abs=1e-15)
    assert float(betas[-1]) == pytest.approx(0.02, abs=1e-15)
    assert torch.allclose(betas.diff(), torch.full((999,), (0.02 - 1e-4) / 999, dtype=DT))
    s = NoiseSchedule(betas)
    assert bool((s.alpha_bar.diff() < 0).all()) and 0 < float(s.alpha_bar[-1])
    assert float(s.alpha_bar[0]) == pytest.approx(1 - 1e-4, abs=1e-15)
    # alpha_bar_T = prod (1 - beta_t) < exp(-sum beta_t) = exp(-10.05): the prior KL is tiny.
    assert float(s.alpha_bar[-1]) < math.exp(-float(betas.sum()))
    assert torch.equal(make_betas("linear", 1000), betas)


def test_cosine_schedule_follows_its_alpha_bar() -> None:
    # Claim (Nichol & Dhariwal eq. 17): alpha_bar_t = f(t) / f(0) with f(t) = cos^2(((t/T + s) /
    # (1 + s)) pi / 2), as long as no beta was clipped at max_beta; beta never exceeds max_beta.
    T, s_off = 1000, 0.008
    betas = cosine_betas(T)
    assert float(betas.max()) <= 0.999 and float(betas.min()) > 0
    sched = NoiseSchedule(betas)
    t = torch.arange(1, T + 1, dtype=DT)
    f = torch.cos((t / T + s_off) / (1 + s_off) * math.pi / 2) ** 2
    f0 = math.cos(s_off / (1 + s_off) * math.pi / 2) ** 2
    clipped = int(torch.nonzero(betas >= 0.999)[0]) if bool((betas >= 0.999).any()) else T
    assert clipped == T - 1  # only the singular last step is clipped
    assert torch.allclose(sched.alpha_bar[:clipped], f[:clipped] / f0, rtol=1e-10, atol=0)
    assert bool((sched.alpha_bar.diff() < 0).all())
    assert float(sched.alpha_bar[-1]) < 1e-6
    # SNR and lambda = log(alpha / sigma) = log(SNR) / 2 both fall strictly with t.
    snr = sched.snr(torch.arange(T))
    assert bool((snr.diff() < 0).all())
    assert torch.allclose(sched.lambdas, 0.5 * torch.log(snr), rtol=1e-12, atol=1e-12)


def test_schedule_names_and_bad_input() -> None:
    assert torch.equal(make_betas("cosine", 50), cosine_betas(50))
    with pytest.raises(ValueError, match="linear or cosine"):
        make_betas("quadratic", 10)
    with pytest.raises(ValueError, match="in \\(0, 1\\)"):
        NoiseSchedule(torch.tensor([0.1, 1.0]))
    sig = geometric_sigmas(10.0, 0.01, 7)
    ratios = sig[1:] / sig[:-1]
    assert float(sig[0]) == pytest.approx(10.0) and float(sig[-1]) == pytest.approx(0.01)
    assert torch.allclose(ratios, ratios[0].expand(6), rtol=1e-12)


@pytest.mark.parametrize("spacing", ["t", "lambda"])
def test_timesteps_decrease_from_last_to_first(spacing: str) -> None:
    s = NoiseSchedule.from_name("cosine", 1000)
    ts = s.timesteps(20, spacing)
    assert int(ts[0]) == 999 and int(ts[-1]) == 0 and len(ts) == 20
    assert bool((ts.diff() < 0).all())
    if spacing == "lambda":  # each index is (within one) the one nearest to an even lambda grid
        lin = NoiseSchedule.from_name("linear", 1000)
        target = torch.linspace(float(lin.lambdas[-1]), float(lin.lambdas[0]), 20, dtype=DT)
        nearest = (lin.lambdas[None, :] - target[:, None]).abs().argmin(1)
        assert int((lin.timesteps(20, spacing) - nearest).abs().max()) <= 1
    assert len(s.timesteps(1000, spacing)) == 1000 and s.timesteps(1, spacing).tolist() == [999]


# ----- the forward process -----


@pytest.mark.parametrize("name", ["linear", "cosine"])
def test_q_closed_form_equals_iterated_kernel(name: str) -> None:
    # Claim [001]: iterating q(x_t | x_{t-1}) = N(sqrt(1 - beta_t) x_{t-1}, beta_t I) from x_0 gives
    # q(x_t | x_0) = N(sqrt(alpha_bar_t) x_0, (1 - alpha_bar_t) I). Mean and variance recursions:
    # m_t = sqrt(alpha_t) m_{t-1}, v_t = alpha_t v_{t-1} + beta_t, from (x_0, 0).
    s = NoiseSchedule.from_name(name, 1000)
    x0 = torch.tensor([[1.5, -0.5]], dtype=DT)
    m, v = x0.clone(), torch.zeros(1, 1, dtype=DT)
    for i in range(s.T):
        m = math.sqrt(1 - float(s.betas[i])) * m
        v = (1 - float(s.betas[i])) * v + float(s.betas[i])
        mean, var = s.q_mean_var(x0, _t(i, 1))
        assert torch.allclose(mean, m, rtol=1e-12, atol=1e-14)
        assert torch.allclose(var, v, rtol=1e-12, atol=1e-14)


def test_q_closed_form_equals_iterated_chain_by_sampling() -> None:
    # Same claim by simulation: run the chain x_t = sqrt(1 - beta_t) x_{t-1} + sqrt(beta_t) z on
    # 100k particles and compare mean and variance at every t with the closed form (5 SE; the SE
    # of a sample variance is v sqrt(2 / (N - 1)) for Gaussian samples).
    g = torch.Generator().manual_seed(0)
    s = NoiseSchedule.from_name("linear", 50)
    n = 100_000
    x0 = torch.tensor([1.5, -0.5], dtype=DT)
    x = x0.expand(n, 2).clone()
    for i in range(s.T):
        b = float(s.betas[i])
        x = math.sqrt(1 - b) * x + math.sqrt(b) * torch.randn(n, 2, generator=g, dtype=DT)
        mean, var = s.q_mean_var(x0[None], _t(i, 1))
        _close_mc(x, mean[0])
        var_hat = x.var(0)
        assert torch.all((var_hat - var[0]).abs() < N_SE * var[0] * math.sqrt(2 / (n - 1)))
    # and q_sample draws from the same closed form
    xt = s.q_sample(x0.expand(n, 2), _t(s.T - 1, n), generator=g)
    mean, var = s.q_mean_var(x0[None], _t(s.T - 1, 1))
    _close_mc(xt, mean[0])


# ----- the posterior q(x_{t-1} | x_t, x_0) -----


@pytest.mark.parametrize("name", ["linear", "cosine"])
def test_posterior_mean_forms_agree(name: str) -> None:
    # Claim [001]: with x_t = sqrt(alpha_bar_t) x_0 + sqrt(1 - alpha_bar_t) eps,
    # mu~(x_t, x_0) = sqrt(alpha_bar_{t-1}) beta_t / (1 - alpha_bar_t) x_0
    #               + sqrt(alpha_t) (1 - alpha_bar_{t-1}) / (1 - alpha_bar_t) x_t
    #               = 1 / sqrt(alpha_t) (x_t - beta_t / sqrt(1 - alpha_bar_t) eps), at every t.
    g = torch.Generator().manual_seed(1)
    s = NoiseSchedule.from_name(name, 1000)
    t = torch.arange(s.T)
    x0 = torch.randn(s.T, 3, 2, generator=g, dtype=DT)
    eps = torch.randn(s.T, 3, 2, generator=g, dtype=DT)
    xt = s.q_sample(x0, t, eps)
    mean, var, logvar = s.q_posterior(x0, xt, t)
    mean_eps = s.posterior_mean_from_eps(xt, t, eps)
    assert torch.allclose(mean, mean_eps, rtol=1e-9, atol=1e-9)
    assert var.shape == (s.T, 1, 1)
    assert torch.allclose(logvar[1:], torch.log(var[1:]), rtol=1e-12)
    assert float(var[0]) == 0 and torch.allclose(mean[0], x0[0])  # x_0 is known given x_1, x_0


@pytest.mark.parametrize("i", [1, 10, 300, 999])
def test_posterior_is_bayes_rule_on_a_grid(i: int) -> None:
    # Claim [001]: q(x_{t-1} | x_t, x_0) = q(x_t | x_{t-1}) q(x_{t-1} | x_0) / q(x_t | x_0), a
    # Gaussian N(mu~, beta~). Checked pointwise on a grid of x_{t-1} (1-D), in log density.
    s = NoiseSchedule.from_name("linear", 1000)
    x0, xt = torch.tensor([[0.7]], dtype=DT), torch.tensor([[-0.3]], dtype=DT)
    b, ab, ab_prev = float(s.betas[i]), float(s.alpha_bar[i]), float(s.alpha_bar_prev[i])
    mean, var, _ = s.q_posterior(x0, xt, _t(i, 1))
    grid = float(mean) + math.sqrt(float(var)) * torch.linspace(-6, 6, 201, dtype=DT)
    log_bayes = (
        Normal(math.sqrt(1 - b) * grid, math.sqrt(b)).log_prob(xt[0, 0])
        + Normal(math.sqrt(ab_prev) * x0[0, 0], math.sqrt(1 - ab_prev)).log_prob(grid)
        - Normal(math.sqrt(ab) * x0[0, 0], math.sqrt(1 - ab)).log_prob(xt[0, 0])
    )
    log_post = Normal(mean[0, 0], var[0, 0].sqrt()).log_prob(grid)
    assert torch.allclose(log_bayes, log_post, rtol=0, atol=1e-8)


@pytest.mark.parametrize("i", [1, 50, 500, 999])
def test_posterior_mean_on_gaussian_data_matches_exact_conditional(i: int) -> None:
    # Claim: for data x_0 ~ N(m, s^2) the true reverse step q(x_{t-1} | x_t) is Gaussian, computed
    # here from the joint law of (x_{t-1}, x_t) given by the one-step kernel. Its mean equals both
    # forms of the posterior mean at the exact noise prediction eps*(x_t) = E[eps | x_t] =
    # -sigma_t grad log p_t(x_t) (score by autograd), and at x0* = E[x_0 | x_t]; its variance is
    # beta~_t + coef_x0^2 Var[x_0 | x_t] (law of total variance).
    s = NoiseSchedule.from_name("cosine", 1000)
    m, sd = 0.8, 0.6
    a_t, b_t = float(s.alphas[i]), float(s.betas[i])
    ab, ab_prev = float(s.alpha_bar[i]), float(s.alpha_bar_prev[i])
    # joint law of (x_{t-1}, x_t): x_t = sqrt(alpha_t) x_{t-1} + sqrt(beta_t) z
    mu_p, v_p = math.sqrt(ab_prev) * m, ab_prev * sd**2 + 1 - ab_prev
    mu_t, v_t = math.sqrt(a_t) * mu_p, a_t * v_p + b_t
    cov = math.sqrt(a_t) * v_p
    xt = torch.linspace(-3, 3, 13, dtype=DT).reshape(-1, 1)
    cond_mean = mu_p + cov / v_t * (xt - mu_t)
    cond_var = v_p - cov**2 / v_t
    # exact eps prediction from the score of p_t = N(mu_t, v_t), by autograd
    x = xt.clone().requires_grad_(True)
    (score,) = torch.autograd.grad(Normal(mu_t, math.sqrt(v_t)).log_prob(x).sum(), x)
    eps_star = -math.sqrt(1 - ab) * score
    t = _t(i, len(xt))
    assert torch.allclose(s.posterior_mean_from_eps(xt, t, eps_star), cond_mean, atol=1e-10)
    # E[x_0 | x_t] and Var[x_0 | x_t] from the joint law of (x_0, x_t)
    x0_star = m + math.sqrt(ab) * sd**2 / v_t * (xt - mu_t)
    var0 = sd**2 - ab * sd**4 / v_t
    post_mean, post_var, _ = s.q_posterior(x0_star, xt, t)
    assert torch.allclose(post_mean, cond_mean, atol=1e-10)
    coef_x0 = math.sqrt(ab_prev) * b_t / (1 - ab)
    assert float(post_var[0]) + coef_x0**2 * var0 == pytest.approx(cond_var, rel=1e-9)


@pytest.mark.parametrize("i", [5, 200, 900])
def test_eps_is_minus_sigma_times_score_for_gaussian_data(i: int) -> None:
    # Claim [001] ("eps_theta(x, t) = -sigma_t s_theta(x, t)"): the best noise prediction
    # E[eps | x_t] equals -sigma_t grad log p_t(x_t). For x_0 ~ N(m, s^2) both are affine in x_t;
    # E[eps | x_t] is estimated by least squares of eps on (1, x_t) over 200k draws (5 SE of the
    # OLS coefficients), the score by autograd of the exact noised density.
    g = torch.Generator().manual_seed(2)
    s = NoiseSchedule.from_name("linear", 1000)
    m, sd, n = -0.4, 0.5, 200_000
    x0 = m + sd * torch.randn(n, 1, generator=g, dtype=DT)
    eps = torch.randn(n, 1, generator=g, dtype=DT)
    xt = s.q_sample(x0, _t(i, n), eps)
    design = torch.cat([torch.ones_like(xt), xt], dim=1)  # (n, 2)
    coef = torch.linalg.lstsq(design, eps).solution[:, 0]  # (c0, c1)
    resid = eps[:, 0] - design @ coef
    cov = resid.var() * torch.linalg.inv(design.T @ design)
    se = cov.diagonal().sqrt()
    # -sigma_t * score at two points gives the exact affine map's coefficients
    alpha, sigma = float(s.sqrt_alpha_bar[i]), float(s.sqrt_one_minus_alpha_bar[i])
    p_t = Normal(alpha * m, math.sqrt(alpha**2 * sd**2 + sigma**2))
    pts = torch.tensor([0.0, 1.0], dtype=DT, requires_grad=True)
    (score,) = torch.autograd.grad(p_t.log_prob(pts).sum(), pts)
    exact = -sigma * score  # values at x = 0 and x = 1
    exact_coef = torch.stack([exact[0], exact[1] - exact[0]])
    assert torch.all((coef - exact_coef).abs() < N_SE * se), (coef, exact_coef, se)


def test_prediction_conversions_are_exact_inverses() -> None:
    # v = alpha_t eps - sigma_t x_0 (Salimans & Ho); x_0, eps and v determine one another given x_t.
    g = torch.Generator().manual_seed(3)
    s = NoiseSchedule.from_name("cosine", 1000)
    t = torch.randint(0, s.T - 1, (64,), generator=g)  # the clipped last step is near-singular
    x0 = torch.randn(64, 3, 4, generator=g, dtype=DT)
    eps = torch.randn(64, 3, 4, generator=g, dtype=DT)
    xt = s.q_sample(x0, t, eps)
    v = s.v_target(x0, t, eps)
    for got, want in [
        (s.x0_from_eps(xt, t, eps), x0),
        (s.eps_from_x0(xt, t, x0), eps),
        (s.v_from_eps(xt, t, eps), v),
        (s.eps_from_v(xt, t, v), eps),
        (s.x0_from_v(xt, t, v), x0),
    ]:
        assert torch.allclose(got, want, rtol=1e-7, atol=1e-7)
    for kind, out in [("eps", eps), ("x0", x0), ("v", v)]:
        e, x = s.eps_x0(xt, t, out, kind)
        assert torch.allclose(e, eps, atol=1e-7) and torch.allclose(x, x0, atol=1e-7)
    # float32 input gives float32 output (tables are gathered in float64, then cast)
    assert s.q_sample(x0.float(), t, eps.float()).dtype == torch.float32


def test_interpolated_logvar_spans_the_two_fixed_choices() -> None:
    s = NoiseSchedule.from_name("linear", 100)
    t = torch.arange(1, 100)
    ones = torch.ones(99, 1, dtype=DT)
    assert torch.allclose(s.interpolated_logvar(t, ones)[:, 0], torch.log(s.betas[1:]))
    assert torch.allclose(s.interpolated_logvar(t, 0 * ones)[:, 0], torch.log(s.beta_tilde[1:]))


# ----- the variational bound -----


@pytest.mark.parametrize("i", [1, 20, 999])
def test_kl_term_is_weighted_eps_mse_plus_constant(i: int) -> None:
    # Claim [001] / Ho et al. eq. (12): with mu_theta = 1/sqrt(alpha_t) (x_t - beta_t /
    # sqrt(1 - alpha_bar_t) eps_theta) and a fixed variance sigma^2,
    # KL(q(x_{t-1} | x_t, x_0) || N(mu_theta, sigma^2 I))
    #   = beta_t^2 / (2 sigma^2 alpha_t (1 - alpha_bar_t)) ||eps - eps_theta||^2
    #   + D/2 (log(sigma^2 / beta~_t) + beta~_t / sigma^2 - 1),
    # exactly, for every eps_theta; the constant vanishes when sigma^2 = beta~_t.
    g = torch.Generator().manual_seed(4)
    s = NoiseSchedule.from_name("linear", 1000)
    n, d = 16, 6
    x0 = torch.randn(n, 2, 3, generator=g, dtype=DT)
    eps = torch.randn(n, 2, 3, generator=g, dtype=DT)
    eps_hat = torch.randn(n, 2, 3, generator=g, dtype=DT)
    t = _t(i, n)
    xt = s.q_sample(x0, t, eps)
    mu_theta = s.posterior_mean_from_eps(xt, t, eps_hat)
    a, b, ab, bt = (float(v[i]) for v in (s.alphas, s.betas, s.alpha_bar, s.beta_tilde))
    mse = (eps - eps_hat).pow(2).flatten(1).sum(1)
    for var in (b, bt, 3.0 * b):
        kl = s.vlb_term(x0, xt, t, mu_theta, torch.full_like(x0, math.log(var)), levels=256)
        const = d / 2 * (math.log(var / bt) + bt / var - 1)
        weight = b**2 / (2 * var * a * (1 - ab))
        assert torch.allclose(kl, weight * mse + const, rtol=1e-8, atol=1e-10)
    assert d / 2 * (math.log(bt / bt) + 1 - 1) == 0


def test_bound_decomposition_holds_per_trajectory() -> None:
    # The step of [001]'s ELBO derivation that makes L a sum of KLs: for every forward trajectory,
    # sum_{t=1}^T log q(x_t | x_{t-1}) = log q(x_T | x_0) + sum_{t=2}^T log q(x_{t-1} | x_t, x_0).
    g = torch.Generator().manual_seed(5)
    s = NoiseSchedule.from_name("linear", 20)
    n = 100
    x0 = torch.randn(n, 2, generator=g, dtype=DT)
    xs = [x0]
    lhs = torch.zeros(n, dtype=DT)
    for i in range(s.T):
        b = float(s.betas[i])
        x = math.sqrt(1 - b) * xs[-1] + math.sqrt(b) * torch.randn(n, 2, generator=g, dtype=DT)
        lhs += Normal(math.sqrt(1 - b) * xs[-1], math.sqrt(b)).log_prob(x).sum(1)
        xs.append(x)
    mean_T, var_T = s.q_mean_var(x0, _t(s.T - 1, n))
    rhs = Normal(mean_T, var_T.sqrt()).log_prob(xs[-1]).sum(1)
    for i in range(1, s.T):  # index i is the paper's t = i + 1 >= 2: x_{t-1} = xs[i]
        mean, var, _ = s.q_posterior(x0, xs[i + 1], _t(i, n))
        rhs += Normal(mean, var.sqrt()).log_prob(xs[i]).sum(1)
    assert torch.allclose(lhs, rhs, rtol=1e-10, atol=1e-9)


def test_bound_equals_monte_carlo_of_its_definition() -> None:
    # Claim [001] ("L = E[-log p(x_0|x_1) + KL(q(x_T|x_0) || p(x_T)) + sum_{t>1} KL(...)]"): the
    # decomposed bound of vlb_terms equals L = E_q[log q(x_{1:T} | x_0) - log p(x_{0:T})] estimated
    # on whole forward trajectories, for an arbitrary model p (here eps_theta(x_t) = 0.5 x_t with
    # sigma_t^2 = beta_t and the discretized Gaussian decoder). Both sides are Monte-Carlo
    # estimates: they must agree within 5 combined standard errors, for each of 3 data points.
    # L_T alone is also checked against torch.distributions' Gaussian KL.
    g = torch.Generator().manual_seed(6)
    s = NoiseSchedule(linear_betas(10, 0.01, 0.2))  # alpha_bar_T = 0.33: L_T is not negligible
    levels, n = 5, 20_000
    points = torch.tensor([[-1.0, 0.5], [0.0, 0.0], [1.0, -0.5]], dtype=DT)

    def p_mean_logvar(xt: torch.Tensor, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mean = s.posterior_mean_from_eps(xt, t, 0.5 * xt)
        return mean, torch.log(s.betas[t]).reshape(-1, 1).expand_as(xt)

    for x0_point in points:
        x0 = x0_point.expand(n, 2).clone()
        bound = vlb_terms(s, x0, p_mean_logvar, levels=levels, generator=g)
        q_T = Normal(float(s.sqrt_alpha_bar[-1]) * x0_point, math.sqrt(1 - float(s.alpha_bar[-1])))
        kl_T = torch.distributions.kl_divergence(q_T, Normal(0.0, 1.0)).sum()
        assert torch.allclose(bound["prior"], kl_T.expand(n), rtol=1e-12)
        assert bound["terms"].shape == (n, s.T)
        assert torch.allclose(bound["total"], bound["prior"] + bound["terms"].sum(1))
        # the definition, on trajectories x_0 -> x_1 -> ... -> x_T
        log_ratio = torch.zeros(n, dtype=DT)
        x_prev = x0
        for i in range(s.T):
            b = float(s.betas[i])
            x = math.sqrt(1 - b) * x_prev + math.sqrt(b) * torch.randn(n, 2, generator=g, dtype=DT)
            log_ratio += Normal(math.sqrt(1 - b) * x_prev, math.sqrt(b)).log_prob(x).sum(1)
            mean, logvar = p_mean_logvar(x, _t(i, n))
            if i == 0:  # the decoder p(x_0 | x_1) is a probability mass on the grid
                log_ratio -= log_discretized_gaussian(x0, mean, logvar, levels, (-1.0, 1.0))
            else:
                log_ratio -= Normal(mean, (0.5 * logvar).exp()).log_prob(x_prev).sum(1)
            x_prev = x
        log_ratio -= Normal(0.0, 1.0).log_prob(x_prev).sum(1)  # p(x_T) = N(0, I)
        diff = bound["total"].mean() - log_ratio.mean()
        se = math.sqrt(float(bound["total"].var() + log_ratio.var()) / n)
        assert abs(float(diff)) < N_SE * se, (float(diff), se)


def test_discretized_gaussian_is_a_distribution_on_the_grid() -> None:
    # The decoder of Ho et al. eq. (13): the masses of the `levels` grid values sum to 1, inner
    # bins are CDF differences (scipy), and far tails stay finite.
    levels, lo, hi = 7, -1.0, 1.0
    grid = torch.linspace(lo, hi, levels, dtype=DT).reshape(-1, 1)
    h = (hi - lo) / (levels - 1) / 2
    for mean, std in [(0.1, 0.3), (-0.9, 0.05), (3.0, 0.5), (0.0, 10.0), (40.0, 0.01)]:
        mu = torch.full_like(grid, mean)
        logvar = torch.full_like(grid, 2 * math.log(std))
        logp = log_discretized_gaussian(grid, mu, logvar, levels, (lo, hi))
        assert bool(torch.isfinite(logp).all()), (mean, std, logp)
        assert float(torch.logsumexp(logp, 0)) == pytest.approx(0.0, abs=1e-12)
        k = levels // 2  # an inner bin
        cdf = scipy.stats.norm.cdf
        ref = cdf((float(grid[k]) + h - mean) / std) - cdf((float(grid[k]) - h - mean) / std)
        if ref > 1e-300:
            assert float(logp[k]) == pytest.approx(math.log(ref), rel=1e-9)


# ----- score SDEs -----


def test_vp_marginal_is_the_closed_form_integral() -> None:
    # Claim [001] / Song et al. eq. (29): x(t) | x(0) ~ N(sqrt(alpha_bar(t)) x(0),
    # (1 - alpha_bar(t)) I) with alpha_bar(t) = exp(-int_0^t beta(s) ds); sub-VP has std
    # 1 - alpha_bar(t); VE has variance int_0^t g(s)^2 ds. Integrals by scipy quad.
    vp, svp, ve = VPSDE(), SubVPSDE(), VESDE()
    x0 = torch.tensor([[1.0, -2.0]], dtype=DT)
    for t in [1e-4, 0.1, 0.5, 0.9, 1.0]:
        integral, _ = scipy.integrate.quad(lambda u: float(vp.beta(u)), 0, t, epsabs=1e-13)
        ab = math.exp(-integral)
        assert float(vp.alpha_bar(t)) == pytest.approx(ab, rel=1e-12)
        mean, std = vp.marginal(x0, t)
        assert torch.allclose(mean, math.sqrt(ab) * x0, rtol=1e-12)
        assert float(std) == pytest.approx(math.sqrt(1 - ab), rel=1e-10)
        mean, std = svp.marginal(x0, t)
        assert torch.allclose(mean, math.sqrt(ab) * x0, rtol=1e-12)
        assert float(std) == pytest.approx(1 - ab, rel=1e-10)
        var_ve, _ = scipy.integrate.quad(
            lambda u: float(ve.diffusion(u)) ** 2, 0, t, epsabs=1e-13, epsrel=1e-12
        )
        mean, std = ve.marginal(x0, t)
        assert torch.equal(mean, x0)
        assert float(std) ** 2 == pytest.approx(var_ve, rel=1e-9)


@pytest.mark.parametrize("sde", [VPSDE(), SubVPSDE(), VESDE(0.01, 5.0)], ids=["vp", "subvp", "ve"])
def test_sde_marginal_solves_the_moment_equations(sde) -> None:
    # For a linear SDE dx = f(t) x dt + g(t) dw started at x_0 the marginal mean m and variance v
    # obey dm/dt = f(t) m and dv/dt = 2 f(t) v + g(t)^2 (Sarkka & Solin, Applied SDEs, eq. 6.2).
    # Integrate them with RK45 at tight tolerance from drift() and diffusion() only, and compare
    # with marginal() at several times.
    x0 = 1.7
    one = torch.ones(1, 1, dtype=DT)

    def rhs(t: float, y: np.ndarray) -> list[float]:
        f = float(sde.drift(one, t))  # drift is f(t) x, so f(t) = drift(1, t)
        g2 = float(sde.diffusion(t)) ** 2
        return [f * y[0], 2 * f * y[1] + g2]

    ts = [0.05, 0.3, 0.6, 1.0]
    sol = scipy.integrate.solve_ivp(
        rhs, (0.0, 1.0), [x0, 0.0], t_eval=ts, rtol=1e-11, atol=1e-13, method="DOP853"
    )
    for k, t in enumerate(ts):
        mean, std = sde.marginal(torch.full((1, 1), x0, dtype=DT), t)
        assert float(mean) == pytest.approx(sol.y[0, k], rel=1e-8)
        assert float(std) ** 2 == pytest.approx(sol.y[1, k], rel=1e-7)


def test_vp_sde_marginal_equals_ddpm_kernel() -> None:
    # Claim [001] ("stochastic differential equation for DDPM"): DDPM with
    # beta_i = 1 - alpha_bar(t_i) / alpha_bar(t_{i-1}), t_i = i / N (the VP-SDE's exact one-step
    # kernel) has q(x_t | x_0) = the VP marginal at t_i, for every i; and Ho et al.'s linear
    # schedule, beta_i = beta(s_i) / N with s_i = (i - 1) / (N - 1), discretises the same VP-SDE
    # (beta_min = 0.1, beta_max = 20) with |log alpha_bar_i - log alpha_bar(i / N)| bounded by
    # sum_j beta_j^2 / (2 (1 - beta_max / N)) (from log(1 - b) = -b - b^2/2 - ...) plus the
    # Riemann-sum error (beta_max - beta_min) / N of sum_j beta_j against int beta.
    sde, n_steps = VPSDE(0.1, 20.0), 1000
    t = torch.arange(n_steps + 1, dtype=DT) / n_steps
    ab = sde.alpha_bar(t)
    s = NoiseSchedule(1 - ab[1:] / ab[:-1])
    assert torch.allclose(s.alpha_bar, ab[1:], rtol=1e-12)
    x0 = torch.randn(n_steps, 2, generator=torch.Generator().manual_seed(7), dtype=DT)
    mean_q, var_q = s.q_mean_var(x0, torch.arange(n_steps))
    mean_sde, std_sde = sde.marginal(x0, t[1:])
    assert torch.allclose(mean_q, mean_sde, rtol=1e-10)
    assert torch.allclose(var_q, std_sde**2, rtol=1e-10)
    # Ho et al.'s schedule
    ho = linear_betas(n_steps)
    s_grid = torch.arange(n_steps, dtype=DT) / (n_steps - 1)
    assert torch.allclose(ho, sde.beta(s_grid) / n_steps, rtol=1e-12)
    bound = float((ho**2).sum()) / (2 * (1 - 0.02)) + (20.0 - 0.1) / n_steps
    gap = (NoiseSchedule(ho).alpha_bar.log() - ab[1:].log()).abs()
    assert float(gap.max()) <= bound


def test_sde_priors() -> None:
    g = torch.Generator().manual_seed(8)
    z = VESDE(0.01, 50.0).prior_sample((4000, 2), g, dtype=DT)
    assert float(z.std()) == pytest.approx(50.0, rel=0.05)  # 5 SE of a std over 8000 draws ~ 4%
    zz = torch.randn(3, 2, generator=g, dtype=DT)
    ref = Normal(0.0, 50.0).log_prob(zz).sum(1)
    assert torch.allclose(VESDE(0.01, 50.0).prior_logp(zz), ref)
    assert torch.allclose(VPSDE().prior_logp(zz), Normal(0.0, 1.0).log_prob(zz).sum(1))
