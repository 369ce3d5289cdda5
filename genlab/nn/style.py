"""Style-based generator: mapping network, AdaIN and per-layer noise ([001], [003], [004]).

AdaIN (Huang & Belongie, arXiv:1703.06868), as written in [001] and [003]:
    AdaIN(x, y) = sigma(y) * (x - mu(x)) / sigma(x) + mu(y)
with mu, sigma the per-sample, per-channel mean and standard deviation over H and W. In the
style-based generator (Karras et al., arXiv:1812.04948) the style statistics (sigma(y), mu(y))
are not measured on an image but produced by a learned affine map "A" of the intermediate
latent w = f(z), f the mapping network; single-channel Gaussian noise images "B", scaled per
channel, add stochastic variation at every layer; the synthesis starts from a learned constant.

Simplifications against the paper, for small images: one 3x3 convolution (and one AdaIN) per
resolution instead of two, no equalised learning rate, no blur after upsampling, no truncation
trick (the mapping network is exposed as `mapping` and the synthesis as `synthesize`, so a model
can average w and truncate itself).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from genlab.data.spec import DataSpec
from genlab.nn.conv import halvings
from genlab.nn.nets import one_hot


def adain(x: Tensor, scale: Tensor, bias: Tensor, eps: float = 1e-5) -> Tensor:
    """AdaIN(x) = scale * (x - mu(x)) / sigma(x) + bias, statistics per sample and channel.

    x: (B, C, H, W); scale, bias: (B, C). mu and sigma^2 are the mean and the (biased,
    1/(H W)) variance of x over H and W; sigma = sqrt(sigma^2 + eps), so with eps > 0 the
    output's standard deviation is scale * sqrt(v / (v + eps)) for a channel of variance v.
    Huang & Belongie, arXiv:1703.06868, eq. 8; [001] "Adaptive Instance Normalization".
    """
    if x.dim() != 4:
        raise ValueError(f"adain expects x of shape (B, C, H, W), got {tuple(x.shape)}")
    if scale.shape != x.shape[:2] or bias.shape != x.shape[:2]:
        raise ValueError(
            f"adain: scale {tuple(scale.shape)} and bias {tuple(bias.shape)} must be "
            f"(B, C) = {tuple(x.shape[:2])}"
        )
    mu = x.mean(dim=(2, 3), keepdim=True)  # (B, C, 1, 1)
    var = x.var(dim=(2, 3), keepdim=True, correction=0)
    x_norm = (x - mu) / torch.sqrt(var + eps)
    return scale[:, :, None, None] * x_norm + bias[:, :, None, None]


def pixel_norm(z: Tensor, eps: float = 1e-8) -> Tensor:
    """z / sqrt(mean(z^2) + eps) over the feature dimension (dim 1): onto the sphere of radius
    sqrt(dim) (Karras et al., arXiv:1710.10196 section 4.2; used on z in arXiv:1812.04948)."""
    return z * torch.rsqrt(z.pow(2).mean(dim=1, keepdim=True) + eps)


class MappingNetwork(nn.Module):
    """f: z (B, latent_dim) [, labels] -> w (B, w_dim): pixel-norm z, then `layers` x
    (Linear + LeakyReLU(0.2)), all of width w_dim (Karras et al., arXiv:1812.04948 section 2).

    Class-conditional when num_classes > 0: the one-hot label is concatenated to the normalised
    z (normalising z alone keeps the label's code at a fixed size). layers=0 is the paper's
    "no mapping network" ablation (w = normalised z; needs w_dim = latent_dim + num_classes).
    """

    def __init__(self, latent_dim: int, w_dim: int, layers: int = 4, num_classes: int = 0) -> None:
        super().__init__()
        if layers < 0:
            raise ValueError(f"mapping layers must be >= 0, got {layers}")
        in_dim = latent_dim + num_classes
        if layers == 0 and w_dim != in_dim:
            raise ValueError(
                f"without mapping layers w_dim must be latent_dim + num_classes = {in_dim}, "
                f"got {w_dim}"
            )
        self.num_classes = num_classes
        mods: list[nn.Module] = []
        for i in range(layers):
            mods += [nn.Linear(in_dim if i == 0 else w_dim, w_dim), nn.LeakyReLU(0.2)]
        self.net = nn.Sequential(*mods)

    def forward(self, z: Tensor, labels: Tensor | None = None) -> Tensor:
        h = pixel_norm(z)
        code = one_hot(labels, self.num_classes, h)
        return self.net(h if code is None else torch.cat([h, code], dim=1))


class NoiseInjection(nn.Module):
    """x + s * n: one N(0, 1) noise image n (B, 1, H, W) per sample, broadcast to all channels,
    times a learned per-channel scale s, initialised to zero as in arXiv:1812.04948."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.scale = nn.Parameter(torch.zeros(channels))

    def forward(self, x: Tensor, generator: torch.Generator | None = None) -> Tensor:
        b, _, h, w = x.shape
        n = torch.randn(b, 1, h, w, generator=generator, device=x.device, dtype=x.dtype)
        return x + self.scale[None, :, None, None] * n


class StyleLayer(nn.Module):
    """(upsample x2 nearest +) 3x3 conv, noise, LeakyReLU(0.2), AdaIN with style A(w).

    The affine map A gives (scale, bias) = (1 + A_s(w), A_b(w)): the "1 +" keeps the initial
    scale near one whatever initialisation the model applies to Linear layers.
    """

    def __init__(self, in_c: int, out_c: int, w_dim: int, upsample: bool) -> None:
        super().__init__()
        self.upsample = upsample
        self.conv = nn.Conv2d(in_c, out_c, 3, padding=1)
        self.noise = NoiseInjection(out_c)
        self.affine = nn.Linear(w_dim, 2 * out_c)

    def forward(
        self, x: Tensor, w: Tensor, generator: torch.Generator | None, noise: bool
    ) -> Tensor:
        if self.upsample:
            x = F.interpolate(x, scale_factor=2.0, mode="nearest")
        x = self.conv(x)
        if noise:
            x = self.noise(x, generator)
        x = F.leaky_relu(x, 0.2)
        scale, bias = self.affine(w).chunk(2, dim=1)  # (B, C) each
        return adain(x, 1.0 + scale, bias)


class StyleGenerator(nn.Module):
    """z (B, latent_dim) [, labels] -> unbounded image (B, C, H, W), style-based synthesis.

    w = f(z) (MappingNetwork); x_0 = learned constant (1, c, h0, w0) at the coarsest resolution
    (H, W halved n = halvings(H, W, len(channels)) times); layer k = 0..n applies StyleLayer
    (upsampling for k >= 1) with style A_k(w); a final 1x1 conv gives spec.shape[0] channels.
    Widths, coarse to fine: channels[n-1], ..., channels[0], channels[0] (the mirror of
    ConvDecoder plus one full-resolution layer). Karras et al., arXiv:1812.04948 section 2;
    [001] "Architecture of Style Gan". Style mixing (section 3.1): layers k >= mix_layer take
    their style from w2 = f(z2).
    """

    def __init__(
        self,
        latent_dim: int,
        spec: DataSpec,
        channels: Sequence[int],
        *,
        mapping_layers: int = 4,
        w_dim: int | None = None,
        num_classes: int = 0,
    ) -> None:
        super().__init__()
        if not spec.is_image:
            raise ValueError(f"StyleGenerator needs images; {spec.name} has shape {spec.shape}")
        if len(channels) == 0:
            raise ValueError("StyleGenerator needs at least one channel width")
        out_c, h, w = spec.shape
        n = halvings(h, w, len(channels))
        widths = [channels[max(n - 1 - k, 0)] for k in range(n + 1)]  # coarse to fine
        self.latent_dim = latent_dim
        self.num_classes = num_classes
        self.w_dim = latent_dim if w_dim is None else w_dim
        self.mapping = MappingNetwork(latent_dim, self.w_dim, mapping_layers, num_classes)
        self.const = nn.Parameter(torch.randn(1, widths[0], h >> n, w >> n))
        self.layers = nn.ModuleList(
            StyleLayer(widths[max(k - 1, 0)], widths[k], self.w_dim, upsample=k > 0)
            for k in range(n + 1)
        )
        self.to_image = nn.Conv2d(widths[-1], out_c, 1)
        self.num_style_layers = len(self.layers)

    def synthesize(
        self,
        ws: Sequence[Tensor],
        *,
        generator: torch.Generator | None = None,
        noise: bool = True,
    ) -> Tensor:
        """One w (B, w_dim) per style layer, coarse to fine -> unbounded image (B, C, H, W).

        Noise images are drawn layer by layer, coarse to fine, from `generator`.
        """
        if len(ws) != self.num_style_layers:
            raise ValueError(f"need {self.num_style_layers} styles, got {len(ws)}")
        x = self.const.expand(ws[0].shape[0], -1, -1, -1)
        for layer, w in zip(self.layers, ws):
            x = layer(x, w, generator, noise)
        return self.to_image(x)

    def forward(
        self,
        z: Tensor,
        labels: Tensor | None = None,
        *,
        z2: Tensor | None = None,
        mix_layer: int | Tensor | None = None,
        generator: torch.Generator | None = None,
        noise: bool = True,
    ) -> Tensor:
        """Image from z; with z2 and mix_layer, style layers k >= mix_layer use w2 = f(z2).

        mix_layer: an int in [0, num_style_layers] (0: all layers from z2; num_style_layers:
        none), or a (B,) long tensor of per-sample crossover points in that range. z2 uses the
        same labels as z.
        """
        if (z2 is None) != (mix_layer is None):
            raise ValueError("style mixing needs both z2 and mix_layer")
        w = self.mapping(z, labels)
        ws = [w] * self.num_style_layers
        if z2 is not None and mix_layer is not None:
            m = mix_layer if isinstance(mix_layer, Tensor) else torch.tensor(mix_layer)
            if m.dim() > 1 or bool((m < 0).any()) or bool((m > self.num_style_layers).any()):
                raise ValueError(
                    f"mix_layer must be an int or a (B,) tensor in [0, {self.num_style_layers}]"
                )
            m = m.to(w.device)
            w2 = self.mapping(z2, labels)
            ws = [torch.where((k >= m).reshape(-1, 1), w2, w) for k in range(len(ws))]
        return self.synthesize(ws, generator=generator, noise=noise)
