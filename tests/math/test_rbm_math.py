"""The RBM formulas of genlab.math.energy checked by brute-force enumeration of tiny RBMs.

E(v, h) = -b.v - c.h - v W h is written out here directly, and every sum over states is done by
listing all of them in float64, so identities are checked to float64 precision. Monte-Carlo
checks (AIS, Gibbs draws) pass within 4 standard errors (two-sided normal level ~6e-5 each).
"""

from __future__ import annotations

import itertools
import math

import pytest
import torch

from genlab.errors import GenlabError
from genlab.math.energy import (
    EXACT_MAX_UNITS,
    rbm_free_energy,
    rbm_gibbs_step,
    rbm_hidden_prob,
    rbm_log_partition_ais,
    rbm_log_partition_exact,
    rbm_visible_prob,
)

DT = torch.float64
N_SE = 4.0


def states(m: int) -> torch.Tensor:
    """All 2^m binary vectors, (2^m, m)."""
    return torch.tensor(list(itertools.product([0.0, 1.0], repeat=m)), dtype=DT)


def energy(v: torch.Tensor, h: torch.Tensor, W, b, c) -> torch.Tensor:
    """E(v, h) for every pair: v (N, V), h (M, H) -> (N, M)."""
    return -(v @ b)[:, None] - (h @ c)[None, :] - v @ W @ h.T


def rbm(V: int, H: int, seed: int, scale: float = 1.0):
    g = torch.Generator().manual_seed(seed)
    W = scale * torch.randn(V, H, generator=g, dtype=DT)
    b = 0.5 * torch.randn(V, generator=g, dtype=DT)
    c = 0.5 * torch.randn(H, generator=g, dtype=DT)
    return W, b, c


def test_free_energy_is_minus_log_sum_over_hidden_states() -> None:
    # F(v) = -log sum_h exp(-E(v, h)) = -b.v - sum_j softplus(c_j + (v W)_j)
    W, b, c = rbm(4, 3, seed=0)
    v, h = states(4), states(3)
    brute = -torch.logsumexp(-energy(v, h, W, b, c), dim=1)
    torch.testing.assert_close(rbm_free_energy(v, W, b, c), brute, rtol=0, atol=1e-12)


@pytest.mark.parametrize("V,H", [(5, 4), (4, 6)])  # enumerate h, then v
def test_exact_log_likelihood_by_full_enumeration(V: int, H: int) -> None:
    W, b, c = rbm(V, H, seed=1)
    v, h = states(V), states(H)
    neg_e = -energy(v, h, W, b, c)  # (2^V, 2^H)
    log_z = torch.logsumexp(neg_e.flatten(), 0)  # Z = sum over all (v, h)
    log_z_exact = rbm_log_partition_exact(W, b, c)
    torch.testing.assert_close(log_z_exact, log_z, rtol=0, atol=1e-12)
    log_p_brute = torch.logsumexp(neg_e, dim=1) - log_z  # log sum_h p(v, h)
    log_p = -rbm_free_energy(v, W, b, c) - log_z_exact
    torch.testing.assert_close(log_p, log_p_brute, rtol=0, atol=1e-12)
    torch.testing.assert_close(log_p.exp().sum(), torch.tensor(1.0, dtype=DT), rtol=0, atol=1e-12)


def test_exact_log_partition_across_enumeration_blocks() -> None:
    # 2^13 visible states are enumerated in several blocks; one logsumexp over all must agree
    W, b, c = rbm(13, 14, seed=2, scale=0.3)
    log_z = torch.logsumexp(-rbm_free_energy(states(13), W, b, c), 0)
    torch.testing.assert_close(rbm_log_partition_exact(W, b, c), log_z, rtol=0, atol=1e-10)
    # the transposed RBM (W^T, c, b) has the same Z and enumerates the other way round
    torch.testing.assert_close(rbm_log_partition_exact(W.T, c, b), log_z, rtol=0, atol=1e-10)


def test_exact_log_partition_refuses_large_layers() -> None:
    m = EXACT_MAX_UNITS + 1
    with pytest.raises(GenlabError, match="AIS"):
        rbm_log_partition_exact(torch.zeros(m, m + 5), torch.zeros(m), torch.zeros(m + 5))


