"""DPM-Solver++(2M), a second-order multistep solver of the diffusion ODE, and its SDE variant
(Lu et al. 2022)."""

from __future__ import annotations

import math

import torch
from torch import Tensor

from genlab.diffusion.schedules import NoiseSchedule
from genlab.registry import SAMPLERS
from genlab.samplers.common import EpsFn, batch_of, noise_like, start


@SAMPLERS.register("dpm-solver++", "DPM-Solver++(2M), 2nd-order multistep ODE solver (Lu et al.)")
def dpm_solver_pp(
    eps_fn: EpsFn,
    schedule: NoiseSchedule,
    shape: tuple[int, ...],
    *,
    steps: int = 20,
    spacing: str = "lambda",
    clip: tuple[float, float] | None = None,
    generator: torch.Generator | None = None,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str | None = None,
    x_init: Tensor | None = None,
    stochastic: bool = False,
) -> Tensor:
    """Solve the diffusion ODE in its data-prediction form with `steps` calls of eps_fn.

    Lu et al. arXiv:2211.01095 Algorithm 2 (DPM-Solver++(2M)), with alpha_t = sqrt(alpha_bar_t),
    sigma_t = sqrt(1 - alpha_bar_t), lambda_t = log(alpha_t / sigma_t), the data prediction
    x0_theta(x, t) = (x - sigma_t eps_theta(x, t)) / alpha_t, h_i = lambda_i - lambda_{i-1} and
    D(i) = x0_theta(x_{t_i}, t_i):
      x_{t_0} = x_T ~ N(0, I)
      i = 1:  x_{t_1} = (sigma_1 / sigma_0) x_{t_0} - alpha_1 (e^{-h_1} - 1) D(0)
      i >= 2: r_i = h_{i-1} / h_i,  D_i = (1 + 1 / (2 r_i)) D(i-1) - 1 / (2 r_i) D(i-2)
              x_{t_i} = (sigma_i / sigma_{i-1}) x_{t_{i-1}} - alpha_i (e^{-h_i} - 1) D_i
    The grid is `steps` schedule indices t_0 = T-1 > ... > t_{S-1} = 0, chosen uniformly in
    lambda by default (spacing "lambda", Lu et al. arXiv:2206.00927 section 3.3; "t": uniform in
    the index), then a last point sigma = 0 (lambda = +inf, clean data) where h = inf and the
    step is first order: x = x0_theta(x_{t_{S-1}}, t_{S-1}). clip clamps x0_theta (thresholding).

    stochastic=True solves the reverse SDE instead (SDE-DPM-Solver++(2M), which Lu published
    after the paper, in diffusers PR #3344, 2023): the same exponential integrator applied to the
    reverse SDE in lambda. Its linear part is solved exactly, and the integral of x0_theta uses
    the same D_i (x0_theta linear in lambda, midpoint form), with fresh noise z_i ~ N(0, I):
      x_{t_i} = (sigma_i / sigma_{i-1}) e^{-h_i} x_{t_{i-1}} + alpha_i (1 - e^{-2 h_i}) D_i
                + sigma_i sqrt(1 - e^{-2 h_i}) z_i
    Its first-order step (D_i = D(i-1)) is the DDPM posterior q(x_{t_i} | x_{t_{i-1}}, x0_theta),
    i.e. DDIM with eta = 1 on the same grid. The injected noise lets the chain correct part of
    the network's error, as the ancestral chain does; the ODE cannot.
    """
    ts = schedule.timesteps(steps, spacing).tolist()
    alpha = schedule.sqrt_alpha_bar[ts].tolist()
    sigma = schedule.sqrt_one_minus_alpha_bar[ts].tolist()
    lam = schedule.lambdas[ts].tolist()
    x = start(shape, x_init, generator, dtype, device)
    x0_prev, h_prev = None, None
    for i, t_index in enumerate(ts):
        t = batch_of(t_index, x, torch.long)
        x0 = schedule.x0_from_eps(x, t, eps_fn(x, t))  # data prediction
        if clip is not None:
            x0 = x0.clamp(*clip)
        if i == len(ts) - 1:
            return x0  # the last step, to sigma = 0, is first order
        h = lam[i + 1] - lam[i]
        if x0_prev is None:
            d = x0  # first step: DPM-Solver++ 1 (= DDIM)
        else:
            r = h_prev / h
            d = (1 + 1 / (2 * r)) * x0 - 1 / (2 * r) * x0_prev
        if stochastic:
            x = (
                (sigma[i + 1] / sigma[i]) * math.exp(-h) * x
                - alpha[i + 1] * math.expm1(-2 * h) * d
                + sigma[i + 1] * math.sqrt(-math.expm1(-2 * h)) * noise_like(x, generator)
            )
        else:
            x = (sigma[i + 1] / sigma[i]) * x - alpha[i + 1] * math.expm1(-h) * d
        x0_prev, h_prev = x0, h
    return x


@SAMPLERS.register(
    "sde-dpm-solver++", "SDE-DPM-Solver++(2M), 2nd-order multistep reverse-SDE solver (Lu et al.)"
)
def sde_dpm_solver_pp(
    eps_fn: EpsFn, schedule: NoiseSchedule, shape: tuple[int, ...], **kw: object
) -> Tensor:
    """SDE-DPM-Solver++(2M): dpm_solver_pp(..., stochastic=True), whose docstring has the update."""
    return dpm_solver_pp(eps_fn, schedule, shape, stochastic=True, **kw)
