"""Latent diffusion: a DDPM over the codes of a trained genlab autoencoder or VAE (Rombach et al.
arXiv:2112.10752; [001] "DDPM", "conditional setting").

First stage. A trained, frozen ae/vae run (model.first_stage = its run directory). The model
layer never loads runs (imports flow models -> train, not back): genlab.train.run builds the LDM,
loads that run with its safe loader and hands the model over with `attach_first_stage`. The
first stage's weights are then part of the LDM's state dict, so every LDM checkpoint carries
them (the run also keeps a copy of the first stage's config.yaml and spec.json in RUN/first_stage,
so loading or resuming an LDM run does not need the first-stage run any more). Without a first
stage (models.build in the protocol tests, or an empty model.first_stage) the LDM builds a tiny
*untrained* autoencoder itself: that is only for tests; a real run sets model.first_stage.

Latent. z = scale_factor * E(x) with E(x) the encoder mean (VAE) or the code (AE), viewed as
`latent_shape` (e.g. a 16-d code as a 1 x 4 x 4 map for the U-Net; () keeps the code's own
shape, a spatial (C, h, w) one for a convolutional latent). scale_factor = 1 / std(E(x)) over all
entries of the first training batch (Rombach et al. section 4.3.2 and their code's
"scale_by_std"; its first micro-batch on rank 0 under DDP or train.grad_accum, see
genlab.nn.sync), estimated once and stored as a buffer, so the DDPM sees unit-variance latents
and its N(0, I) prior matches their scale. sample() draws z with the DDPM samplers and returns
D(z / scale_factor), clamped to the data range.

Network. A TimeUNet on a spatial latent, a TimeMLP on a flat one (arch auto). Class conditioning
(`cond`; Rombach et al. section 3.3 and figure 3):
  - concat: a learned class map (cond_channels, h, w) concatenated to z_t as input channels (a
    flat latent gets a learned class vector of cond_channels entries concatenated to z_t);
  - cross-attention: the class embedded as context_tokens tokens of width context_dim, which
    every attention block of the U-Net attends to (softmax(Q K^T / sqrt(d)) V, their eq. (3));
    this needs a spatial latent.
Label -1 is the learned null class, so label dropout and classifier-free guidance work as in
genlab.models.denoising. Training and sampling are those of genlab.models.ddpm.DDPM on z.
"""

from __future__ import annotations

import dataclasses
import logging
import math
from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor, nn

from genlab.data.spec import DataSpec
from genlab.errors import GenlabError
from genlab.models.autoencoder import Autoencoder, AutoencoderConfig
from genlab.models.base import Encoder, GenerativeModel
from genlab.models.ddpm import DDPM, DDPMConfig
from genlab.models.denoising import build_unet, training_labels
from genlab.nn.sync import broadcast_
from genlab.nn.time_mlp import TimeMLP
from genlab.nn.time_unet import zero_
from genlab.registry import MODELS

log = logging.getLogger(__name__)

CONDITIONING = ("none", "concat", "cross-attention")


@dataclass
class LDMConfig(DDPMConfig):
    first_stage: str = ""  # trained ae/vae run directory; "" = untrained stand-in (tests only)
    latent_shape: tuple[int, ...] = ()  # view of the code, e.g. [1, 4, 4]; () = as encoded
    latent_dim: int = 16  # code size of the untrained stand-in first stage (no first_stage)
    cond: Literal["none", "concat", "cross-attention"] = "none"  # class conditioning
    cond_channels: int = 4  # concat: channels of the class map (entries of a flat latent's)
    context_dim: int = 32  # cross-attention: width of the class tokens
    context_tokens: int = 4  # cross-attention: number of class tokens

    def __post_init__(self) -> None:
        # `conditional` (of DenoiserConfig) follows `cond`: one switch, not two to keep in step
        self.conditional = self.cond != "none"


