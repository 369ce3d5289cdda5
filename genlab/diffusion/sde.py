"""Score SDEs dx = f(x, t) dt + g(t) dw on t in [0, 1] as small math objects: VP, sub-VP, VE.

Each object gives drift f(x, t), diffusion g(t), the Gaussian transition kernel of the forward
process (marginal: mean and std of x(t) | x(0)), prior sampling and the prior log-density; the
samplers only use these. `t` is a float or a tensor (B,) that broadcasts over x's trailing dims.
Source: [001] (score SDEs, reverse SDE, probability-flow ODE), Song et al. arXiv:2011.13456.
"""

from __future__ import annotations

import math
from typing import Protocol

import torch
from torch import Tensor

from genlab.math.gaussian import log_normal, log_standard_normal


def _bcast(v: Tensor | float, x: Tensor) -> Tensor:
    """v (a scalar or (B,)) in x's dtype and device, shaped to broadcast over x's trailing dims."""
    v = torch.as_tensor(v, dtype=x.dtype, device=x.device)
    return v if v.ndim == 0 else v.reshape(-1, *([1] * (x.ndim - 1)))


def _time(t: Tensor | float) -> Tensor:
    return torch.as_tensor(t, dtype=torch.float64) if not isinstance(t, Tensor) else t


class SDE(Protocol):
    """What the solvers need from a forward SDE (VPSDE, SubVPSDE and VESDE have it)."""

    T: float

    def drift(self, x: Tensor, t: Tensor | float) -> Tensor: ...

    def diffusion(self, t: Tensor | float) -> Tensor: ...

    def marginal(self, x0: Tensor, t: Tensor | float) -> tuple[Tensor, Tensor]: ...

    def prior_sample(
        self,
        shape: tuple[int, ...],
        generator: torch.Generator | None = None,
        *,
        dtype: torch.dtype = torch.float32,
        device: torch.device | str | None = None,
    ) -> Tensor: ...

    def prior_logp(self, z: Tensor) -> Tensor: ...


class VPSDE:
    """Variance-preserving SDE dx = -beta(t)/2 x dt + sqrt(beta(t)) dw, the limit of DDPM.

    beta(t) = beta_min + t (beta_max - beta_min); alpha_bar(t) = exp(-int_0^t beta(s) ds);
    x(t) | x(0) ~ N(sqrt(alpha_bar(t)) x(0), (1 - alpha_bar(t)) I); prior N(0, I). With
    beta_min = 0.1, beta_max = 20 it is the limit of Ho et al.'s linear schedule (beta_i =
    beta(t)/N, N = 1000). Source: [001] ("stochastic differential equation for DDPM"), Song et al.
    arXiv:2011.13456 eq. (11) and (29).
    """

    T = 1.0

    def __init__(self, beta_min: float = 0.1, beta_max: float = 20.0) -> None:
        if not 0 <= beta_min <= beta_max:
            raise ValueError(f"need 0 <= beta_min <= beta_max; got {beta_min}, {beta_max}")
        self.beta_min, self.beta_max = beta_min, beta_max

    def beta(self, t: Tensor | float) -> Tensor:
        """beta(t) = beta_min + t (beta_max - beta_min)."""
        return self.beta_min + _time(t) * (self.beta_max - self.beta_min)

    def integral_beta(self, t: Tensor | float) -> Tensor:
        """int_0^t beta(s) ds = beta_min t + (beta_max - beta_min) t^2 / 2."""
        t = _time(t)
        return self.beta_min * t + 0.5 * (self.beta_max - self.beta_min) * t**2

    def alpha_bar(self, t: Tensor | float) -> Tensor:
        """alpha_bar(t) = exp(-int_0^t beta(s) ds). Source: Song et al. eq. (29)."""
        return torch.exp(-self.integral_beta(t))

    def drift(self, x: Tensor, t: Tensor | float) -> Tensor:
        """f(x, t) = -beta(t)/2 x."""
        return -0.5 * _bcast(self.beta(t), x) * x

    def diffusion(self, t: Tensor | float) -> Tensor:
        """g(t) = sqrt(beta(t))."""
        return torch.sqrt(self.beta(t))

    def marginal(self, x0: Tensor, t: Tensor | float) -> tuple[Tensor, Tensor]:
        """Mean sqrt(alpha_bar(t)) x0 and std sqrt(1 - alpha_bar(t)) of x(t) | x(0) = x0.

        The std is shaped to broadcast over x0. Source: Song et al. arXiv:2011.13456 eq. (29).
        """
        log_mean_coef = -0.5 * self.integral_beta(t)
        mean = _bcast(torch.exp(log_mean_coef), x0) * x0
        std = torch.sqrt(-torch.expm1(2.0 * log_mean_coef))  # sqrt(1 - alpha_bar), no cancellation
        return mean, _bcast(std, x0)

    def prior_sample(
        self,
        shape: tuple[int, ...],
        generator: torch.Generator | None = None,
        *,
        dtype: torch.dtype = torch.float32,
        device: torch.device | str | None = None,
    ) -> Tensor:
        """x(T) ~ N(0, I)."""
        return torch.randn(shape, generator=generator, dtype=dtype, device=device)

    def prior_logp(self, z: Tensor) -> Tensor:
        """log N(z; 0, I), summed per example: (B,)."""
        return log_standard_normal(z)


