"""What the diffusion and score models share (functions and one network wrapper, no base class):
the network built from the data spec, the data range, label dropout and classifier-free guidance,
sampling labels, the sampler choice and the denoising score matching loss.

Data space -> model space. Bounded data (images) is mapped to [-1, 1] by to_unit_range and back by
from_unit_range of genlab.models.adversarial (x_unit = 2 (x - low) / (high - low) - 1), as Ho et
al. scale images; unbounded data (2-D toys) is used as it is. Densities change by the map's
Jacobian: log p_data(x) = log p_unit(x_unit) + D log(2 / (high - low)) (`log_det_to_unit`).

Classifier-free guidance (Ho & Salimans arXiv:2207.12598; [001] "conditional setting"): one
network is trained on (x, y) and, with probability p_uncond (`label_dropout`), on (x, null), and
sampled with eps_w(x, y) = (1 + w) eps(x, y) - w eps(x, null): w = 0 is the conditional model,
w = -1 the unconditional one. The null class is the label -1 (genlab.nn.embeddings.NULL_LABEL).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor, nn

from genlab.data.spec import DataSpec
from genlab.errors import GenlabError
from genlab.nn.embeddings import NULL_LABEL
from genlab.nn.time_mlp import TimeMLP
from genlab.nn.time_unet import TimeUNet, zero_
from genlab.registry import unknown


@dataclass
class DenoiserConfig:
    """Network and conditioning keys shared by DDPM, NCSN and score SDEs (model.<field>)."""

    arch: Literal["auto", "unet", "mlp"] = "auto"  # auto: U-Net for images, MLP for vectors
    hidden: tuple[int, ...] = (256, 256, 256)  # TimeMLP widths
    emb_dim: int = 128  # TimeMLP time-embedding width
    channels: tuple[int, ...] = (32, 64, 64)  # U-Net widths per resolution (multiples of the 1st)
    num_res_blocks: int = 2  # U-Net residual blocks per level
    attention: tuple[int, ...] = ()  # U-Net sides with self-attention; () = the lowest resolution
    dropout: float = 0.0
    conditional: bool = False  # class-conditional network (with a null class for guidance)
    label_dropout: float = 0.1  # p_uncond: share of training labels replaced by the null class
    guidance: float = 0.0  # default guidance weight w at sampling (conditional models)


def build_unet(
    cfg: DenoiserConfig,
    shape: tuple[int, ...],
    *,
    out_channels: int,
    num_classes: int = 0,
    cond_channels: int = 0,
    context_dim: int = 0,
    time_scale: float = 1.0,
) -> TimeUNet:
    """A TimeUNet for (C, H, W) inputs from the shared network keys (channels, num_res_blocks,
    attention, dropout), with a concatenated image condition and/or cross-attention context."""
    base = cfg.channels[0]
    if any(c % base for c in cfg.channels):
        raise GenlabError(f"model.channels must be multiples of the first; got {cfg.channels}")
    c, h, w = shape
    return TimeUNet(
        c,
        (h, w),
        channels=base,
        channel_mults=[ch // base for ch in cfg.channels],
        num_res_blocks=cfg.num_res_blocks,
        attention_resolutions=list(cfg.attention) or None,
        dropout=cfg.dropout,
        num_classes=num_classes,
        out_channels=out_channels,
        cond_channels=cond_channels,
        context_dim=context_dim,
        norm_groups=math.gcd(8, *cfg.channels),  # divides every width and their sums
        time_scale=time_scale,
    )


class Denoiser(nn.Module):
    """x (B, *shape), t (B,) [, labels (B,)] -> (B, out_factor * C, ...) in x's layout.

    A TimeUNet for images (arch unet) or a TimeMLP (arch mlp; images are flattened), both from
    genlab.nn, each with a zero-initialised output layer. `time_scale` stretches a continuous t
    or log sigma to the sinusoid's range.
    """

    def __init__(
        self, cfg: DenoiserConfig, spec: DataSpec, *, out_factor: int = 1, time_scale: float = 1.0
    ) -> None:
        super().__init__()
        self.spec, self.out_factor = spec, out_factor
        self.arch = cfg.arch if cfg.arch != "auto" else ("unet" if spec.is_image else "mlp")
        classes = spec.num_classes if cfg.conditional else 0
        if cfg.conditional and not classes:
            raise GenlabError(f"model.conditional=true needs labels; {spec.name} has no classes")
        if self.arch == "unet":
            if not spec.is_image:
                raise GenlabError(f"arch=unet needs images; {spec.name} is {spec.describe()}")
            c = spec.shape[0]
            self.net: nn.Module = build_unet(
                cfg,
                spec.shape,
                out_channels=out_factor * c,
                num_classes=classes,
                time_scale=time_scale,
            )
        else:
            self.net = TimeMLP(
                spec.dim,
                cfg.hidden,
                out_factor * spec.dim,
                emb_dim=cfg.emb_dim,
                num_classes=classes,
                time_scale=time_scale,
            )
            zero_(self.net.head)  # start at output 0 like the U-Net (DDPM code): stable sampling

    def forward(self, x: Tensor, t: Tensor, labels: Tensor | None = None) -> Tensor:
        if self.arch == "unet":
            return self.net(x, t, labels)
        out = self.net(x.flatten(1), t, labels)  # (B, out_factor * D)
        if x.ndim == 2:
            return out
        c = self.out_factor * x.shape[1]
        return out.view(x.shape[0], c, *x.shape[2:])


def log_det_to_unit(spec: DataSpec) -> float:
    """log |det d x_unit / d x| = D log(2 / (high - low)) for bounded data, 0 otherwise."""
    if spec.value_range is None:
        return 0.0
    low, high = spec.value_range
    return spec.dim * math.log(2.0 / (high - low))


def labels_of(batch: dict[str, Tensor], conditional: bool) -> Tensor | None:
    """The batch's labels for a conditional model (None for an unconditional one)."""
    if not conditional:
        return None
    if "y" not in batch:
        raise GenlabError("a conditional model needs labelled data")
    return batch["y"]


