"""CycleGAN: unpaired image-to-image translation with two generators and cycle consistency.

Zhu et al. arXiv:1703.10593, eqs. 1-3 (identity term: section 5.2); [001] "Cycle GANs (Zhu
2017)", [002], [003]. Generators G_AB: A -> B and G_BA: B -> A, critics D_A and D_B (PatchGAN):
    L = L_GAN(G_AB, D_B) + L_GAN(G_BA, D_A)
        + cycle_weight * (E |G_BA(G_AB(a)) - a|_1 + E |G_AB(G_BA(b)) - b|_1)
        + identity_weight * (E |G_AB(b) - b|_1 + E |G_BA(a) - a|_1)
with the least-squares adversarial loss by default (LSGAN, as in the paper; any kind of
genlab.math.gan_losses in `loss`). The L1 terms are mean absolute errors per pixel in data space.

Domains: A = the task's sources (genlab.data.tasks; default invert, MNIST-style <-> inverted),
B = the dataset's images. The pairs are never seen: each batch x of B examples is split in
halves, a = source_of(x[:B//2]) and b = x[B//2:], so no example gives both an a and a b.
translate(source) = G_AB(source); evaluation compares it with the true target on the test split.

Sampling: sample(n) = G_AB(bank[i mod filled]), translations of the sources of the first 64
domain-A training examples, kept in the `source_bank` buffer (see genlab.models.pix2pix);
deterministic, the `generator` argument is unused.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor

from genlab.data import tasks
from genlab.data.spec import DataSpec
from genlab.errors import GenlabError
from genlab.math.gan_losses import critic_loss, generator_loss
from genlab.models.base import GenerativeModel, Phase, adam
from genlab.models.pix2pix import bank_sources, register_bank, remember_sources, to_data, to_net
from genlab.nn.patchgan import PatchCritic
from genlab.nn.unet import UNetGenerator
from genlab.registry import MODELS


@dataclass
class CycleGANConfig:
    task: Literal["inpaint", "edges", "invert"] = "invert"  # domain A = sources of this task
    channels: tuple[int, ...] = (64, 128)  # U-Net and PatchGAN widths per stride-2 level
    loss: Literal["minimax", "ns", "ls", "hinge"] = "ls"  # adversarial loss (math/gan_losses)
    cycle_weight: float = 10.0  # lambda of the cycle-consistency L1 terms
    identity_weight: float = 0.0  # weight of the identity L1 terms (the paper: 0.5 * lambda)
    norm: Literal["batch", "instance", "none"] = "batch"
    beta1: float = 0.5  # Adam beta1 (DCGAN recipe)


@MODELS.register("cyclegan", "CycleGAN: two U-Nets, two PatchGANs, LS loss + cycle L1, unpaired")
class CycleGAN(GenerativeModel):
    """Unpaired translation A <-> B: two adversarial losses + cycle_weight * L_cyc (Zhu et al.)."""

    config_class = CycleGANConfig
    data_kinds = ("image",)

    def __init__(self, cfg: CycleGANConfig, spec: DataSpec) -> None:
        super().__init__(cfg, spec)
        c, h, w = spec.shape
        self.generator_ab = UNetGenerator(c, c, (h, w), cfg.channels, norm=cfg.norm)
        self.generator_ba = UNetGenerator(c, c, (h, w), cfg.channels, norm=cfg.norm)
        self.critic_a = PatchCritic(c, (h, w), cfg.channels, norm=cfg.norm)
        self.critic_b = PatchCritic(c, (h, w), cfg.channels, norm=cfg.norm)
        register_bank(self)

    def source_of(self, x: Tensor) -> Tensor:
        return tasks.source_of(self.cfg.task, x, self.spec)

    def translate(self, source: Tensor, labels: Tensor | None = None) -> Tensor:
        """G_AB(source): domain A -> B, in the data range."""
        return to_data(self.generator_ab(to_net(source, self.spec)), self.spec)

    def translate_back(self, image: Tensor) -> Tensor:
        """G_BA(image): domain B -> A, in the data range."""
        return to_data(self.generator_ba(to_net(image, self.spec)), self.spec)

    def split(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """Unpaired domains from one batch: a = source_of(x[:B//2]), b = x[B//2:]."""
        half = len(x) // 2
        if half == 0:
            raise GenlabError(
                "cyclegan splits each batch into two domains: train.batch_size must be >= 2"
            )
        return self.source_of(x[:half]), x[half:]

    def critic_out(self, critic: torch.nn.Module, image: Tensor) -> Tensor:
        return critic(to_net(image, self.spec))  # (B, 1, h, w) patch scores

    def forward(self, batch: dict[str, Tensor], phase: str = "generator") -> dict[str, Tensor]:
        a, b = self.split(batch["x"])
        remember_sources(self, a)
        kind = self.cfg.loss
        if phase == "critic":
            with torch.no_grad():
                fake_b, fake_a = self.translate(a), self.translate_back(b)
            loss_a = critic_loss(
                kind, self.critic_out(self.critic_a, a), self.critic_out(self.critic_a, fake_a)
            )
            loss_b = critic_loss(
                kind, self.critic_out(self.critic_b, b), self.critic_out(self.critic_b, fake_b)
            )
            return {"loss": loss_a + loss_b, "critic_a": loss_a, "critic_b": loss_b}
        if phase == "generator":
            fake_b, fake_a = self.translate(a), self.translate_back(b)
            adv_ab = generator_loss(kind, self.critic_out(self.critic_b, fake_b))
            adv_ba = generator_loss(kind, self.critic_out(self.critic_a, fake_a))
            cycle_a = (self.translate_back(fake_b) - a).abs().mean()
            cycle_b = (self.translate(fake_a) - b).abs().mean()
            parts = {"adv_ab": adv_ab, "adv_ba": adv_ba, "cycle_a": cycle_a, "cycle_b": cycle_b}
            loss = adv_ab + adv_ba + self.cfg.cycle_weight * (cycle_a + cycle_b)
            if self.cfg.identity_weight > 0:
                parts["identity"] = (self.translate(b) - b).abs().mean() + (
                    self.translate_back(a) - a
                ).abs().mean()
                loss = loss + self.cfg.identity_weight * parts["identity"]
            return {"loss": loss, **parts}
        raise ValueError(f"unknown phase {phase!r} of cyclegan; phases are critic, generator")

    def phases(self, lr: float) -> list[Phase]:
        opt = adam(lr, (self.cfg.beta1, 0.999))
        critics = [*self.critic_a.parameters(), *self.critic_b.parameters()]
        generators = [*self.generator_ab.parameters(), *self.generator_ba.parameters()]
        return [Phase("critic", critics, opt), Phase("generator", generators, opt)]

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
        """G_AB of the stored training sources (deterministic; `generator` is unused)."""
        return self.translate(bank_sources(self, n))
