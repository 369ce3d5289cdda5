"""Gram matrices of feature maps and the texture (style) loss between them.

Gatys et al. "Texture synthesis using convolutional neural networks" (arXiv:1505.07376) and [003]
"Style Transfer": a texture is summarised by the correlations between the feature maps of a
CNN layer, the Gram matrix G^l_ij = sum_k F^l_ik F^l_jk over the M_l = H W positions k, and an
image is synthesised by matching them ("minimize style loss (MSE) between gram matrices").
Averaging over positions removes all spatial information, which is what makes it a texture model.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor


def gram_matrix(features: Tensor) -> Tensor:
    """G = F F^T / (H W): (B, C, H, W) features -> (B, C, C) Gram matrices.

    F is the (B, C, H W) matrix of the features, so G_ij = (1 / M) sum_k F_ik F_jk is the mean
    over the M = H W positions of the product of channels i and j (Gatys et al. eq. (1) divided by
    M, so feature maps of different sizes give Gram matrices of the same scale).
    """
    if features.dim() != 4:
        raise ValueError(f"gram_matrix expects (B, C, H, W) features, got {tuple(features.shape)}")
    b, c, h, w = features.shape
    f = features.reshape(b, c, h * w)  # (B, C, M)
    return f @ f.transpose(1, 2) / (h * w)  # (B, C, C)


def gram_loss_per_layer(
    grams: Sequence[Tensor],
    target_grams: Sequence[Tensor],
    weights: Sequence[float] | None = None,
) -> Tensor:
    """w_l * mean_ij (G^l_ij - A^l_ij)^2 for each example and layer: (B, L).

    grams[l]: (B, C_l, C_l); target_grams[l]: (C_l, C_l) or (B, C_l, C_l). weights: w_l, default
    1 / L each (Gatys et al. weight their texture layers equally). With G normalised by M_l, Gatys'
    E_l = 1 / (4 N_l^2 M_l^2) sum_ij (G_ij - A_ij)^2 (their G unnormalised, N_l = C_l) equals
    (1 / 4) mean_ij (G_ij - A_ij)^2 here: the factor 1/4 is dropped.
    """
    if len(grams) != len(target_grams):
        raise ValueError(f"{len(grams)} Gram matrices but {len(target_grams)} targets")
    n = len(grams)
    weights = [1.0 / n] * n if weights is None else list(weights)
    if len(weights) != n:
        raise ValueError(f"{n} Gram matrices but {len(weights)} layer weights")
    parts = [w * ((g - a) ** 2).mean(dim=(-2, -1)) for g, a, w in zip(grams, target_grams, weights)]
    return torch.stack(parts, dim=-1)


def gram_loss(
    grams: Sequence[Tensor],
    target_grams: Sequence[Tensor],
    weights: Sequence[float] | None = None,
) -> Tensor:
    """Texture loss per example, (B,): L = sum_l w_l mean_ij (G^l_ij - A^l_ij)^2 (Gatys eq. (5))."""
    return gram_loss_per_layer(grams, target_grams, weights).sum(dim=-1)
