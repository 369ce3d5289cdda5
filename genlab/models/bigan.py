"""ALI / BiGAN: a generator, an encoder and a critic on joint pairs (x, z).

The critic D(x, z) separates encoder pairs (x, E(x)), x ~ data, from generator pairs (G(z), z),
z ~ N(0, I); generator and encoder are trained together to fool it. With the minimax loss this is
    min_{G, E} max_D  E_x log D(x, E(x)) + E_z log(1 - D(G(z), z)),
whose optimum makes the joint distributions q(x, z) = p(x) q(z|x) and p(x, z) = p(z) p(x|z) equal,
so E inverts G ([000] "ALI": Jensen-Shannon divergence between the joints; [002] BigBiGAN;
Dumoulin et al. arXiv:1606.00704, Donahue et al. arXiv:1605.09782). The encoder here is
deterministic (BiGAN); encode(x) = E(x), decode(z) = G(z), reconstruct(x) = G(E(x)).

"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor, nn

from genlab.data.spec import DataSpec
from genlab.math.gan_losses import critic_loss
from genlab.models.adversarial import (
    GanLoss,
    adversarial_optimizer,
    clip_after_critic_step,
    critic_objective,
    to_data_range,
    to_unit_range,
)
from genlab.models.base import GenerativeModel, Phase
from genlab.nn import MLP, DecoderNet, EncoderNet
from genlab.registry import MODELS


@dataclass
class BiGANConfig:
    arch: Literal["auto", "mlp", "conv"] = "auto"  # auto: conv for images, MLP for vectors
    latent_dim: int = 16
    hidden: tuple[int, ...] = (256, 256)  # MLP widths (G, E and the critic's joint head)
    channels: tuple[int, ...] = (32, 64)  # conv widths per stride-2 stage
    loss: GanLoss = "ns"
    n_critic: int = 1  # critic updates per generator update
    gp_weight: float = 10.0  # lambda of the gradient penalty (loss=wgan-gp)
    clip: float = 0.01  # weight clipping of the critic (loss=wgan)
    optimizer: Literal["auto", "adam", "rmsprop"] = "auto"  # auto: rmsprop for wgan, else adam
    beta1: float = 0.5  # Adam's first momentum (DCGAN recipe)
    dropout: float = 0.2  # dropout in the critic's joint head (ALI uses it against overfitting)


class JointCritic(nn.Module):
    """D(x, z): features of x (an EncoderNet body), concatenated with z, then an MLP head."""

    def __init__(self, spec: DataSpec, cfg: BiGANConfig) -> None:
        super().__init__()
        width = cfg.hidden[-1] if cfg.hidden else 64
        self.features = EncoderNet(
            spec, width, arch=cfg.arch, hidden=cfg.hidden, channels=cfg.channels
        )
        self.act = nn.LeakyReLU(0.2)
        self.drop = nn.Dropout(cfg.dropout)
        self.head = MLP(width + cfg.latent_dim, cfg.hidden, 1, activation=nn.SiLU)

    def forward(self, x: Tensor, z: Tensor) -> Tensor:
        h = self.drop(self.act(self.features(x)))  # (B, width)
        return self.head(torch.cat([h, z], dim=1)).squeeze(1)  # (B,)


@MODELS.register("bigan", "ALI / BiGAN: encoder + generator, critic on joint (x, z) pairs")
class BiGAN(GenerativeModel):
    """ALI / BiGAN: min_{G,E} max_D E log D(x, E(x)) + E log(1 - D(G(z), z)) ([000] "ALI")."""

    config_class = BiGANConfig

    def __init__(self, cfg: BiGANConfig, spec: DataSpec) -> None:
        super().__init__(cfg, spec)
        nets = dict(arch=cfg.arch, hidden=cfg.hidden, channels=cfg.channels)
        self.generator = DecoderNet(cfg.latent_dim, spec, **nets)
        self.encoder = EncoderNet(spec, cfg.latent_dim, **nets)
        self.critic = JointCritic(spec, cfg)

    # ----------------------------------------------------------------------- the two mappings
    def encode(self, x: Tensor, labels: Tensor | None = None) -> Tensor:
        return self.encoder(x)

    def decode(self, z: Tensor, labels: Tensor | None = None) -> Tensor:
        return to_data_range(self.generator(z), self.spec)

    def reconstruct(self, x: Tensor, labels: Tensor | None = None) -> Tensor:
        """G(E(x)): what the generator makes of the encoder's code of x."""
        return self.decode(self.encode(x))

    def pairs(self, x: Tensor) -> tuple[tuple[Tensor, Tensor], tuple[Tensor, Tensor]]:
        """Encoder pairs (x, E(x)) and as many generator pairs (G(z), z) with z ~ N(0, I)."""
        z = torch.randn(len(x), self.cfg.latent_dim, device=x.device, dtype=x.dtype)
        return (x, self.encode(x)), (self.decode(z), z)

    def score(self, x: Tensor, z: Tensor) -> Tensor:
        """The critic's output D(x, z) (a logit for minimax / ns), x in data space; (B,)."""
        return self.critic(to_unit_range(x, self.spec), z)

    # --------------------------------------------------------------------------- the game
    def forward(self, batch: dict[str, Tensor], phase: str = "critic") -> dict[str, Tensor]:
        cfg = self.cfg
        if phase == "critic":
            with torch.no_grad():  # the critic's step sees G and E as fixed
                (x, ex), (gz, z) = self.pairs(batch["x"])
            d = self.spec.dim
            real = torch.cat([x.flatten(1), ex], dim=1)  # pairs packed as one vector (B, D + d),
            fake = torch.cat([gz.flatten(1), z], dim=1)  # so the gradient penalty sees (x, z)

            def critic(v: Tensor) -> Tensor:
                return self.score(v[:, :d].view(-1, *self.spec.shape), v[:, d:])

            return critic_objective(cfg.loss, critic, real, fake, cfg.gp_weight)
        if phase == "generator":
            (x, ex), (gz, z) = self.pairs(batch["x"])
            r, f = self.score(x, ex), self.score(gz, z)
            # G and E play the critic's game with swapped targets: generator pairs should look
            # real, encoder pairs fake. Minimax keeps the saturating game (minus the critic's
            # loss); the linear losses (wgan, hinge) use -E D(G(z), z) + E D(x, E(x)).
            if cfg.loss == "minimax":
                loss = -critic_loss("minimax", r, f)
            else:
                kind = "wgan" if cfg.loss in ("wgan", "wgan-gp", "hinge") else cfg.loss
                loss = critic_loss(kind, f, r)
            return {"loss": loss, "d_real": r.mean(), "d_fake": f.mean()}
        raise ValueError(f"bigan has phases critic and generator, not {phase!r}")

    def phases(self, lr: float) -> list[Phase]:
        cfg = self.cfg
        opt = adversarial_optimizer(cfg.optimizer, cfg.loss, lr, cfg.beta1)
        joint = [*self.generator.parameters(), *self.encoder.parameters()]
        return [
            Phase("critic", list(self.critic.parameters()), opt, repeat=cfg.n_critic),
            Phase("generator", joint, opt),
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
        """G(z), z ~ N(0, I)."""
        z = self.prior_sample(n, generator)
        return self.decode(z)
