"""Variational autoencoder: Gaussian encoder, Gaussian/Bernoulli/discretised-logistic decoder.

Maximises the evidence lower bound ([001] "VAE", Kingma & Welling arXiv:1312.6114):
    ELBO(x) = E_{q(z|x)}[log p(x|z)] - beta * KL(q(z|x) || N(0, I))
with q(z|x) = N(mu(x), diag exp(logvar(x))), z = mu + sigma * eps (reparameterisation), the KL
in closed form, beta-VAE (Higgins et al. 2017, [003]) for beta != 1 and linear KL warm-up of beta
over `kl_warmup` steps (Sonderby et al. 2016). The conditional VAE (Sohn et al. 2015) feeds the
one-hot class to encoder and decoder. Evaluation uses the importance-weighted bound (Burda et al.
arXiv:1509.00519): log p(x) >= E[log (1/k) sum_i p(x, z_i) / q(z_i|x)].
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor

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
from genlab.nn import DecoderNet, EncoderNet
from genlab.registry import MODELS


def kl_weight(beta: float, kl_warmup: int, step: int) -> float:
    """beta_t = beta * min(1, step / kl_warmup): beta-VAE weight with linear KL warm-up."""
    if kl_warmup <= 0:
        return beta
    return beta * min(1.0, step / kl_warmup)


@dataclass
class VAEConfig:
    arch: Literal["auto", "mlp", "conv"] = "auto"  # auto: conv for images, MLP for vectors
    latent_dim: int = 16
    hidden: tuple[int, ...] = (256, 256)  # MLP widths (encoder; the decoder mirrors them)
    channels: tuple[int, ...] = (32, 64)  # conv widths per stride-2 stage
    likelihood: Literal["auto", "gaussian", "bernoulli", "logistic"] = "auto"
    beta: float = 1.0  # weight of the KL term (beta-VAE)
    kl_warmup: int = 0  # steps over which the KL weight rises linearly from 0 to beta
    conditional: bool = False  # condition encoder and decoder on the class label


@MODELS.register("vae", "variational autoencoder: ELBO, reparameterisation, closed-form KL")
@MODELS.register(
    "beta-vae", "beta-VAE: KL weighted by beta=4 with warm-up", beta=4.0, kl_warmup=500
)
@MODELS.register("cvae", "conditional VAE: encoder and decoder see the class", conditional=True)
class VAE(GenerativeModel):
    """Gaussian-latent VAE; loss = -(E_q log p(x|z) - beta_t KL(q(z|x) || p(z))) [001]."""

    config_class = VAEConfig

    def __init__(self, cfg: VAEConfig, spec: DataSpec) -> None:
        super().__init__(cfg, spec)
        if cfg.conditional and not spec.num_classes:
            raise GenlabError(f"model.conditional=true needs labels; {spec.name} has no classes")
        classes = spec.num_classes if cfg.conditional else 0
        nets = dict(arch=cfg.arch, hidden=cfg.hidden, channels=cfg.channels, num_classes=classes)
        self.encoder = EncoderNet(spec, 2 * cfg.latent_dim, **nets)  # -> (mu, logvar)
        self.decoder = DecoderNet(cfg.latent_dim, spec, **nets)
        self.likelihood = Likelihood(cfg.likelihood, spec)

    @property
    def discrete_likelihood(self) -> bool:
        return self.likelihood.discrete

    def labels_of(self, batch: dict[str, Tensor]) -> Tensor | None:
        if not self.cfg.conditional:
            return None
        if "y" not in batch:
            raise GenlabError("conditional VAE needs labelled data")
        return batch["y"]

    def posterior(self, x: Tensor, labels: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """q(z|x) parameters (mu, logvar), each (B, d)."""
        mu, logvar = self.encoder(x, labels).chunk(2, dim=1)
        return mu, logvar

    def kl_weight(self) -> float:
        return kl_weight(self.cfg.beta, self.cfg.kl_warmup, self.step)

    def forward(self, batch: dict[str, Tensor], phase: str = "main") -> dict[str, Tensor]:
        x, labels = batch["x"], self.labels_of(batch)
        mu, logvar = self.posterior(x, labels)
        z = reparameterize(mu, logvar)
        recon = -self.likelihood.log_prob(x, self.decoder(z, labels)).mean()  # -E_q log p(x|z)
        kl = kl_normal_standard(mu, logvar).mean()
        beta = self.kl_weight()
        return {"loss": recon + beta * kl, "recon": recon, "kl": kl, "nelbo": recon + kl}

    def encode(self, x: Tensor, labels: Tensor | None = None) -> Tensor:
        return self.posterior(x, labels)[0]

    def decode(self, z: Tensor, labels: Tensor | None = None) -> Tensor:
        return self.likelihood.mean(self.decoder(z, labels))

    def reconstruct(self, x: Tensor, labels: Tensor | None = None) -> Tensor:
        return self.decode(self.encode(x, labels), labels)

    def nll_bound(
        self,
        x: Tensor,
        labels: Tensor | None = None,
        *,
        k: int = 1,
        generator: torch.Generator | None = None,
    ) -> Tensor:
        """Upper bound on -log p(x) per example (nats): IWAE bound with k samples (k=1: -ELBO)."""
        mu, logvar = self.posterior(x, labels)
        b = len(x)
        mu_k, logvar_k = mu.repeat(k, 1), logvar.repeat(k, 1)  # (k*B, d), sample-major
        z = reparameterize(mu_k, logvar_k, generator=generator)
        labels_k = None if labels is None else labels.repeat(k)
        x_k = x.repeat(k, *([1] * (x.ndim - 1)))
        log_px_z = self.likelihood.log_prob(x_k, self.decoder(z, labels_k))
        log_w = log_px_z + log_standard_normal(z) - log_normal(z, mu_k, logvar_k)
        return -iwae_bound(log_w.view(k, b))

    def default_labels(self, n: int, labels: Tensor | None) -> Tensor | None:
        """Conditional sampling without labels cycles through the classes."""
        if not self.cfg.conditional:
            return None
        if labels is None:
            return torch.arange(n, device=self.device) % self.spec.num_classes
        return self.check_labels(n, labels)

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
        """Decoder means at z ~ N(0, I) (the usual picture of a VAE's samples)."""
        z = self.prior_sample(n, generator)
        return self.decode(z, self.default_labels(n, labels))
