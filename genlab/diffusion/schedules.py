"""Discrete DDPM noise schedules and their closed forms: q(x_t | x_0), the posterior, the bound.

Indices: the paper's t = 1..T is the index t = 0..T-1 here (betas[t] is beta_{t+1} of Ho et al.),
so `t` is always a LongTensor (B,) of indices in 0..T-1 that broadcasts over the trailing dims of
x. Every table is float64; values gathered for a tensor x are cast to x's dtype and device.
Notation of [001] and Ho et al. arXiv:2006.11239: alpha_t = 1 - beta_t, alpha_bar_t =
prod_{s<=t} alpha_s, q(x_t | x_0) = N(sqrt(alpha_bar_t) x_0, (1 - alpha_bar_t) I).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import torch
from torch import Tensor

from genlab.math.gaussian import kl_normal, log_discretized_gaussian

DT = torch.float64


def linear_betas(T: int, beta_start: float = 1e-4, beta_end: float = 0.02) -> Tensor:
    """Linearly increasing betas, float64 (T,).

    beta_t = beta_start + (beta_end - beta_start) (t - 1) / (T - 1), t = 1..T. Source: Ho et al.
    arXiv:2006.11239 section 4 (T = 1000, 1e-4 to 0.02); [001] "linear increase".
    """
    if T < 1:
        raise ValueError(f"T must be >= 1, got {T}")
    return torch.linspace(beta_start, beta_end, T, dtype=DT)


def cosine_betas(T: int, s: float = 0.008, max_beta: float = 0.999) -> Tensor:
    """Betas of the cosine schedule, float64 (T,).

    alpha_bar(t) = f(t) / f(0), f(t) = cos(((t / T + s) / (1 + s)) pi / 2)^2, and
    beta_t = min(1 - alpha_bar(t) / alpha_bar(t - 1), max_beta) for t = 1..T; the clip keeps the
    last steps from being singular. Source: Nichol & Dhariwal arXiv:2102.09672 eq. (17).
    """
    if T < 1:
        raise ValueError(f"T must be >= 1, got {T}")
    t = torch.arange(T + 1, dtype=DT) / T
    f = torch.cos((t + s) / (1 + s) * math.pi / 2) ** 2
    alpha_bar = f / f[0]
    return torch.clamp(1 - alpha_bar[1:] / alpha_bar[:-1], max=max_beta)


def make_betas(name: str, T: int) -> Tensor:
    """Betas of a named schedule: "linear" or "cosine", float64 (T,).

    "linear" scales Ho et al.'s endpoints by 1000 / T, so that every T discretises the same
    process (Nichol & Dhariwal arXiv:2102.09672, get_named_beta_schedule); T = 1000 is Ho et al.
    """
    if name == "linear":
        scale = 1000.0 / T
        return linear_betas(T, 1e-4 * scale, min(0.02 * scale, 0.999))
    if name == "cosine":
        return cosine_betas(T)
    raise ValueError(f"unknown beta schedule {name!r}; choose linear or cosine")


def geometric_sigmas(sigma_max: float, sigma_min: float, n: int) -> Tensor:
    """Geometric noise levels sigma_1 > ... > sigma_n from sigma_max to sigma_min, float64 (n,).

    sigma_i = sigma_max (sigma_min / sigma_max)^((i - 1) / (n - 1)): a constant ratio between
    levels. Source: Song & Ermon arXiv:1907.05600 section 4.2 (NCSN); [001] "geometric schedule".
    """
    if n < 2 or not sigma_max > sigma_min > 0:
        raise ValueError(
            f"need n >= 2 and sigma_max > sigma_min > 0; got {n}, {sigma_max}, {sigma_min}"
        )
    return torch.exp(torch.linspace(math.log(sigma_max), math.log(sigma_min), n, dtype=DT))


def _gather(a: Tensor, t: Tensor | int, x: Tensor) -> Tensor:
    """a[t] in x's dtype and device, shaped (B, 1, ..., 1) to broadcast over x's trailing dims."""
    t = torch.as_tensor(t, device=x.device)
    if t.ndim == 0:
        t = t.expand(x.shape[0])
    return a.to(t.device)[t].to(x.dtype).reshape(-1, *([1] * (x.ndim - 1)))


class NoiseSchedule:
    """The discrete forward process of DDPM built from its betas, with its closed forms.

    Tables (float64, (T,), index t = paper's t - 1): betas, alphas = 1 - beta, alpha_bar,
    alpha_bar_prev (alpha_bar_{t-1}, 1 at t = 0), beta_tilde (posterior variance, 0 at t = 0),
    log_beta_tilde_clipped (log beta_tilde with its t = 0 entry replaced by that of t = 1).
    Continuous-time view (Kingma et al. VDM arXiv:2107.00630, Lu et al. arXiv:2206.00927):
    sqrt_alpha_bar = alpha_t, sqrt_one_minus_alpha_bar = sigma_t, lambdas = log(alpha_t / sigma_t)
    (half the log-SNR, decreasing in t). Source: [001] DDPM section, Ho et al. arXiv:2006.11239.
    """

    def __init__(self, betas: Tensor) -> None:
        betas = torch.as_tensor(betas, dtype=DT).cpu()
        if betas.ndim != 1 or len(betas) < 1:
            raise ValueError(f"betas must be a non-empty vector, got shape {tuple(betas.shape)}")
        if not bool(((betas > 0) & (betas < 1)).all()):
            raise ValueError("every beta must lie in (0, 1)")
        self.T = len(betas)
        self.betas = betas
        self.alphas = 1.0 - betas
        self.alpha_bar = torch.cumprod(self.alphas, dim=0)
        self.alpha_bar_prev = torch.cat([torch.ones(1, dtype=DT), self.alpha_bar[:-1]])
        # beta_tilde_t = (1 - alpha_bar_{t-1}) / (1 - alpha_bar_t) beta_t  [001], Ho et al. eq. (7)
        self.beta_tilde = betas * (1.0 - self.alpha_bar_prev) / (1.0 - self.alpha_bar)
        # beta_tilde is 0 at the first step; its log is clipped as in Nichol & Dhariwal's code.
        first = self.beta_tilde[1] if self.T > 1 else betas[0]
        self.log_beta_tilde_clipped = torch.log(torch.cat([first.reshape(1), self.beta_tilde[1:]]))
        self.sqrt_alpha_bar = self.alpha_bar.sqrt()
        self.sqrt_one_minus_alpha_bar = (1.0 - self.alpha_bar).sqrt()
        self.lambdas = torch.log(self.sqrt_alpha_bar) - torch.log(self.sqrt_one_minus_alpha_bar)

    @classmethod
    def from_name(cls, name: str, T: int) -> NoiseSchedule:
        """The schedule of make_betas(name, T)."""
        return cls(make_betas(name, T))

    # ----- forward process q(x_t | x_0) -----

    def q_mean_var(self, x0: Tensor, t: Tensor) -> tuple[Tensor, Tensor]:
        """Mean and variance of q(x_t | x_0) = N(sqrt(alpha_bar_t) x_0, (1 - alpha_bar_t) I).

        The variance is shaped (B, 1, ..., 1). Source: [001] "diffusion kernel", Ho et al. eq. (4).
        """
        mean = _gather(self.sqrt_alpha_bar, t, x0) * x0
        return mean, _gather(1.0 - self.alpha_bar, t, x0)

    def q_sample(
        self,
        x0: Tensor,
        t: Tensor,
        eps: Tensor | None = None,
        generator: torch.Generator | None = None,
    ) -> Tensor:
        """Draw x_t ~ q(x_t | x_0): x_t = sqrt(alpha_bar_t) x_0 + sqrt(1 - alpha_bar_t) eps.

        eps ~ N(0, I) is drawn with `generator` unless given. Source: [001], Ho et al. eq. (4).
        """
        if eps is None:
            eps = torch.randn(x0.shape, generator=generator, dtype=x0.dtype, device=x0.device)
        return (
            _gather(self.sqrt_alpha_bar, t, x0) * x0
            + _gather(self.sqrt_one_minus_alpha_bar, t, x0) * eps
        )

    def snr(self, t: Tensor) -> Tensor:
        """Signal-to-noise ratio alpha_bar_t / (1 - alpha_bar_t), float64 of t's shape.

        Source: Kingma et al. VDM arXiv:2107.00630 eq. (2).
        """
        t = torch.as_tensor(t).cpu()
        return self.alpha_bar[t] / (1.0 - self.alpha_bar[t])

    # ----- posterior q(x_{t-1} | x_t, x_0) -----

    def q_posterior(self, x0: Tensor, xt: Tensor, t: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Mean, variance and clipped log-variance of q(x_{t-1} | x_t, x_0) = N(mu~, beta~ I).

        mu~ = sqrt(alpha_bar_{t-1}) beta_t / (1 - alpha_bar_t) x_0
        + sqrt(alpha_t) (1 - alpha_bar_{t-1}) / (1 - alpha_bar_t) x_t. Variances are shaped
        (B, 1, ..., 1). Source: [001] (slide "it can be shown that"), Ho et al. eq. (6)-(7).
        """
        one_minus_ab = 1.0 - self.alpha_bar
        coef_x0 = self.alpha_bar_prev.sqrt() * self.betas / one_minus_ab
        coef_xt = self.alphas.sqrt() * (1.0 - self.alpha_bar_prev) / one_minus_ab
        mean = _gather(coef_x0, t, xt) * x0 + _gather(coef_xt, t, xt) * xt
        return mean, _gather(self.beta_tilde, t, xt), _gather(self.log_beta_tilde_clipped, t, xt)

    def posterior_mean_from_eps(self, xt: Tensor, t: Tensor, eps: Tensor) -> Tensor:
        """The posterior mean in its noise form, given x_t and the noise eps that made it.

        mu~ = 1 / sqrt(alpha_t) (x_t - beta_t / sqrt(1 - alpha_bar_t) eps), equal to q_posterior's
        mean when x_t = sqrt(alpha_bar_t) x_0 + sqrt(1 - alpha_bar_t) eps; with eps = eps_theta(x_t,
        t) it is the mean of Ho et al. Algorithm 2 line 4. Source: [001] ("can be rewritten in a
        simplified form"), Ho et al. arXiv:2006.11239 eq. (11).
        """
        coef = self.betas / self.sqrt_one_minus_alpha_bar
        return (xt - _gather(coef, t, xt) * eps) / _gather(self.alphas.sqrt(), t, xt)

    def interpolated_logvar(self, t: Tensor, v: Tensor) -> Tensor:
        """Learned reverse log-variance log Sigma = v log beta_t + (1 - v) log beta_tilde_t.

        v (B, ...) is the network's interpolation weight (in [0, 1] between the two fixed choices).
        Source: Nichol & Dhariwal arXiv:2102.09672 eq. (15).
        """
        log_beta = _gather(torch.log(self.betas), t, v)
        return v * log_beta + (1.0 - v) * _gather(self.log_beta_tilde_clipped, t, v)

    # ----- conversions between eps, x0 and v predictions (exact inverses of one another) -----

    def _alpha_sigma(self, t: Tensor, x: Tensor) -> tuple[Tensor, Tensor]:
        """(alpha_t, sigma_t) = (sqrt(alpha_bar_t), sqrt(1 - alpha_bar_t)) shaped for x."""
        return _gather(self.sqrt_alpha_bar, t, x), _gather(self.sqrt_one_minus_alpha_bar, t, x)

    def x0_from_eps(self, xt: Tensor, t: Tensor, eps: Tensor) -> Tensor:
        """x_0 = (x_t - sigma_t eps) / alpha_t. Source: Ho et al. arXiv:2006.11239 eq. (4)."""
        alpha, sigma = self._alpha_sigma(t, xt)
        return (xt - sigma * eps) / alpha

    def eps_from_x0(self, xt: Tensor, t: Tensor, x0: Tensor) -> Tensor:
        """eps = (x_t - alpha_t x_0) / sigma_t. Source: Ho et al. arXiv:2006.11239 eq. (4)."""
        alpha, sigma = self._alpha_sigma(t, xt)
        return (xt - alpha * x0) / sigma

    def v_target(self, x0: Tensor, t: Tensor, eps: Tensor) -> Tensor:
        """The v-prediction target v = alpha_t eps - sigma_t x_0.

        Source: Salimans & Ho arXiv:2202.00512 section 4 (v = alpha eps - sigma x).
        """
        alpha, sigma = self._alpha_sigma(t, x0)
        return alpha * eps - sigma * x0

    def v_from_eps(self, xt: Tensor, t: Tensor, eps: Tensor) -> Tensor:
        """v from x_t and eps: v = (eps - sigma_t x_t) / alpha_t. Source: Salimans & Ho 2022."""
        alpha, sigma = self._alpha_sigma(t, xt)
        return (eps - sigma * xt) / alpha

    def eps_from_v(self, xt: Tensor, t: Tensor, v: Tensor) -> Tensor:
        """eps = sigma_t x_t + alpha_t v. Source: Salimans & Ho arXiv:2202.00512 appendix D."""
        alpha, sigma = self._alpha_sigma(t, xt)
        return sigma * xt + alpha * v

    def x0_from_v(self, xt: Tensor, t: Tensor, v: Tensor) -> Tensor:
        """x_0 = alpha_t x_t - sigma_t v. Source: Salimans & Ho arXiv:2202.00512 section 4."""
        alpha, sigma = self._alpha_sigma(t, xt)
        return alpha * xt - sigma * v

    def eps_x0(
        self, xt: Tensor, t: Tensor, output: Tensor, prediction: str
    ) -> tuple[Tensor, Tensor]:
        """(eps, x_0) implied by a network output that predicts "eps", "x0" or "v"."""
        if prediction == "eps":
            return output, self.x0_from_eps(xt, t, output)
        if prediction == "x0":
            return self.eps_from_x0(xt, t, output), output
        if prediction == "v":
            return self.eps_from_v(xt, t, output), self.x0_from_v(xt, t, output)
        raise ValueError(f"unknown prediction {prediction!r}; choose eps, x0 or v")

    # ----- the variational bound, model-agnostic: the model gives p's mean and log-variance -----

    def prior_kl(self, x0: Tensor) -> Tensor:
        """L_T = KL(q(x_T | x_0) || N(0, I)), summed per example: (B,) nats.

        Source: [001] (ELBO derivation), Ho et al. eq. (5).
        """
        t_last = torch.full((x0.shape[0],), self.T - 1, dtype=torch.long, device=x0.device)
        mean, var = self.q_mean_var(x0, t_last)
        zero = torch.zeros_like(x0)
        return kl_normal(mean, torch.log(var), zero, zero)

    def vlb_term(
        self,
        x0: Tensor,
        xt: Tensor,
        t: Tensor,
        mean: Tensor,
        logvar: Tensor,
        *,
        levels: int,
        value_range: tuple[float, float] = (-1.0, 1.0),
    ) -> Tensor:
        """L_t of the bound for one sampled x_t per example, (B,) nats, given p(x_{t-1} | x_t).

        For t >= 1 (index): L_t = KL(q(x_{t-1} | x_t, x_0) || N(mean, exp(logvar))); for t = 0:
        L_0 = -log p(x_0 | x_1) under the discretized Gaussian decoder on `levels` values in
        value_range. (mean, logvar) are the model's p(x_{t-1} | x_t). Source: [001] (ELBO
        derivation), Ho et al. arXiv:2006.11239 eq. (5) and (13).
        """
        q_mean, _, q_logvar = self.q_posterior(x0, xt, t)
        kl = kl_normal(q_mean, q_logvar, mean, logvar)
        decoder_nll = -log_discretized_gaussian(x0, mean, logvar, levels, value_range)
        t = torch.as_tensor(t, device=x0.device).expand(x0.shape[0])
        return torch.where(t == 0, decoder_nll, kl)

    def timesteps(self, steps: int, spacing: str = "t") -> Tensor:
        """A decreasing subsequence of `steps` indices from T - 1 to 0: LongTensor (steps,).

        spacing "t": uniform in the index, round(linspace(T - 1, 0, steps)); "lambda": uniform in
        lambda = log(alpha_t / sigma_t) between its two ends, each rounded to the nearest index,
        then pushed down where needed so that the indices stay distinct (where lambda moves by
        more than a step per index, e.g. the cosine schedule's clipped last step, the first
        indices are consecutive). Source: Song et al. DDIM arXiv:2010.02502 section 4.2; Lu et al.
        arXiv:2206.00927 section 3.3.
        """
        if not 1 <= steps <= self.T:
            raise ValueError(f"steps must be in 1..{self.T}, got {steps}")
        if spacing == "t":
            return torch.from_numpy(np.round(np.linspace(self.T - 1, 0, steps)).astype(np.int64))
        if spacing != "lambda":
            raise ValueError(f"unknown spacing {spacing!r}; choose t or lambda")
        lam = self.lambdas.numpy()  # decreasing in the index
        grid = np.linspace(lam[-1], lam[0], steps)
        # np.interp needs increasing abscissae: the index as a function of lambda, reversed.
        idx = np.round(np.interp(grid, lam[::-1], np.arange(self.T - 1, -1, -1.0))).astype(np.int64)
        # position k of `steps` can hold indices steps-1-k .. T-1-k; then make them decrease
        k = np.arange(steps)
        idx = np.clip(idx, steps - 1 - k, self.T - 1 - k)
        for j in range(1, steps):
            idx[j] = min(idx[j], idx[j - 1] - 1)
        return torch.from_numpy(idx)


def vlb_terms(
    schedule: NoiseSchedule,
    x0: Tensor,
    p_mean_logvar: Callable[[Tensor, Tensor], tuple[Tensor, Tensor]],
    *,
    levels: int,
    value_range: tuple[float, float] = (-1.0, 1.0),
    generator: torch.Generator | None = None,
) -> dict[str, Tensor]:
    """Every term of the DDPM bound for x0 (B, ...), one x_t ~ q(x_t | x_0) per step.

    L = L_T + sum_{t=1}^{T-1} L_t + L_0 >= -log p(x_0), with p_mean_logvar(x_t, t) -> (mean,
    logvar) the model's p(x_{t-1} | x_t). Returns "prior" (B,) = L_T, "terms" (B, T) whose column
    t is L_t of vlb_term (column 0: the decoder NLL), and "total" (B,), all in nats. Source: [001]
    (ELBO derivation), Ho et al. arXiv:2006.11239 eq. (5); Nichol & Dhariwal's calc_bpd_loop.
    """
    terms = []
    for i in range(schedule.T):
        t = torch.full((x0.shape[0],), i, dtype=torch.long, device=x0.device)
        xt = schedule.q_sample(x0, t, generator=generator)
        mean, logvar = p_mean_logvar(xt, t)
        terms.append(
            schedule.vlb_term(x0, xt, t, mean, logvar, levels=levels, value_range=value_range)
        )
    terms_bt = torch.stack(terms, dim=1)
    prior = schedule.prior_kl(x0)
    return {"prior": prior, "terms": terms_bt, "total": prior + terms_bt.sum(dim=1)}
