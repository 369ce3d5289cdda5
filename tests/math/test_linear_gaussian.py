"""The ELBO identity and the IWAE bound on a linear-Gaussian latent model with exact answers.

Model: p(z) = N(0, I_d), p(x | z) = N(W z + b, s^2 I_D), D = 5, d = 2. Then exactly
log p(x) = log N(x; b, W W^T + s^2 I) and p(z | x) = N(m*, S*) with S* = (I + W^T W / s^2)^-1,
m* = S* W^T (x - b) / s^2 ([001]: log p(x) = ELBO + KL(q(z|x) || p(z|x))).
"""

from __future__ import annotations

import math

import torch

from genlab.math.gaussian import (
    iwae_bound,
    kl_normal_standard,
    log_normal,
    log_standard_normal,
    reparameterize,
)

DT = torch.float64
D, d = 5, 2


def _model(seed: int, orthogonal: bool = False) -> tuple[torch.Tensor, torch.Tensor, float]:
    g = torch.Generator().manual_seed(seed)
    W = torch.randn(D, d, generator=g, dtype=DT)
    if orthogonal:
        # Orthogonal columns make W^T W diagonal, hence a diagonal exact posterior.
        q, _ = torch.linalg.qr(W)
        W = q * torch.tensor([1.5, 0.6], dtype=DT)
    b = torch.randn(D, generator=g, dtype=DT)
    s = 0.5 + torch.rand((), generator=g, dtype=DT).item()
    return W, b, s


def _log_mvn(x: torch.Tensor, m: torch.Tensor, C: torch.Tensor) -> torch.Tensor:
    """log N(x; m, C) for full covariance C, rows of x (B, n)."""
    L = torch.linalg.cholesky(C)
    r = torch.linalg.solve_triangular(L, (x - m).unsqueeze(-1), upper=False).squeeze(-1)
    logdet = 2 * torch.log(torch.diagonal(L)).sum()
    return -0.5 * (x.shape[-1] * math.log(2 * math.pi) + logdet + r.pow(2).sum(-1))


def _exact(x: torch.Tensor, W: torch.Tensor, b: torch.Tensor, s: float):
    """Exact log p(x) (B,), posterior means (B, d) and posterior covariance (d, d)."""
    log_px = _log_mvn(x, b, W @ W.T + s**2 * torch.eye(D, dtype=DT))
    S_post = torch.linalg.inv(torch.eye(d, dtype=DT) + W.T @ W / s**2)
    m_post = (x - b) @ W @ S_post / s**2  # rows: S* W^T (x - b) / s^2 (S* symmetric)
    return log_px, m_post, S_post


def _elbo_closed_form(x, W, b, s, m, logv) -> torch.Tensor:
    """ELBO for q = N(m, diag exp(logv)) in closed form, (B,)."""
    v = torch.exp(logv)
    # E_q log N(x; W z + b, s^2 I) = log N(x; W m + b, s^2 I) - tr(W diag(v) W^T) / (2 s^2).
    trace = (W.pow(2).sum(0) * v).sum(-1)  # tr(W diag v W^T) = sum_j v_j ||W[:, j]||^2
    expected_loglik = log_normal(x, m @ W.T + b, 2 * math.log(s)) - trace / (2 * s**2)
    return expected_loglik - kl_normal_standard(m, logv)


def _kl_full(m1, S1, m2, S2) -> torch.Tensor:
    """KL(N(m1, S1) || N(m2, S2)) for full covariances, rows of m1, m2 (B, n)."""
    S2_inv = torch.linalg.inv(S2)
    diff = m2 - m1
    n = m1.shape[-1]
    return 0.5 * (
        torch.trace(S2_inv @ S1)
        + torch.einsum("bi,ij,bj->b", diff, S2_inv, diff)
        - n
        + torch.logdet(S2)
        - torch.logdet(S1)
    )


def _data(seed: int, B: int = 6):
    g = torch.Generator().manual_seed(seed)
    x = 2 * torch.randn(B, D, generator=g, dtype=DT)
    m = torch.randn(B, d, generator=g, dtype=DT)
    logv = torch.randn(B, d, generator=g, dtype=DT)
    return x, m, logv