class SubVPSDE(VPSDE):
    """Sub-VP SDE dx = -beta(t)/2 x dt + sqrt(beta(t) (1 - exp(-2 int_0^t beta))) dw.

    Same drift and prior as VP; x(t) | x(0) ~ N(sqrt(alpha_bar(t)) x(0), (1 - alpha_bar(t))^2 I),
    a variance below VP's at every t. Source: Song et al. arXiv:2011.13456 eq. (17) and (29).
    """

    def diffusion(self, t: Tensor | float) -> Tensor:
        """g(t) = sqrt(beta(t) (1 - exp(-2 int_0^t beta(s) ds)))."""
        return torch.sqrt(self.beta(t) * -torch.expm1(-2.0 * self.integral_beta(t)))

    def marginal(self, x0: Tensor, t: Tensor | float) -> tuple[Tensor, Tensor]:
        """Mean sqrt(alpha_bar(t)) x0 and std 1 - alpha_bar(t) of x(t) | x(0) = x0."""
        integral = self.integral_beta(t)
        mean = _bcast(torch.exp(-0.5 * integral), x0) * x0
        return mean, _bcast(-torch.expm1(-integral), x0)


class VESDE:
    """Variance-exploding SDE dx = sqrt(d sigma^2(t) / dt) dw, the limit of NCSN.

    sigma(t) = sigma_min (sigma_max / sigma_min)^t, so g(t) = sigma(t) sqrt(2 log(sigma_max /
    sigma_min)); x(t) | x(0) ~ N(x(0), (sigma(t)^2 - sigma_min^2) I), the exact kernel (Song et al.
    eq. (30); their code drops the sigma_min^2 term); prior N(0, sigma_max^2 I). Source: [001],
    Song et al. arXiv:2011.13456 eq. (9) and (30).
    """

    T = 1.0

    def __init__(self, sigma_min: float = 0.01, sigma_max: float = 50.0) -> None:
        if not 0 < sigma_min < sigma_max:
            raise ValueError(f"need 0 < sigma_min < sigma_max; got {sigma_min}, {sigma_max}")
        self.sigma_min, self.sigma_max = sigma_min, sigma_max
        self._log_ratio = math.log(sigma_max / sigma_min)

    def sigma(self, t: Tensor | float) -> Tensor:
        """sigma(t) = sigma_min (sigma_max / sigma_min)^t."""
        return self.sigma_min * torch.exp(_time(t) * self._log_ratio)

    def drift(self, x: Tensor, t: Tensor | float) -> Tensor:
        """f(x, t) = 0."""
        return torch.zeros_like(x)

    def diffusion(self, t: Tensor | float) -> Tensor:
        """g(t) = sigma(t) sqrt(2 log(sigma_max / sigma_min))."""
        return self.sigma(t) * math.sqrt(2.0 * self._log_ratio)

    def marginal(self, x0: Tensor, t: Tensor | float) -> tuple[Tensor, Tensor]:
        """Mean x0 and std sqrt(sigma(t)^2 - sigma_min^2) of x(t) | x(0) = x0."""
        # sigma_min^2 (exp(2 t log r) - 1), with expm1 so small t keeps its precision
        var = self.sigma_min**2 * torch.expm1(2.0 * _time(t) * self._log_ratio)
        return x0, _bcast(torch.sqrt(var), x0)

    def prior_sample(
        self,
        shape: tuple[int, ...],
        generator: torch.Generator | None = None,
        *,
        dtype: torch.dtype = torch.float32,
        device: torch.device | str | None = None,
    ) -> Tensor:
        """x(T) ~ N(0, sigma_max^2 I)."""
        return self.sigma_max * torch.randn(shape, generator=generator, dtype=dtype, device=device)

    def prior_logp(self, z: Tensor) -> Tensor:
        """log N(z; 0, sigma_max^2 I), summed per example: (B,)."""
        return log_normal(z, torch.zeros_like(z), 2.0 * math.log(self.sigma_max))


def reverse_drift(
    sde: SDE, score: Tensor, x: Tensor, t: Tensor | float, probability_flow: bool = False
) -> Tensor:
    """Drift of the reverse-time SDE, or of the probability-flow ODE, given the score at (x, t).

    Reverse SDE: dx = [f(x, t) - g(t)^2 score] dt + g(t) dw_bar, integrated from T down to 0.
    Probability-flow ODE: dx/dt = f(x, t) - g(t)^2 score / 2, with the same marginals.
    Source: [001] ("any SDE has a reverse SDE", "probability flow ODE"), Song et al.
    arXiv:2011.13456 eq. (6) and (13); Anderson 1982.
    """
    g2 = _bcast(sde.diffusion(t), x) ** 2
    weight = 0.5 if probability_flow else 1.0
    return sde.drift(x, t) - weight * g2 * score
