"""Mode coverage on Gaussian-mixture toys (ring8, grid25): modes captured, quality, mode KL.

The mixtures are defined in genlab.data.toys.MIXTURES (means (K, 2) and a per-coordinate std).
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import Tensor

from genlab.math.divergences import kl_categorical


def mode_metrics(
    samples: Tensor,
    means: Tensor | np.ndarray,
    std: float,
    threshold: float = 3.0,
    *,
    min_count: int = 1,
) -> dict[str, float]:
    """Mode-collapse metrics of samples (N, D) against an equal-weight isotropic mixture.

    Each sample is assigned to its nearest mean; it is high quality when within threshold * std of
    it. Returns "modes": the number of modes with >= min_count high-quality samples; "hq": the
    fraction of high-quality samples; "kl_modes": KL(h || uniform) = sum_k h_k log(K h_k), with h
    the histogram of the high-quality samples over the K modes (+inf when no sample is high
    quality, as the histogram is then undefined). Protocol of VEEGAN, Srivastava et al.
    arXiv:1705.07761, and PacGAN, Lin et al. arXiv:1712.04086 (kl_modes is the "reverse KL" of
    PacGAN's table 1). The default min_count = 1 (one high-quality sample captures a mode) is the
    rule of the evaluation code released with PacGAN, whose "mode coverage" counts the modes with
    a nonzero number of samples within 3 std. The 3-std threshold keeps 1 - exp(-9/2) = 98.9% of
    the mass of an isotropic 2-D Gaussian (|x - mu|^2 / std^2 is chi-squared with 2 dof).
    """
    x = samples.detach().to(torch.float64)
    mu = torch.as_tensor(means, dtype=torch.float64, device=x.device)
    if x.ndim != 2 or mu.ndim != 2 or x.shape[1] != mu.shape[1]:
        raise ValueError(
            f"samples (N, D) and means (K, D) must share D; got {tuple(x.shape)}, {tuple(mu.shape)}"
        )
    if len(x) == 0:
        raise ValueError("samples is empty")
    if not std > 0 or min_count < 1:
        raise ValueError(f"need std > 0 and min_count >= 1; got std={std}, min_count={min_count}")
    num_modes = mu.shape[0]
    dist = torch.cdist(x, mu)  # (N, K)
    nearest_dist, nearest = dist.min(dim=1)
    hq = nearest_dist <= threshold * std
    counts = torch.bincount(nearest[hq], minlength=num_modes).to(torch.float64)  # (K,)
    n_hq = float(counts.sum())
    uniform = torch.full((num_modes,), 1.0 / num_modes, dtype=torch.float64)
    kl = math.inf if n_hq == 0 else kl_categorical(counts.cpu() / n_hq, uniform)
    return {
        "modes": float((counts >= min_count).sum()),
        "hq": n_hq / len(x),
        "kl_modes": kl,
    }
