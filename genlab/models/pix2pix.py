"""pix2pix: paired image-to-image translation with a conditional GAN plus an L1 term.

Isola et al. arXiv:1611.07004, eq. 4; [001] "Conditional GANs example - Pix2Pix", [003], [004]:
    G* = arg min_G max_D  L_cGAN(G, D) + lambda * L_L1(G)
    L_cGAN(G, D) = E log D(s, x) + E log(1 - D(s, G(s)))      (s = source of target x)
    L_L1(G)      = E |x - G(s)|_1
G is a U-Net (genlab.nn.unet), D a PatchGAN critic (genlab.nn.patchgan) on the channel-wise
concatenation [s, image] that returns a map of patch logits. The adversarial terms come from
genlab.math.gan_losses (`loss`, default the non-saturating generator loss); L_L1 is the mean
absolute error per pixel in data space, so the generator's loss is exactly adv + l1_weight * l1.
Sources come from the task (genlab.data.tasks: inpaint, edges, invert) applied to each batch.

Sampling: a translation model needs sources, so the model keeps the sources of the first 64
training examples it sees in a buffer (`source_bank`, saved with the weights) and
sample(n) = translate(bank[i mod filled]) for i < n: translations of stored training sources,
deterministic (the `generator` argument is unused). Evaluation and figures use the test split:
translate(source_of(x)) against x.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor

from genlab.data import tasks
from genlab.data.spec import DataSpec
from genlab.math.gan_losses import critic_loss, generator_loss
from genlab.models.adversarial import to_data_range, to_unit_range
from genlab.models.base import GenerativeModel, Phase, adam
from genlab.nn import sync
from genlab.nn.patchgan import PatchCritic
from genlab.nn.unet import UNetGenerator
from genlab.registry import MODELS

BANK = 64  # training sources kept for sample()


# ------------------------------------------------------------- shared by the translation models
def to_net(x: Tensor, spec: DataSpec) -> Tensor:
    """Data-space images -> [-1, 1], what the networks see."""
    return to_unit_range(x, spec)


def to_data(u: Tensor, spec: DataSpec) -> Tensor:
    """Unbounded generator output -> tanh -> the data range."""
    return to_data_range(u, spec)


def register_bank(model: GenerativeModel) -> None:
    """Buffers `source_bank` (BANK, *shape) and `bank_filled` (rows stored so far)."""
    model.register_buffer("source_bank", torch.zeros(BANK, *model.spec.shape))
    model.register_buffer("bank_filled", torch.zeros((), dtype=torch.long))


@torch.no_grad()
def remember_sources(model: GenerativeModel, source: Tensor) -> None:
    """Store training sources in the bank until it is full (training mode only).

    The first micro-batch of each step only (genlab.nn.sync): under DDP the bank is rank 0's
    (buffers are broadcast from it), under train.grad_accum micro-batch 0's, the same rows.
    """
    filled = int(model.bank_filled)
    if not model.training or filled >= BANK or sync.later_micro_batch():
        return
    take = source[: BANK - filled].detach()
    model.source_bank[filled : filled + len(take)] = take.to(model.source_bank.dtype)
    model.bank_filled += len(take)


def bank_sources(model: GenerativeModel, n: int) -> Tensor:
    """n sources: the stored ones cycled (the zeros of an empty bank before training)."""
    filled = int(model.bank_filled)
    rows = torch.arange(n, device=model.source_bank.device) % (filled or BANK)
    return model.source_bank[rows]


# ----------------------------------------------------------------------------------- pix2pix
@dataclass
class Pix2PixConfig:
    task: Literal["inpaint", "edges", "invert"] = "inpaint"  # paired task (genlab.data.tasks)
    channels: tuple[int, ...] = (64, 128)  # U-Net and PatchGAN widths per stride-2 level
    loss: Literal["minimax", "ns", "ls", "hinge"] = "ns"  # adversarial loss (math/gan_losses)
    l1_weight: float = 100.0  # lambda of the L1 term
    norm: Literal["batch", "instance", "none"] = "batch"
    dropout: float = 0.0  # dropout in the U-Net's three innermost decoder levels (pix2pix: 0.5)
    beta1: float = 0.5  # Adam beta1 (DCGAN recipe)


@MODELS.register("pix2pix", "pix2pix: U-Net + PatchGAN, cGAN + lambda*L1 on a paired task")
class Pix2Pix(GenerativeModel):
    """Conditional GAN translation source -> x: min_G max_D L_cGAN + lambda L_L1 (Isola et al.)."""

    config_class = Pix2PixConfig
    data_kinds = ("image",)

    def __init__(self, cfg: Pix2PixConfig, spec: DataSpec) -> None:
        super().__init__(cfg, spec)
        c, h, w = spec.shape
        self.generator = UNetGenerator(
            c, c, (h, w), cfg.channels, norm=cfg.norm, dropout=cfg.dropout
        )
        self.critic = PatchCritic(2 * c, (h, w), cfg.channels, norm=cfg.norm)
        register_bank(self)

    def source_of(self, x: Tensor) -> Tensor:
        return tasks.source_of(self.cfg.task, x, self.spec)

    def translate(self, source: Tensor, labels: Tensor | None = None) -> Tensor:
        """G(source) in the data range."""
        return to_data(self.generator(to_net(source, self.spec)), self.spec)

    def critic_logits(self, source: Tensor, image: Tensor) -> Tensor:
        """D(source, image): (B, 1, h, w) patch logits of the concatenated pair."""
        pair = torch.cat([to_net(source, self.spec), to_net(image, self.spec)], dim=1)
        return self.critic(pair)

    def forward(self, batch: dict[str, Tensor], phase: str = "generator") -> dict[str, Tensor]:
        x = batch["x"]
        source = self.source_of(x)
        remember_sources(self, source)
        kind = self.cfg.loss
        if phase == "critic":
            with torch.no_grad():
                fake = self.translate(source)
            real_out = self.critic_logits(source, x)
            fake_out = self.critic_logits(source, fake)
            loss = critic_loss(kind, real_out, fake_out)
            return {"loss": loss, "d_real": real_out.mean(), "d_fake": fake_out.mean()}
        if phase == "generator":
            fake = self.translate(source)
            adv = generator_loss(kind, self.critic_logits(source, fake))
            l1 = (fake - x).abs().mean()
            return {"loss": adv + self.cfg.l1_weight * l1, "adv": adv, "l1": l1}
        raise ValueError(f"unknown phase {phase!r} of pix2pix; phases are critic, generator")

    def phases(self, lr: float) -> list[Phase]:
        opt = adam(lr, (self.cfg.beta1, 0.999))
        return [
            Phase("critic", list(self.critic.parameters()), opt),
            Phase("generator", list(self.generator.parameters()), opt),
        ]

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
        """Translations of the stored training sources (deterministic; `generator` is unused)."""
        return self.translate(bank_sources(self, n))
