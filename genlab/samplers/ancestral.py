"""DDPM ancestral sampling (Ho et al. Algorithm 2) and DDIM (Song et al.), from a noise predictor.

Both take eps_fn(x_t, t) -> eps_theta(x_t, t) with t a LongTensor (B,) of schedule indices and a
genlab.diffusion.NoiseSchedule; call them under torch.no_grad() when eps_fn is a network.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from genlab.diffusion.schedules import NoiseSchedule
from genlab.registry import SAMPLERS
from genlab.samplers.common import EpsFn, batch_of, noise_like, start

VARIANCES = ("beta", "beta_tilde", "learned")


@SAMPLERS.register("ancestral", "DDPM ancestral sampling through all T steps (Ho et al. Alg. 2)")
def ancestral(
    eps_fn: EpsFn,
    schedule: NoiseSchedule,
    shape: tuple[int, ...],
    *,
    variance: str = "beta",
    clip: tuple[float, float] | None = None,
    generator: torch.Generator | None = None,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str | None = None,
    x_init: Tensor | None = None,
    trajectory: list[Tensor] | None = None,
) -> Tensor:
    """Sample x_0 by running the learned reverse chain p(x_{t-1} | x_t) from x_T ~ N(0, I).

    Ho et al. arXiv:2006.11239 Algorithm 2 ([001] "Sampling"):
      1: x_T ~ N(0, I)
      2: for t = T, ..., 1:
      3:     z ~ N(0, I) if t > 1, else z = 0
      4:     x_{t-1} = 1/sqrt(alpha_t) (x_t - (1 - alpha_t)/sqrt(1 - alpha_bar_t) eps_theta(x_t, t))
                       + sigma_t z
      5: return x_0
    variance: sigma_t^2 = "beta" (beta_t) or "beta_tilde" (the posterior variance), the two
    choices of Ho et al. section 3.2; "learned": eps_fn returns (eps, logvar), the log of
    sigma_t^2 (Nichol & Dhariwal arXiv:2102.09672 eq. (15)), so one network call gives both.
    clip: clamp the implied x_0 to this range and take the mean q_posterior(x_0, x_t) instead of
    line 4 (the same mean without the clamp; Ho et al.'s released code clips to [-1, 1]).
    trajectory: a list that receives x_T, x_{T-1}, ..., x_0 (T + 1 states, the last one the
    returned sample), for pictures of the reverse chain; None (default) records nothing.
    """
    if variance not in VARIANCES:
        raise ValueError(f"unknown variance {variance!r}; choose {', '.join(VARIANCES)}")
    x = start(shape, x_init, generator, dtype, device)  # line 1
    if trajectory is not None:
        trajectory.append(x)
    for i in reversed(range(schedule.T)):  # line 2, index i is the paper's t = i + 1
        t = batch_of(i, x, torch.long)
        out = eps_fn(x, t)
        eps, logvar = out if variance == "learned" else (out, None)
        if clip is None:
            mean = schedule.posterior_mean_from_eps(x, t, eps)  # line 4, first term
        else:
            x0 = schedule.x0_from_eps(x, t, eps).clamp(*clip)
            mean, _, _ = schedule.q_posterior(x0, x, t)
        if i == 0:  # line 3: z = 0 on the last step
            if trajectory is not None:
                trajectory.append(mean)
            return mean
        if logvar is None:  # sigma_t^2 = beta_t or beta_tilde_t
            table = schedule.betas if variance == "beta" else schedule.beta_tilde
            sigma = math.sqrt(float(table[i]))
        else:
            sigma = torch.exp(0.5 * logvar)
        x = mean + sigma * noise_like(x, generator)  # line 4, + sigma_t z
        if trajectory is not None:
            trajectory.append(x)
    return x  # reached only when T = 0, which NoiseSchedule forbids


@SAMPLERS.register("ddim", "DDIM on any subsequence of steps, eta = 0 deterministic (Song et al.)")
def ddim(
    eps_fn: EpsFn,
    schedule: NoiseSchedule,
    shape: tuple[int, ...],
    *,
    steps: int = 50,
    eta: float = 0.0,
    spacing: str = "t",
    clip: tuple[float, float] | None = None,
    generator: torch.Generator | None = None,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str | None = None,
    x_init: Tensor | None = None,
    trajectory: list[Tensor] | None = None,
) -> Tensor:
    """Sample x_0 with the DDIM update on `steps` indices tau_1 > ... > tau_S (then alpha_bar = 1).

    Song et al. arXiv:2010.02502 eq. (12) and (16), section 4.2, with s = tau_i, p = tau_{i+1}:
      x0_hat = (x_s - sqrt(1 - alpha_bar_s) eps_theta(x_s, s)) / sqrt(alpha_bar_s)
      sigma  = eta sqrt((1 - alpha_bar_p) / (1 - alpha_bar_s)) sqrt(1 - alpha_bar_s / alpha_bar_p)
      x_p    = sqrt(alpha_bar_p) x0_hat + sqrt(1 - alpha_bar_p - sigma^2) eps_theta + sigma z
    After the last index alpha_bar_p = 1, so the final step returns x0_hat. eta = 0 is the
    deterministic DDIM; eta = 1 with steps = T is DDPM ancestral sampling with beta_tilde.
    spacing picks the indices (NoiseSchedule.timesteps: "t" uniform, "lambda" uniform in log-SNR).
    clip clamps x0_hat (and eps is recomputed from it, so the update stays consistent).
    trajectory: a list that receives the start and the state after each step (steps + 1 states,
    the last one the returned sample); None (default) records nothing.
    """
    taus = schedule.timesteps(steps, spacing).tolist()
    x = start(shape, x_init, generator, dtype, device)
    if trajectory is not None:
        trajectory.append(x)
    for k, s in enumerate(taus):
        ab_s = float(schedule.alpha_bar[s])
        ab_p = float(schedule.alpha_bar[taus[k + 1]]) if k + 1 < len(taus) else 1.0
        t = batch_of(s, x, torch.long)
        eps = eps_fn(x, t)
        x0 = schedule.x0_from_eps(x, t, eps)
        if clip is not None:
            x0 = x0.clamp(*clip)
            eps = schedule.eps_from_x0(x, t, x0)
        sigma = eta * math.sqrt((1 - ab_p) / (1 - ab_s) * (1 - ab_s / ab_p))  # eq. (16)
        x = math.sqrt(ab_p) * x0 + math.sqrt(max(1 - ab_p - sigma**2, 0.0)) * eps  # eq. (12)
        if sigma > 0:
            x = x + sigma * noise_like(x, generator)
        if trajectory is not None:
            trajectory.append(x)
    return x
