"""Score-based models: NCSN (Song & Ermon 2019) and continuous-time score SDEs (Song et al. 2021).

Both learn s_theta(x, noise) ~ grad_x log p_noise(x) by denoising score matching with the weight
lambda = std^2 (genlab.models.denoising.dsm_loss), the network predicting the noise: s = -net / std
(the parametrisation of NCSNv2, Song & Ermon arXiv:2006.09011, and of score_sde's models), so the
loss is ||net(x_t) - z||^2 / 2 per example. Data is used in [-1, 1] (bounded) or as it is.

NCSN ([001] "noise conditional score network", Song & Ermon arXiv:1907.05600): geometric noise
levels sigma_1 > ... > sigma_L (genlab.diffusion.geometric_sigmas), x~ = x + sigma z with sigma
drawn uniformly from the levels, L = (1/L) sum_i sigma_i^2 l(theta; sigma_i) (eq. (6)); the
network sees log sigma; sampled by annealed Langevin dynamics (their Algorithm 1). The defaults
are the paper's (sigma 1 to 0.01, L = 10, T = 100, eps = 2e-5 for data in [0, 1]) doubled in
sigma, and eps scaled by 4, for data in [-1, 1].

Score SDE ([001] "score SDEs", Song et al. arXiv:2011.13456): sde = vp | subvp | ve
(genlab.diffusion.sde), t ~ U(t_eps, 1), x(t) ~ N(mean(x0, t), std(t)^2 I) by the SDE's marginal,
lambda(t) = std(t)^2 (their eq. (7) with the likelihood-agnostic weighting); the network sees t
(scaled by 1000 for the sinusoid). Samplers: reverse-SDE Euler-Maruyama, predictor-corrector and
the probability-flow ODE (genlab.samplers). Exact likelihood through the ODE
(genlab.samplers.likelihood.ode_log_likelihood): log p_{t_eps}(x) in model space, moved to data
space by the Jacobian of the range map, a density. Dequantisation convention (genlab.metrics
.likelihood): train and evaluate images with data.dequantize=true, y = (k + u) / L; the metric
adds D log L to this density NLL, giving a discrete NLL bound in bits/dim (the image configs do).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor

from genlab.data.spec import DataSpec
from genlab.diffusion import VESDE, VPSDE, SubVPSDE, geometric_sigmas
from genlab.errors import GenlabError
from genlab.models.adversarial import from_unit_range, to_unit_range
from genlab.models.base import GenerativeModel
from genlab.models.denoising import (
    Denoiser,
    DenoiserConfig,
    check_guidance,
    choose_sampler,
    dsm_loss,
    guide,
    guided,
    log_det_to_unit,
    sampling_labels,
    training_labels,
)
from genlab.registry import MODELS
from genlab.samplers import (
    annealed_langevin,
    euler_maruyama,
    predictor_corrector,
    probability_flow_ode,
)
from genlab.samplers.likelihood import ode_log_likelihood


def _bcast(v: Tensor, x: Tensor) -> Tensor:
    """(B,) -> (B, 1, ..., 1) in x's dtype, to broadcast over an example's dimensions."""
    return v.to(x.dtype).reshape(-1, *([1] * (x.ndim - 1)))


@dataclass
class NCSNConfig(DenoiserConfig):
    sigma_max: float = 2.0  # sigma_1 (Song & Ermon: 1 for data in [0, 1])
    sigma_min: float = 0.02  # sigma_L (0.01 for data in [0, 1])
    num_scales: int = 10  # L
    langevin_steps: int = 100  # T: Langevin steps per noise level
    step_lr: float = 8e-5  # eps of Algorithm 1 (2e-5 for data in [0, 1])
    denoise: bool = True  # final Tweedie denoising step x + sigma_L^2 s(x, sigma_L)
    time_scale: float = 250.0  # log sigma is multiplied by this before the sinusoid


@MODELS.register("ncsn", "NCSN: DSM over geometric sigmas, annealed Langevin (Song & Ermon)")
class NCSN(GenerativeModel):
    """Noise-conditional score network s_theta(x, sigma), sampled by annealed Langevin dynamics."""

    config_class = NCSNConfig
    samplers = ("langevin",)

    def __init__(self, cfg: NCSNConfig, spec: DataSpec) -> None:
        super().__init__(cfg, spec)
        if cfg.num_scales < 2 or not cfg.sigma_max > cfg.sigma_min > 0:
            raise GenlabError(
                "NCSN needs num_scales >= 2 and sigma_max > sigma_min > 0; got "
                f"{cfg.num_scales}, {cfg.sigma_max}, {cfg.sigma_min}"
            )
        self.sigmas = geometric_sigmas(cfg.sigma_max, cfg.sigma_min, cfg.num_scales)  # float64
        self.net = Denoiser(cfg, spec, time_scale=cfg.time_scale)

    def score(
        self, x: Tensor, sigma: Tensor, labels: Tensor | None = None, guidance: float = 0.0
    ) -> Tensor:
        """s_theta(x, sigma) = -net(x, log sigma) / sigma, sigma (B,); guided with weight w."""

        def fn(xx: Tensor, s: Tensor, y: Tensor | None) -> Tensor:
            return -self.net(xx, torch.log(s.to(xx.dtype)), y) / _bcast(s, xx)

        return guide(*guided(fn, x, sigma, labels, guidance), guidance)

    def losses(
        self,
        x0: Tensor,
        labels: Tensor | None = None,
        *,
        level: Tensor | None = None,
        z: Tensor | None = None,
    ) -> dict[str, Tensor]:
        """sigma_i^2 l(theta; sigma_i) at a uniform level i, x~ = x0 + sigma_i z (eq. (5)-(6))."""
        if level is None:
            level = torch.randint(0, len(self.sigmas), (x0.shape[0],))
        if z is None:
            z = torch.randn_like(x0)
        sigma = self.sigmas[level.cpu()].to(device=x0.device, dtype=x0.dtype)  # (B,)
        xt = x0 + _bcast(sigma, x0) * z
        loss = dsm_loss(self.score(xt, sigma, labels), z, _bcast(sigma, x0)).mean()
        return {"loss": loss, "dsm": loss}

    def forward(self, batch: dict[str, Tensor], phase: str = "main") -> dict[str, Tensor]:
        labels = training_labels(batch, self.cfg)
        return self.losses(to_unit_range(batch["x"], self.spec), labels)

    @torch.no_grad()
    def sample(
        self,
        n: int,
        *,
        generator: torch.Generator | None = None,
        labels: Tensor | None = None,
        sampler: str | None = None,
        steps: int | None = None,
        guidance: float | None = None,
        **kw: object,
    ) -> Tensor:
        """Annealed Langevin dynamics (Song & Ermon Algorithm 1); steps = T per noise level."""
        cfg = self.cfg
        choose_sampler(sampler, "langevin", self.samplers, kw)
        w = check_guidance(guidance, cfg)
        y = sampling_labels(self, n, labels, cfg.conditional, self.spec.num_classes)
        if steps is not None and steps < 1:
            raise GenlabError(f"steps must be positive; got {steps}")
        p = next(self.parameters())
        x = annealed_langevin(
            lambda xt, s: self.score(xt, s, y, w),
            self.sigmas,
            (n, *self.spec.shape),
            steps=steps or cfg.langevin_steps,
            eps=cfg.step_lr,
            denoise=cfg.denoise,
            generator=generator,
            dtype=p.dtype,
            device=p.device,
        )
        return from_unit_range(x, self.spec)


@dataclass
class ScoreSDEConfig(DenoiserConfig):
    sde: Literal["vp", "subvp", "ve"] = "vp"
    beta_min: float = 0.1  # VP / sub-VP beta(t) = beta_min + t (beta_max - beta_min)
    beta_max: float = 20.0
    sigma_min: float = 0.01  # VE sigma(t) = sigma_min (sigma_max / sigma_min)^t
    sigma_max: float = 50.0
    t_eps: float = 1e-5  # training t ~ U(t_eps, 1); the likelihood is that of p_{t_eps}
    sampler: Literal["euler-maruyama", "pc", "ode"] = "euler-maruyama"  # default sampler
    sample_steps: int = 0  # steps of `sampler`; 0: 500 (EM, pc), adaptive RK45 (ode); else Heun
    sample_t_min: float = 1e-3  # samplers stop at this t (Song et al.)
    probe: Literal["rademacher", "gaussian"] = "rademacher"  # Hutchinson probes (D > 8)


@MODELS.register(
    "score-sde", "score SDE (VP by default; sde=subvp|ve): DSM, reverse SDE / PC / ODE, exact NLL"
)
class ScoreSDE(GenerativeModel):
    """Continuous-time score model s_theta(x, t) of a VP, sub-VP or VE SDE (see module doc)."""

    config_class = ScoreSDEConfig
    samplers = ("euler-maruyama", "pc", "ode")
    discrete_likelihood = False
    likelihood_method = (
        "probability-flow ODE, RK45 (exact divergence for D <= 8, else a Hutchinson estimate)"
    )

    def __init__(self, cfg: ScoreSDEConfig, spec: DataSpec) -> None:
        super().__init__(cfg, spec)
        if not (0 < cfg.t_eps < 1 and 0 < cfg.sample_t_min < 1):
            raise GenlabError(
                f"model.t_eps and model.sample_t_min must lie in (0, 1); got {cfg.t_eps}, "
                f"{cfg.sample_t_min}"
            )
        if cfg.sde == "ve":
            self.sde = VESDE(cfg.sigma_min, cfg.sigma_max)
        else:
            self.sde = (VPSDE if cfg.sde == "vp" else SubVPSDE)(cfg.beta_min, cfg.beta_max)
        self.net = Denoiser(cfg, spec, time_scale=1000.0)

    def score(
        self, x: Tensor, t: Tensor, labels: Tensor | None = None, guidance: float = 0.0
    ) -> Tensor:
        """s_theta(x, t) = -net(x, t) / std(t), t (B,) in (0, 1]; guided with weight w."""

        def fn(xx: Tensor, tt: Tensor, y: Tensor | None) -> Tensor:
            _, std = self.sde.marginal(xx, tt)
            return -self.net(xx, tt, y) / std

        return guide(*guided(fn, x, t, labels, guidance), guidance)

    def losses(
        self,
        x0: Tensor,
        labels: Tensor | None = None,
        *,
        t: Tensor | None = None,
        z: Tensor | None = None,
    ) -> dict[str, Tensor]:
        """DSM with lambda(t) = std(t)^2 at t ~ U(t_eps, 1) (Song et al. eq. (7))."""
        if t is None:
            t = self.cfg.t_eps + (1 - self.cfg.t_eps) * torch.rand(x0.shape[0], device=x0.device)
        if z is None:
            z = torch.randn_like(x0)
        t = t.to(x0.dtype)
        mean, std = self.sde.marginal(x0, t)
        xt = mean + std * z
        loss = dsm_loss(self.score(xt, t, labels), z, std).mean()
        return {"loss": loss, "dsm": loss}

    def forward(self, batch: dict[str, Tensor], phase: str = "main") -> dict[str, Tensor]:
        labels = training_labels(batch, self.cfg)
        return self.losses(to_unit_range(batch["x"], self.spec), labels)

    def log_prob(
        self,
        x: Tensor,
        labels: Tensor | None = None,
        *,
        generator: torch.Generator | None = None,
    ) -> Tensor:
        """log p(x) per example in nats through the probability-flow ODE (module doc).

        Exact divergence for D <= 8, else Hutchinson's estimate with `probe` (one probe per
        example, drawn with `generator`). A density in data space: log p_unit(x_unit) + D log(2 /
        (high - low)) for bounded data. Conditional models score log p(x | labels).
        """
        y = labels if self.cfg.conditional else None
        p = next(self.parameters())
        x0 = to_unit_range(x.to(p.dtype), self.spec)
        log_p = ode_log_likelihood(
            lambda xt, t: self.score(xt, t, y),
            self.sde,
            x0,
            t_min=self.cfg.t_eps,
            probe=self.cfg.probe,
            generator=generator,
        )
        return log_p + log_det_to_unit(self.spec)

    @torch.no_grad()
    def sample(
        self,
        n: int,
        *,
        generator: torch.Generator | None = None,
        labels: Tensor | None = None,
        sampler: str | None = None,
        steps: int | None = None,
        guidance: float | None = None,
        **kw: object,
    ) -> Tensor:
        """Samples by euler-maruyama or pc (steps, default 500) or the probability-flow ODE
        (ode: adaptive RK45, or fixed-step Heun when steps is given), from t = 1 to sample_t_min."""
        cfg = self.cfg
        name = choose_sampler(sampler, cfg.sampler, self.samplers, kw)
        w = check_guidance(guidance, cfg)
        y = sampling_labels(self, n, labels, cfg.conditional, self.spec.num_classes)
        # model.sample_steps belongs to the config's sampler; another one gets its own default
        steps = steps or (cfg.sample_steps if name == cfg.sampler else 0) or None
        if steps is not None and steps < 1:
            raise GenlabError(f"steps must be positive; got {steps}")
        p = next(self.parameters())
        shape = (n, *self.spec.shape)
        opts = dict(t_min=cfg.sample_t_min, generator=generator, dtype=p.dtype, device=p.device)

        def score_fn(xt: Tensor, t: Tensor) -> Tensor:
            return self.score(xt, t, y, w)

        if name == "euler-maruyama":
            x = euler_maruyama(score_fn, self.sde, shape, steps=steps or 500, **opts)
        elif name == "pc":
            x = predictor_corrector(score_fn, self.sde, shape, steps=steps or 500, **opts)
        elif steps is None:
            x = probability_flow_ode(score_fn, self.sde, shape, **opts)
        else:
            x = probability_flow_ode(score_fn, self.sde, shape, method="heun", steps=steps, **opts)
        return from_unit_range(x, self.spec)
