"""Denoising diffusion probabilistic models (Ho et al. arXiv:2006.11239; [001] "DDPM", [000, 002]).

The forward process q(x_t | x_0) = N(sqrt(alpha_bar_t) x_0, (1 - alpha_bar_t) I) (linear or cosine
betas, genlab.diffusion.NoiseSchedule) is reversed by p(x_{t-1} | x_t) = N(mu_theta, Sigma_theta)
with a network that predicts `prediction` = eps (Ho et al.), x0, or v = alpha_t eps - sigma_t x_0
(Salimans & Ho arXiv:2202.00512); every one is converted to (eps, x_0) by the schedule, so the
posterior mean is mu_theta = mu~(x_0_hat, x_t).

Training (Ho et al. Algorithm 1): t ~ U{1..T}, eps ~ N(0, I), x_t = q_sample(x_0, t, eps),
    L_simple = mean over dimensions of ||target - net(x_t, t)||^2
with target eps, x_0 or v. loss=hybrid (Nichol & Dhariwal arXiv:2102.09672 section 3.1) learns the
variance too: the network has 2C outputs, the second half u in [-1, 1] gives v = (u + 1) / 2 and
log Sigma = v log beta_t + (1 - v) log beta~_t (eq. (15)), and
    L_hybrid = L_simple + lambda L_vlb,  lambda = 0.001,
with L_vlb = T L_t for the sampled t (an unbiased estimate of the bound's sum), L_t taken with a
stop-gradient on the mean so that L_vlb only trains the variance (their section 3.1), in bits per
dimension as in their code (so lambda keeps its meaning at any image size). Fixed variances
(loss=simple) are beta_t or beta~_t (`variance`, Ho et al. section 3.2).

Class conditioning with classifier-free guidance (Ho & Salimans arXiv:2207.12598): see
genlab.models.denoising. Sampling delegates to genlab.samplers (ancestral, ddim, dpm-solver++,
sde-dpm-solver++).

Likelihood: the variational bound L = L_T + sum_{t>1} L_{t-1} + L_0 >= -log p(x_0) in nats per
example (genlab.diffusion.vlb_terms, one x_t per step). For discrete data (images with
spec.discrete_levels) L_0 is the discretised Gaussian decoder of Ho et al. eq. (13) on the grid of
levels in [-1, 1], so the bound is on a probability mass (discrete_likelihood = True; the grid is
invariant to the affine range map) and bits/dim = L / (D ln 2) with no dequantisation offset:
train DDPM on undequantised images, as the configs do. For continuous data L_0 is the Gaussian
density -log N(x_0; mu_theta, Sigma_theta), a bound on -log density.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor, nn

from genlab.data.spec import DataSpec
from genlab.diffusion import NoiseSchedule, vlb_terms
from genlab.errors import GenlabError
from genlab.math.gaussian import log_normal
from genlab.models.adversarial import from_unit_range, to_unit_range
from genlab.models.base import GenerativeModel
from genlab.models.denoising import (
    Denoiser,
    DenoiserConfig,
    check_guidance,
    choose_sampler,
    guide,
    guided,
    log_det_to_unit,
    sampling_labels,
    training_labels,
)
from genlab.registry import MODELS
from genlab.samplers import ancestral, ddim, dpm_solver_pp, sde_dpm_solver_pp


@dataclass
class DDPMConfig(DenoiserConfig):
    prediction: Literal["eps", "x0", "v"] = "eps"  # what the network predicts
    loss: Literal["simple", "hybrid"] = "simple"  # hybrid: + 0.001 L_vlb, learned variance
    schedule: Literal["linear", "cosine"] = "linear"
    timesteps: int = 1000  # T
    variance: Literal["beta", "beta_tilde"] = "beta"  # fixed reverse variance (loss=simple)
    vlb_weight: float = 0.001  # lambda of L_hybrid
    # the default sampler
    sampler: Literal["ancestral", "ddim", "dpm-solver++", "sde-dpm-solver++"] = "ancestral"
    sample_steps: int = 0  # steps of `sampler` (0: ancestral all T, ddim 50, the DPM-Solvers 20)
    clip: bool = True  # clip predicted x_0 to [-1, 1] while sampling bounded data


@MODELS.register("ddpm", "DDPM: eps-prediction, L_simple, linear betas, T = 1000 (Ho et al.)")
@MODELS.register(
    "ddpm-cfg",
    "class-conditional DDPM with classifier-free guidance (w = 1 by default)",
    conditional=True,
    guidance=1.0,
)
@MODELS.register(
    "iddpm",
    "improved DDPM: L_hybrid with learned variance, cosine betas (Nichol & Dhariwal)",
    loss="hybrid",
    schedule="cosine",
)
class DDPM(GenerativeModel):
    """DDPM with eps / x0 / v prediction, L_simple or L_hybrid, and guidance (see module doc)."""

    config_class = DDPMConfig
    samplers = ("ancestral", "ddim", "dpm-solver++", "sde-dpm-solver++")
    likelihood_method = "DDPM variational bound L_T + sum_t L_t-1 + L_0 (one trajectory; k unused)"

    def __init__(self, cfg: DDPMConfig, spec: DataSpec, *, net: nn.Module | None = None) -> None:
        """`net`: a network (x_t, t, labels[, cond=]) -> output to use instead of the Denoiser
        built from cfg (latent diffusion and super-resolution bring their own conditioning)."""
        super().__init__(cfg, spec)
        if cfg.timesteps < 2:
            raise GenlabError(f"model.timesteps must be >= 2; got {cfg.timesteps}")
        self.schedule = NoiseSchedule.from_name(cfg.schedule, cfg.timesteps)
        self.learned_variance = cfg.loss == "hybrid"
        out_factor = 2 if self.learned_variance else 1
        self.net = net if net is not None else Denoiser(cfg, spec, out_factor=out_factor)

    @property
    def discrete_likelihood(self) -> bool:
        return bool(self.spec.discrete_levels) and self.spec.value_range is not None

    # ----- the network's outputs as (eps, x_0, log-variance) -----

    def _net(self, x: Tensor, t: Tensor, labels: Tensor | None, cond: Tensor | None) -> Tensor:
        """net(x_t, t, labels), with the image condition `cond` (B, C', H, W) when given; a
        batch doubled by classifier-free guidance gets the condition twice."""
        if cond is None:
            return self.net(x, t, labels)
        return self.net(x, t, labels, cond=cond.repeat(len(x) // len(cond), 1, 1, 1))

    def _split(self, out: Tensor) -> tuple[Tensor, Tensor | None]:
        """Network output -> (prediction, u in [-1, 1] of the learned variance or None)."""
        if not self.learned_variance:
            return out, None
        pred, u = out.chunk(2, dim=1)
        return pred, u

    def logvar(self, t: Tensor, u: Tensor | None, like: Tensor) -> Tensor:
        """log Sigma_t: learned, v = (u + 1) / 2 (Nichol & Dhariwal eq. (15) and their code), or
        fixed, log beta_t (v = 1) or log beta~_t (v = 0), shaped like x."""
        if u is None:
            u = torch.full_like(like, 1.0 if self.cfg.variance == "beta" else -1.0)
        return self.schedule.interpolated_logvar(t, (u + 1) / 2)

    def eps_logvar(
        self,
        xt: Tensor,
        t: Tensor,
        labels: Tensor | None = None,
        guidance: float = 0.0,
        cond: Tensor | None = None,
    ) -> tuple[Tensor, Tensor]:
        """(eps, log Sigma_t) at (x_t, t); eps guided with weight w, the variance conditional."""

        def eps_and_u(x: Tensor, tt: Tensor, y: Tensor | None) -> Tensor:
            pred, u = self._split(self._net(x, tt, y, cond))
            eps, _ = self.schedule.eps_x0(x, tt, pred, self.cfg.prediction)
            return eps if u is None else torch.cat([eps, u], dim=1)

        cond, uncond = guided(eps_and_u, xt, t, labels, guidance)
        c = xt.shape[1]
        eps = guide(cond[:, :c], None if uncond is None else uncond[:, :c], guidance)
        u = cond[:, c:] if self.learned_variance else None
        return eps, self.logvar(t, u, xt)

    def p_mean_logvar(
        self, xt: Tensor, t: Tensor, labels: Tensor | None = None
    ) -> tuple[Tensor, Tensor]:
        """Mean and log-variance of p(x_{t-1} | x_t): mu~(x_0_hat, x_t) and log Sigma_t."""
        eps, logvar = self.eps_logvar(xt, t, labels)
        x0_hat = self.schedule.x0_from_eps(xt, t, eps)
        mean, _, _ = self.schedule.q_posterior(x0_hat, xt, t)
        return mean, logvar

    # ----- training -----

    def _vlb_term(self, x0: Tensor, xt: Tensor, t: Tensor, mean: Tensor, logvar: Tensor) -> Tensor:
        """L_t per example (nats): the schedule's term, with a Gaussian-density decoder L_0 for
        continuous data (the discretised decoder needs grey levels)."""
        if self.discrete_likelihood:
            levels = self.spec.discrete_levels
            return self.schedule.vlb_term(x0, xt, t, mean, logvar, levels=levels)
        # levels=2 is a placeholder: its t = 0 entry is replaced by the Gaussian density
        term = self.schedule.vlb_term(x0, xt, t, mean, logvar, levels=2)
        return torch.where(t == 0, -log_normal(x0, mean, logvar), term)

    def losses(
        self,
        x0: Tensor,
        labels: Tensor | None = None,
        *,
        t: Tensor | None = None,
        eps: Tensor | None = None,
        cond: Tensor | None = None,
    ) -> dict[str, Tensor]:
        """L_simple (and L_hybrid) for x_0 in model space; t and eps are drawn unless given;
        `cond` is an image condition for the network (super-resolution).

        Ho et al. Algorithm 1 lines 2-5; Nichol & Dhariwal section 3.1 for the hybrid loss.
        """
        if t is None:
            t = torch.randint(0, self.schedule.T, (x0.shape[0],), device=x0.device)
        if eps is None:
            eps = torch.randn_like(x0)
        xt = self.schedule.q_sample(x0, t, eps)
        pred, u = self._split(self._net(xt, t, labels, cond))
        target = {"eps": eps, "x0": x0, "v": self.schedule.v_target(x0, t, eps)}
        mse = ((pred - target[self.cfg.prediction]) ** 2).mean()
        parts = {"loss": mse, "mse": mse}
        if self.learned_variance:
            _, x0_hat = self.schedule.eps_x0(xt, t, pred.detach(), self.cfg.prediction)
            mean, _, _ = self.schedule.q_posterior(x0_hat, xt, t)  # stop-gradient on the mean
            l_t = self._vlb_term(x0, xt, t, mean, self.logvar(t, u, xt))
            # L_vlb = T L_t in bits per dimension (Nichol & Dhariwal's code: vb * T / 1000)
            vlb = (self.schedule.T * l_t / (self.spec.dim * math.log(2))).mean()
            parts["vlb"] = vlb
            parts["loss"] = mse + self.cfg.vlb_weight * vlb
        return parts

    def forward(self, batch: dict[str, Tensor], phase: str = "main") -> dict[str, Tensor]:
        labels = training_labels(batch, self.cfg)
        return self.losses(to_unit_range(batch["x"], self.spec), labels)

    # ----- likelihood -----

    @torch.no_grad()
    def nll_bound(
        self,
        x: Tensor,
        labels: Tensor | None = None,
        *,
        k: int = 1,
        generator: torch.Generator | None = None,
    ) -> Tensor:
        """The DDPM bound L_T + sum L_{t-1} + L_0 >= -log p(x) per example, nats (module doc).

        One x_t ~ q(x_t | x_0) per step and example, drawn with `generator`. k is accepted for
        the LikelihoodBound protocol and ignored: the bound has no importance samples to add
        (averaging k trajectories would lower its variance, not the bound, at k times T calls).
        For continuous bounded data the density is moved to data space (log_det_to_unit).
        """
        x0 = to_unit_range(x, self.spec)
        labels = None if not self.cfg.conditional else labels
        decoder: dict[str, Tensor] = {}

        def p_mean_logvar(xt: Tensor, t: Tensor) -> tuple[Tensor, Tensor]:
            mean, logvar = self.p_mean_logvar(xt, t, labels)
            if int(t[0]) == 0:
                decoder["nll"] = -log_normal(x0, mean, logvar)
            return mean, logvar

        if self.discrete_likelihood:
            levels = self.spec.discrete_levels
            return vlb_terms(self.schedule, x0, p_mean_logvar, levels=levels, generator=generator)[
                "total"
            ]
        terms = vlb_terms(self.schedule, x0, p_mean_logvar, levels=2, generator=generator)
        # continuous data: swap the placeholder discretised L_0 for the Gaussian density
        total = terms["total"] - terms["terms"][:, 0] + decoder["nll"]
        return total - log_det_to_unit(self.spec)

    # ----- sampling -----

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
        cond: Tensor | None = None,
        **kw: object,
    ) -> Tensor:
        """n examples in data space with `sampler` (default: the config's) and `steps` calls.

        ancestral: Ho et al. Algorithm 2 over all T steps, with the fixed or learned variance;
        with steps < T it is DDIM with eta = 1 on that subsequence (the respaced ancestral
        chain, Song et al. arXiv:2010.02502 section 4.1). ddim: eta = 0, 50 steps by default;
        dpm-solver++ (the ODE) and sde-dpm-solver++ (the reverse SDE): 20 steps by default.
        Conditional models without labels cycle through the classes; guidance is the weight w
        (default: the config's); `cond` (n, C', H, W) is an image condition passed to the
        network at every step (super-resolution).
        """
        cfg = self.cfg
        name = choose_sampler(sampler, cfg.sampler, self.samplers, kw)
        w = check_guidance(guidance, cfg)
        y = sampling_labels(self, n, labels, cfg.conditional, self.spec.num_classes)
        # model.sample_steps belongs to the config's sampler; another one gets its own default
        steps = steps or (cfg.sample_steps if name == cfg.sampler else 0) or None
        T = self.schedule.T
        if steps is not None and not 1 <= steps <= T:
            raise GenlabError(f"steps must be in 1..{T}; got {steps}")
        p = next(self.parameters())
        opts = dict(
            generator=generator,
            dtype=p.dtype,
            device=p.device,
            clip=(-1.0, 1.0) if cfg.clip and self.spec.value_range is not None else None,
        )
        shape = (n, *self.spec.shape)

        def eps_fn(xt: Tensor, t: Tensor) -> Tensor:
            return self.eps_logvar(xt, t, y, w, cond)[0]

        if name == "ancestral" and steps in (None, T):
            if self.learned_variance:
                x = ancestral(
                    lambda xt, t: self.eps_logvar(xt, t, y, w, cond),
                    self.schedule,
                    shape,
                    variance="learned",
                    **opts,
                )
            else:
                x = ancestral(eps_fn, self.schedule, shape, variance=cfg.variance, **opts)
        elif name == "ancestral":
            x = ddim(eps_fn, self.schedule, shape, steps=steps, eta=1.0, **opts)
        elif name == "ddim":
            x = ddim(eps_fn, self.schedule, shape, steps=steps or min(50, T), **opts)
        else:
            solver = dpm_solver_pp if name == "dpm-solver++" else sde_dpm_solver_pp
            x = solver(eps_fn, self.schedule, shape, steps=steps or min(20, T), **opts)
        return from_unit_range(x, self.spec)
