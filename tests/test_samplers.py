"""Every sampler of genlab.samplers, driven by the exact score of a known data distribution.

Data: a 2-D mixture of 3 isotropic Gaussians (unequal weights, std 0.3). Noised by any of the
processes, it stays a mixture with means alpha mu_k and variances alpha^2 s^2 + sigma^2, whose
score (and eps = -sigma * score) is exact. A sampler passes when the unbiased Gaussian-kernel
MMD^2 (bandwidth 0.5, the scale of a component) between 2000 of its samples and 2000 data points
is below LEVEL = 5 x the standard deviation of the same statistic between two independent data
samples (estimated from 20 pairs); a negative control shows that level rejects wrong mixtures.
Gaussian data, whose flow maps are known exactly, checks orders of convergence.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import pytest
import torch

import genlab.samplers as S
from genlab.diffusion import VESDE, VPSDE, NoiseSchedule, SubVPSDE, geometric_sigmas
from genlab.math.divergences import rbf_mmd2
from genlab.registry import SAMPLERS

DT = torch.float64
N = 2000
BANDWIDTH = 0.5
MEANS = torch.tensor([[-2.0, 0.0], [1.5, 1.5], [1.0, -2.0]], dtype=DT)
WEIGHTS = torch.tensor([0.5, 0.3, 0.2], dtype=DT)
STD = 0.3
SCHED = NoiseSchedule.from_name("linear", 1000)
VP, SUBVP, VE = VPSDE(), SubVPSDE(), VESDE(0.01, 10.0)  # VE: sigma_max above the data's diameter
NAMES = ["ancestral", "ddim", "dpm-solver++", "sde-dpm-solver++", "langevin", "euler-maruyama"]
NAMES += ["pc", "ode"]


def sample_mixture(n: int, g: torch.Generator, weights: torch.Tensor = WEIGHTS) -> torch.Tensor:
    k = torch.multinomial(weights, n, replacement=True, generator=g)
    return MEANS[k] + STD * torch.randn(n, 2, generator=g, dtype=DT)


def mixture_score(x: torch.Tensor, alpha: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """grad log p(x), p = sum_k w_k N(alpha mu_k, (alpha^2 s^2 + sigma^2) I); alpha, sigma (B,)."""
    alpha, sigma = alpha.reshape(-1, 1, 1), sigma.reshape(-1, 1, 1)
    var = alpha**2 * STD**2 + sigma**2  # (B, 1, 1)
    diff = alpha * MEANS - x[:, None, :]  # (B, K, 2)
    log_w = torch.log(WEIGHTS) - 0.5 * diff.pow(2).sum(-1) / var[..., 0] - torch.log(var[..., 0])
    resp = torch.softmax(log_w, dim=1)  # (B, K) responsibilities
    return (resp[..., None] * diff / var).sum(1)


def eps_exact(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """The exact noise prediction of the discrete schedule: eps = -sigma_t grad log p_t."""
    alpha, sigma = SCHED.sqrt_alpha_bar[t], SCHED.sqrt_one_minus_alpha_bar[t]
    return -sigma.reshape(-1, 1) * mixture_score(x, alpha, sigma)


def score_exact(sde) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """The exact score of the SDE's marginal p_t, from its kernel N(a(t) x_0, std(t)^2 I)."""

    def score(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        alpha = sde.marginal(torch.ones_like(x), t)[0][:, 0]
        return mixture_score(x, alpha, sde.marginal(x, t)[1].reshape(-1))

    return score


def langevin_score(x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    return mixture_score(x, torch.ones_like(sigma), sigma)


LANGEVIN_SIGMAS = geometric_sigmas(5.0, 0.05, 10)  # sigma_1 ~ the largest distance in the data

# name -> sampler call with exact inputs, (n, generator) -> samples (n, 2)
CASES: dict[str, Callable[[int, torch.Generator], torch.Tensor]] = {
    "ancestral-beta": lambda n, g: S.ancestral(eps_exact, SCHED, (n, 2), generator=g, dtype=DT),
    "ancestral-beta_tilde": lambda n, g: S.ancestral(
        eps_exact, SCHED, (n, 2), variance="beta_tilde", generator=g, dtype=DT
    ),
    "ddim-100": lambda n, g: S.ddim(eps_exact, SCHED, (n, 2), steps=100, generator=g, dtype=DT),
    "dpm-solver++-40": lambda n, g: S.dpm_solver_pp(
        eps_exact, SCHED, (n, 2), steps=40, generator=g, dtype=DT
    ),
    "sde-dpm-solver++-40": lambda n, g: S.sde_dpm_solver_pp(
        eps_exact, SCHED, (n, 2), steps=40, generator=g, dtype=DT
    ),
    "langevin": lambda n, g: S.annealed_langevin(
        langevin_score, LANGEVIN_SIGMAS, (n, 2), steps=100, eps=1e-3, generator=g, dtype=DT
    ),
    "euler-maruyama-vp": lambda n, g: S.euler_maruyama(
        score_exact(VP), VP, (n, 2), steps=500, generator=g, dtype=DT
    ),
    "euler-maruyama-ve": lambda n, g: S.euler_maruyama(
        score_exact(VE), VE, (n, 2), steps=500, generator=g, dtype=DT
    ),
    "pc-ve": lambda n, g: S.predictor_corrector(
        score_exact(VE), VE, (n, 2), steps=200, generator=g, dtype=DT
    ),
    "pc-subvp": lambda n, g: S.predictor_corrector(
        score_exact(SUBVP), SUBVP, (n, 2), steps=200, generator=g, dtype=DT
    ),
    "ode-rk45-vp": lambda n, g: S.probability_flow_ode(
        score_exact(VP), VP, (n, 2), generator=g, dtype=DT
    ),
    "ode-rk45-ve": lambda n, g: S.probability_flow_ode(
        score_exact(VE), VE, (n, 2), generator=g, dtype=DT
    ),
    "ode-heun-subvp": lambda n, g: S.probability_flow_ode(
        score_exact(SUBVP), SUBVP, (n, 2), method="heun", steps=50, generator=g, dtype=DT
    ),
}


def _mmd2(x: torch.Tensor, y: torch.Tensor) -> float:
    return rbf_mmd2(x, y, bandwidth=BANDWIDTH)


def _level(draw: Callable[[torch.Generator], torch.Tensor], ref: torch.Tensor, seed: int) -> float:
    """5 x the std of MMD^2 between ref and 20 independent draws of the same distribution."""
    g = torch.Generator().manual_seed(seed)
    null = torch.tensor([_mmd2(draw(g), ref) for _ in range(20)])
    return 5.0 * float(null.std())


@pytest.fixture(scope="module")
def data_ref() -> tuple[torch.Tensor, float]:
    ref = sample_mixture(N, torch.Generator().manual_seed(0))
    return ref, _level(lambda g: sample_mixture(N, g), ref, seed=1)


def test_level_rejects_wrong_mixtures(data_ref) -> None:
    # Negative control: the level has the power to see a 10% dilation and shifted weights.
    ref, level = data_ref
    g = torch.Generator().manual_seed(2)
    assert _mmd2(1.1 * sample_mixture(N, g), ref) > level
    assert _mmd2(sample_mixture(N, g, torch.tensor([0.4, 0.4, 0.2], dtype=DT)), ref) > level
    assert abs(_mmd2(sample_mixture(N, g), ref)) < level


@pytest.mark.parametrize("case", list(CASES))
def test_sampler_reaches_the_data_distribution(case: str, data_ref) -> None:
    # Claim ([001], issue 5): given the exact score / noise of the data, each sampler samples it.
    ref, level = data_ref
    x = CASES[case](N, torch.Generator().manual_seed(3))
    assert x.shape == (N, 2) and x.dtype == DT and bool(torch.isfinite(x).all())
    assert _mmd2(x, ref) < level, (case, _mmd2(x, ref), level)


def test_reverse_sde_and_probability_flow_share_marginals() -> None:
    # Claim [001] / Song et al. sec. 4.3: the reverse SDE and the probability-flow ODE have the same
    # marginals p_t. Both are run from the prior down to t = 0.3 (no final denoising) and each is
    # compared, at the stated level, with x(0.3) drawn from the forward kernel, and with the other.
    t_mid = 0.3

    def forward(g: torch.Generator) -> torch.Tensor:
        mean, std = VP.marginal(sample_mixture(N, g), t_mid)
        return mean + std * torch.randn(N, 2, generator=g, dtype=DT)

    ref = forward(torch.Generator().manual_seed(4))
    level = _level(forward, ref, seed=5)
    g = torch.Generator().manual_seed(6)
    x_sde = S.euler_maruyama(
        score_exact(VP), VP, (N, 2), steps=350, t_min=t_mid, denoise=False, generator=g, dtype=DT
    )
    x_ode = S.probability_flow_ode(score_exact(VP), VP, (N, 2), t_min=t_mid, generator=g, dtype=DT)
    assert _mmd2(x_sde, ref) < level
    assert _mmd2(x_ode, ref) < level
    assert _mmd2(x_sde, x_ode) < level
    # and the intermediate marginal is not the data: the comparison can tell them apart
    assert _mmd2(sample_mixture(N, g), ref) > level


# ----- exact identities between samplers -----


def test_ddim_with_eta_one_on_every_step_is_ancestral_sampling() -> None:
    # Song et al. DDIM sec. 4.1: eta = 1 over all T steps gives sigma_t^2 = beta_tilde_t and the
    # DDPM posterior mean, i.e. Ho et al. Algorithm 2 with sigma_t^2 = beta_tilde_t. Same draws.
    s = NoiseSchedule.from_name("cosine", 100)

    def eps(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        alpha, sigma = s.sqrt_alpha_bar[t], s.sqrt_one_minus_alpha_bar[t]
        return -sigma.reshape(-1, 1) * mixture_score(x, alpha, sigma)

    shape, kw = (64, 2), {"dtype": DT}
    x_ddim = S.ddim(
        eps, s, shape, steps=s.T, eta=1.0, generator=torch.Generator().manual_seed(7), **kw
    )
    x_ddpm = S.ancestral(
        eps, s, shape, variance="beta_tilde", generator=torch.Generator().manual_seed(7), **kw
    )
    assert torch.allclose(x_ddim, x_ddpm, rtol=1e-10, atol=1e-10)


def test_learned_variance_path_uses_the_given_logvar() -> None:
    # variance="learned": eps_fn returns (eps, log sigma_t^2); with log beta_tilde it must
    # reproduce the fixed beta_tilde sampler draw for draw.
    def eps_and_logvar(x: torch.Tensor, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        logvar = SCHED.interpolated_logvar(t, torch.zeros_like(x))  # v = 0: beta_tilde
        return eps_exact(x, t), logvar

    kw = {"dtype": DT}
    x1 = S.ancestral(eps_and_logvar, SCHED, (32, 2), variance="learned",
                     generator=torch.Generator().manual_seed(8), **kw)  # fmt: skip
    x2 = S.ancestral(eps_exact, SCHED, (32, 2), variance="beta_tilde",
                     generator=torch.Generator().manual_seed(8), **kw)  # fmt: skip
    assert torch.allclose(x1, x2, rtol=1e-10, atol=1e-10)


def test_clipping_keeps_the_update_consistent() -> None:
    # With a clip range containing every x0 prediction, clipping changes nothing.
    kw = {"dtype": DT, "clip": (-100.0, 100.0)}
    for fn in (S.ancestral, S.ddim, S.dpm_solver_pp, S.sde_dpm_solver_pp):
        a = fn(eps_exact, SCHED, (16, 2), generator=torch.Generator().manual_seed(9), **kw)
        b = fn(eps_exact, SCHED, (16, 2), generator=torch.Generator().manual_seed(9), dtype=DT)
        assert torch.allclose(a, b, rtol=1e-9, atol=1e-9)
    a = S.ddim(eps_exact, SCHED, (256, 2), clip=(-0.5, 0.5), dtype=DT)
    assert float(a.abs().max()) <= 0.5 + 1e-12


# ----- orders of convergence on Gaussian data, whose flow map is exact -----

M, SD = 0.5, 0.2  # 1-D data N(M, SD^2)


def _gauss_eps(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    alpha = SCHED.sqrt_alpha_bar[t].reshape(-1, 1)
    sigma = SCHED.sqrt_one_minus_alpha_bar[t].reshape(-1, 1)
    return sigma * (x - alpha * M) / (alpha**2 * SD**2 + sigma**2)  # -sigma * score


def _gauss_flow(x_start: torch.Tensor, a0: float, v0: float, a1: float, v1: float) -> torch.Tensor:
    # The probability-flow map between two Gaussian marginals keeps (x - a M) / sqrt(v) fixed.
    return a1 * M + math.sqrt(v1) * (x_start - a0 * M) / math.sqrt(v0)


def test_dpm_solver_is_second_order_and_beats_ddim() -> None:
    # Lu et al. 2022: DPM-Solver++(2M) converges at order 2 in the step size; DDIM at order 1.
    # Errors against the exact map x_T -> x_0 of Gaussian data: halving the step (40 -> 80 steps)
    # must divide the error by more than 3 (order 2 gives 4; order 1 gives 2).
    x_T = torch.linspace(-3, 3, 7, dtype=DT).reshape(-1, 1)
    a_T, s_T = float(SCHED.sqrt_alpha_bar[-1]), float(SCHED.sqrt_one_minus_alpha_bar[-1])
    exact = _gauss_flow(x_T, a_T, a_T**2 * SD**2 + s_T**2, 1.0, SD**2)

    def err(fn, steps: int) -> float:
        return float(
            (fn(_gauss_eps, SCHED, x_T.shape, steps=steps, x_init=x_T) - exact).abs().max()
        )

    dpm = {k: err(S.dpm_solver_pp, k) for k in (20, 40, 80)}
    ddim = {k: err(S.ddim, k) for k in (20, 40, 80)}
    assert dpm[40] / dpm[80] > 3.0, dpm
    assert 1.5 < ddim[40] / ddim[80] < 2.5, ddim
    assert dpm[20] < ddim[20] / 4


def seeded(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def test_sde_dpm_solver_first_step_is_the_ddpm_posterior() -> None:
    # With two grid points the SDE solver takes one first-order step, then returns x0_theta: its
    # step x_s -> x_t is q(x_t | x_s, x0_theta), i.e. DDIM with eta = 1 on the same grid (the
    # derivation in the docstring). Same generator, same noise draws.
    for spacing in ("lambda", "t"):
        kw = {"steps": 2, "spacing": spacing, "dtype": DT}
        a = S.sde_dpm_solver_pp(eps_exact, SCHED, (64, 2), generator=seeded(13), **kw)
        b = S.ddim(eps_exact, SCHED, (64, 2), eta=1.0, generator=seeded(13), **kw)
        assert torch.allclose(a, b, rtol=1e-10, atol=1e-10)


def test_sde_dpm_solver_is_second_order_in_distribution() -> None:
    # Weak order: on Gaussian data N(M, SD^2), with the exact eps, the variance of the samples
    # converges to SD^2 at order 2 in the step for SDE-DPM-Solver++(2M) and at order 1 for the
    # first-order SDE step (DDIM eta = 1) on the same lambda grid. 400k draws (the Monte Carlo
    # SE of a variance is SD^2 sqrt(2 / n) = 9e-5, small against the errors compared here).
    n = 400_000

    def var_error(fn, steps: int, **kw) -> float:
        x = fn(_gauss_eps, SCHED, (n, 1), steps=steps, dtype=DT, generator=seeded(14), **kw)
        return abs(float(x.var()) - SD**2)

    sde = {k: var_error(S.sde_dpm_solver_pp, k) for k in (20, 40)}
    first = {k: var_error(S.ddim, k, eta=1.0, spacing="lambda") for k in (20, 40)}
    assert sde[20] / sde[40] > 3.0, sde
    assert 1.5 < first[20] / first[40] < 2.5, first
    assert sde[40] < first[40] / 5, (sde, first)


def test_probability_flow_ode_solvers_follow_the_exact_flow() -> None:
    # Exact map for Gaussian data on the VP-SDE; RK45 at tight tolerance is exact to ~1e-6, Heun's
    # method is second order (error / 4 when the step halves, > 3 required).
    x_T = torch.linspace(-3, 3, 7, dtype=DT).reshape(-1, 1)
    t_min = 1e-3

    def coef(t: float) -> tuple[float, float]:
        mean, std = VP.marginal(torch.ones(1, 1, dtype=DT), t)
        return float(mean), float(mean) ** 2 * SD**2 + float(std) ** 2

    def score(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        mean, std = VP.marginal(torch.ones_like(x), t)
        return -(x - mean * M) / (mean**2 * SD**2 + std**2)

    exact = _gauss_flow(x_T, *coef(1.0), *coef(t_min))
    kw = {"t_min": t_min, "x_init": x_T}
    rk = S.probability_flow_ode(score, VP, x_T.shape, rtol=1e-9, atol=1e-9, **kw)
    assert float((rk - exact).abs().max()) < 1e-6
    heun = {
        k: float(
            (S.probability_flow_ode(score, VP, x_T.shape, method="heun", steps=k, **kw) - exact)
            .abs()
            .max()
        )
        for k in (25, 50)
    }
    assert heun[25] / heun[50] > 3.0, heun


# ----- denoising vs explicit score matching -----


@pytest.mark.parametrize("t", [0.1, 0.5])
def test_dsm_and_explicit_score_matching_differ_by_a_constant(t: float) -> None:
    # Claim [001] (Vincent 2011): J_DSM(theta) = J_ESM(theta) + C with C free of theta, for
    # J_ESM = E ||s_theta(x_t) - grad log p_t(x_t)||^2 and J_DSM = E ||s_theta(x_t) - grad log
    # q(x_t | x_0)||^2 = E ||s_theta(x_t) + z / std||^2 (x_t = a x_0 + std z, the VP kernel).
    # Linear score s(x) = w x + b on data N(m, s^2), 200k draws: (1) per-sample gradients of the
    # two losses agree in mean within 5 SE, at two parameter values; (2) the loss difference is
    # C = 1/std^2 - 1/(a^2 s^2 + std^2) (Gaussian data) within 5 SE at both values.
    g = torch.Generator().manual_seed(10)
    m, s, n = 1.0, 0.5, 200_000
    x0 = m + s * torch.randn(n, generator=g, dtype=DT)
    z = torch.randn(n, generator=g, dtype=DT)
    mean, std_t = VP.marginal(x0, t)
    std = float(std_t)
    xt = mean + std * z
    a = float(VP.marginal(torch.ones(1, dtype=DT), t)[0])
    var_t = a**2 * s**2 + std**2

    def dsm(theta: torch.Tensor) -> torch.Tensor:  # per-sample losses (n,), theta (n, 2)
        return (theta[:, 0] * xt + theta[:, 1] + z / std) ** 2

    def esm(theta: torch.Tensor) -> torch.Tensor:
        return (theta[:, 0] * xt + theta[:, 1] + (xt - a * m) / var_t) ** 2

    for w, b in ((-1.0, 0.3), (0.5, -2.0)):
        # one copy of (w, b) per sample, so the gradient of the sum is the per-sample gradient
        theta = torch.tensor([w, b], dtype=DT).expand(n, 2).clone().requires_grad_(True)
        (g_dsm,) = torch.autograd.grad(dsm(theta).sum(), theta)
        (g_esm,) = torch.autograd.grad(esm(theta).sum(), theta)
        per_sample = g_dsm - g_esm  # (n, 2)
        se = per_sample.std(0) / math.sqrt(n)
        assert torch.all(per_sample.mean(0).abs() < 5 * se), (per_sample.mean(0), se)
        gap = (dsm(theta) - esm(theta)).detach()
        c_exact = 1 / std**2 - 1 / var_t
        assert abs(float(gap.mean()) - c_exact) < 5 * float(gap.std()) / math.sqrt(n)


# ----- randomness, registration, bad input -----

SMALL: dict[str, Callable[[torch.Generator], torch.Tensor]] = {
    "ancestral": lambda g: S.ancestral(eps_exact, SCHED, (8, 2), generator=g),
    "ddim": lambda g: S.ddim(eps_exact, SCHED, (8, 2), steps=10, eta=0.5, generator=g),
    "dpm-solver++": lambda g: S.dpm_solver_pp(eps_exact, SCHED, (8, 2), steps=5, generator=g),
    "sde-dpm-solver++": lambda g: S.sde_dpm_solver_pp(
        eps_exact, SCHED, (8, 2), steps=5, generator=g
    ),
    "langevin": lambda g: S.annealed_langevin(
        langevin_score, LANGEVIN_SIGMAS, (8, 2), steps=5, generator=g
    ),
    "euler-maruyama": lambda g: S.euler_maruyama(
        score_exact(VP), VP, (8, 2), steps=20, generator=g
    ),
    "pc": lambda g: S.predictor_corrector(score_exact(VE), VE, (8, 2), steps=20, generator=g),
    "ode": lambda g: S.probability_flow_ode(
        score_exact(SUBVP), SUBVP, (8, 2), method="heun", steps=10, generator=g
    ),
}


@pytest.mark.parametrize("name", NAMES)
def test_same_generator_seed_gives_identical_samples(name: str) -> None:
    a = SMALL[name](torch.Generator().manual_seed(11))
    b = SMALL[name](torch.Generator().manual_seed(11))
    c = SMALL[name](torch.Generator().manual_seed(12))
    assert a.shape == (8, 2)
    assert torch.equal(a, b)
    assert not torch.equal(a, c)


def test_samplers_are_registered_with_descriptions() -> None:
    for name in NAMES:
        entry = SAMPLERS.entry(name)
        assert callable(entry.obj) and entry.description
    assert SAMPLERS.get("ode") is S.probability_flow_ode


def test_bad_arguments_raise_clear_errors() -> None:
    with pytest.raises(ValueError, match="variance"):
        S.ancestral(eps_exact, SCHED, (2, 2), variance="fixed")
    with pytest.raises(ValueError, match="spacing"):
        S.ddim(eps_exact, SCHED, (2, 2), spacing="quadratic")
    with pytest.raises(ValueError, match="steps"):
        S.dpm_solver_pp(eps_exact, SCHED, (2, 2), steps=0)
    with pytest.raises(ValueError, match="method"):
        S.probability_flow_ode(score_exact(VP), VP, (2, 2), method="euler")
    with pytest.raises(ValueError, match="t_min"):
        S.euler_maruyama(score_exact(VP), VP, (2, 2), t_min=0.0)
    with pytest.raises(ValueError, match="decreasing"):
        S.annealed_langevin(langevin_score, [0.1, 1.0], (2, 2))
    with pytest.raises(ValueError, match="x_init"):
        S.ddim(eps_exact, SCHED, (2, 2), x_init=torch.zeros(3, 2))
