"""Generative adversarial networks: one model; losses, architectures and tricks are config values.

The generator G and the critic D play min_G max_D V(D, G) with
    V(D, G) = E_x log D(x) + E_z log(1 - D(G(z)))
(Goodfellow et al. arXiv:1406.2661; [000, 001, 002, 003, 004]). `loss` picks the objective pair,
written once in genlab.math.gan_losses: minimax, non-saturating `ns` (the generator minimises
-E log D(G(z))), least squares `ls` with targets (a, b, c) (Mao et al. arXiv:1611.04076), `wgan`
(E D(G(z)) - E D(x) with weight clipping, RMSProp and n_critic critic steps per generator step,
Arjovsky et al. arXiv:1701.07875, Algorithm 1 of [001]), `wgan-gp` (+ lambda E (|grad D(x_hat)| -
1)^2, Gulrajani et al. arXiv:1704.00028) and `hinge` (Lim & Ye arXiv:1705.02894; with spectral
normalisation, Miyato et al. arXiv:1802.05957, this is SN-GAN [003]).

Architectures: `mlp` for vectors (and small images) and `dcgan` (Radford et al. arXiv:1511.06434:
strided convolutions, batch norm, ReLU / LeakyReLU(0.2), tanh output, N(0, 0.02) initialisation,
Adam lr 2e-4 beta1 0.5) [000, 002, 003, 004]. Conditional GAN (Mirza & Osindero arXiv:1411.1784
[000, 001, 002, 004]): the one-hot class is concatenated to z for G; for D it is concatenated to
the flattened input of an MLP critic, or appended to an image as one constant channel per class
(channel k is 1 everywhere for class k, 0 otherwise) for a conv critic.

Tricks against mode collapse and instability, each off by default:
- label_smoothing s: one-sided, real examples get target 1 - s (minimax / ns only; Salimans et
  al. arXiv:1606.03498 [002]).
- minibatch_discrimination B: B kernels (each of dimension C = 16) of Salimans et al. on the
  critic's penultimate features.
- minibatch_stddev: the batch's mean standard deviation as one extra feature / channel on the
  critic's penultimate features (Karras et al. arXiv:1710.10196, ProGAN [000, 003]).
- replay r: experience replay [000] (Shrivastava et al. arXiv:1612.07828 call it a history of
  refined images): in the critic phase the first round(r * B) fake examples are drawn from a
  buffer of `replay_size` past generator outputs. Every generated critic-phase batch is pushed:
  appended until the buffer is full, then written over random slots, so older samples survive
  with geometrically decaying probability. The buffer is a persistent module buffer (checkpoints
  restore it exactly).
- pack m: PacGAN (Lin et al. arXiv:1712.04086): the critic judges m examples jointly, joined
  along features / channels (genlab.nn.gan.pack_samples); it sees B // m rows and the last
  B mod m examples of a batch are dropped. The gradient penalty is then taken per packed row.
- unrolled k: unrolled GAN (Metz et al. arXiv:1611.02163 [002]): the generator's loss is taken
  against the critic after k differentiable SGD steps (step size unrolled_lr) on the critic loss,
  run on a functional copy of the critic's parameters and buffers (torch.func.functional_call)
  with the graph kept, so G's gradient sees how D would respond. The real critic is unchanged.
  The unrolled steps use the adversarial loss only (no gradient penalty, no clipping).

Notes. The critic sees images mapped from spec.value_range to [-1, 1], the range of G's tanh.
A critic with a gradient penalty or spectral normalisation has no batch norm: batch norm makes
D(x_i) depend on the other examples, so the per-example gradient norm that WGAN-GP penalises is
not the critic's (Gulrajani et al. section 4 recommend layer norm or none; genlab uses none), and
it would undo the Lipschitz bound that spectral normalisation enforces.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import functional_call

from genlab.data.spec import DataSpec
from genlab.errors import GenlabError
from genlab.math.gan_losses import critic_loss, generator_loss, gradient_penalty
from genlab.models.adversarial import (
    adversarial_optimizer,
    clip_after_critic_step,
    from_unit_range,
    to_unit_range,
)
from genlab.models.base import GenerativeModel, Phase
from genlab.nn import sync
from genlab.nn.conv import halvings
from genlab.nn.gan import Critic, Generator, pack_samples
from genlab.nn.msg import MSGCritic, MSGGenerator, image_pyramid
from genlab.nn.style import StyleGenerator
from genlab.registry import MODELS


@dataclass
class GANConfig:
    loss: Literal["minimax", "ns", "ls", "wgan", "wgan-gp", "hinge"] = "ns"
    # auto: dcgan for images that can be halved at least once, else mlp. style: the style-based
    # generator with a DCGAN critic; msg: MSG-GAN's multi-scale generator and critic (images).
    arch: Literal["auto", "mlp", "dcgan", "style", "msg"] = "auto"
    latent_dim: int = 64
    hidden: tuple[int, ...] = (256, 256)  # MLP widths (generator and critic)
    channels: tuple[int, ...] = (64, 128)  # conv widths per stride-2 stage (critic order)
    n_critic: int = 1  # critic steps per generator step
    optimizer: Literal["adam", "rmsprop"] = "adam"
    beta1: float = 0.5  # Adam betas (beta1, beta2); DCGAN: (0.5, 0.999), WGAN-GP: (0, 0.9)
    beta2: float = 0.999
    clip: float = 0.01  # WGAN weight clipping to [-clip, clip]
    gp_weight: float = 10.0  # WGAN-GP lambda
    ls_a: float = 0.0  # LSGAN targets: fake a, real b; the generator aims at c
    ls_b: float = 1.0
    ls_c: float = 1.0
    spectral_norm: bool = False  # spectral normalisation of every critic Linear / Conv
    conditional: bool = False  # G and D see the one-hot class (CGAN)
    label_smoothing: float = 0.0  # one-sided: real target 1 - s (minimax / ns)
    minibatch_discrimination: int = 0  # number of kernels B (0 = off)
    minibatch_stddev: bool = False
    replay: float = 0.0  # fraction of each critic-phase fake batch drawn from the replay buffer
    replay_size: int = 1024
    pack: int = 1  # PacGAN: examples judged jointly by the critic
    unrolled: int = 0  # critic steps unrolled for the generator's loss (0 = off)
    unrolled_lr: float = 0.01  # SGD step size of the unrolled critic steps
    style_mixing: float = 0.9  # arch=style: share of training samples with two styles


@MODELS.register("gan", "GAN (non-saturating loss); MLP for vectors, DCGAN nets for images")
@MODELS.register("cgan", "conditional GAN: generator and critic see the class", conditional=True)
@MODELS.register("lsgan", "least-squares GAN (a, b, c) = (0, 1, 1)", loss="ls")
@MODELS.register(
    "wgan",
    "Wasserstein GAN: weight clipping, RMSProp, 5 critic steps",
    loss="wgan",
    n_critic=5,
    optimizer="rmsprop",
)
@MODELS.register(
    "wgan-gp",
    "WGAN with gradient penalty, Adam (0, 0.9), 5 critic steps",
    loss="wgan-gp",
    n_critic=5,
    beta1=0.0,
    beta2=0.9,
)
@MODELS.register(
    "sngan", "spectrally normalised critic with the hinge loss", loss="hinge", spectral_norm=True
)
class GAN(GenerativeModel):
    """GAN: min_G max_D E log D(x) + E log(1 - D(G(z))) and its variants (see the module doc).

    Sources: Goodfellow et al. arXiv:1406.2661; seeds [000, 001, 002, 003, 004].
    """

    config_class = GANConfig

    def __init__(self, cfg: GANConfig, spec: DataSpec) -> None:
        super().__init__(cfg, spec)
        self.check_config(cfg, spec)
        self.arch = self.resolve_arch(cfg.arch, spec)
        self.num_classes = spec.num_classes if cfg.conditional else 0
        self.generator = self.build_generator()
        self.critic = self.build_critic()
        if cfg.replay > 0:
            self.register_buffer("replay_x", torch.zeros(cfg.replay_size, *spec.shape))
            self.register_buffer("replay_y", torch.zeros(cfg.replay_size, dtype=torch.long))
            self.register_buffer("replay_count", torch.zeros((), dtype=torch.long))

    def build_generator(self) -> nn.Module:
        """z (B, latent_dim + K) -> (B, *shape), tanh-bounded for images.

        The place where further generator architectures (style-based, multi-scale) plug in:
        any module with this signature works with the rest of the model.
        """
        cfg, spec = self.cfg, self.spec
        if self.arch == "style":
            return StyleGenerator(cfg.latent_dim, spec, cfg.channels, num_classes=self.num_classes)
        if self.arch == "msg":
            return MSGGenerator(cfg.latent_dim, spec, cfg.channels, num_classes=self.num_classes)
        return Generator(
            cfg.latent_dim + self.num_classes,
            spec.shape,
            arch=self.arch,
            hidden=cfg.hidden,
            channels=cfg.channels,
            bounded=spec.value_range is not None,
        )

    def build_critic(self) -> nn.Module:
        """Packed, conditioned input (see critic_input) -> (B / pack,) scores."""
        cfg, spec, k = self.cfg, self.spec, self.num_classes
        if self.arch == "msg":  # one critic over every resolution of the pyramid
            return MSGCritic(spec, cfg.channels, num_classes=k)
        if self.arch != "mlp":  # class maps as extra channels, packing along channels
            c, h, w = spec.shape
            critic_shape: tuple[int, ...] = (cfg.pack * (c + k), h, w)
        else:  # flattened examples, one-hot and packing along features
            critic_shape = (cfg.pack * (spec.dim + k),)
        return Critic(
            critic_shape,
            arch="mlp" if self.arch == "mlp" else "dcgan",
            hidden=cfg.hidden,
            channels=cfg.channels,
            batch_norm=cfg.loss != "wgan-gp" and not cfg.spectral_norm,
            minibatch_stddev=cfg.minibatch_stddev,
            minibatch_discrimination=cfg.minibatch_discrimination,
            spectral_norm=cfg.spectral_norm,
        )

    @staticmethod
    def check_config(cfg: GANConfig, spec: DataSpec) -> None:
        if cfg.conditional and not spec.num_classes:
            raise GenlabError(f"model.conditional=true needs labels; {spec.name} has no classes")
        if cfg.label_smoothing and cfg.loss not in ("minimax", "ns"):
            raise GenlabError(
                f"model.label_smoothing applies to the minimax / ns losses, not loss={cfg.loss}"
            )
        if not 0 <= cfg.label_smoothing < 1:
            raise GenlabError(f"model.label_smoothing must be in [0, 1), got {cfg.label_smoothing}")
        if not 0 <= cfg.replay < 1:
            raise GenlabError(f"model.replay must be in [0, 1), got {cfg.replay}")
        if cfg.replay > 0 and cfg.replay_size < 1:
            raise GenlabError(f"model.replay_size must be >= 1, got {cfg.replay_size}")
        for name in ("pack", "n_critic", "latent_dim"):
            if getattr(cfg, name) < 1:
                raise GenlabError(f"model.{name} must be >= 1, got {getattr(cfg, name)}")
        if cfg.unrolled < 0 or cfg.minibatch_discrimination < 0:
            raise GenlabError("model.unrolled and model.minibatch_discrimination must be >= 0")
        if cfg.arch == "msg":
            tricks = {
                "pack": cfg.pack > 1,
                "minibatch_stddev": cfg.minibatch_stddev,
                "minibatch_discrimination": cfg.minibatch_discrimination > 0,
                "replay": cfg.replay > 0,
                "unrolled": cfg.unrolled > 0,
                "spectral_norm": cfg.spectral_norm,
                "loss=wgan-gp": cfg.loss == "wgan-gp",
            }
            used = [name for name, on in tricks.items() if on]
            if used:
                raise GenlabError(f"model.arch=msg does not support {', '.join(used)} yet")

    @staticmethod
    def resolve_arch(arch: str, spec: DataSpec) -> str:
        """auto: dcgan for images that can be halved at least once, else mlp."""
        can_conv = spec.is_image and halvings(spec.shape[1], spec.shape[2], 1) > 0
        if arch in ("dcgan", "style", "msg") and not can_conv:
            raise GenlabError(
                f"model.arch={arch} needs images with even sides >= 4; {spec.name} has shape "
                f"{tuple(spec.shape)}"
            )
        if arch == "auto":
            return "dcgan" if can_conv else "mlp"
        return arch

    # ------------------------------------------------------------------------------ data space
    def to_critic_space(self, x: Tensor) -> Tensor:
        """Data space -> G's output space: value_range -> [-1, 1]; unbounded data unchanged."""
        return to_unit_range(x, self.spec)

    def to_data_space(self, x: Tensor) -> Tensor:
        return from_unit_range(x, self.spec)

    # ----------------------------------------------------------------------------------- nets
    def generate(
        self, z: Tensor, labels: Tensor | None, noise: torch.Generator | None = None
    ) -> Tensor | list[Tensor]:
        """G(z[, y]) in critic space: (B, *shape), or MSG-GAN's list coarse to fine.

        `noise` draws the style generator's per-layer noise (sampling passes its generator).
        """
        if self.arch == "style":
            return torch.tanh(self.generator(z, labels, generator=noise, **self.mixing(z)))
        if self.arch == "msg":
            return [torch.tanh(level) for level in self.generator(z, labels)]
        if self.num_classes:
            z = torch.cat([z, F.one_hot(labels, self.num_classes).to(z.dtype)], dim=1)
        return self.generator(z)

    def mixing(self, z: Tensor) -> dict[str, Tensor]:
        """Style mixing regularisation (Karras et al. arXiv:1812.04948, section 3.1): while
        training, a style_mixing share of samples take their styles from a second z from a random
        layer on; sampling uses one z."""
        layers = self.generator.num_style_layers
        if not self.training or self.cfg.style_mixing <= 0 or layers < 2:
            return {}
        n = len(z)
        crossover = torch.randint(1, layers, (n,), device=z.device)
        mixed = torch.rand(n, device=z.device) < self.cfg.style_mixing
        return {"z2": torch.randn_like(z), "mix_layer": torch.where(mixed, crossover, layers)}

    def critic_input(self, x: Tensor, labels: Tensor | None) -> Tensor:
        """(B, *shape) [+ labels] -> the critic's packed input (B / pack, ...)."""
        if self.arch == "mlp":
            x = x.flatten(1)
        if self.num_classes:
            code = F.one_hot(labels, self.num_classes).to(x.dtype)  # (B, K)
            if x.ndim == 4:
                code = code[:, :, None, None].expand(-1, -1, *x.shape[2:])  # (B, K, H, W)
            x = torch.cat([x, code], dim=1)
        return pack_samples(x, self.cfg.pack)

    def judge(self, x: Tensor, labels: Tensor | None) -> Tensor:
        """Critic scores (B / pack,) of critic-space examples x (B, *shape).

        MSG-GAN's critic takes every resolution: real images become their average-pooled pyramid.
        """
        if self.arch == "msg":
            levels = x if isinstance(x, list) else image_pyramid(x, self.generator.levels)
            return self.critic(levels, labels)
        return self.critic(self.critic_input(x, labels))

    # -------------------------------------------------------------------------------- training
    def real_batch(self, batch: dict[str, Tensor]) -> tuple[Tensor, Tensor | None]:
        """Critic-space real examples and labels, trimmed to a multiple of pack."""
        x = batch["x"]
        n = len(x) - len(x) % self.cfg.pack
        if n == 0:
            raise GenlabError(f"batch of {len(x)} is smaller than model.pack={self.cfg.pack}")
        labels = None
        if self.num_classes:
            if "y" not in batch:
                raise GenlabError("conditional GAN needs labelled data")
            labels = batch["y"][:n]
        return self.to_critic_space(x[:n]), labels

    def ls_targets(self) -> tuple[float, float, float]:
        return (self.cfg.ls_a, self.cfg.ls_b, self.cfg.ls_c)

    def forward(self, batch: dict[str, Tensor], phase: str = "critic") -> dict[str, Tensor]:
        """Loss of the "critic" or the "generator" phase on a batch of real examples."""
        x, labels = self.real_batch(batch)
        if phase == "critic":
            return self.critic_phase(x, labels)
        if phase == "generator":
            return self.generator_phase(x, labels)
        raise ValueError(f"unknown phase {phase!r}; a GAN has phases critic and generator")

    def critic_phase(self, x: Tensor, labels: Tensor | None) -> dict[str, Tensor]:
        cfg = self.cfg
        with torch.no_grad():
            fake = self.generate(self.prior_sample(len(x)), labels)
        fake_labels = labels
        if cfg.replay > 0:
            fake, fake_labels = self.replay_mix(fake, labels)
        real_out, fake_out = self.judge(x, labels), self.judge(fake, fake_labels)
        adv = critic_loss(
            cfg.loss,
            real_out,
            fake_out,
            ls=self.ls_targets(),
            real_target=1.0 - cfg.label_smoothing,
        )
        out = {"d_real": real_out.mean().detach(), "d_fake": fake_out.mean().detach()}
        loss = adv
        if cfg.loss == "wgan-gp":
            # x_hat per packed row: the penalty keeps the packed critic 1-Lipschitz in its input.
            # Interpolates are judged with the real labels (replayed fakes may carry others).
            m = cfg.pack
            gp = gradient_penalty(
                lambda g: self.judge(g.flatten(0, 1), labels),
                x.unflatten(0, (-1, m)),
                fake.unflatten(0, (-1, m)),
            )
            loss = adv + cfg.gp_weight * gp
            out["gp"] = gp.detach()
        return {"loss": loss, "adv": adv.detach(), **out}

    def generator_phase(self, x: Tensor, labels: Tensor | None) -> dict[str, Tensor]:
        fake = self.generate(self.prior_sample(len(x)), labels)
        if self.cfg.unrolled > 0:
            fake_out = self.unrolled_judge(x, fake, labels)
        else:
            fake_out = self.judge(fake, labels)
        loss = generator_loss(self.cfg.loss, fake_out, ls=self.ls_targets())
        return {"loss": loss}

    def unrolled_judge(self, x: Tensor, fake: Tensor, labels: Tensor | None) -> Tensor:
        """Scores of `fake` by the critic after cfg.unrolled differentiable SGD steps.

        theta_{k+1} = theta_k - unrolled_lr * grad_theta L_D(theta_k) with create_graph=True, on
        copies: the critic's parameters are used functionally and its buffers (batch-norm
        statistics, spectral-norm vectors) are cloned, so the module itself is untouched.
        """
        cfg = self.cfg
        params = dict(self.critic.named_parameters())
        buffers = {n: b.clone() for n, b in self.critic.named_buffers()}
        real_in, fake_in = self.critic_input(x, labels), self.critic_input(fake, labels)

        def critic(p: dict[str, Tensor], h: Tensor) -> Tensor:
            return functional_call(self.critic, {**p, **buffers}, (h,))

        for _ in range(cfg.unrolled):
            loss = critic_loss(
                cfg.loss,
                critic(params, real_in),
                critic(params, fake_in),
                ls=self.ls_targets(),
                real_target=1.0 - cfg.label_smoothing,
            )
            grads = torch.autograd.grad(
                loss, list(params.values()), create_graph=True, allow_unused=True
            )
            params = {
                n: p if g is None else p - cfg.unrolled_lr * g
                for (n, p), g in zip(params.items(), grads)
            }
        return critic(params, fake_in)

    @torch.no_grad()
    def replay_mix(self, fake: Tensor, labels: Tensor | None) -> tuple[Tensor, Tensor | None]:
        """Replace the first round(replay * B) fakes by buffer draws, then push the new fakes.

        A conditional model replays each stored sample with its stored label. Under
        train.grad_accum (genlab.nn.sync) every micro-batch of a step draws from the buffer as
        the step's first one found it and only the first pushes, as every DDP process draws from
        rank 0's buffer (broadcast) and only rank 0's pushes are kept.
        """
        later = sync.later_micro_batch()
        if not later and sync.micro_batch_index() is not None:
            buffers = (self.replay_x, self.replay_y, self.replay_count)
            self._replay_start = tuple(t.clone() for t in buffers)  # the step's buffer
        start = getattr(self, "_replay_start", None) if later else None
        replay_x, replay_y, count_t = start or (self.replay_x, self.replay_y, self.replay_count)
        b = len(fake)
        count = int(count_t)
        k = min(round(self.cfg.replay * b), b)
        mixed, mixed_labels = fake, labels
        if count > 0 and k > 0:
            idx = torch.randint(count, (k,), device=fake.device)
            mixed = torch.cat([replay_x[idx].to(fake.dtype), fake[k:]])
            if labels is not None:
                mixed_labels = torch.cat([replay_y[idx], labels[k:]])
        if not later:
            self.replay_push(fake, labels)
        return mixed, mixed_labels

    @torch.no_grad()
    def replay_push(self, fake: Tensor, labels: Tensor | None) -> None:
        """Append to the buffer until it is full, then overwrite random slots."""
        size = self.cfg.replay_size
        count = int(self.replay_count)
        free = min(size - count, len(fake))
        if labels is None:
            labels = torch.zeros(len(fake), dtype=torch.long, device=fake.device)
        self.replay_x[count : count + free] = fake[:free]
        self.replay_y[count : count + free] = labels[:free]
        rest, rest_labels = fake[free:][-size:], labels[free:][-size:]
        if len(rest):
            slots = torch.randperm(size, device=fake.device)[: len(rest)]
            self.replay_x[slots] = rest
            self.replay_y[slots] = rest_labels
        self.replay_count.fill_(count + free)

    def phases(self, lr: float) -> list[Phase]:
        """Critic x n_critic, then generator; Adam (beta1, beta2) or RMSProp (WGAN)."""
        cfg = self.cfg
        opt = adversarial_optimizer(cfg.optimizer, cfg.loss, lr, cfg.beta1, cfg.beta2)
        return [
            Phase("critic", list(self.critic.parameters()), opt, repeat=cfg.n_critic),
            Phase("generator", list(self.generator.parameters()), opt),
        ]

    def after_step(self, phase: str) -> None:
        """WGAN: clip every critic parameter to [-clip, clip] after each critic step."""
        clip_after_critic_step(phase, self.cfg.loss, self.critic, self.cfg.clip)

    # -------------------------------------------------------------------------------- sampling
    def default_labels(self, n: int, labels: Tensor | None) -> Tensor | None:
        """Conditional sampling without labels cycles through the classes."""
        if not self.num_classes:
            return None
        if labels is None:
            return torch.arange(n, device=self.device) % self.num_classes
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
        """G(z), z ~ N(0, I) drawn with `generator`, mapped to data space."""
        z = self.prior_sample(n, generator)
        x = self.generate(z, self.default_labels(n, labels), noise=generator)
        return self.to_data_space(x[-1] if isinstance(x, list) else x)


