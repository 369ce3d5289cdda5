"""Masked layers of autoregressive models: PixelCNN's masked convolutions, MADE's masked linears.

Both make a network's output for variable i a function of the variables before i only, so one
pass gives every conditional of p(x) = prod_i p(x_i | x_<i) ([003] "autoregressive models").

PixelCNN (van den Oord et al. arXiv:1601.06759, "masked convolution"): pixels in raster order
(row by row, left to right) and, within a pixel, colour channels in the order R < G < B. A k x k
kernel keeps the rows above its centre and the centre row's entries left of the centre; at the
centre itself, mask A (the first layer) lets an output channel of colour group g see input groups
< g and mask B (every later layer) groups <= g. With one channel, A excludes the centre pixel and B
includes it. A first, then only B: the output for (pixel i, colour g) depends on pixels before i
and on the colours before g of pixel i. Channels are split into colour groups in contiguous
blocks (channel j of n belongs to group j * colors // n), so an output of C * K channels read as
(C, K) gives K values per colour.

MADE (Germain et al. arXiv:1502.03509): every unit gets a degree. Input d (1-based, natural order)
has degree d, hidden units degrees in {1..D-1}; a hidden weight is kept iff the unit's degree is
>= the degree of its input unit, an output weight of variable d iff d > the input unit's degree.
Output d then depends on x_1..x_{d-1} only. Hidden degrees cycle 1, 2, ..., D-1, 1, 2, ... (a
deterministic version of their uniform draw: every degree is used when a layer has >= D-1 units).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

MaskType = Literal["A", "B"]


def colour_groups(n: int, colors: int) -> Tensor:
    """Colour group of each of n channels: contiguous blocks, channel j -> j * colors // n."""
    return torch.arange(n) * colors // n


def pixelcnn_mask(
    mask_type: MaskType, in_channels: int, out_channels: int, kernel_size: int, colors: int = 1
) -> Tensor:
    """(out, in, k, k) 0/1 mask of a PixelCNN convolution (module doc)."""
    if mask_type not in ("A", "B"):
        raise ValueError(f"mask type must be 'A' or 'B', got {mask_type!r}")
    if kernel_size % 2 != 1:
        raise ValueError(f"masked convolutions need an odd kernel size, got {kernel_size}")
    c = kernel_size // 2
    mask = torch.ones(out_channels, in_channels, kernel_size, kernel_size)
    mask[:, :, c, c + 1 :] = 0  # right of the centre on its row
    mask[:, :, c + 1 :, :] = 0  # rows below the centre
    g_out = colour_groups(out_channels, colors)[:, None]
    g_in = colour_groups(in_channels, colors)[None, :]
    centre = g_in < g_out if mask_type == "A" else g_in <= g_out
    mask[:, :, c, c] = centre.to(mask.dtype)
    return mask


class MaskedConv2d(nn.Conv2d):
    """Same-size k x k convolution whose kernel is multiplied by a PixelCNN mask A or B."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int,
        mask_type: MaskType,
        colors: int = 1,
    ) -> None:
        super().__init__(in_channels, out_channels, kernel_size, padding=kernel_size // 2)
        self.mask_type = mask_type
        mask = pixelcnn_mask(mask_type, in_channels, out_channels, kernel_size, colors)
        # derived from the constructor's arguments, so kept out of checkpoints
        self.register_buffer("mask", mask, persistent=False)

    def forward(self, x: Tensor) -> Tensor:
        return self._conv_forward(x, self.weight * self.mask, self.bias)


def made_degrees(dim: int, hidden: Sequence[int]) -> list[Tensor]:
    """Degrees [m_0 (D,), m_1 (H_1,), ...]: inputs 1..D, hidden units cycling 1..max(D-1, 1)."""
    top = max(dim - 1, 1)
    return [torch.arange(1, dim + 1)] + [torch.arange(h) % top + 1 for h in hidden]


def made_masks(degrees: Sequence[Tensor], dim: int, params_per_dim: int) -> list[Tensor]:
    """MADE masks (out, in) for each layer; the last maps to params_per_dim * D outputs, output j
    belonging to variable j % D (so the output reshapes to (P, D))."""
    dtype = torch.get_default_dtype()
    masks = [
        (d_out[:, None] >= d_in[None, :]).to(dtype) for d_in, d_out in zip(degrees, degrees[1:])
    ]
    out_degree = torch.arange(1, dim + 1).repeat(params_per_dim)  # (P * D,)
    masks.append((out_degree[:, None] > degrees[-1][None, :]).to(dtype))
    return masks


class MaskedLinear(nn.Linear):
    """Linear layer whose weight (out, in) is multiplied by a fixed 0/1 mask."""

    def __init__(self, mask: Tensor) -> None:
        out_features, in_features = mask.shape
        super().__init__(in_features, out_features)
        self.register_buffer("mask", mask, persistent=False)

    def forward(self, x: Tensor) -> Tensor:
        return F.linear(x, self.weight * self.mask, self.bias)


class MADE(nn.Module):
    """Masked MLP (B, D) -> (B, P, D): P parameters of p(x_d | x_<d) for every d (module doc)."""

    def __init__(
        self,
        dim: int,
        hidden: Sequence[int],
        params_per_dim: int,
        activation: type[nn.Module] = nn.ReLU,
    ) -> None:
        super().__init__()
        self.dim, self.params_per_dim = dim, params_per_dim
        masks = made_masks(made_degrees(dim, hidden), dim, params_per_dim)
        layers: list[nn.Module] = []
        for i, mask in enumerate(masks):
            layers.append(MaskedLinear(mask))
            if i < len(masks) - 1:
                layers.append(activation())
        self.net = nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x).view(len(x), self.params_per_dim, self.dim)


class MaskedResidualBlock(nn.Module):
    """x + 1x1(ReLU(3x3_B(ReLU(1x1(ReLU(x)))))), 2h -> h -> h -> 2h channels, all type B."""

    def __init__(self, width: int, colors: int) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.ReLU(),
            MaskedConv2d(2 * width, width, 1, "B", colors),
            nn.ReLU(),
            MaskedConv2d(width, width, 3, "B", colors),
            nn.ReLU(),
            MaskedConv2d(width, 2 * width, 1, "B", colors),
        )

    def forward(self, x: Tensor) -> Tensor:
        return x + self.net(x)
