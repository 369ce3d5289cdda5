"""U-Net generator for image-to-image translation (pix2pix, CycleGAN).

An encoder of stride-2 4x4 convolutions and a mirrored decoder of stride-2 transposed
convolutions; each decoder level concatenates the encoder's feature map of the same size (the
skip connections of Ronneberger et al. 2015, used by pix2pix, Isola et al. arXiv:1611.07004
section 3.2.1 and [001] "Pix2Pix"), so low-level detail need not pass the bottleneck.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from genlab.nn.conv import halvings
from genlab.nn.gan import dcgan_init

NORMS = ("batch", "instance", "none")


def norm_layer(kind: str, channels: int) -> nn.Module:
    """Feature normalisation: batch norm, instance norm (CycleGAN's choice), or none."""
    if kind == "batch":
        return nn.BatchNorm2d(channels)
    if kind == "instance":
        return nn.InstanceNorm2d(channels, affine=True)
    if kind == "none":
        return nn.Identity()
    raise ValueError(f"unknown norm {kind!r}; choose from {', '.join(NORMS)}")


class UNetGenerator(nn.Module):
    """(B, in_channels, H, W) -> (B, out_channels, H, W), unbounded (the model applies tanh).

    Depth n = halvings(H, W, len(channels)): encoder level k (0..n-1) halves the size with
    `channels[k]` filters (LeakyReLU 0.2; normalised except the first and the innermost level, as
    in pix2pix). The decoder goes back up level by level, each transposed convolution (norm,
    optional dropout on the three innermost levels, ReLU) taking the concatenation
    [decoder features, encoder features of that size]. One deviation from pix2pix, for tiny images:
    the output layer is a 3x3 convolution over [decoder output, input], so the input is a skip at
    full resolution too (pix2pix's outermost level has no such skip); on 8x8 digits it lets
    unmasked pixels pass through unchanged.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        size: tuple[int, int],
        channels: Sequence[int],
        *,
        norm: str = "batch",
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        h, w = size
        n = halvings(h, w, len(channels))
        if n == 0:
            raise ValueError(f"image {h}x{w} is too small or odd-sized for a U-Net")
        chans = list(channels[:n])
        self.depth = n
        self.down = nn.ModuleList()
        c = in_channels
        for k, out_c in enumerate(chans):
            normed = 0 < k < n - 1
            self.down.append(
                nn.Sequential(
                    nn.Conv2d(c, out_c, 4, stride=2, padding=1, bias=not normed or norm == "none"),
                    norm_layer(norm if normed else "none", out_c),
                    nn.LeakyReLU(0.2),
                )
            )
            c = out_c
        self.up = nn.ModuleList()
        for k in reversed(range(n)):  # from the size of level k back to the size of level k - 1
            in_c = chans[k] if k == n - 1 else 2 * chans[k]  # innermost: no skip to concatenate
            out_c = chans[max(k - 1, 0)]
            layers: list[nn.Module] = [
                nn.ConvTranspose2d(in_c, out_c, 4, stride=2, padding=1, bias=norm == "none"),
                norm_layer(norm, out_c),
            ]
            if dropout > 0 and k >= n - 3:
                layers.append(nn.Dropout(dropout))
            layers.append(nn.ReLU())
            self.up.append(nn.Sequential(*layers))
        self.out = nn.Conv2d(chans[0] + in_channels, out_channels, 3, padding=1)
        dcgan_init(self)

    def forward(self, x: Tensor) -> Tensor:
        skips = []
        h = x
        for down in self.down:
            h = down(h)
            skips.append(h)  # skips[k]: (B, channels[k], H / 2^(k+1), W / 2^(k+1))
        for k, up in zip(reversed(range(self.depth)), self.up):
            if k < self.depth - 1:
                h = torch.cat([h, skips[k]], dim=1)
            h = up(h)
        return self.out(torch.cat([h, x], dim=1))  # (B, out_channels, H, W)
