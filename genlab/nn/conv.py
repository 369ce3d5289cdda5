"""Convolutional stacks: downsampling by strided convolution, upsampling by transposed convolution.

Each stride-2 layer (kernel 4, padding 1) halves H and W exactly; the decoder's transposed
convolutions are the adjoint maps and double them back ([004], "transposed convolution").
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from torch import Tensor, nn


def halvings(height: int, width: int, limit: int) -> int:
    """How many exact halvings (each leaving >= 2 pixels) the image allows, at most `limit`."""
    n = 0
    while n < limit and height % 2 == 0 and width % 2 == 0 and min(height, width) >= 4:
        height, width, n = height // 2, width // 2, n + 1
    return n


class ConvEncoder(nn.Module):
    """(B, C, H, W) -> (B, feature_dim): stride-2 4x4 convolutions with LeakyReLU(0.2)."""

    def __init__(self, shape: Sequence[int], channels: Sequence[int]) -> None:
        super().__init__()
        c, h, w = shape
        n = halvings(h, w, len(channels))
        if n == 0:
            raise ValueError(f"image {h}x{w} is too small or odd-sized for strided convolutions")
        layers: list[nn.Module] = []
        for out_c in channels[:n]:
            layers += [nn.Conv2d(c, out_c, 4, stride=2, padding=1), nn.LeakyReLU(0.2)]
            c = out_c
        self.net = nn.Sequential(*layers, nn.Flatten())
        self.top_shape = (c, h >> n, w >> n)
        self.feature_dim = c * (h >> n) * (w >> n)

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)


class ConvDecoder(nn.Module):
    """(B, in_dim) -> (B, C, H, W): a linear map to the top feature map, then transposed convs.

    Mirrors ConvEncoder(shape, channels); the output has no activation (the model maps it).
    """

    def __init__(self, in_dim: int, shape: Sequence[int], channels: Sequence[int]) -> None:
        super().__init__()
        out_c, h, w = shape
        n = halvings(h, w, len(channels))
        if n == 0:
            raise ValueError(f"image {h}x{w} is too small or odd-sized for strided convolutions")
        chans = list(channels[:n])
        self.top_shape = (chans[-1], h >> n, w >> n)
        self.project = nn.Sequential(nn.Linear(in_dim, math.prod(self.top_shape)), nn.ReLU())
        layers: list[nn.Module] = []
        for a, b in zip(chans[::-1], chans[::-1][1:] + [out_c]):
            layers += [nn.ConvTranspose2d(a, b, 4, stride=2, padding=1), nn.ReLU()]
        self.net = nn.Sequential(*layers[:-1])  # no activation after the last layer

    def forward(self, z: Tensor) -> Tensor:
        return self.net(self.project(z).view(-1, *self.top_shape))
