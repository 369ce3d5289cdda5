"""Gaussian fits of feature rows and the Frechet distance between Gaussians (the core of FID).

Everything is computed in float64: FID subtracts traces of 2048 x 2048 matrices that are nearly
equal, and float32 loses most of the digits of the difference.
"""

from __future__ import annotations

import warnings

import numpy as np
import scipy.linalg
import torch
from torch import Tensor


def gaussian_fit(x: Tensor) -> tuple[Tensor, Tensor]:
    """Mean and unbiased covariance of the rows of x: (N, D) -> ((D,), (D, D)), float64.

    mu = (1/N) sum_i x_i, Sigma = (1/(N-1)) sum_i (x_i - mu)(x_i - mu)^T.
    """
    if x.ndim != 2:
        raise ValueError(f"gaussian_fit expects rows (N, D); got shape {tuple(x.shape)}")
    n = x.shape[0]
    if n < 2:
        raise ValueError(f"gaussian_fit needs at least 2 rows for a covariance; got {n}")
    x = x.detach().to(torch.float64)
    mu = x.mean(dim=0)
    xc = x - mu
    sigma = xc.T @ xc / (n - 1)
    return mu, sigma


def _as_numpy64(t: Tensor | np.ndarray) -> np.ndarray:
    if isinstance(t, Tensor):
        t = t.detach().cpu().to(torch.float64).numpy()
    return np.asarray(t, dtype=np.float64)


def _sqrtm(a: np.ndarray) -> np.ndarray:
    # scipy warns on singular input; singular products are expected (fewer samples than feature
    # dimensions) and handled by the caller, so the warning would only be noise.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", scipy.linalg.LinAlgWarning)
        return scipy.linalg.sqrtm(a)


def frechet_distance(
    mu1: Tensor | np.ndarray,
    sigma1: Tensor | np.ndarray,
    mu2: Tensor | np.ndarray,
    sigma2: Tensor | np.ndarray,
    *,
    eps: float = 1e-6,
) -> float:
    """Frechet (2-Wasserstein squared) distance between N(mu1, S1) and N(mu2, S2).

    d^2 = ||mu1 - mu2||^2 + Tr(S1 + S2 - 2 (S1 S2)^{1/2}). Source: Dowson & Landau 1982, "The
    Frechet distance between multivariate normal distributions"; used as FID by Heusel et al.
    arXiv:1706.08500. When (S1 S2)^{1/2} is not finite (singular covariances, e.g. fewer samples
    than dimensions), the distance is computed for S1 + eps I and S2 + eps I instead. A small
    imaginary part of the matrix square root (round-off) is dropped; a large one raises ValueError.
    """
    m1, m2 = _as_numpy64(mu1), _as_numpy64(mu2)
    s1, s2 = _as_numpy64(sigma1), _as_numpy64(sigma2)
    d = m1.shape[0]
    if m1.shape != (d,) or m2.shape != (d,) or s1.shape != (d, d) or s2.shape != (d, d):
        raise ValueError(
            "frechet_distance expects mu (D,) and sigma (D, D) for both Gaussians; got "
            f"{m1.shape}, {s1.shape}, {m2.shape}, {s2.shape}"
        )
    diff = m1 - m2
    covmean = _sqrtm(s1 @ s2)
    if not np.all(np.isfinite(covmean)):
        # Singular covariances: the square root of their product can come back inf/nan. Adding
        # eps * I to both makes them positive definite; the whole distance (traces included) is
        # then that of the shifted Gaussians, so it stays a true, non-negative distance.
        s1, s2 = s1 + eps * np.eye(d), s2 + eps * np.eye(d)
        covmean = _sqrtm(s1 @ s2)
    if np.iscomplexobj(covmean):
        # S1 S2 is similar to the PSD matrix S1^{1/2} S2 S1^{1/2}, so its principal square root is
        # real in exact arithmetic; round-off leaves a tiny imaginary part that is dropped.
        imag = float(np.max(np.abs(covmean.imag)))
        scale = float(np.max(np.abs(covmean)))
        if imag > 1e-3 * max(scale, np.finfo(np.float64).tiny):
            raise ValueError(
                f"sqrtm(S1 S2) has a large imaginary part ({imag:.3g} vs magnitude {scale:.3g}): "
                "the covariances are not valid (symmetric positive semi-definite)"
            )
        covmean = covmean.real
    return float(diff @ diff + np.trace(s1) + np.trace(s2) - 2.0 * np.trace(covmean))
