"""Inception Score from class probabilities p(y|x) (the classifier lives elsewhere)."""

from __future__ import annotations

import math

import torch
from torch import Tensor


def inception_score(probs: Tensor, splits: int = 10) -> tuple[float, float]:
    """Inception Score of N predictive distributions (N, K): mean and std over `splits` splits.

    IS = exp(E_x KL(p(y|x) || p(y))) with p(y) = the mean of p(y|x) over the split, and
    0 log 0 = 0. Splits are consecutive blocks of rows [i N / s, (i + 1) N / s) (integer division),
    so every row is used; the std is the population std (ddof = 0) over splits, as in the original
    evaluation. Source: Salimans et al. arXiv:1606.03498 (section 4).
    """
    if probs.ndim != 2:
        raise ValueError(f"probs must be (N, K) rows of p(y|x); got shape {tuple(probs.shape)}")
    p = probs.detach().to(torch.float64)
    n = p.shape[0]
    if splits < 1 or n < splits:
        raise ValueError(f"need 1 <= splits <= N; got splits={splits} for N={n}")
    if bool((p < 0).any()):
        raise ValueError("probs has negative entries; pass probabilities, not logits")
    worst = float((p.sum(dim=1) - 1.0).abs().max())
    if worst > 1e-3:
        raise ValueError(f"rows of probs must sum to 1 (within 1e-3); worst is off by {worst:.3g}")
    scores = []
    for i in range(splits):
        part = p[i * n // splits : (i + 1) * n // splits]  # (n_i, K)
        p_y = part.mean(dim=0, keepdim=True)  # (1, K); p_y > 0 wherever some p(y|x) > 0
        kl = (torch.xlogy(part, part) - torch.xlogy(part, p_y)).sum(dim=1)  # (n_i,)
        scores.append(math.exp(float(kl.mean())))
    mean = sum(scores) / splits
    std = math.sqrt(sum((s - mean) ** 2 for s in scores) / splits)
    return mean, std
