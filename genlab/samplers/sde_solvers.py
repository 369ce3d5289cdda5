"""Solvers for the reverse-time SDE and the probability-flow ODE of a score SDE (Song et al. 2021).

Each takes score_fn(x, t) ~ grad_x log p_t(x), with t (B,) continuous times in x's dtype, and an
SDE object of genlab.diffusion.sde; they integrate from t = sde.T down to t_min > 0 (the score
is singular at t = 0). Call them under torch.no_grad() when score_fn is a network.
"""

from __future__ import annotations

import math

import numpy as np
import scipy.integrate
import torch
from torch import Tensor

from genlab.diffusion.sde import SDE, reverse_drift
from genlab.registry import SAMPLERS
from genlab.samplers.common import ScoreFn, batch_of, noise_like


def _prior_start(
    sde: SDE,
    shape: tuple[int, ...],
    x_init: Tensor | None,
    generator: torch.Generator | None,
    dtype: torch.dtype,
    device: torch.device | str | None,
) -> Tensor:
    if x_init is None:
        return sde.prior_sample(shape, generator, dtype=dtype, device=device)
    if tuple(x_init.shape) != tuple(shape):
        raise ValueError(f"x_init has shape {tuple(x_init.shape)}, expected {tuple(shape)}")
    return x_init


def _time_grid(sde: SDE, steps: int, t_min: float) -> list[float]:
    """t_0 = T > t_1 > ... > t_steps = t_min, evenly spaced."""
    if steps < 1 or not 0 < t_min < sde.T:
        raise ValueError(f"need steps >= 1 and 0 < t_min < T; got {steps}, {t_min}")
    return np.linspace(sde.T, t_min, steps + 1).tolist()


@SAMPLERS.register("euler-maruyama", "reverse-time SDE by Euler-Maruyama (Song et al. 2021)")
def euler_maruyama(
    score_fn: ScoreFn,
    sde: SDE,
    shape: tuple[int, ...],
    *,
    steps: int = 500,
    t_min: float = 1e-3,
    denoise: bool = True,
    generator: torch.Generator | None = None,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str | None = None,
    x_init: Tensor | None = None,
) -> Tensor:
    """Integrate the reverse SDE dx = [f(x, t) - g(t)^2 s(x, t)] dt + g(t) dw_bar from T to t_min.

    Song et al. arXiv:2011.13456 eq. (6) ([001] "reverse SDE"), Euler-Maruyama on the grid
    t_0 = T > ... > t_N = t_min with dt = t_i - t_{i+1} > 0:
      x_N ~ p_T (the SDE's prior)
      x_{i+1} = x_i - [f(x_i, t_i) - g(t_i)^2 s(x_i, t_i)] dt + g(t_i) sqrt(dt) z_i,  z_i ~ N(0, I)
    denoise: the last step adds no noise (score_sde's noise removal).
    """
    ts = _time_grid(sde, steps, t_min)
    x = _prior_start(sde, shape, x_init, generator, dtype, device)
    for i in range(steps):
        t, dt = batch_of(ts[i], x), ts[i] - ts[i + 1]
        x_mean = x - reverse_drift(sde, score_fn(x, t), x, t) * dt
        if denoise and i == steps - 1:
            return x_mean
        g = sde.diffusion(t).reshape(-1, *([1] * (x.ndim - 1)))
        x = x_mean + g * math.sqrt(dt) * noise_like(x, generator)
    return x


