"""Gaussian, Bernoulli, discretized logistic / Gaussian log-likelihoods, KL divergences, IWAE.

Every function is pure and dtype-agnostic (float32 or float64 in, same dtype out). "Summed" means
summed over all non-batch dimensions (dim >= 1), giving one value per example, shape (B,).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

_LOG_2PI = math.log(2.0 * math.pi)


def _sum_nonbatch(t: Tensor) -> Tensor:
    """Sum over every dimension except the first: (B, ...) -> (B,)."""
    return t.reshape(t.shape[0], -1).sum(dim=1)


def _as_tensor(v: Tensor | float, like: Tensor) -> Tensor:
    # Allows a Python float (e.g. a fixed decoder log-variance) wherever a tensor is broadcast.
    return v if isinstance(v, Tensor) else torch.as_tensor(v, dtype=like.dtype, device=like.device)


def log_normal(x: Tensor, mu: Tensor, logvar: Tensor | float) -> Tensor:
    """Log density of a diagonal Gaussian N(mu, diag exp(logvar)) at x, summed.

    log N(x; mu, s^2) = sum_i -0.5 * (log(2 pi) + logvar_i + (x_i - mu_i)^2 / exp(logvar_i)).
    `logvar` broadcasts against x (a scalar gives a fixed isotropic variance). Source: [001]
    (Gaussian decoder of the VAE instantiation), Kingma & Welling arXiv:1312.6114 appendix C.2.
    """
    logvar = _as_tensor(logvar, x)
    # Broadcast everything first so the batch dim of the result is the batch dim of x and mu.
    x, mu, logvar = torch.broadcast_tensors(x, mu, logvar)
    return _sum_nonbatch(-0.5 * (_LOG_2PI + logvar + (x - mu).pow(2) * torch.exp(-logvar)))


def log_mixture_normal(x: Tensor, logits: Tensor, mu: Tensor, log_sigma: Tensor) -> Tensor:
    """Elementwise log sum_j pi_j N(x; mu_j, sigma_j^2), pi = softmax(logits) over dim 1.

    x (B, D); logits, mu, log_sigma (B, J, D) -> (B, D).
    """
    z = (x[:, None] - mu) * torch.exp(-log_sigma)
    log_n = -0.5 * (_LOG_2PI + z**2) - log_sigma  # log N(x; mu_j, sigma_j^2)
    return torch.logsumexp(F.log_softmax(logits, dim=1) + log_n, dim=1)


def log_mvn(x: Tensor, mu: Tensor, scale_tril: Tensor) -> Tensor:
    """Log density of a full-covariance Gaussian N(mu, L L^T) at x, L lower triangular.

    log N(x; mu, L L^T) = -0.5 ||L^-1 (x - mu)||^2 - sum_i log L_ii - (D / 2) log(2 pi).
    x (B, D), mu (D,), scale_tril (D, D) -> (B,). [000] (multivariate Gaussian; PPCA, FA).
    """
    # one triangular solve with B right-hand sides: (D, D) \ (D, B), never a (B, D, D) batch
    white = torch.linalg.solve_triangular(scale_tril, (x - mu).T, upper=False)  # (D, B)
    half_logdet = torch.log(torch.diagonal(scale_tril)).sum()
    return -0.5 * white.pow(2).sum(dim=0) - half_logdet - 0.5 * x.shape[1] * _LOG_2PI


def log_gaussian_mixture(
    x: Tensor, log_weights: Tensor, means: Tensor, scale_trils: Tensor
) -> Tensor:
    """log sum_k w_k N(x; mu_k, L_k L_k^T): x (B, D), log_weights (K,), means (K, D),
    scale_trils (K, D, D) -> (B,). [000] (Gaussian mixture model)."""
    per_component = torch.stack(
        [log_mvn(x, mu, tril) for mu, tril in zip(means, scale_trils)], dim=1
    )  # (B, K)
    return torch.logsumexp(per_component + log_weights, dim=1)


def sample_gaussian_mixture(
    n: int,
    log_weights: Tensor,
    means: Tensor,
    scale_trils: Tensor,
    generator: torch.Generator | None = None,
) -> Tensor:
    """n draws of sum_k w_k N(mu_k, L_k L_k^T): k ~ Categorical(w), x = mu_k + L_k eps -> (n, D)."""
    k = torch.multinomial(log_weights.exp(), n, replacement=True, generator=generator)
    eps = torch.randn(
        n, means.shape[1], 1, generator=generator, device=means.device, dtype=means.dtype
    )
    return means[k] + (scale_trils[k] @ eps).squeeze(-1)


def log_kde(x: Tensor, centres: Tensor, bandwidth: Tensor | float) -> Tensor:
    """log (1/N) sum_i N(x; c_i, h^2 I): x (B, D), centres (N, D) -> (B,). [000] (Parzen window)

    Squared distances in float64 through cdist's matrix-product form: fast, and exact enough
    there (the |x|^2 + |c|^2 - 2 x.c cancellation costs ~1e-16 |x|^2).
    """
    h2 = torch.as_tensor(bandwidth, dtype=torch.float64) ** 2
    sq = torch.cdist(x.double(), centres.double()).pow(2)  # (B, N)
    log_kernel = -0.5 * sq / h2 - 0.5 * x.shape[1] * torch.log(2 * math.pi * h2)
    return (torch.logsumexp(log_kernel, dim=1) - math.log(len(centres))).to(x.dtype)


def log_standard_normal(z: Tensor) -> Tensor:
    """Log density of the standard normal prior N(0, I) at z, summed.

    log N(z; 0, I) = sum_i -0.5 * (log(2 pi) + z_i^2). Source: [001] (prior p(z) = N(0, I)).
    """
    return _sum_nonbatch(-0.5 * (_LOG_2PI + z.pow(2)))


def kl_normal_standard(mu: Tensor, logvar: Tensor) -> Tensor:
    """KL(N(mu, diag exp(logvar)) || N(0, I)) in closed form, summed.

    KL = 0.5 * sum_j (mu_j^2 + exp(logvar_j) - 1 - logvar_j). Source: [001] ("-D_KL = 1/2 sum
    (1 + log sigma^2 - mu^2 - sigma^2)"), Kingma & Welling arXiv:1312.6114 appendix B.
    """
    mu, logvar = torch.broadcast_tensors(mu, logvar)
    return _sum_nonbatch(0.5 * (mu.pow(2) + torch.exp(logvar) - 1.0 - logvar))


def kl_normal(mu1: Tensor, logvar1: Tensor, mu2: Tensor, logvar2: Tensor) -> Tensor:
    """KL(N(mu1, diag exp(logvar1)) || N(mu2, diag exp(logvar2))) in closed form, summed.

    KL = 0.5 * sum_j (logvar2_j - logvar1_j + (exp(logvar1_j) + (mu1_j - mu2_j)^2) / exp(logvar2_j)
    - 1). Source: [001] (Gaussian KL terms of the diffusion bound), Ho et al. arXiv:2006.11239.
    """
    mu1, logvar1, mu2, logvar2 = torch.broadcast_tensors(mu1, logvar1, mu2, logvar2)
    ratio = (torch.exp(logvar1) + (mu1 - mu2).pow(2)) * torch.exp(-logvar2)
    return _sum_nonbatch(0.5 * (logvar2 - logvar1 + ratio - 1.0))


def reparameterize(mu: Tensor, logvar: Tensor, generator: torch.Generator | None = None) -> Tensor:
    """Draw z ~ N(mu, diag exp(logvar)) as a differentiable function of (mu, logvar).

    z = mu + exp(logvar / 2) * eps, eps ~ N(0, I). Source: [001] (reparametrization trick),
    Kingma & Welling arXiv:1312.6114 section 2.4.
    """
    shape = torch.broadcast_shapes(mu.shape, logvar.shape)
    eps = torch.randn(shape, generator=generator, device=mu.device, dtype=mu.dtype)
    return mu + torch.exp(0.5 * logvar) * eps


def log_bernoulli(x: Tensor, logits: Tensor) -> Tensor:
    """Bernoulli log-likelihood of x in [0, 1] under the given logits, summed.

    log p(x) = sum_i x_i log sigmoid(l_i) + (1 - x_i) log sigmoid(-l_i) = -BCE_with_logits(l, x);
    computed through binary_cross_entropy_with_logits so large |l| cannot overflow. x and logits
    have the same shape. Source: Kingma & Welling arXiv:1312.6114 appendix C.1.
    """
    return -_sum_nonbatch(F.binary_cross_entropy_with_logits(logits, x, reduction="none"))


def log_discretized_logistic(x: Tensor, mean: Tensor, log_scale: Tensor, levels: int) -> Tensor:
    """Log probability of x on the grid {k / (levels - 1)} under a discretized logistic, summed.

    With s = exp(log_scale), h = 0.5 / (levels - 1) and CDF(y) = sigmoid((y - mean) / s):
    P(x) = CDF(x + h) - CDF(x - h) for inner bins, P(0) = CDF(h), P(1) = 1 - CDF(1 - h).
    Inner bins use the exact identity, with a = (x + h - mean) / s and b = (x - h - mean) / s,
    sigmoid(a) - sigmoid(b) = sigmoid(a) * sigmoid(-b) * (1 - exp(b - a)), so
    log P = logsigmoid(a) + logsigmoid(-b) + log(-expm1(-(2h / s))); no term cancels, even in the
    tails. Source: Salimans et al. PixelCNN++ arXiv:1701.05517 (on [0, 1] instead of [-1, 1]).
    """
    if levels < 2:
        raise ValueError(f"levels must be >= 2, got {levels}")
    x, mean, log_scale = torch.broadcast_tensors(x, mean, log_scale)
    h = 0.5 / (levels - 1)
    inv_s = torch.exp(-log_scale)
    a = (x + h - mean) * inv_s
    b = (x - h - mean) * inv_s
    log_cdf_plus = F.logsigmoid(a)  # log CDF(x + h): the lowest bin's mass
    log_one_minus_cdf_min = F.logsigmoid(-b)  # log(1 - CDF(x - h)): the highest bin's mass
    # a - b = 2h / s is formed directly (no subtraction of nearly equal numbers); the clamp guards
    # against the mass underflowing to 0 when s is astronomically large.
    tiny = torch.finfo(x.dtype).tiny
    log_width = torch.log(torch.clamp(-torch.expm1(-2.0 * h * inv_s), min=tiny))
    log_mid = log_cdf_plus + log_one_minus_cdf_min + log_width
    # Bins are identified from x with a half-bin margin so float noise on x cannot pick a wrong one.
    log_p = torch.where(
        x < h, log_cdf_plus, torch.where(x > 1.0 - h, log_one_minus_cdf_min, log_mid)
    )
    return _sum_nonbatch(log_p)


def log_discretized_gaussian(
    x: Tensor,
    mean: Tensor,
    logvar: Tensor | float,
    levels: int,
    value_range: tuple[float, float] = (0.0, 1.0),
) -> Tensor:
    """Log probability of x on a grid of `levels` values in value_range, discretized Gaussian.

    With (lo, hi) = value_range, h = 0.5 * (hi - lo) / (levels - 1), s = exp(logvar / 2) and
    Phi the standard normal CDF: P(x) = Phi((x + h - mean) / s) - Phi((x - h - mean) / s) for inner
    values, with the lowest bin open to -inf (P = Phi((lo + h - mean) / s)) and the highest open
    to +inf (P = 1 - Phi((hi - h - mean) / s)); summed. The difference of CDFs is taken in the
    lower tail (by symmetry) so it does not cancel. Source: Ho et al. arXiv:2006.11239 eq. (13),
    the DDPM decoder p(x_0 | x_1) ([001] "a separate discrete decoder"), on [-1, 1], 256 levels.
    """
    lo, hi = value_range
    if levels < 2 or not hi > lo:
        raise ValueError(f"need levels >= 2 and hi > lo; got levels={levels}, range={value_range}")
    logvar = _as_tensor(logvar, x)
    x, mean, logvar = torch.broadcast_tensors(x, mean, logvar)
    h = 0.5 * (hi - lo) / (levels - 1)
    inv_s = torch.exp(-0.5 * logvar)
    upper = (x + h - mean) * inv_s  # standardised bin edges
    lower = (x - h - mean) * inv_s
    log_cdf_upper = torch.special.log_ndtr(upper)  # the lowest bin's mass
    log_sf_lower = torch.special.log_ndtr(-lower)  # the highest bin's mass
    # Phi(u) - Phi(l) = Phi(-l) - Phi(-u): use the form whose both terms lie in the lower tail.
    flip = lower > 0
    a = torch.where(flip, -lower, upper)
    b = torch.where(flip, -upper, lower)
    log_a = torch.special.log_ndtr(a)
    log_b = torch.special.log_ndtr(b)
    tiny = torch.finfo(x.dtype).tiny
    log_mid = log_a + torch.log(torch.clamp(-torch.expm1(log_b - log_a), min=tiny))
    # Bins are identified from x with a half-bin margin so float noise on x cannot pick a wrong one.
    log_p = torch.where(x < lo + h, log_cdf_upper, torch.where(x > hi - h, log_sf_lower, log_mid))
    return _sum_nonbatch(log_p)


def iwae_bound(log_w: Tensor) -> Tensor:
    """Importance-weighted bound from k log weights per example: (k, B) -> (B,).

    L_k = log (1/k) sum_i w_i = logsumexp_i(log w_i) - log k, with log w_i = log p(x, z_i) -
    log q(z_i | x), z_i ~ q. L_1 is the ELBO and L_k increases with k towards log p(x).
    Source: Burda et al. IWAE arXiv:1509.00519 eq. (8); [001] (importance sampling of z).
    """
    return torch.logsumexp(log_w, dim=0) - math.log(log_w.shape[0])
