"""Coupled GANs: two GANs, one per image domain, tied by weight sharing, trained without pairs.

Domain A is the dataset's images x, domain B the task's sources genlab.data.tasks.source_of(task,
x) (e.g. inverted images). Each batch is split in two halves, A images from one and B images from
the other, so no example is seen in both domains. The two generators share their first layers
(the high-level structure decoded from z) and have their own last layer (the domain's low-level
rendering); the two critics have their own first layer and share the rest. Each GAN plays
    min_{G_k} max_{D_k}  E_{x ~ p_k} log D_k(x) + E_z log(1 - D_k(G_k(z))),  k in {A, B},
(non-saturating loss by default) and the sum is optimised. Sharing forces G_A(z) and G_B(z) to
render the same content, so one z gives a corresponding pair: a joint distribution learnt from
the two marginals ([002] "CoGAN", Liu & Tuzel arXiv:1606.07536).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor, nn

from genlab.data.spec import DataSpec
from genlab.data.tasks import source_of
from genlab.errors import GenlabError
from genlab.math.gan_losses import generator_loss
from genlab.models.adversarial import (
    GanLoss,
    adversarial_optimizer,
    clip_after_critic_step,
    critic_objective,
    to_data_range,
    to_unit_range,
)
from genlab.models.base import GenerativeModel, Phase
from genlab.nn import DecoderNet, EncoderNet
from genlab.nn.conv import halvings
from genlab.nn.nets import use_conv
from genlab.registry import MODELS

DOMAINS = ("a", "b")


@dataclass
class CoGANConfig:
    arch: Literal["auto", "mlp", "conv"] = "auto"  # auto: conv when the image can be halved
    latent_dim: int = 32
    hidden: tuple[int, ...] = (256, 256)  # MLP widths (arch=mlp)
    channels: tuple[int, ...] = (32, 64)  # conv widths per stride-2 stage
    task: Literal["inpaint", "edges", "invert"] = "invert"  # domain B = source_of(task, x)
    loss: GanLoss = "ns"
    n_critic: int = 1  # critic updates per generator update
    gp_weight: float = 10.0  # lambda of the gradient penalty (loss=wgan-gp)
    clip: float = 0.01  # weight clipping of the critics (loss=wgan)
    optimizer: Literal["auto", "adam", "rmsprop"] = "auto"  # auto: rmsprop for wgan, else adam
    beta1: float = 0.5  # Adam's first momentum (DCGAN recipe)


def split_point(spec: DataSpec, cfg: CoGANConfig) -> tuple[bool, DataSpec]:
    """Where the shared layers meet the per-domain ones: (conv?, shape of the features there).

    conv: the features after the generator's last-but-one layer, (channels[0], H/2, W/2), as in
    the plain conv decoder of genlab.nn; MLP: the first hidden layer's width.
    """
    if use_conv(cfg.arch, spec):
        c, h, w = spec.shape
        return True, DataSpec(f"{spec.name}-features", (cfg.channels[0], h // 2, w // 2))
    if not cfg.hidden:
        raise GenlabError("cogan with an MLP needs model.hidden with at least one width")
    return False, DataSpec(f"{spec.name}-features", (cfg.hidden[0],))


def shared_widths(cfg: CoGANConfig, spec: DataSpec, conv: bool) -> dict[str, object]:
    """The network arguments of the shared part: the plain stack less its image-side layer."""
    if conv:
        n = halvings(spec.shape[1], spec.shape[2], len(cfg.channels))
        if n == 1:  # nothing left to convolve: one linear map to / from the features
            return dict(arch="mlp", hidden=())
        return dict(arch="conv", channels=cfg.channels[1:n])
    return dict(arch="mlp", hidden=cfg.hidden[1:])


class CoupledGenerators(nn.Module):
    """z -> G_A(z), G_B(z): all layers shared but the last, which renders each domain.

    Conv: the shared decoder ends at (channels[0], H/2, W/2), each domain has its own stride-2
    transposed convolution to (C, H, W); MLP: each domain has its own last linear layer. Outputs
    are raw (before the map onto the data range).
    """

    def __init__(self, spec: DataSpec, cfg: CoGANConfig) -> None:
        super().__init__()
        conv, maps = split_point(spec, cfg)
        trunk = DecoderNet(cfg.latent_dim, maps, **shared_widths(cfg, spec, conv))
        self.shared = nn.Sequential(trunk, nn.ReLU() if conv else nn.SiLU())
        k = maps.shape[0]
        self.last = nn.ModuleDict(
            {
                d: nn.ConvTranspose2d(k, spec.shape[0], 4, stride=2, padding=1)
                if conv
                else nn.Sequential(nn.Linear(k, spec.dim), nn.Unflatten(1, spec.shape))
                for d in DOMAINS
            }
        )

    def forward(self, z: Tensor, domain: str | None = None) -> dict[str, Tensor]:
        h = self.shared(z)  # (B, channels[0], H/2, W/2) or (B, hidden[0])
        return {d: self.last[d](h) for d in ([domain] if domain else DOMAINS)}  # (B, C, H, W)


class CoupledCritics(nn.Module):
    """x -> D_domain(x): a first layer of each domain's own, then shared layers to one score.

    The mirror of CoupledGenerators: a stride-2 4x4 convolution (or a linear layer) per domain.
    """

    def __init__(self, spec: DataSpec, cfg: CoGANConfig) -> None:
        super().__init__()
        conv, maps = split_point(spec, cfg)
        k = maps.shape[0]
        self.first = nn.ModuleDict(
            {
                d: nn.Sequential(
                    nn.Conv2d(spec.shape[0], k, 4, stride=2, padding=1)
                    if conv
                    else nn.Sequential(nn.Flatten(), nn.Linear(spec.dim, k)),
                    nn.LeakyReLU(0.2) if conv else nn.SiLU(),
                )
                for d in DOMAINS
            }
        )
        self.shared = EncoderNet(maps, 1, **shared_widths(cfg, spec, conv))

    def forward(self, x: Tensor, domain: str) -> Tensor:
        return self.shared(self.first[domain](x)).squeeze(1)  # (B,)


@MODELS.register("cogan", "coupled GANs: two weight-sharing GANs learn image pairs unpaired")
class CoGAN(GenerativeModel):
    """CoGAN: sum over k in {A, B} of the GAN game of (G_k, D_k), layers shared ([002])."""

    config_class = CoGANConfig
    data_kinds = ("image",)

    def __init__(self, cfg: CoGANConfig, spec: DataSpec) -> None:
        super().__init__(cfg, spec)
        if not spec.is_image:
            raise GenlabError(f"cogan needs images; {spec.name} has shape {spec.shape}")
        self.generator = CoupledGenerators(spec, cfg)
        self.critic = CoupledCritics(spec, cfg)

    def domains(self, x: Tensor) -> dict[str, Tensor]:
        """Unpaired halves: A = the first half of the batch, B = task sources of the second."""
        if len(x) < 2:
            raise GenlabError("cogan needs batches of at least 2 images (one per domain)")
        half = len(x) // 2
        return {"a": x[:half], "b": source_of(self.cfg.task, x[half : 2 * half], self.spec)}

    def generate(self, z: Tensor, domain: str | None = None) -> dict[str, Tensor]:
        """G_A(z), G_B(z) (or only `domain`) in data space, each (B, C, H, W)."""
        return {d: to_data_range(o, self.spec) for d, o in self.generator(z, domain).items()}

    def score(self, x: Tensor, domain: str) -> Tensor:
        """D_domain(x) for data-space images x; a logit for minimax / ns; (B,)."""
        return self.critic(to_unit_range(x, self.spec), domain)

    def forward(self, batch: dict[str, Tensor], phase: str = "critic") -> dict[str, Tensor]:
        cfg = self.cfg
        real = self.domains(batch["x"])
        z = torch.randn(len(real["a"]), cfg.latent_dim, device=self.device)
        parts: dict[str, Tensor] = {}
        if phase == "critic":
            with torch.no_grad():
                fake = self.generate(z)
            for d in DOMAINS:

                def critic(x: Tensor, d: str = d) -> Tensor:
                    return self.score(x, d)

                one = critic_objective(cfg.loss, critic, real[d], fake[d], cfg.gp_weight)
                parts.update({f"{name}_{d}": v for name, v in one.items()})
        elif phase == "generator":
            for d, x in self.generate(z).items():
                parts[f"loss_{d}"] = generator_loss(cfg.loss, self.score(x, d))
        else:
            raise ValueError(f"cogan has phases critic and generator, not {phase!r}")
        return {"loss": parts["loss_a"] + parts["loss_b"], **parts}

    def phases(self, lr: float) -> list[Phase]:
        cfg = self.cfg
        opt = adversarial_optimizer(cfg.optimizer, cfg.loss, lr, cfg.beta1)
        return [
            Phase("critic", list(self.critic.parameters()), opt, repeat=cfg.n_critic),
            Phase("generator", list(self.generator.parameters()), opt),
        ]

    def after_step(self, phase: str) -> None:
        clip_after_critic_step(phase, self.cfg.loss, self.critic, self.cfg.clip)

    @torch.no_grad()
    def sample_pair(
        self, n: int, *, generator: torch.Generator | None = None
    ) -> tuple[Tensor, Tensor]:
        """(G_A(z), G_B(z)) from the same z ~ N(0, I): corresponding images of the two domains."""
        z = self.prior_sample(n, generator)
        out = self.generate(z)
        return out["a"], out["b"]

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
        """Domain-A images G_A(z), z ~ N(0, I) (the dataset's own domain)."""
        z = self.prior_sample(n, generator)
        return self.generate(z, "a")["a"]