@pytest.mark.parametrize("with_base_rate", [False, True])
def test_ais_estimate_within_standard_errors_of_exact(with_base_rate: bool) -> None:
    W, b, c = rbm(10, 8, seed=3)
    exact = rbm_log_partition_exact(W, b, c)
    base = None
    if with_base_rate:  # logits of this RBM's own visible marginals, the base rate AIS prefers
        v = states(10)
        p_v = (-rbm_free_energy(v, W, b, c) - exact).exp()
        mean = (p_v[:, None] * v).sum(0)
        base = torch.log(mean) - torch.log1p(-mean)
    est, se = rbm_log_partition_ais(
        W, b, c, betas=1000, runs=400, generator=torch.Generator().manual_seed(0), base_bias=base
    )
    # the test has teeth: the base model's log Z_A is many standard errors away from log Z
    b_a = torch.zeros(10, dtype=DT) if base is None else base
    log_z_a = torch.nn.functional.softplus(b_a).sum() + 8 * math.log(2)
    assert 0 < se < 0.05 and abs(log_z_a - exact) > 20 * se, (se, log_z_a, exact)
    assert abs(est - exact) < N_SE * se, (float(est), float(exact), float(se))


def test_ais_standard_error_matches_spread_of_repeats() -> None:
    # the delta-method se must describe the spread of independent AIS estimates; with 24
    # repeats the sample std has relative standard error ~1/sqrt(2 * 23) = 15%, so a ratio
    # outside [0.5, 2] is more than 3 of those away
    W, b, c = rbm(10, 8, seed=4)
    estimates, ses = [], []
    for seed in range(24):
        g = torch.Generator().manual_seed(100 + seed)
        est, se = rbm_log_partition_ais(W, b, c, betas=100, runs=100, generator=g)
        estimates.append(float(est))
        ses.append(float(se))
    ratio = torch.tensor(estimates).std().item() / (sum(ses) / len(ses))
    assert 0.5 < ratio < 2.0, ratio


def test_gibbs_conditionals_factorise_as_sigmoids() -> None:
    # p(h | v) = prod_j Bernoulli(h_j; sigmoid(c_j + (v W)_j)), and likewise p(v | h)
    W, b, c = rbm(4, 3, seed=5)
    v, h = states(4), states(3)
    neg_e = -energy(v, h, W, b, c)
    p_h_given_v = torch.softmax(neg_e, dim=1)  # (2^V, 2^H)
    q = rbm_hidden_prob(v, W, c)  # (2^V, H)
    product = torch.prod(torch.where(h[None] == 1, q[:, None], 1 - q[:, None]), dim=-1)
    torch.testing.assert_close(product, p_h_given_v, rtol=0, atol=1e-12)
    p_v_given_h = torch.softmax(neg_e, dim=0)  # (2^V, 2^H), columns sum to one
    r = rbm_visible_prob(h, W, b)  # (2^H, V)
    product = torch.prod(torch.where(v[:, None] == 1, r[None], 1 - r[None]), dim=-1)
    torch.testing.assert_close(product, p_v_given_h, rtol=0, atol=1e-12)


def test_gibbs_kernel_leaves_p_v_invariant() -> None:
    # T(v' | v) = sum_h p(h | v) p(v' | h) satisfies sum_v p(v) T(v' | v) = p(v')
    W, b, c = rbm(4, 3, seed=6)
    v, h = states(4), states(3)
    neg_e = -energy(v, h, W, b, c)
    p_h_given_v = torch.softmax(neg_e, dim=1)
    p_v_given_h = torch.softmax(neg_e, dim=0)
    kernel = p_h_given_v @ p_v_given_h.T  # (2^V, 2^V): row v, column v'
    p_v = torch.softmax(-rbm_free_energy(v, W, b, c), 0)
    torch.testing.assert_close(p_v @ kernel, p_v, rtol=0, atol=1e-12)


def test_gibbs_step_draws_from_the_conditionals() -> None:
    W, b, c = rbm(4, 3, seed=7)
    n = 20000
    v0 = torch.tensor([1.0, 0.0, 1.0, 1.0], dtype=DT).expand(n, 4)
    g = torch.Generator().manual_seed(0)
    v1, v1_prob, h = rbm_gibbs_step(v0, W, b, c, g)
    p_h = rbm_hidden_prob(v0[:1], W, c)[0]
    torch.testing.assert_close(v1_prob, rbm_visible_prob(h, W, b), rtol=0, atol=0)
    # E[v'] = sum_h p(h | v0) p(v' = 1 | h), by enumeration of h
    hs = states(3)
    p_hs = torch.prod(torch.where(hs == 1, p_h, 1 - p_h), dim=1)
    p_v1 = p_hs @ rbm_visible_prob(hs, W, b)
    for draws, p in ((h, p_h), (v1, p_v1)):
        se = (p * (1 - p) / n).sqrt()
        assert torch.all((draws.mean(0) - p).abs() < N_SE * se), (draws.mean(0), p)
