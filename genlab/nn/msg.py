"""MSG-GAN networks: a generator with an image output at every resolution and a critic that
reads all of them ([003] "MSG-GAN: Multi-Scale Gradients GAN"; Karnewar & Wang,
arXiv:1903.06048).

The generator's block k (coarse to fine) emits o_k = toRGB_k(a_k), a 1x1 convolution of its
features a_k; the critic sees [o_0, ..., o_n] (or the average-pooled pyramid of a real image),
so the critic's gradient reaches every generator block directly, not only through the last.
All resolutions are synthesised at once (no progressive growing as in ProGAN).

Combine function: the simple one of the paper, phi_simple(x', o) = [x'; o]: each coarser input
image is concatenated as extra channels to the critic's downsampled features, without a
1x1 "fromRGB" (only the finest image goes through fromRGB, to make the first features).
Class conditioning: the generator concatenates the one-hot label to z; the critic uses a
projection head (Miyato & Koyama, arXiv:1802.05637): D(x, y) = psi(h) + <V onehot(y), h>.
Simplifications: no equalised learning rate, no minibatch-stddev layer.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from genlab.data.spec import DataSpec
from genlab.nn.conv import halvings
from genlab.nn.nets import one_hot
from genlab.nn.style import pixel_norm


def image_pyramid(x: Tensor, n: int) -> list[Tensor]:
    """[coarsest, ..., x]: n levels, each the 2x2 average pooling of the next finer one."""
    if n < 1:
        raise ValueError(f"a pyramid has at least one level, got n={n}")
    levels = [x]
    for _ in range(n - 1):
        h, w = levels[0].shape[-2:]
        if h % 2 or w % 2:
            raise ValueError(f"cannot halve a {h}x{w} image exactly for a {n}-level pyramid")
        levels.insert(0, F.avg_pool2d(levels[0], 2))
    return levels


def _widths(spec: DataSpec, channels: Sequence[int], net: str) -> list[int]:
    """Feature widths per resolution, coarse to fine: channels[n-1], ..., channels[0],
    channels[0] with n = halvings(H, W, len(channels)) (n + 1 resolutions)."""
    if not spec.is_image:
        raise ValueError(f"{net} needs images; {spec.name} has shape {spec.shape}")
    if len(channels) == 0:
        raise ValueError(f"{net} needs at least one channel width")
    n = halvings(spec.shape[1], spec.shape[2], len(channels))
    return [channels[max(n - 1 - k, 0)] for k in range(n + 1)]


class _PixelNorm(nn.Module):
    def forward(self, x: Tensor) -> Tensor:
        return pixel_norm(x)


def _conv_act(in_c: int, out_c: int) -> list[nn.Module]:
    """3x3 conv, LeakyReLU(0.2), pixel-wise feature normalisation (ProGAN / MSG-GAN G)."""
    return [nn.Conv2d(in_c, out_c, 3, padding=1), nn.LeakyReLU(0.2), _PixelNorm()]


class MSGGenerator(nn.Module):
    """z (B, latent_dim) [, labels] -> [o_0, ..., o_n], unbounded images coarse to fine.

    Block 0: Linear to (c, H >> n, W >> n), LeakyReLU(0.2), pixel norm, then a 3x3 conv;
    block k >= 1: nearest 2x upsampling and two 3x3 convs. o_k = toRGB_k(a_k), 1x1 conv to
    spec.shape[0] channels; o_n has spec's full H, W. levels = 1 + halvings(H, W, len(channels)).
    Karnewar & Wang, arXiv:1903.06048 section 3; [003].
    """

    def __init__(
        self, latent_dim: int, spec: DataSpec, channels: Sequence[int], num_classes: int = 0
    ) -> None:
        super().__init__()
        widths = _widths(spec, channels, "MSGGenerator")
        out_c, h, w = spec.shape
        n = len(widths) - 1
        self.levels = n + 1
        self.num_classes = num_classes
        self.top_shape = (widths[0], h >> n, w >> n)
        self.project = nn.Sequential(
            nn.Linear(latent_dim + num_classes, math.prod(self.top_shape)), nn.LeakyReLU(0.2)
        )
        blocks: list[nn.Module] = [nn.Sequential(_PixelNorm(), *_conv_act(widths[0], widths[0]))]
        for k in range(1, n + 1):
            blocks.append(
                nn.Sequential(
                    nn.Upsample(scale_factor=2.0, mode="nearest"),
                    *_conv_act(widths[k - 1], widths[k]),
                    *_conv_act(widths[k], widths[k]),
                )
            )
        self.blocks = nn.ModuleList(blocks)
        self.to_rgb = nn.ModuleList(nn.Conv2d(c, out_c, 1) for c in widths)

    def forward(self, z: Tensor, labels: Tensor | None = None) -> list[Tensor]:
        code = one_hot(labels, self.num_classes, z)
        a = self.project(z if code is None else torch.cat([z, code], dim=1))
        a = a.view(-1, *self.top_shape)  # (B, c, h0, w0)
        images = []
        for block, to_rgb in zip(self.blocks, self.to_rgb):
            a = block(a)
            images.append(to_rgb(a))  # (B, C, h_k, w_k)
        return images


class MSGCritic(nn.Module):
    """[o_0, ..., o_n] coarse to fine [, labels] -> (B,) scores (logits for minimax/ns).

    fromRGB (1x1 conv + LeakyReLU(0.2)) on the finest image; then for k = n..1: 3x3 conv and
    4x4 stride-2 conv (each LeakyReLU(0.2)) down to resolution k-1, where o_{k-1} is
    concatenated as extra channels (phi_simple); at the coarsest resolution a 3x3 conv, flatten
    and a linear head, plus the projection term <V onehot(y), h> when class-conditional.
    Karnewar & Wang, arXiv:1903.06048 section 3; [003].
    """

    def __init__(self, spec: DataSpec, channels: Sequence[int], num_classes: int = 0) -> None:
        super().__init__()
        widths = _widths(spec, channels, "MSGCritic")
        img_c, h, w = spec.shape
        n = len(widths) - 1
        self.levels = n + 1
        self.num_classes = num_classes
        self.shapes = [(img_c, h >> (n - k), w >> (n - k)) for k in range(n + 1)]
        self.from_rgb = nn.Sequential(nn.Conv2d(img_c, widths[n], 1), nn.LeakyReLU(0.2))
        # down[j] takes resolution k = n - j to k - 1; its input at k < n has img_c more channels
        self.down = nn.ModuleList(
            nn.Sequential(
                nn.Conv2d(widths[k] + (img_c if k < n else 0), widths[k], 3, padding=1),
                nn.LeakyReLU(0.2),
                nn.Conv2d(widths[k], widths[k - 1], 4, stride=2, padding=1),
                nn.LeakyReLU(0.2),
            )
            for k in range(n, 0, -1)
        )
        top_in = widths[0] + (img_c if n > 0 else 0)
        self.top = nn.Sequential(
            nn.Conv2d(top_in, widths[0], 3, padding=1), nn.LeakyReLU(0.2), nn.Flatten()
        )
        feature_dim = widths[0] * (h >> n) * (w >> n)
        self.head = nn.Linear(feature_dim, 1)
        self.embed = nn.Linear(num_classes, feature_dim, bias=False) if num_classes else None

    def forward(self, images: Sequence[Tensor], labels: Tensor | None = None) -> Tensor:
        if len(images) != self.levels:
            raise ValueError(f"MSGCritic needs {self.levels} images, got {len(images)}")
        for k, (img, shape) in enumerate(zip(images, self.shapes)):
            if tuple(img.shape[1:]) != shape:
                raise ValueError(f"level {k}: expected (B, {shape}), got {tuple(img.shape)}")
        x = self.from_rgb(images[-1])
        for j, down in enumerate(self.down):
            coarser = images[self.levels - 2 - j]
            x = torch.cat([down(x), coarser], dim=1)
        feat = self.top(x)  # (B, feature_dim)
        out = self.head(feat).squeeze(1)
        code = one_hot(labels, self.num_classes, feat)
        if code is not None and self.embed is not None:
            out = out + (self.embed(code) * feat).sum(dim=1)
        return out