@MODELS.register(
    "dcgan", "DCGAN: strided-conv generator and critic, batch norm (images)", arch="dcgan"
)
class DCGAN(GAN):
    """DCGAN (Radford et al. arXiv:1511.06434): the GAN with arch=dcgan, for images only."""

    data_kinds = ("image",)


@MODELS.register(
    "stylegan",
    "style-based generator (mapping network, AdaIN, per-layer noise, style mixing), images",
    arch="style",
)
class StyleGAN(GAN):
    """StyleGAN-style generator (Karras et al. arXiv:1812.04948; [001], [003], [004]):
    w = f(z) by a mapping MLP, each layer x <- AdaIN(conv(x) + noise, A(w)) with
    AdaIN(x, y) = y_s (x - mu(x)) / sigma(x) + y_b, style mixing while training; DCGAN critic."""

    data_kinds = ("image",)


@MODELS.register(
    "msggan",
    "MSG-GAN: multi-scale generator outputs judged together by one critic (images)",
    arch="msg",
    loss="hinge",
)
class MSGGAN(GAN):
    """MSG-GAN (Karnewar & Wang arXiv:1903.06048; [003]): G emits an image at every resolution,
    the critic sees all of them (real images as their average-pooled pyramid), so gradients
    reach every scale at once: multi-scale growth without ProGAN's stage schedule."""

    data_kinds = ("image",)