@SAMPLERS.register("pc", "predictor-corrector: Euler-Maruyama + Langevin corrector (Song et al.)")
def predictor_corrector(
    score_fn: ScoreFn,
    sde: SDE,
    shape: tuple[int, ...],
    *,
    steps: int = 500,
    corrector_steps: int = 1,
    snr: float = 0.16,
    t_min: float = 1e-3,
    generator: torch.Generator | None = None,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str | None = None,
    x_init: Tensor | None = None,
) -> Tensor:
    """Alternate a reverse-SDE predictor step with Langevin corrector steps at the new time.

    Song et al. arXiv:2011.13456 Algorithm 1 (PC sampling), predictor = Euler-Maruyama (as in
    euler_maruyama), corrector = Langevin with a signal-to-noise step size (Algorithms 4-5):
      x_N ~ p_T
      for i = N-1, ..., 0:
          x_i = Predictor(x_{i+1})
          for j = 1, ..., M:                                 (M = corrector_steps)
              z ~ N(0, I);  g = s(x_i, t_i)
              e = 2 a (snr ||z|| / ||g||)^2                   (norms averaged over the batch)
              x_i = x_i + e g + sqrt(2 e) z
      return x_0
    a is 1 for VE and alpha_i = 1 - beta_i ~ 1 for VP in the paper; 1 is used for all here.
    The norms are batch means, as in the authors' code (score_sde LangevinCorrector), so a
    sample depends on the others of its batch through the step size.
    """
    ts = _time_grid(sde, steps, t_min)
    x = _prior_start(sde, shape, x_init, generator, dtype, device)
    for i in range(steps):
        # predictor: one Euler-Maruyama step from t_i to t_{i+1}
        t, dt = batch_of(ts[i], x), ts[i] - ts[i + 1]
        x = x - reverse_drift(sde, score_fn(x, t), x, t) * dt
        g = sde.diffusion(t).reshape(-1, *([1] * (x.ndim - 1)))
        x = x + g * math.sqrt(dt) * noise_like(x, generator)
        # corrector: Langevin steps targeting p_{t_{i+1}}
        t_next = batch_of(ts[i + 1], x)
        for _ in range(corrector_steps):
            z = noise_like(x, generator)
            grad = score_fn(x, t_next)
            # batch-mean norms as in score_sde: per-example ||g|| can vanish near a mode in low d
            z_norm = z.flatten(1).norm(dim=1).mean()
            g_norm = grad.flatten(1).norm(dim=1).mean()
            # a zero score (e.g. an untrained, zero-initialised net) gives no step, not 0/0
            e = 2.0 * (snr * z_norm / g_norm.clamp_min(1e-30)) ** 2 * (g_norm > 0)
            x = x + e * grad + torch.sqrt(2.0 * e) * z
    return x


@SAMPLERS.register("ode", "probability-flow ODE, scipy RK45 or fixed-step Heun (Song et al.)")
def probability_flow_ode(
    score_fn: ScoreFn,
    sde: SDE,
    shape: tuple[int, ...],
    *,
    method: str = "rk45",
    steps: int = 100,
    rtol: float = 1e-5,
    atol: float = 1e-5,
    t_min: float = 1e-3,
    generator: torch.Generator | None = None,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str | None = None,
    x_init: Tensor | None = None,
) -> Tensor:
    """Integrate the probability-flow ODE dx/dt = f(x, t) - g(t)^2 s(x, t) / 2 from T to t_min.

    Song et al. arXiv:2011.13456 eq. (13) ([001] "probability flow ODE"): the same marginals as
    the SDE, with only the draw of x(T) ~ p_T random. method "rk45": scipy.integrate.solve_ivp's
    adaptive Runge-Kutta 4(5) (Dormand-Prince) with rtol/atol, in float64 on the CPU (`steps` is
    unused); "heun": `steps` fixed steps of Heun's second-order method (2 calls per step):
      h = t_{i+1} - t_i, d = v(x_i, t_i), x' = x_i + h d, x_{i+1} = x_i + h (d + v(x', t_{i+1}))/2
    """
    x = _prior_start(sde, shape, x_init, generator, dtype, device)

    def velocity(x: Tensor, t: float) -> Tensor:
        tb = batch_of(t, x)
        return reverse_drift(sde, score_fn(x, tb), x, tb, probability_flow=True)

    if method == "heun":
        ts = _time_grid(sde, steps, t_min)
        for i in range(steps):
            h = ts[i + 1] - ts[i]  # negative: time runs backwards
            d = velocity(x, ts[i])
            x_euler = x + h * d
            x = x + h * 0.5 * (d + velocity(x_euler, ts[i + 1]))
        return x
    if method != "rk45":
        raise ValueError(f"unknown method {method!r}; choose rk45 or heun")
    if not 0 < t_min < sde.T:
        raise ValueError(f"need 0 < t_min < T; got {t_min}")

    def rhs(t: float, y: np.ndarray) -> np.ndarray:
        xt = torch.from_numpy(y).reshape(shape).to(dtype=x.dtype, device=x.device)
        return velocity(xt, t).detach().cpu().to(torch.float64).numpy().ravel()

    y0 = x.detach().cpu().to(torch.float64).numpy().ravel()
    sol = scipy.integrate.solve_ivp(rhs, (sde.T, t_min), y0, method="RK45", rtol=rtol, atol=atol)
    if not sol.success:
        raise RuntimeError(f"probability-flow ODE solver failed: {sol.message}")
    return torch.from_numpy(sol.y[:, -1]).reshape(shape).to(dtype=x.dtype, device=x.device)
