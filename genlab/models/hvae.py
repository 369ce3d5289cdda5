"""Hierarchical VAE: L >= 2 stochastic layers, z_1 conditioned on z_2 ([003] "Hierarchical VAE").

Generative model, ancestral from the top:
    p(x, z_1..z_L) = p(z_L) prod_{l<L} p(z_l | z_{l+1}) p(x | z_1),
with p(z_L) = N(0, I), p(z_l | z_{l+1}) = N(mu_l(z_{l+1}), diag exp(logvar_l(z_{l+1}))) given by
MLPs, and p(x | z_1) the decoder likelihood of the VAE (Gaussian / Bernoulli / discretised
logistic, genlab.models.likelihood). Inference is bottom-up, as in [003] and Burda et al.
(arXiv:1509.00519 section 5):
    q(z_1..z_L | x) = q(z_1 | x) prod_{l<L} q(z_{l+1} | z_l),
each a diagonal Gaussian drawn by reparameterisation. The bound is
    ELBO(x) = E_q[log p(x | z_1)] - sum_l KL_l,
    KL_l = E_q[log q(z_l | .) - log p(z_l | z_{l+1})] for l < L,
    KL_L = E_q[KL(q(z_L | z_{L-1}) || N(0, I))] (closed form given z_{L-1}).
The lower KL_l have no closed form here (z_{l+1} is drawn from q after z_l, so p(z_l | z_{l+1})
is a random distribution): they are single-sample estimates, unbiased like the whole ELBO. The
loss is recon + beta_t * sum_l KL_l with beta-VAE weight and linear KL warm-up as in the VAE
(warm-up is the usual remedy for the inactive upper layers of Sonderby et al. arXiv:1602.02282).
The alternative this module does not build is the ladder / top-down inference of the Ladder VAE
(Sonderby et al.) and NVAE (Vahdat & Kautz arXiv:2007.03898), where q(z_l | z_{l+1}, x) shares
the generative path and every KL_l is a closed-form KL between two Gaussians.

Evaluation: nll_bound is minus the importance-weighted bound (Burda et al. eq. (8)) with
    log w = log p(x | z_1) + log p(z_L) + sum_{l<L} log p(z_l | z_{l+1}) - log q(z_1..z_L | x),
k joint draws of (z_1..z_L) per example; k = 1 gives -ELBO, so `genlab evaluate --metrics
nll,elbo` works as for the VAE.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor, nn

from genlab.data.spec import DataSpec
from genlab.errors import GenlabError
from genlab.math.gaussian import (
    iwae_bound,
    kl_normal_standard,
    log_normal,
    log_standard_normal,
    reparameterize,
)
from genlab.models.base import GenerativeModel
from genlab.models.likelihood import Likelihood
from genlab.models.vae import kl_weight
from genlab.nn import MLP, DecoderNet, EncoderNet
from genlab.registry import MODELS

# One stochastic layer of q: (z_l, mu_l, logvar_l), each (B, d_l).
Layer = tuple[Tensor, Tensor, Tensor]


@dataclass
class HVAEConfig:
    arch: Literal["auto", "mlp", "conv"] = "auto"  # x <-> z_1 nets; auto: conv for images
    layers: int = 2  # L, the number of stochastic layers
    latent_dim: int = 16  # size of z_1 (what encode returns and decode takes)
    upper_dim: int = 8  # size of z_2 .. z_L (0: latent_dim)
    hidden: tuple[int, ...] = (256, 256)  # MLP widths: x <-> z_1 (MLP arch) and z_l <-> z_{l+1}
    channels: tuple[int, ...] = (32, 64)  # conv widths per stride-2 stage
    likelihood: Literal["auto", "gaussian", "bernoulli", "logistic"] = "auto"
    beta: float = 1.0  # weight of the summed KL terms
    kl_warmup: int = 0  # steps over which the KL weight rises linearly from 0 to beta


@MODELS.register("hvae", "hierarchical VAE: z_1 conditioned on z_2, bottom-up inference, IWAE")
class HVAE(GenerativeModel):
    """L-layer Gaussian VAE; loss = -(E_q log p(x|z_1) - beta_t sum_l KL_l) [003] (module doc)."""

    config_class = HVAEConfig

    def __init__(self, cfg: HVAEConfig, spec: DataSpec) -> None:
        super().__init__(cfg, spec)
        if cfg.layers < 2:
            raise GenlabError(f"model.layers must be >= 2 (use vae for one); got {cfg.layers}")
        if cfg.latent_dim < 1 or cfg.upper_dim < 0:
            raise GenlabError(
                f"model.latent_dim must be >= 1 and model.upper_dim >= 0; "
                f"got {cfg.latent_dim}, {cfg.upper_dim}"
            )
        upper = cfg.upper_dim or cfg.latent_dim
        self.dims = [cfg.latent_dim] + [upper] * (cfg.layers - 1)  # d_1 .. d_L
        nets = dict(arch=cfg.arch, hidden=cfg.hidden, channels=cfg.channels)
        pairs = list(zip(self.dims[:-1], self.dims[1:]))  # (d_l, d_{l+1}), l = 1..L-1
        self.encoder = EncoderNet(spec, 2 * self.dims[0], **nets)  # q(z_1|x) -> (mu, logvar)
        # inference[l-1]: z_l -> q(z_{l+1} | z_l); prior[l-1]: z_{l+1} -> p(z_l | z_{l+1}).
        self.inference = nn.ModuleList(MLP(a, cfg.hidden, 2 * b) for a, b in pairs)
        self.prior = nn.ModuleList(MLP(b, list(cfg.hidden)[::-1], 2 * a) for a, b in pairs)
        self.decoder = DecoderNet(self.dims[0], spec, **nets)
        self.likelihood = Likelihood(cfg.likelihood, spec)

    @property
    def discrete_likelihood(self) -> bool:
        return self.likelihood.discrete

    def kl_weight(self) -> float:
        return kl_weight(self.cfg.beta, self.cfg.kl_warmup, self.step)

    def decode(self, z: Tensor, labels: Tensor | None = None) -> Tensor:
        """Decoder mean of p(x | z_1)."""
        return self.likelihood.mean(self.decoder(z, labels))

    def reconstruct(self, x: Tensor, labels: Tensor | None = None) -> Tensor:
        return self.decode(self.encode(x, labels), labels)

    def posterior(
        self, x: Tensor, labels: Tensor | None = None, generator: torch.Generator | None = None
    ) -> list[Layer]:
        """Bottom-up draw z_1 ~ q(z_1|x), z_{l+1} ~ q(z_{l+1}|z_l): [(z_l, mu_l, logvar_l)]."""
        mu, logvar = self.encoder(x).chunk(2, dim=1)
        z = reparameterize(mu, logvar, generator=generator)
        layers = [(z, mu, logvar)]
        for net in self.inference:
            mu, logvar = net(z).chunk(2, dim=1)
            z = reparameterize(mu, logvar, generator=generator)
            layers.append((z, mu, logvar))
        return layers

    def conditional_prior(self, level: int, z_above: Tensor) -> tuple[Tensor, Tensor]:
        """(mu, logvar) of p(z_level | z_{level+1}) for level = 1..L-1."""
        mu, logvar = self.prior[level - 1](z_above).chunk(2, dim=1)
        return mu, logvar

    def bound_terms(
        self, x: Tensor, layers: list[Layer], closed_form_top: bool
    ) -> tuple[Tensor, list[Tensor]]:
        """log p(x|z_1) and the per-example KL_1..KL_L of the module doc, each (B,).

        The top term is the closed-form KL given z_{L-1} when `closed_form_top`, else its
        single-sample estimate log q(z_L|z_{L-1}) - log p(z_L); then log p(x|z_1) - sum_l KL_l
        is exactly log p(x, z) - log q(z|x) at the drawn z, the log importance weight.
        """
        log_px_z = self.likelihood.log_prob(x, self.decoder(layers[0][0]))
        kls = []
        for level, (z, mu, logvar) in enumerate(layers[:-1], start=1):
            mu_p, logvar_p = self.conditional_prior(level, layers[level][0])
            kls.append(log_normal(z, mu, logvar) - log_normal(z, mu_p, logvar_p))
        z, mu, logvar = layers[-1]
        if closed_form_top:
            kls.append(kl_normal_standard(mu, logvar))
        else:
            kls.append(log_normal(z, mu, logvar) - log_standard_normal(z))
        return log_px_z, kls

    def forward(self, batch: dict[str, Tensor], phase: str = "main") -> dict[str, Tensor]:
        x = batch["x"]
        log_px_z, kls = self.bound_terms(x, self.posterior(x), closed_form_top=True)
        recon = -log_px_z.mean()
        parts = {f"kl{level}": kl.mean() for level, kl in enumerate(kls, start=1)}
        kl = torch.stack(list(parts.values())).sum()
        beta = self.kl_weight()
        return {"loss": recon + beta * kl, "recon": recon, "kl": kl, **parts, "nelbo": recon + kl}

    def encode(self, x: Tensor, labels: Tensor | None = None) -> Tensor:
        """Mean of q(z_1|x), (B, latent_dim)."""
        return self.encoder(x).chunk(2, dim=1)[0]

    def nll_bound(
        self,
        x: Tensor,
        labels: Tensor | None = None,
        *,
        k: int = 1,
        generator: torch.Generator | None = None,
    ) -> Tensor:
        """Upper bound on -log p(x) per example (nats): IWAE bound with k samples (k=1: -ELBO)."""
        b = len(x)
        x_k = x.repeat(k, *([1] * (x.ndim - 1)))  # (k*B, ...), sample-major
        log_px_z, kls = self.bound_terms(x_k, self.posterior(x_k, generator=generator), False)
        log_w = log_px_z - torch.stack(kls).sum(0)
        return -iwae_bound(log_w.view(k, b))

    @torch.no_grad()
    def sample(
        self,
        n: int,
        *,
        generator: torch.Generator | None = None,
        labels: Tensor | None = None,
        sampler: str | None = None,
        **kw: object,
    ) -> Tensor:
        """Ancestral: z_L ~ N(0, I), z_l ~ p(z_l|z_{l+1}) down to z_1, then the decoder mean."""
        dtype = next(self.parameters()).dtype
        z = torch.randn(n, self.dims[-1], generator=generator, device=self.device, dtype=dtype)
        for level in range(len(self.dims) - 1, 0, -1):
            z = reparameterize(*self.conditional_prior(level, z), generator=generator)
        return self.decode(z)
