"""Latent-space operations for models with an encoder: interpolation, arithmetic, 2-D manifold.

[000] "arithmetique dans l'espace latent", [003] latent arithmetic; the manifold plot decodes a
grid of latent points placed at Gaussian quantiles (Kingma & Welling arXiv:1312.6114, fig. 4).
"""

from __future__ import annotations

import torch
from torch import Tensor

from genlab.models.base import Encoder


def lerp(z_a: Tensor, z_b: Tensor, steps: int) -> Tensor:
    """Points (1 - t) z_a + t z_b for t evenly in [0, 1]: (steps, *z.shape)."""
    t = torch.linspace(0, 1, steps, device=z_a.device, dtype=z_a.dtype)
    t = t.view(-1, *([1] * z_a.ndim))
    return (1 - t) * z_a + t * z_b


@torch.no_grad()
def interpolate(
    model: Encoder, x_a: Tensor, x_b: Tensor, steps: int = 10, labels: Tensor | None = None
) -> Tensor:
    """Decode the straight latent path between encode(x_a) and encode(x_b): (B, steps, *shape)."""
    z = lerp(model.encode(x_a, labels), model.encode(x_b, labels), steps)  # (steps, B, d)
    s, b = z.shape[:2]
    lab = None if labels is None else labels.repeat(s)
    x = model.decode(z.reshape(s * b, -1), lab)
    return x.view(s, b, *x.shape[1:]).transpose(0, 1)


@torch.no_grad()
def arithmetic(model: Encoder, x_a: Tensor, x_b: Tensor, x_c: Tensor) -> Tensor:
    """decode(z_a - z_b + z_c): "a is to b as c is to ?" in latent space."""
    return model.decode(model.encode(x_a) - model.encode(x_b) + model.encode(x_c))


@torch.no_grad()
def manifold(
    model: Encoder, side: int = 15, labels: Tensor | None = None, device: torch.device | None = None
) -> Tensor:
    """Decode a side x side grid of a 2-D latent at N(0,1) quantiles: (side*side, *shape)."""
    q = torch.linspace(0.5 / side, 1 - 0.5 / side, side, dtype=torch.float64)
    u = torch.special.ndtri(q).float()
    z1, z2 = torch.meshgrid(u, u.flip(0), indexing="xy")  # rows go down in z2
    z = torch.stack([z1.reshape(-1), z2.reshape(-1)], dim=1).to(device or "cpu")
    return model.decode(z, labels)