class LatentDenoiser(nn.Module):
    """z_t (B, *latent_shape), t (B,) [, labels (B,)] -> (B, out_factor * C, ...) (module doc).

    Labels -1 (or None) select the learned null class (index num_classes of the embeddings).
    """

    def __init__(
        self, cfg: LDMConfig, shape: tuple[int, ...], num_classes: int, out_factor: int
    ) -> None:
        super().__init__()
        self.shape, self.cond, self.num_classes = shape, cfg.cond, num_classes
        spatial = len(shape) == 3
        self.arch = cfg.arch if cfg.arch != "auto" else ("unet" if spatial else "mlp")
        if self.arch == "unet" and not spatial:
            raise GenlabError(
                f"arch=unet needs a spatial latent (C, h, w); the latent is {shape}: set "
                "model.latent_shape (e.g. [1, 4, 4] for a 16-d code) or model.arch=mlp"
            )
        if cfg.cond == "cross-attention" and self.arch != "unet":
            raise GenlabError(
                "cond=cross-attention needs the U-Net on a spatial latent: set model.latent_shape "
                "(e.g. [1, 4, 4] for a 16-d code) and model.arch=unet or auto"
            )
        k = num_classes + 1  # + the null class
        dim = math.prod(shape)
        if cfg.cond == "concat":
            size = cfg.cond_channels * (dim // shape[0] if spatial and self.arch == "unet" else 1)
            self.class_embed = nn.Embedding(k, size)  # a learned map (or vector) per class
        elif cfg.cond == "cross-attention":
            self.class_embed = nn.Embedding(k, cfg.context_tokens * cfg.context_dim)
            self.context_tokens, self.context_dim = cfg.context_tokens, cfg.context_dim
        extra = cfg.cond_channels if cfg.cond == "concat" else 0
        if self.arch == "unet":
            self.net: nn.Module = build_unet(
                cfg,
                shape,
                out_channels=out_factor * shape[0],
                cond_channels=extra,
                context_dim=cfg.context_dim if cfg.cond == "cross-attention" else 0,
            )
        else:
            self.net = TimeMLP(dim + extra, cfg.hidden, out_factor * dim, emb_dim=cfg.emb_dim)
            zero_(self.net.head)  # start at output 0 like the U-Net (as genlab's Denoiser)

    def class_index(self, labels: Tensor | None, b: int, device: torch.device) -> Tensor:
        """Labels -> embedding rows; -1 and None are the null class (row num_classes)."""
        if labels is None:
            return torch.full((b,), self.num_classes, dtype=torch.long, device=device)
        labels = labels.long()
        return torch.where(labels < 0, torch.full_like(labels, self.num_classes), labels)

    def forward(self, x: Tensor, t: Tensor, labels: Tensor | None = None) -> Tensor:
        b = x.shape[0]
        emb = None
        if self.cond != "none":
            emb = self.class_embed(self.class_index(labels, b, x.device)).to(x.dtype)
        if self.arch == "unet":
            if self.cond == "concat":
                return self.net(x, t, cond=emb.view(b, -1, *x.shape[2:]))
            if self.cond == "cross-attention":
                context = emb.view(b, self.context_tokens, self.context_dim)
                return self.net(x, t, context=context)
            return self.net(x, t)
        flat = x.flatten(1)
        out = self.net(flat if emb is None else torch.cat([flat, emb], dim=1), t)
        return out.view(b, -1, *x.shape[2:])


def stand_in_first_stage(cfg: LDMConfig, spec: DataSpec) -> Autoencoder:
    """A tiny untrained autoencoder (tests and the protocol only; real runs set first_stage)."""
    latent = math.prod(cfg.latent_shape) if cfg.latent_shape else cfg.latent_dim
    return Autoencoder(AutoencoderConfig(latent_dim=latent, hidden=(32,), channels=(8,)), spec)


@MODELS.register(
    "ldm",
    "latent diffusion: DDPM over a trained ae/vae's codes (model.first_stage=RUN; Rombach et al.)",
)
class LatentDiffusion(GenerativeModel):
    """DDPM in the scaled latent space of a frozen autoencoder (module doc)."""

    config_class = LDMConfig
    # a latent model of 2-D toys compresses nothing: images only
    data_kinds = ("image",)
    samplers = DDPM.samplers

    def __init__(
        self, cfg: LDMConfig, spec: DataSpec, *, first_stage: GenerativeModel | None = None
    ) -> None:
        super().__init__(cfg, spec)
        if cfg.conditional and not spec.num_classes:
            raise GenlabError(f"model.cond={cfg.cond} needs labels; {spec.name} has no classes")
        self.register_buffer("scale_factor", torch.tensor(1.0))
        self.register_buffer("scale_estimated", torch.tensor(False))
        if first_stage is None:
            first_stage = stand_in_first_stage(cfg, spec)
        self.attach_first_stage(first_stage)

    def attach_first_stage(self, model: GenerativeModel) -> None:
        """Use `model` (a trained ae/vae on the same data) as the frozen first stage.

        Rebuilds the diffusion model for its latent shape and resets scale_factor (estimated
        again on the next training batch). Called by genlab.train.run for model.first_stage.
        """
        cfg, spec = self.cfg, self.spec
        if not isinstance(model, Encoder):
            raise GenlabError(f"the first stage must be an ae or vae; got {type(model).__name__}")
        if getattr(model.cfg, "conditional", False):
            raise GenlabError("the first stage must be unconditional (an ae or vae, not a cvae)")
        if tuple(model.spec.shape) != tuple(spec.shape):
            raise GenlabError(
                f"the first stage was trained on {model.spec.shape} data; {spec.name} is "
                f"{spec.shape}"
            )
        self.first_stage = model.eval().requires_grad_(False)
        with torch.no_grad():
            p = next(model.parameters())
            code = model.encode(torch.zeros(1, *spec.shape, dtype=p.dtype, device=p.device))
        self.code_shape = tuple(code.shape[1:])
        shape = tuple(cfg.latent_shape) or self.code_shape
        if math.prod(shape) != math.prod(self.code_shape):
            raise GenlabError(
                f"model.latent_shape {list(shape)} does not hold the first stage's "
                f"{list(self.code_shape)} code"
            )
        self.latent_shape = shape
        classes = spec.num_classes if cfg.conditional else 0
        latent_spec = DataSpec(f"{spec.name}-latent", shape, None, classes)
        out_factor = 2 if cfg.loss == "hybrid" else 1
        net = LatentDenoiser(cfg, shape, classes, out_factor)
        fields = {f.name: getattr(cfg, f.name) for f in dataclasses.fields(DDPMConfig)}
        self.diffusion = DDPM(DDPMConfig(**fields), latent_spec, net=net)
        self.scale_factor.fill_(1.0)
        self.scale_estimated.fill_(False)

    def train(self, mode: bool = True) -> LatentDiffusion:
        super().train(mode)
        self.first_stage.eval()  # frozen: its dropout / batch norm stay in inference mode
        return self

    # ----- latent space -----

    @torch.no_grad()
    def encode_latent(self, x: Tensor) -> Tensor:
        """z = scale_factor * E(x), shape (B, *latent_shape)."""
        code = self.first_stage.encode(x)
        return self.scale_factor * code.reshape(len(x), *self.latent_shape)

    @torch.no_grad()
    def decode_latent(self, z: Tensor) -> Tensor:
        """D(z / scale_factor) in data space (clamped to the data range)."""
        x = self.first_stage.decode((z / self.scale_factor).reshape(len(z), *self.code_shape))
        if self.spec.value_range is not None:
            x = x.clamp(*self.spec.value_range)
        return x

    @torch.no_grad()
    def estimate_scale(self, x: Tensor) -> None:
        """scale_factor = 1 / std of the unscaled codes of x (Rombach et al. 4.3.2).

        Under torch.distributed every rank takes rank 0's value (genlab.nn.sync): shard 0 of the
        global batch, the batch one process with train.grad_accum estimates it on.
        """
        std = broadcast_(self.first_stage.encode(x).float().std().reshape(1))
        self.scale_factor.fill_(1.0 / max(float(std), 1e-8))
        self.scale_estimated.fill_(True)

    # ----- training and sampling -----

    def forward(self, batch: dict[str, Tensor], phase: str = "main") -> dict[str, Tensor]:
        x = batch["x"]
        if self.training and not bool(self.scale_estimated):
            self.estimate_scale(x)  # once, on the first training batch
        labels = training_labels(batch, self.cfg)
        return self.diffusion.losses(self.encode_latent(x), labels)

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
        **kw: object,
    ) -> Tensor:
        """Latents from the DDPM (sampler, steps, guidance as in DDPM.sample), then decoded."""
        z = self.diffusion.sample(
            n,
            generator=generator,
            labels=labels,
            sampler=sampler,
            steps=steps,
            guidance=guidance,
            **kw,
        )
        return self.decode_latent(z)
