"""Annealed Langevin dynamics for noise-conditional score networks (NCSN, Song & Ermon 2019)."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor

from genlab.registry import SAMPLERS
from genlab.samplers.common import ScoreFn, batch_of, noise_like, start


@SAMPLERS.register("langevin", "annealed Langevin dynamics over geometric sigmas (NCSN, Alg. 1)")
def annealed_langevin(
    score_fn: ScoreFn,
    sigmas: Tensor | Sequence[float],
    shape: tuple[int, ...],
    *,
    steps: int = 100,
    eps: float = 2e-5,
    denoise: bool = False,
    generator: torch.Generator | None = None,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str | None = None,
    x_init: Tensor | None = None,
) -> Tensor:
    """Sample with Langevin dynamics at each noise level, from the largest sigma to the smallest.

    Song & Ermon arXiv:1907.05600 Algorithm 1 ([001] "annealed form of the Langevin dynamics"),
    sigmas decreasing sigma_1 > ... > sigma_L, score_fn(x, sigma) ~ grad_x log q_sigma(x):
      1: initialise x_0
      2: for i = 1, ..., L:
      3:     alpha_i = eps sigma_i^2 / sigma_L^2            (step size)
      4:     for t = 1, ..., T:                               (T = `steps`)
      5:         z_t ~ N(0, I)
      6:         x_t = x_{t-1} + alpha_i / 2 s(x_{t-1}, sigma_i) + sqrt(alpha_i) z_t
      7:     x_0 = x_T                                        (next level starts where this ended)
      8: return x_T
    Line 6 is [001]'s x_{i+1} = x_i + e s(x_i) + sqrt(2 e) z_i with e = alpha_i / 2. The start is
    x_0 ~ N(0, sigma_1^2 I) unless x_init is given (the paper starts from uniform noise on images).
    denoise: return x + sigma_L^2 s(x, sigma_L), the posterior mean of the clean x by Tweedie's
    formula (Jolicoeur-Martineau et al. arXiv:2009.05475; Song & Ermon arXiv:2006.09011).
    """
    sigmas = torch.as_tensor(sigmas, dtype=torch.float64).flatten()
    if len(sigmas) < 1 or not bool((sigmas[1:] < sigmas[:-1]).all()):
        raise ValueError("sigmas must be decreasing (largest noise first)")
    sigma_last = float(sigmas[-1])
    x = start(shape, x_init, generator, dtype, device, scale=float(sigmas[0]))  # line 1
    for sigma in sigmas.tolist():  # line 2
        alpha = eps * sigma**2 / sigma_last**2  # line 3
        s = batch_of(sigma, x)
        for _ in range(steps):  # line 4
            z = noise_like(x, generator)  # line 5
            x = x + 0.5 * alpha * score_fn(x, s) + math.sqrt(alpha) * z  # line 6
    if denoise:
        x = x + sigma_last**2 * score_fn(x, batch_of(sigma_last, x))
    return x