def drop_labels(
    labels: Tensor | None, p: float, generator: torch.Generator | None = None
) -> Tensor:
    """Replace each label by the null class (-1) with probability p (label dropout, p_uncond)."""
    if labels is None or p <= 0:
        return labels
    drop = torch.rand(labels.shape, generator=generator, device=labels.device) < p
    return labels.masked_fill(drop, NULL_LABEL)


def training_labels(batch: dict[str, Tensor], cfg: DenoiserConfig) -> Tensor | None:
    """The labels a denoiser trains on: the batch's, each dropped to the null class with
    probability cfg.label_dropout (None for an unconditional model)."""
    return drop_labels(labels_of(batch, cfg.conditional), cfg.label_dropout)


def sampling_labels(
    model: nn.Module, n: int, labels: Tensor | None, conditional: bool, num_classes: int
) -> Tensor | None:
    """Labels for n samples: none for an unconditional model; cycled classes 0..K-1 when a
    conditional model gets none; else the given ones as a (n,) long tensor (-1 = unconditional)."""
    if not conditional:
        if labels is not None:
            raise GenlabError("labels given to an unconditional model (model.conditional=false)")
        return None
    if labels is None:
        return torch.arange(n, device=model.device) % num_classes
    return model.check_labels(n, labels)


def guided(
    fn: Callable[[Tensor, Tensor, Tensor | None], Tensor],
    x: Tensor,
    t: Tensor,
    labels: Tensor | None,
    w: float,
) -> tuple[Tensor, Tensor | None]:
    """(out(x, y), out(x, null)) from one batched call of fn(x, t, labels); (out, None) when no
    guidance is needed (w = 0 or no labels), so the usual case costs one call on B rows."""
    if labels is None or w == 0:
        return fn(x, t, labels), None
    null = torch.full_like(labels, NULL_LABEL)
    both = fn(torch.cat([x, x]), torch.cat([t, t]), torch.cat([labels, null]))
    cond, uncond = both.chunk(2, dim=0)
    return cond, uncond


def guide(cond: Tensor, uncond: Tensor | None, w: float) -> Tensor:
    """Classifier-free guidance: (1 + w) eps(x, y) - w eps(x, null) (Ho & Salimans eq. (6))."""
    return cond if uncond is None else (1 + w) * cond - w * uncond


def choose_sampler(name: str | None, default: str, samplers: tuple[str, ...], kw: dict) -> str:
    """The sampler to run (the config's default when None); unknown names and options are errors."""
    name = name or default
    if name not in samplers:
        raise GenlabError(unknown("sampler", name, samplers))
    if kw:
        raise GenlabError(f"unknown sampling option(s) {', '.join(sorted(kw))} for {name}")
    return name


def check_guidance(guidance: float | None, cfg: DenoiserConfig) -> float:
    """The guidance weight: the config's unless given; only conditional models have one."""
    if guidance is None:
        return cfg.guidance
    if not cfg.conditional:
        raise GenlabError("guidance needs a class-conditional model (model.conditional=true)")
    return float(guidance)


def dsm_loss(score: Tensor, z: Tensor, std: Tensor) -> Tensor:
    """Denoising score matching with lambda = std^2, per example: (B,).

    x_t = mean(x_0, t) + std z with z ~ N(0, I) has grad log q(x_t | x_0) = -z / std, so
    lambda(std) / 2 ||s(x_t) - grad log q||^2 = std^2 / 2 ||s(x_t) + z / std||^2, summed over
    dimensions. Source: Vincent 2011; Song & Ermon arXiv:1907.05600 eq. (5)-(6) with
    lambda(sigma) = sigma^2; Song et al. arXiv:2011.13456 eq. (7) with lambda(t) = std(t)^2;
    [001] "denoising score matching". With score = -out / std it is ||out - z||^2 / 2.
    """
    return 0.5 * (std**2 * (score + z / std) ** 2).flatten(1).sum(dim=1)