def test_log_evidence_equals_elbo_plus_posterior_kl() -> None:
    # Claim [001]: log p(x) = ELBO(q) + KL(q(z|x) || p(z|x)) for any q; here an arbitrary diagonal
    # Gaussian q per example, every term in closed form, to float64 precision.
    W, b, s = _model(0)
    x, m, logv = _data(10)
    log_px, m_post, S_post = _exact(x, W, b, s)
    elbo = _elbo_closed_form(x, W, b, s, m, logv)
    kl_post = torch.stack(
        [
            _kl_full(m[i : i + 1], torch.diag(torch.exp(logv[i])), m_post[i : i + 1], S_post)[0]
            for i in range(x.shape[0])
        ]
    )
    assert torch.all(kl_post > 0)  # the posterior is not diagonal, so no diagonal q is exact
    torch.testing.assert_close(elbo + kl_post, log_px, rtol=0, atol=1e-10)


def test_elbo_is_tight_at_the_exact_posterior() -> None:
    # Claim [001]: ELBO = log p(x) when q(z|x) = p(z|x). With orthogonal columns of W the posterior
    # is diagonal, so the library's diagonal-Gaussian terms express it exactly.
    W, b, s = _model(1, orthogonal=True)
    x, _, _ = _data(11)
    log_px, m_post, S_post = _exact(x, W, b, s)
    assert torch.allclose(S_post, torch.diag(torch.diagonal(S_post)), atol=1e-14)
    logv = torch.log(torch.diagonal(S_post)).expand(x.shape[0], d)
    torch.testing.assert_close(
        _elbo_closed_form(x, W, b, s, m_post, logv), log_px, rtol=0, atol=1e-10
    )


def _log_weights(x, W, b, s, m, logv, k: int, reps: int, g: torch.Generator) -> torch.Tensor:
    """log w = log p(x|z) + log p(z) - log q(z|x), z ~ q by reparameterize: (k, reps) for one x."""
    n = k * reps
    m_n, logv_n = m.expand(n, d), logv.expand(n, d)
    z = reparameterize(m_n, logv_n, generator=g)
    log_w = (
        log_normal(x.expand(n, D), z @ W.T + b, 2 * math.log(s))
        + log_standard_normal(z)
        - log_normal(z, m_n, logv_n)
    )
    return log_w.reshape(k, reps)


def _mean_se(v: torch.Tensor) -> tuple[float, float]:
    return v.mean().item(), (v.std() / math.sqrt(v.numel())).item()


def test_monte_carlo_elbo_matches_closed_form() -> None:
    # Claim [001]: the MC estimate (1/L) sum_l [log p(x|z_l) + log p(z_l) - log q(z_l|x)] built
    # from log_normal / log_standard_normal / reparameterize is unbiased for the ELBO (5 SE).
    W, b, s = _model(2)
    x, m, logv = _data(12, B=3)
    elbo = _elbo_closed_form(x, W, b, s, m, logv)
    g = torch.Generator().manual_seed(13)
    for i in range(x.shape[0]):
        mean, se = _mean_se(_log_weights(x[i : i + 1], W, b, s, m[i], logv[i], 1, 100_000, g))
        assert abs(mean - elbo[i].item()) < 5 * se, (i, mean, elbo[i].item(), se)


def test_iwae_bound_increases_with_k_and_stays_below_log_evidence() -> None:
    # Claims (Burda et al. arXiv:1509.00519): E[L_1] = ELBO; E[L_1] < E[L_5] < E[L_50] (each
    # difference > 5 SE); every E[L_k] <= log p(x) (sample mean below log p(x) + 5 SE).
    W, b, s = _model(3)
    x, _, _ = _data(14, B=1)
    log_px, m_post, S_post = _exact(x, W, b, s)
    # A deliberately mismatched diagonal q: mean shifted by one posterior sd, variances halved.
    sd_post = torch.sqrt(torch.diagonal(S_post))
    m = m_post[0] + sd_post
    logv = torch.log(0.5 * sd_post**2)
    elbo = _elbo_closed_form(x, W, b, s, m.unsqueeze(0), logv.unsqueeze(0)).item()
    g = torch.Generator().manual_seed(15)
    reps = 20_000
    stats = {
        k: _mean_se(iwae_bound(_log_weights(x, W, b, s, m, logv, k, reps, g))) for k in (1, 5, 50)
    }
    mean1, se1 = stats[1]
    assert abs(mean1 - elbo) < 5 * se1, (mean1, elbo, se1)
    for k_lo, k_hi in ((1, 5), (5, 50)):
        (lo, se_lo), (hi, se_hi) = stats[k_lo], stats[k_hi]
        assert hi - lo > 5 * math.sqrt(se_lo**2 + se_hi**2), (k_lo, k_hi, lo, hi)
    for k, (mean, se) in stats.items():
        assert mean < log_px.item() + 5 * se, (k, mean, log_px.item(), se)
