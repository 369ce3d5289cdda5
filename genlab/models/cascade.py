"""Cascaded diffusion: a base DDPM at half resolution and a super-resolution DDPM conditioned on
its output (Ho et al. 2021, "Cascaded diffusion models", arXiv:2106.15282; [001] "conditional
setting").

Stages, in model space [-1, 1] (genlab.models.denoising):
  - base: a DDPM on x_low = AvgPool_2(x_0) (adaptive average pooling to ceil(H/2) x ceil(W/2):
    28 -> 14, 8 -> 4), i.e. p(x_low);
  - super-resolution: a DDPM on x_0 whose U-Net gets c = Up(x~_low) concatenated to x_t as input
    channels, Up bilinear to the full size (Ho et al. 2021 section 3; Saharia et al. SR3), i.e.
    p(x_0 | x_low).
Gaussian conditioning augmentation (Ho et al. 2021 section 3.2): in training the condition is
x~_low = x_low + aug_std * eps, eps ~ N(0, I), with aug_std = 0.1 by default (on the [-1, 1]
scale, 5% of the range), so that the SR stage tolerates the base stage's errors; at sampling
the condition is the base sample (or the given low-resolution image) as it is. The paper also
conditions on the augmentation level and can truncate the base chain; the fixed level is the
simplest form of their non-truncated augmentation.

Both stages train together: loss = L_simple(base) + L_simple(SR) (parts "base" and "sr"; with
loss=hybrid each stage adds its own 0.001 L_vlb). sample(): base -> SR; upsample(low_res) runs
the SR stage alone. Every DDPM option (prediction, schedule, sampler, guidance) applies to both.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from genlab.data.spec import DataSpec
from genlab.errors import GenlabError
from genlab.models.adversarial import to_unit_range
from genlab.models.base import GenerativeModel
from genlab.models.ddpm import DDPM, DDPMConfig
from genlab.models.denoising import (
    build_unet,
    sampling_labels,
    training_labels,
)
from genlab.registry import MODELS


@dataclass
class CascadeConfig(DDPMConfig):
    aug_std: float = 0.1  # std of the Gaussian conditioning augmentation, [-1, 1] scale


@MODELS.register(
    "cascaded-ddpm",
    "cascade: DDPM at half size + super-resolution DDPM on the upsampled image (Ho et al. 2021)",
)
class CascadedDDPM(GenerativeModel):
    """Base DDPM on the 2x-downsampled image and a conditioned super-resolution DDPM."""

    config_class = CascadeConfig
    data_kinds = ("image",)
    samplers = DDPM.samplers

    def __init__(self, cfg: CascadeConfig, spec: DataSpec) -> None:
        super().__init__(cfg, spec)
        if cfg.arch == "mlp":
            raise GenlabError("cascaded-ddpm uses U-Nets (model.arch=unet or auto)")
        if cfg.aug_std < 0:
            raise GenlabError(f"model.aug_std must be >= 0; got {cfg.aug_std}")
        if cfg.conditional and not spec.num_classes:
            raise GenlabError(f"model.conditional=true needs labels; {spec.name} has no classes")
        c, h, w = spec.shape
        self.low_spec = dataclasses.replace(
            spec, name=f"{spec.name}-low", shape=(c, (h + 1) // 2, (w + 1) // 2)
        )
        fields = {f.name: getattr(cfg, f.name) for f in dataclasses.fields(DDPMConfig)}
        stage_cfg = DDPMConfig(**{**fields, "arch": "unet"})
        self.base = DDPM(stage_cfg, self.low_spec)
        out_factor = 2 if cfg.loss == "hybrid" else 1
        sr_net = build_unet(
            stage_cfg,
            spec.shape,
            out_channels=out_factor * c,
            num_classes=spec.num_classes if cfg.conditional else 0,
            cond_channels=c,
        )
        self.sr = DDPM(stage_cfg, spec, net=sr_net)

    def downsample(self, x: Tensor) -> Tensor:
        """(B, C, H, W) -> (B, C, ceil(H/2), ceil(W/2)) by average pooling (any affine range)."""
        return F.adaptive_avg_pool2d(x, self.low_spec.shape[1:])

    def condition(
        self, low: Tensor, *, augment: bool = False, generator: torch.Generator | None = None
    ) -> Tensor:
        """The SR stage's condition: low-res x_low in [-1, 1], with N(0, aug_std^2) added when
        augment (training), upsampled bilinearly to the full size: (B, C, H, W)."""
        if augment and self.cfg.aug_std > 0:
            noise = torch.randn(low.shape, generator=generator, device=low.device, dtype=low.dtype)
            low = low + self.cfg.aug_std * noise
        return F.interpolate(low, size=self.spec.shape[1:], mode="bilinear", align_corners=False)

    def forward(self, batch: dict[str, Tensor], phase: str = "main") -> dict[str, Tensor]:
        x0 = to_unit_range(batch["x"], self.spec)
        low = self.downsample(x0)
        labels = training_labels(batch, self.cfg)
        base = self.base.losses(low, labels)
        sr = self.sr.losses(x0, labels, cond=self.condition(low, augment=self.training))
        return {"loss": base["loss"] + sr["loss"], "base": base["loss"], "sr": sr["loss"]}

    @torch.no_grad()
    def upsample(
        self,
        low_res: Tensor,
        *,
        generator: torch.Generator | None = None,
        labels: Tensor | None = None,
        sampler: str | None = None,
        steps: int | None = None,
        guidance: float | None = None,
    ) -> Tensor:
        """The SR stage alone: low_res (n, C, ceil(H/2), ceil(W/2)) in data space -> (n, C, H, W)
        samples of p(x | low_res), in data space."""
        if tuple(low_res.shape[1:]) != tuple(self.low_spec.shape):
            raise GenlabError(
                f"low_res must have shape (n, {', '.join(map(str, self.low_spec.shape))}); "
                f"got {tuple(low_res.shape)}"
            )
        low = to_unit_range(low_res.to(self.device), self.low_spec)
        return self.sr.sample(
            len(low_res),
            generator=generator,
            labels=labels,
            sampler=sampler,
            steps=steps,
            guidance=guidance,
            cond=self.condition(low),
        )

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
        """Base stage at half size, then the SR stage conditioned on it; both with the same
        sampler, steps, guidance and labels (cycled classes when a conditional model gets none)."""
        y = sampling_labels(self, n, labels, self.cfg.conditional, self.spec.num_classes)
        opts = dict(generator=generator, labels=y, sampler=sampler, steps=steps, guidance=guidance)
        low = self.base.sample(n, **opts, **kw)
        return self.upsample(low, **opts)
