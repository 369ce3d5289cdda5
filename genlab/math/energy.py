"""Bernoulli-Bernoulli restricted Boltzmann machine: energy, free energy, Gibbs, partition function.

An RBM ([004] "Restricted Bolzmann machines": binary random variables on a bipartite graph) over
visible v in {0, 1}^V and hidden h in {0, 1}^H with weights W (V, H), visible bias b (V,) and
hidden bias c (H,) has the energy and distribution
    E(v, h) = -b.v - c.h - v W h,    p(v, h) = exp(-E(v, h)) / Z,    Z = sum_{v,h} exp(-E(v, h)).
Summing h out analytically gives the free energy (Hinton, "A practical guide to training RBMs",
2010):
    F(v) = -log sum_h exp(-E(v, h)) = -b.v - sum_j softplus(c_j + (v W)_j),   p(v) = exp(-F(v)) / Z,
and both conditionals factorise: p(h_j = 1 | v) = sigmoid(c_j + (v W)_j) and
p(v_i = 1 | h) = sigmoid(b_i + (W h)_i). The roles of v and h are symmetric (swap W -> W^T,
b <-> c), so log Z is exact by enumerating the smaller layer, 2^min(V, H) states; past that it is
estimated by annealed importance sampling (Salakhutdinov & Murray, "On the quantitative analysis
of deep belief networks", ICML 2008). Every random draw takes a `generator`.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from genlab.errors import GenlabError

EXACT_MAX_UNITS = 22  # 2^22 states: the most rbm_log_partition_exact enumerates
_CHUNK = 2**12  # states per block of the enumeration (bounds memory at 2^12 x the other layer)


def rbm_free_energy(v: Tensor, W: Tensor, b: Tensor, c: Tensor) -> Tensor:
    """F(v) = -b.v - sum_j softplus(c_j + (v W)_j); v (B, V), W (V, H), b (V,), c (H,) -> (B,)."""
    return -(v @ b) - F.softplus(c + v @ W).sum(-1)


def rbm_hidden_prob(v: Tensor, W: Tensor, c: Tensor) -> Tensor:
    """p(h_j = 1 | v) = sigmoid(c_j + (v W)_j); v (B, V) -> (B, H)."""
    return torch.sigmoid(c + v @ W)


def rbm_visible_prob(h: Tensor, W: Tensor, b: Tensor) -> Tensor:
    """p(v_i = 1 | h) = sigmoid(b_i + (W h)_i); h (B, H) -> (B, V)."""
    return torch.sigmoid(b + h @ W.T)


def rbm_gibbs_step(
    v: Tensor, W: Tensor, b: Tensor, c: Tensor, generator: torch.Generator | None = None
) -> tuple[Tensor, Tensor, Tensor]:
    """One block Gibbs step v -> h ~ p(h | v) -> v' ~ p(v' | h).

    Returns (v', p(v' = 1 | h), h), each (B, V) or (B, H); h is drawn before v'.
    """
    h = torch.bernoulli(rbm_hidden_prob(v, W, c), generator=generator)
    v_prob = rbm_visible_prob(h, W, b)
    return torch.bernoulli(v_prob, generator=generator), v_prob, h


def binary_states(m: int, start: int, stop: int, like: Tensor) -> Tensor:
    """Rows start..stop-1 of the 2^m binary states (bit j of the row index), (stop - start, m)."""
    index = torch.arange(start, stop, device=like.device)
    bits = torch.arange(m, device=like.device)
    return ((index[:, None] >> bits) & 1).to(like.dtype)


def rbm_log_partition_exact(W: Tensor, b: Tensor, c: Tensor) -> Tensor:
    """log Z by enumerating the smaller layer; the other layer is summed out analytically.

    H <= V: log Z = logsumexp_h [c.h + sum_i softplus(b_i + (W h)_i)] = logsumexp_h -F'(h) with
    F' the free energy of the transposed RBM (W^T, c, b); else logsumexp_v -F(v). Refuses
    (GenlabError) when min(V, H) > EXACT_MAX_UNITS. Returns a scalar in W's dtype.
    """
    V, H = W.shape
    m = min(V, H)
    if m > EXACT_MAX_UNITS:
        raise GenlabError(
            f"exact log Z enumerates 2^min(V, H) states; min({V}, {H}) = {m} is past "
            f"{EXACT_MAX_UNITS}: use the AIS estimate"
        )
    # enumerate the smaller layer as the "visible" one of an RBM with the same Z
    W_, b_, c_ = (W.T, c, b) if H <= V else (W, b, c)
    blocks = []
    for start in range(0, 2**m, _CHUNK):
        states = binary_states(m, start, min(start + _CHUNK, 2**m), W)  # (chunk, m)
        blocks.append(torch.logsumexp(-rbm_free_energy(states, W_, b_, c_), 0))
    return torch.logsumexp(torch.stack(blocks), 0)


def rbm_log_partition_ais(
    W: Tensor,
    b: Tensor,
    c: Tensor,
    *,
    betas: int,
    runs: int,
    generator: torch.Generator | None,
    base_bias: Tensor | None = None,
) -> tuple[Tensor, Tensor]:
    """AIS estimate of log Z and its standard error (Salakhutdinov & Murray 2008, section 4).

    Base-rate model A: p_A(v) = prod_i Bernoulli(v_i; sigmoid(b_A,i)), b_A = `base_bias` (the
    logits of the data's marginals, their choice) or zeros; with the H hidden units uncoupled,
    Z_A = 2^H prod_i (1 + exp(b_A,i)). Geometric path p_k ~ p_A^(1 - beta_k) p_B^beta_k over
    beta_k = k / K, k = 0..K (K = `betas`), itself an RBM with weights beta W:
        p*_k(v) = exp((1 - beta_k) b_A.v + beta_k b.v) prod_j (1 + exp(beta_k (c_j + (v W)_j))).
    Each of the R = `runs` chains starts at v_1 ~ p_A and alternates the weight update
    log w += log p*_k(v_k) - log p*_{k-1}(v_k) with one Gibbs step T_k that leaves p_k invariant
    (h ~ sigmoid(beta_k (c + v W)), v ~ sigmoid((1 - beta_k) b_A + beta_k (b + W h))). Then
        log Z_B ~ log Z_A + log (1/R) sum_r w_r   (an unbiased Z, so log Z is biased low),
        se(log Z_B) ~ std(w) / (sqrt(R) mean(w))   (delta method).
    Returns (log Z, se) as scalars in W's dtype; use float64 for thousands of temperatures.
    """
    if betas < 1 or runs < 2:
        raise GenlabError(f"AIS needs betas >= 1 and runs >= 2; got betas={betas}, runs={runs}")
    V, H = W.shape
    b_a = torch.zeros_like(b) if base_bias is None else base_bias.to(b)
    log_z_a = F.softplus(b_a).sum() + H * math.log(2.0)
    v = torch.bernoulli(torch.sigmoid(b_a).expand(runs, V), generator=generator)  # v_1 ~ p_A
    log_w = torch.zeros(runs, dtype=W.dtype, device=W.device)
    vis_diff = b - b_a
    beta_prev = 0.0
    for k in range(1, betas + 1):
        beta = k / betas
        pre = c + v @ W  # (R, H)
        log_w += (beta - beta_prev) * (v @ vis_diff)
        log_w += F.softplus(beta * pre).sum(-1) - F.softplus(beta_prev * pre).sum(-1)
        if k < betas:  # T_k: one Gibbs step of the intermediate RBM p_k
            h = torch.bernoulli(torch.sigmoid(beta * pre), generator=generator)
            v_logit = (1 - beta) * b_a + beta * (b + h @ W.T)
            v = torch.bernoulli(torch.sigmoid(v_logit), generator=generator)
        beta_prev = beta
    log_mean_w = torch.logsumexp(log_w, 0) - math.log(runs)
    w = torch.exp(log_w - log_w.max())  # weights scaled by a constant: the ratio below is exact
    se = w.std() / (math.sqrt(runs) * w.mean())
    return log_z_a + log_mean_w, se
