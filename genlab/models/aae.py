"""Adversarial autoencoder: an autoencoder whose code distribution is matched to a prior by a GAN.

Three phases per training step ([000] "Adversarial Autoencoder", Makhzani et al. arXiv:1511.05644):
  reconstruction  encoder f and decoder g minimise R(x, g(f(x)))
  critic          D on codes separates prior samples z ~ p(z) = N(0, I) ("real") from codes
                  f(x) ("fake"): a GAN loss of genlab.math.gan_losses, non-saturating by default
  generator       the encoder, as the generator of codes, fools D
so that the aggregated posterior q(z) = E_x q(z|x) approaches p(z) and g(z), z ~ p(z), is a
sampler of the data. The encoder is deterministic (q(z|x) is a point mass, the paper's first
choice). R is the binary cross-entropy for data in [0, 1] (the decoder's logits through a
sigmoid, as the Bernoulli VAE, [004]) and half the squared error otherwise, summed over
dimensions; with one optimiser per phase the scale of R does not weigh against the GAN terms.
What does weigh is each phase's learning rate: the reconstruction phase uses Adam(lr), the
adversarial phases Adam(lr, (beta1, 0.999)) with the generator phase's lr scaled by
`generator_lr_scale`. On 2-D toys 0.2 keeps the encoder from being jerked around by the critic
(on moons, 5000 steps: ten times lower reconstruction error, the same sample MMD); on images
(digits) 0.2 leaves the codes off the prior and the samples poor, so the default is 1.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor

from genlab.data.spec import DataSpec
from genlab.errors import GenlabError
from genlab.math.gan_losses import generator_loss
from genlab.models.adversarial import (
    GanLoss,
    adversarial_optimizer,
    clip_after_critic_step,
    critic_objective,
)
from genlab.models.base import GenerativeModel, Phase, adam
from genlab.nn import MLP, DecoderNet, EncoderNet
from genlab.registry import MODELS


@dataclass
class AAEConfig:
    arch: Literal["auto", "mlp", "conv"] = "auto"  # auto: conv for images, MLP for vectors
    latent_dim: int = 8
    hidden: tuple[int, ...] = (256, 256)  # MLP widths (the critic on z; encoder/decoder if MLP)
    channels: tuple[int, ...] = (32, 64)  # conv widths per stride-2 stage
    recon: Literal["auto", "mse", "bce"] = "auto"  # auto: bce for data in [0, 1], else mse
    loss: GanLoss = "ns"  # the critic's game on codes
    n_critic: int = 1  # critic updates per encoder ("generator") update
    gp_weight: float = 10.0  # lambda of the gradient penalty (loss=wgan-gp)
    clip: float = 0.01  # weight clipping of the critic (loss=wgan)
    optimizer: Literal["auto", "adam", "rmsprop"] = "auto"  # of the adversarial phases
    beta1: float = 0.5  # Adam's first momentum in the adversarial phases (DCGAN recipe)
    generator_lr_scale: float = 1.0  # the generator phase's lr / train.lr (see the module doc)


@MODELS.register("aae", "adversarial autoencoder: a critic on codes matches q(z) to N(0, I)")
class AAE(GenerativeModel):
    """AAE: R(x, g(f(x))) plus the GAN game min_f max_D E log D(z) + E log(1 - D(f(x))) [000]."""

    config_class = AAEConfig

    def __init__(self, cfg: AAEConfig, spec: DataSpec) -> None:
        super().__init__(cfg, spec)
        nets = dict(arch=cfg.arch, hidden=cfg.hidden, channels=cfg.channels)
        self.encoder = EncoderNet(spec, cfg.latent_dim, **nets)
        self.decoder = DecoderNet(cfg.latent_dim, spec, **nets)
        self.critic = MLP(cfg.latent_dim, cfg.hidden, 1)
        unit = spec.value_range == (0.0, 1.0)
        if cfg.recon == "bce" and not unit:
            raise GenlabError(f"model.recon=bce needs data in [0, 1]; {spec.name} is not")
        self.recon_loss = cfg.recon if cfg.recon != "auto" else ("bce" if unit else "mse")

    def encode(self, x: Tensor, labels: Tensor | None = None) -> Tensor:
        return self.encoder(x)

    def decode(self, z: Tensor, labels: Tensor | None = None) -> Tensor:
        """g(z) in data space: a sigmoid onto a bounded range, unbounded data as is."""
        out = self.decoder(z)
        if self.spec.value_range is None:
            return out
        low, high = self.spec.value_range
        return low + (high - low) * torch.sigmoid(out)

    def reconstruct(self, x: Tensor, labels: Tensor | None = None) -> Tensor:
        return self.decode(self.encode(x))

    def score(self, z: Tensor) -> Tensor:
        """D(z), a logit for minimax / ns; (B,)."""
        return self.critic(z).squeeze(1)

    def forward(self, batch: dict[str, Tensor], phase: str = "reconstruction") -> dict[str, Tensor]:
        x, cfg = batch["x"], self.cfg
        if phase == "reconstruction":
            z = self.encoder(x)  # (B, d)
            if self.recon_loss == "bce":
                r = F.binary_cross_entropy_with_logits(self.decoder(z), x, reduction="none")
            else:
                r = 0.5 * (self.decode(z) - x) ** 2
            recon = r.flatten(1).sum(1).mean()
            return {"loss": recon, "recon": recon}
        if phase == "critic":
            with torch.no_grad():
                codes = self.encoder(x)
            prior = torch.randn_like(codes)
            return critic_objective(cfg.loss, self.score, prior, codes, cfg.gp_weight)
        if phase == "generator":
            d_fake = self.score(self.encoder(x))
            return {"loss": generator_loss(cfg.loss, d_fake), "d_fake": d_fake.mean()}
        raise ValueError(f"aae has phases reconstruction, critic and generator, not {phase!r}")

    def phases(self, lr: float) -> list[Phase]:
        cfg = self.cfg
        critic_opt = adversarial_optimizer(cfg.optimizer, cfg.loss, lr, cfg.beta1)
        encoder_opt = adversarial_optimizer(
            cfg.optimizer, cfg.loss, lr * cfg.generator_lr_scale, cfg.beta1
        )
        autoencoder = [*self.encoder.parameters(), *self.decoder.parameters()]
        return [
            Phase("reconstruction", autoencoder, adam(lr)),
            Phase("critic", list(self.critic.parameters()), critic_opt, repeat=cfg.n_critic),
            Phase("generator", list(self.encoder.parameters()), encoder_opt),
        ]

    def after_step(self, phase: str) -> None:
        clip_after_critic_step(phase, self.cfg.loss, self.critic, self.cfg.clip)

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
        """g(z), z ~ N(0, I): the prior the critic taught the codes to follow."""
        z = self.prior_sample(n, generator)
        return self.decode(z)
