"""Sample-based divergences: kernels and unbiased MMD^2, exact empirical W1, categorical KL.

Inputs are rows (N, D); everything is computed in float64 whatever the input dtype.
"""

from __future__ import annotations

import math

import numpy as np
import scipy.optimize
import torch
from torch import Tensor


def _rows64(x: Tensor, name: str) -> Tensor:
    if x.ndim != 2:
        raise ValueError(f"{name} must be rows (N, D); got shape {tuple(x.shape)}")
    return x.detach().to(torch.float64)


def polynomial_kernel(
    x: Tensor, y: Tensor, degree: int = 3, gamma: float | None = None, coef: float = 1.0
) -> Tensor:
    """Polynomial kernel matrix between rows of x (N, D) and y (M, D): (N, M), float64.

    k(a, b) = (gamma a.b + coef)^degree with gamma = 1/D by default, the kernel of KID.
    Source: Binkowski et al. arXiv:1801.01401 (section 4, KID).
    """
    x, y = _rows64(x, "x"), _rows64(y, "y")
    if x.shape[1] != y.shape[1]:
        raise ValueError(f"x and y need the same dimension; got {x.shape[1]} and {y.shape[1]}")
    g = 1.0 / x.shape[1] if gamma is None else gamma
    return (g * (x @ y.T) + coef) ** degree


def mmd2_unbiased(k_xx: Tensor, k_yy: Tensor, k_xy: Tensor) -> Tensor:
    """Unbiased U-statistic estimate of MMD^2 from kernel matrices (m, m), (n, n), (m, n).

    MMD^2_u = sum_{i != j} k(x_i, x_j) / (m (m-1)) + sum_{i != j} k(y_i, y_j) / (n (n-1))
    - 2 sum_{i, j} k(x_i, y_j) / (m n). Source: Gretton et al. JMLR 2012, "A kernel two-sample
    test", lemma 6, eq. (3).
    """
    m, n = k_xx.shape[0], k_yy.shape[0]
    if k_xx.shape != (m, m) or k_yy.shape != (n, n) or k_xy.shape != (m, n):
        raise ValueError(
            "mmd2_unbiased expects k_xx (m, m), k_yy (n, n), k_xy (m, n); got "
            f"{tuple(k_xx.shape)}, {tuple(k_yy.shape)}, {tuple(k_xy.shape)}"
        )
    if m < 2 or n < 2:
        raise ValueError(f"the unbiased MMD needs at least 2 samples per set; got {m} and {n}")
    k_xx, k_yy, k_xy = (k.detach().to(torch.float64) for k in (k_xx, k_yy, k_xy))
    xx = (k_xx.sum() - k_xx.diagonal().sum()) / (m * (m - 1))
    yy = (k_yy.sum() - k_yy.diagonal().sum()) / (n * (n - 1))
    return xx + yy - 2.0 * k_xy.mean()


def _median_pairwise_distance(y: Tensor) -> float:
    """Median of |y_i - y_j| over the pairs i < j."""
    d = torch.cdist(y, y)
    iu = torch.triu_indices(len(y), len(y), offset=1)
    return float(d[iu[0], iu[1]].median())


def rbf_mmd2(x: Tensor, y: Tensor, bandwidth: float | None = None) -> float:
    """Unbiased MMD^2 between samples x (m, D) and y (n, D) under a Gaussian kernel.

    k(a, b) = exp(-|a - b|^2 / (2 h^2)), estimated with mmd2_unbiased. The default bandwidth h is
    the median pairwise distance within y: the median heuristic (Gretton et al. JMLR 2012, section
    8, there on the pooled sample) taken on y alone, so that with y the held-out reference every
    compared model is scored with the same kernel. Source: Gretton et al. JMLR 2012.
    """
    x, y = _rows64(x, "x"), _rows64(y, "y")
    if x.shape[1] != y.shape[1]:
        raise ValueError(f"x and y need the same dimension; got {x.shape[1]} and {y.shape[1]}")
    h = _median_pairwise_distance(y) if bandwidth is None else float(bandwidth)
    if not h > 0:
        raise ValueError(f"the kernel bandwidth must be positive; got {h}")

    def k(a: Tensor, b: Tensor) -> Tensor:
        return torch.exp(-torch.cdist(a, b).pow(2) / (2.0 * h * h))

    return float(mmd2_unbiased(k(x, x), k(y, y), k(x, y)))


def wasserstein1(x: Tensor, y: Tensor) -> float:
    """Exact 1-Wasserstein distance between two empirical distributions of N points each.

    W1 = min over permutations s of (1/N) sum_i |x_i - y_s(i)|: with equal weights 1/N the optimal
    coupling can be taken to be a permutation (Birkhoff-von Neumann), found here by the Hungarian
    algorithm (scipy linear_sum_assignment) on Euclidean distances; O(N^3), so subsample first.
    Source: Villani, "Optimal Transport: Old and New" (2009), and Peyre & Cuturi arXiv:1803.00567
    proposition 2.1.
    """
    x, y = _rows64(x, "x"), _rows64(y, "y")
    if len(x) != len(y):
        raise ValueError(
            f"wasserstein1 needs equal numbers of points; got {len(x)} and {len(y)} "
            "(subsample the larger set first)"
        )
    if x.shape[1] != y.shape[1]:
        raise ValueError(f"x and y need the same dimension; got {x.shape[1]} and {y.shape[1]}")
    # Direct differences, not the |a|^2 + |b|^2 - 2 a.b matmul form: that form leaves ~1e-8 of
    # round-off on zero distances, and N is small here anyway (the assignment is O(N^3)).
    cost = torch.cdist(x, y, compute_mode="donot_use_mm_for_euclid_dist").cpu().numpy()
    rows, cols = scipy.optimize.linear_sum_assignment(cost)
    return float(np.mean(cost[rows, cols]))


def kl_categorical(p: Tensor, q: Tensor) -> float:
    """KL(p || q) between two categorical distributions given as probability vectors (K,).

    KL = sum_k p_k log(p_k / q_k), with 0 log(0 / q) = 0, and +inf when some p_k > 0 has q_k = 0.
    Source: Cover & Thomas, "Elements of Information Theory", section 2.3.
    """
    p, q = p.detach().to(torch.float64), q.detach().to(torch.float64)
    if p.ndim != 1 or p.shape != q.shape:
        raise ValueError(f"p and q must be vectors of equal length; got {p.shape} and {q.shape}")
    for name, v in (("p", p), ("q", q)):
        if bool((v < 0).any()) or abs(float(v.sum()) - 1.0) > 1e-6:
            raise ValueError(f"{name} must be a probability vector (>= 0, summing to 1)")
    support = p > 0
    if bool((q[support] == 0).any()):
        return math.inf
    return float((p[support] * (p[support].log() - q[support].log())).sum())
