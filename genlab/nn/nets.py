"""Encoder and decoder networks for any DataSpec: MLP for vectors, conv stacks for images.

Conditioning on a class is by concatenating its one-hot code to the features (encoder) or to
the latent (decoder), as in the conditional VAE (Sohn et al. 2015).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from genlab.data.spec import DataSpec
from genlab.errors import GenlabError
from genlab.nn.conv import ConvDecoder, ConvEncoder, halvings
from genlab.nn.mlp import MLP


def use_conv(arch: str, spec: DataSpec) -> bool:
    """conv for images that can be halved at least once; auto falls back to the MLP otherwise."""
    if arch == "conv" and not spec.is_image:
        raise GenlabError(f"model.arch=conv needs images; {spec.name} has shape {spec.shape}")
    if not spec.is_image or arch == "mlp":
        return False
    if halvings(spec.shape[1], spec.shape[2], 1) == 0:
        if arch == "conv":
            h, w = spec.shape[1:]
            raise GenlabError(
                f"model.arch=conv needs even image sizes >= 4; {spec.name} is {h}x{w}"
            )
        return False
    return True


def one_hot(labels: Tensor | None, num_classes: int, like: Tensor) -> Tensor | None:
    if num_classes == 0:
        return None
    if labels is None:
        raise ValueError("this model is class-conditional: labels are required")
    return F.one_hot(labels.long(), num_classes).to(like.dtype)


class EncoderNet(nn.Module):
    """x (B, *shape) [, labels] -> (B, out_dim)."""

    def __init__(
        self,
        spec: DataSpec,
        out_dim: int,
        *,
        arch: str = "auto",
        hidden: Sequence[int] = (256, 256),
        channels: Sequence[int] = (32, 64),
        num_classes: int = 0,
    ) -> None:
        super().__init__()
        self.num_classes = num_classes
        if use_conv(arch, spec):
            self.body: nn.Module = ConvEncoder(spec.shape, channels)
            features = self.body.feature_dim
            self.head = nn.Linear(features + num_classes, out_dim)
        else:
            self.body = nn.Flatten()
            self.head = MLP(spec.dim + num_classes, hidden, out_dim)

    def forward(self, x: Tensor, labels: Tensor | None = None) -> Tensor:
        h = self.body(x)
        code = one_hot(labels, self.num_classes, h)
        return self.head(h if code is None else torch.cat([h, code], dim=1))


class DecoderNet(nn.Module):
    """z (B, in_dim) [, labels] -> (B, *shape), unbounded (the model maps it to data space)."""

    def __init__(
        self,
        in_dim: int,
        spec: DataSpec,
        *,
        arch: str = "auto",
        hidden: Sequence[int] = (256, 256),
        channels: Sequence[int] = (32, 64),
        num_classes: int = 0,
    ) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.shape = spec.shape
        if use_conv(arch, spec):
            self.net: nn.Module = ConvDecoder(in_dim + num_classes, spec.shape, channels)
        else:
            self.net = MLP(in_dim + num_classes, list(hidden)[::-1], spec.dim)

    def forward(self, z: Tensor, labels: Tensor | None = None) -> Tensor:
        code = one_hot(labels, self.num_classes, z)
        out = self.net(z if code is None else torch.cat([z, code], dim=1))
        return out.view(-1, *self.shape)
