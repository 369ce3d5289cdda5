"""PatchGAN critic: one score per image patch instead of one per image.

A fully convolutional critic whose outputs each see only a receptive field smaller than the
image, so it judges local texture and sharpness and leaves global agreement to the L1 / cycle
terms (Isola et al. arXiv:1611.07004 section 3.2.2, "Markovian discriminator"; [001] "Pix2Pix").
The adversarial losses of genlab.math.gan_losses average over the patch map.
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor, nn

from genlab.nn.conv import halvings
from genlab.nn.gan import dcgan_init
from genlab.nn.unet import norm_layer


class PatchCritic(nn.Module):
    """(B, in_channels, H, W) -> (B, 1, H / 2^n, W / 2^n) patch scores (logits for ns/minimax).

    n = halvings(H, W, len(channels)) stride-2 4x4 convolutions with LeakyReLU(0.2) (normalised
    after the first, as in pix2pix), then a 3x3 stride-1 convolution to one channel. Each output
    sees a square of `receptive_field` input pixels: r = 3, then r <- 2 r + 2 per stride-2 layer
    (18 for n = 2: patches of 18x18 on 28x28 images, a 7x7 map).
    """

    def __init__(
        self,
        in_channels: int,
        size: tuple[int, int],
        channels: Sequence[int],
        *,
        norm: str = "batch",
    ) -> None:
        super().__init__()
        h, w = size
        n = halvings(h, w, len(channels))
        if n == 0:
            raise ValueError(f"image {h}x{w} is too small or odd-sized for a PatchGAN critic")
        layers: list[nn.Module] = []
        c = in_channels
        for k, out_c in enumerate(channels[:n]):
            normed = k > 0 and norm != "none"
            layers += [
                nn.Conv2d(c, out_c, 4, stride=2, padding=1, bias=not normed),
                norm_layer(norm if normed else "none", out_c),
                nn.LeakyReLU(0.2),
            ]
            c = out_c
        layers.append(nn.Conv2d(c, 1, 3, padding=1))
        self.net = nn.Sequential(*layers)
        self.out_size = (h >> n, w >> n)
        self.receptive_field = 3
        for _ in range(n):
            self.receptive_field = 2 * self.receptive_field + 2
        dcgan_init(self)

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)  # (B, 1, H / 2^n, W / 2^n)
