"""Normalizing flows: RealNVP and Glow ([003] "Normalizing Flows"; genlab.nn.flows for the layers).

An invertible f maps data to z = f(x) with a standard normal prior, trained by maximum likelihood
with the change of variables ([003]: "learn the mapping f(x) = z, with z a multivariate
Gaussian"; Dinh et al. arXiv:1605.08803 eq. (3)):
    log p(x) = log N(f(x); 0, I) + log |det df/dx|,    loss = -log p(x), mean nats per example,
and sampled by inverting prior draws, x = f^{-1}(z) ([003]: "generate images by sampling z and
doing the inverse mapping").

arch=realnvp (Dinh et al. section 3): vectors, `steps` affine couplings with alternating half
masks; images, per level `steps` checkerboard couplings, a squeeze and `steps` channel couplings,
then half the channels factored out (the last level: checkerboard couplings only).
arch=glow (Kingma & Dhariwal arXiv:1807.03039 figure 2, [003] "one step of our flow"): per level
a squeeze, then `steps` x (ActNorm, invertible 1x1 convolution, affine coupling), then half the
channels factored out; on vectors the same steps without squeezes (the 1x1 convolution is then
an invertible linear map). Factored-out halves go to the N(0, I) prior (RealNVP's; Glow's
learned conditional prior is not implemented). Couplings are masks on the whole tensor, their
nets zero-initialised, their log-scale bounded by tanh for both archs (scale=sigmoid is Glow's
form, which has no lower bound, so its inverse can overflow).

Data space. Bounded data is mapped to [-1, 1] (to_unit_range, log-Jacobian log_det_to_unit) and
through RealNVP's logit (genlab.nn.flows.Logit); samples come back through the sigmoid, so they
lie in the data range. log_prob is a density in data space (discrete_likelihood = False): as for
the score SDE, train and evaluate images with data.dequantize=true, y = (k + u) / L, and the nll
metric adds D log L (genlab.metrics.likelihood), giving a discrete NLL bound in bits/dim.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor

from genlab.data.spec import DataSpec
from genlab.errors import GenlabError
from genlab.math.gaussian import log_standard_normal
from genlab.models.adversarial import from_unit_range, to_unit_range
from genlab.models.base import GenerativeModel
from genlab.models.denoising import log_det_to_unit
from genlab.nn.flows import (
    ActNorm,
    AffineCoupling,
    Bijection,
    Chain,
    CouplingConvNet,
    InvConv1x1,
    Logit,
    MultiScale,
    Squeeze,
    channel_mask,
    checkerboard_mask,
    coupling_mlp,
    half_mask,
    squeezed_shape,
)
from genlab.registry import MODELS


@dataclass
class FlowConfig:
    arch: Literal["realnvp", "glow"] = "realnvp"
    steps: int = 4  # couplings per mask kind and level (realnvp) / flow steps per level (glow)
    levels: int = 2  # images: scales of the multi-scale architecture (vectors: unused)
    hidden: tuple[int, ...] = (128, 128)  # coupling MLP widths (vectors)
    channels: tuple[int, ...] = (64, 64)  # coupling conv widths (images): 3x3, then 1x1 convs
    # coupling log-scale: scale * tanh(raw), bounded (RealNVP's code), or log sigmoid(raw + 2)
    # (Glow's code), bounded above only: an untrained or diverging net can make it -inf
    scale: Literal["tanh", "sigmoid"] = "tanh"
    lu: bool = True  # glow: LU-decomposed 1x1 convolution (false: plain W with slogdet)
    logit_alpha: float = 0.05  # bounded data: logit(alpha + (1 - 2 alpha) x) (RealNVP)
    temperature: float = 1.0  # sampling: z ~ N(0, T^2 I) (Glow samples at T < 1)


def realnvp_images(cfg: FlowConfig, shape: tuple[int, ...]) -> MultiScale:
    """RealNVP's multi-scale stack: checkerboard x steps, squeeze, channel x steps, split."""
    levels: list[Bijection] = []
    out_shapes = []
    for k in range(cfg.levels):
        c = shape[0]
        layers: list[Bijection] = [
            AffineCoupling(
                checkerboard_mask(shape, i % 2), CouplingConvNet(c, cfg.channels), cfg.scale
            )
            for i in range(cfg.steps)
        ]
        if k < cfg.levels - 1:
            shape = squeeze_or_fail(shape, cfg)
            layers.append(Squeeze())
            layers += [
                AffineCoupling(
                    channel_mask(shape, i % 2), CouplingConvNet(shape[0], cfg.channels), cfg.scale
                )
                for i in range(cfg.steps)
            ]
        levels.append(Chain(layers))
        out_shapes.append(shape)
        if k < cfg.levels - 1:
            shape = (shape[0] // 2, *shape[1:])
    return MultiScale(levels, out_shapes)


def glow_images(cfg: FlowConfig, shape: tuple[int, ...]) -> MultiScale:
    """Glow's multi-scale stack: squeeze, steps x (actnorm, 1x1 conv, coupling), split."""
    levels: list[Bijection] = []
    out_shapes = []
    for k in range(cfg.levels):
        shape = squeeze_or_fail(shape, cfg)
        layers: list[Bijection] = [Squeeze()]
        for i in range(cfg.steps):
            c = shape[0]
            layers += [
                ActNorm(c),
                InvConv1x1(c, cfg.lu),
                AffineCoupling(
                    channel_mask(shape, i % 2), CouplingConvNet(c, cfg.channels), cfg.scale
                ),
            ]
        levels.append(Chain(layers))
        out_shapes.append(shape)
        if k < cfg.levels - 1:
            shape = (shape[0] // 2, *shape[1:])
    return MultiScale(levels, out_shapes)


def vector_flow(cfg: FlowConfig, dim: int) -> Chain:
    """Alternating half-mask couplings (realnvp), each after ActNorm and an invertible linear
    map for glow."""
    layers: list[Bijection] = []
    for i in range(cfg.steps):
        if cfg.arch == "glow":
            layers += [ActNorm(dim), InvConv1x1(dim, cfg.lu)]
        layers.append(
            AffineCoupling(half_mask(dim, i % 2), coupling_mlp(dim, cfg.hidden), cfg.scale)
        )
    return Chain(layers)


def squeeze_or_fail(shape: tuple[int, ...], cfg: FlowConfig) -> tuple[int, ...]:
    """The squeezed shape, or a GenlabError that names model.levels."""
    try:
        return squeezed_shape(shape)
    except GenlabError as e:
        raise GenlabError(f"model.levels={cfg.levels} ({cfg.arch}): {e}; use fewer levels") from e


@MODELS.register(
    "realnvp", "RealNVP flow: affine couplings, checkerboard/channel masks, multi-scale, exact NLL"
)
@MODELS.register(
    "glow",
    "Glow flow: actnorm, invertible 1x1 conv, affine coupling, multi-scale, exact NLL",
    arch="glow",
)
class Flow(GenerativeModel):
    """Normalizing flow z = f(x), log p(x) = log N(z; 0, I) + log|det df/dx| (see module doc)."""

    config_class = FlowConfig
    discrete_likelihood = False

    def __init__(self, cfg: FlowConfig, spec: DataSpec) -> None:
        super().__init__(cfg, spec)
        if cfg.steps < 1 or cfg.levels < 1:
            raise GenlabError(
                f"model.steps and model.levels must be >= 1; got {cfg.steps}, {cfg.levels}"
            )
        if cfg.temperature < 0:
            raise GenlabError(f"model.temperature must be >= 0; got {cfg.temperature}")
        layers: list[Bijection] = []
        if spec.value_range is not None:
            layers.append(Logit(cfg.logit_alpha))  # [-1, 1] -> R, so samples stay in range
        if spec.is_image:
            build = glow_images if cfg.arch == "glow" else realnvp_images
            layers.append(build(cfg, tuple(spec.shape)))
        else:
            layers.append(vector_flow(cfg, spec.dim))
        self.flow = Chain(layers)  # model space (B, *shape) -> z (B, D)

    def encode(self, x: Tensor, labels: Tensor | None = None) -> Tensor:
        """z = f(x), (B, D)."""
        return self.flow(to_unit_range(x, self.spec))[0]

    def decode(self, z: Tensor, labels: Tensor | None = None) -> Tensor:
        """x = f^{-1}(z) in data space (clamped to the range: the logit's inverse is in it
        up to alpha's margin)."""
        return from_unit_range(self.flow.inverse(z), self.spec)

    def reconstruct(self, x: Tensor, labels: Tensor | None = None) -> Tensor:
        return self.decode(self.encode(x, labels), labels)

    def log_prob(self, x: Tensor, labels: Tensor | None = None) -> Tensor:
        """log p(x) per example, nats: log N(f(u); 0, I) + log|det df/du| + log|det du/dx|,
        u = to_unit_range(x) (a density in data space)."""
        z, logdet = self.flow(to_unit_range(x, self.spec))
        return log_standard_normal(z) + logdet + log_det_to_unit(self.spec)

    def forward(self, batch: dict[str, Tensor], phase: str = "main") -> dict[str, Tensor]:
        x = batch["x"]
        z, logdet = self.flow(to_unit_range(x, self.spec))
        log_pz = log_standard_normal(z).mean()
        nll = -(log_pz + logdet.mean() + log_det_to_unit(self.spec))
        return {"loss": nll, "nll": nll, "log_pz": log_pz, "logdet": logdet.mean()}

    @torch.no_grad()
    def sample(
        self,
        n: int,
        *,
        generator: torch.Generator | None = None,
        labels: Tensor | None = None,
        sampler: str | None = None,
        temperature: float | None = None,
        **kw: object,
    ) -> Tensor:
        """x = f^{-1}(T z), z ~ N(0, I), in data space; T = `temperature` (default: the
        config's; T = 1 samples the model's density)."""
        if sampler is not None or kw:
            raise GenlabError("flows have one sampler (the inverse map); no sampler options apply")
        t = self.cfg.temperature if temperature is None else float(temperature)
        p = next(self.parameters())
        z = torch.randn(n, self.spec.dim, generator=generator, device=p.device, dtype=p.dtype)
        return self.decode(t * z)
