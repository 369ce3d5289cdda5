"""The hierarchical VAE's bound ([003] "Hierarchical VAE": z_1 conditioned on z_2), checked by hand.

Generative p(z_2) p(z_1 | z_2) p(x | z_1), bottom-up inference q(z_1 | x) q(z_2 | z_1). The log
weight log w = log p(x, z_1, z_2) - log q(z_1, z_2 | x) is recomputed here from the component
densities with torch.distributions (not genlab.math); the ELBO is E_q[log w] and the IWAE bound
L_k = E[log (1/k) sum_i w_i] (Burda et al. arXiv:1509.00519). On a linear-Gaussian hierarchy with
1-D latents, log p(x) and the exact posterior are closed forms. float64, fixed seeds; tolerances
are 5 standard errors computed in the test, or a delta-method bias bound derived in the test.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn
from torch.distributions import MultivariateNormal, Normal

import genlab.models.hvae  # noqa: F401  (registers hvae)
from genlab import models
from genlab.data.spec import DataSpec

DT = torch.float64
VEC = DataSpec("vec2", (2,))


def small_hvae(seed: int = 0) -> genlab.models.hvae.HVAE:
    torch.manual_seed(seed)
    model = models.build(
        "hvae", VEC, latent_dim=2, upper_dim=2, hidden=(16,), likelihood="gaussian"
    )
    return model.double().eval()


def data(n: int, seed: int) -> Tensor:
    return 1.5 * torch.randn(n, 2, generator=torch.Generator().manual_seed(seed), dtype=DT)


def mean_se(v: Tensor) -> tuple[float, float]:
    return float(v.mean()), float(v.std() / math.sqrt(len(v)))


def normal_of(out: Tensor) -> Normal:
    """Diagonal Gaussian from a net output (mu, logvar) concatenated on dim 1."""
    mu, logvar = out.chunk(2, dim=1)
    return Normal(mu, torch.exp(0.5 * logvar))


def hand_log_w(model, x: Tensor, z1: Tensor, z2: Tensor) -> Tensor:
    """log p(x|z_1) + log p(z_1|z_2) + log p(z_2) - log q(z_1|x) - log q(z_2|z_1), per example."""
    x_mean = model.decoder(z1)  # unbounded data: the Gaussian's mean is the decoder output
    log_px = Normal(x_mean, torch.exp(model.likelihood.log_scale)).log_prob(x).sum(1)
    log_pz1 = normal_of(model.prior[0](z2)).log_prob(z1).sum(1)
    log_pz2 = Normal(torch.zeros_like(z2), 1.0).log_prob(z2).sum(1)
    log_qz1 = normal_of(model.encoder(x)).log_prob(z1).sum(1)
    log_qz2 = normal_of(model.inference[0](z1)).log_prob(z2).sum(1)
    return log_px + log_pz1 + log_pz2 - log_qz1 - log_qz2


def test_bound_terms_are_the_log_weight_of_the_drawn_latents() -> None:
    # log p(x|z_1) - sum_l KL_l (single-sample top term) is exactly log w at the drawn z, and
    # nll_bound(k=1) is -log w at the z that posterior() draws with the same generator state.
    model = small_hvae()
    x = data(7, seed=1)
    with torch.no_grad():
        layers = model.posterior(x, generator=torch.Generator().manual_seed(2))
        (z1, _, _), (z2, _, _) = layers
        log_px_z, kls = model.bound_terms(x, layers, closed_form_top=False)
        expected = hand_log_w(model, x, z1, z2)
        torch.testing.assert_close(log_px_z - sum(kls), expected, rtol=0, atol=1e-10)
        bound = model.nll_bound(x, k=1, generator=torch.Generator().manual_seed(2))
    torch.testing.assert_close(bound, -expected, rtol=0, atol=1e-10)


def test_elbo_is_the_monte_carlo_average_of_the_hand_log_weight() -> None:
    # ELBO(x) = E_q[log p(x, z_1, z_2) - log q(z_1, z_2 | x)]: the model's -nelbo (closed-form top
    # KL) averaged over draws matches the plain MC average of hand_log_w with z drawn here by
    # torch.distributions, within 5 SE of the difference.
    model = small_hvae(seed=3)
    x = data(4, seed=4)
    reps, copies = 100, 40  # each rep: the batch x repeated `copies` times
    torch.manual_seed(5)
    with torch.no_grad():
        xr = x.repeat(reps * copies, 1)
        z1 = normal_of(model.encoder(xr)).sample()
        z2 = normal_of(model.inference[0](z1)).sample()
        hand = hand_log_w(model, xr, z1, z2).view(reps, -1).mean(1)
        fwd = torch.stack([-model({"x": x.repeat(copies, 1)})["nelbo"] for _ in range(reps)])
    m_h, se_h = mean_se(hand)
    m_f, se_f = mean_se(fwd)
    assert se_h > 0 and se_f > 0
    assert abs(m_h - m_f) < 5 * math.hypot(se_h, se_f), (m_h, se_h, m_f, se_f)


def test_iwae_k1_is_the_elbo_and_larger_k_is_tighter() -> None:
    # Burda et al.: E[L_1] = ELBO and E[L_k] >= E[L_1]. The untrained encoder is far from the
    # posterior, so the gain from k = 1 to 5 to 50 must be clearly positive (> 5 SE each).
    model = small_hvae(seed=6)
    x = data(8, seed=7)
    reps = 300
    with torch.no_grad():
        torch.manual_seed(8)
        elbo = torch.stack([-model({"x": x})["nelbo"] for _ in range(reps)])
        stats = {}
        for k in (1, 5, 50):
            g = torch.Generator().manual_seed(k)
            lk = -model.nll_bound(x.repeat(reps, 1), k=k, generator=g).view(reps, 8).mean(1)
            stats[k] = mean_se(lk)
    m_e, se_e = mean_se(elbo)
    (m1, se1), (m5, se5), (m50, se50) = stats[1], stats[5], stats[50]
    assert abs(m1 - m_e) < 5 * math.hypot(se1, se_e), (m1, se1, m_e, se_e)
    assert m5 - m1 > 5 * math.hypot(se1, se5), stats
    assert m50 - m5 > 5 * math.hypot(se5, se50), stats


# ------------------------------------------------------------ a linear-Gaussian hierarchy
# p(z_2) = N(0, 1), p(z_1 | z_2) = N(a z_2 + c, v1), p(x | z_1) = N(w z_1 + b, s^2 I_2). Then
# z_1 ~ N(c, a^2 + v1) and x ~ N(b + w c, (a^2 + v1) w w^T + s^2 I). The exact posterior factorises
# as the bottom-up q does: p(z_1, z_2 | x) = p(z_1 | x) p(z_2 | z_1), with
# p(z_1 | x) = N(m1, S1), 1/S1 = 1/(a^2 + v1) + |w|^2/s^2, m1 = S1 (c/(a^2 + v1) + w.(x - b)/s^2),
# p(z_2 | z_1) = N(S2 a (z_1 - c)/v1, S2), 1/S2 = 1 + a^2/v1.
A, C, V1, S = 1.3, 0.4, 0.3, 0.5
W = torch.tensor([1.2, -0.7], dtype=DT)
B = torch.tensor([0.2, -0.1], dtype=DT)
P1 = A**2 + V1  # marginal variance of z_1
S2 = 1.0 / (1.0 + A**2 / V1)


class Affine(nn.Module):
    """u (N, 1) -> (N, out): u * slope + offset, then a constant log-variance column if given."""

    def __init__(self, slope: Tensor, offset: Tensor, logvar: float | None = None) -> None:
        super().__init__()
        self.slope, self.offset, self.logvar = slope, offset, logvar

    def forward(self, u: Tensor, labels: Tensor | None = None) -> Tensor:
        out = u * self.slope + self.offset
        if self.logvar is None:
            return out
        return torch.cat([out, torch.full_like(out, self.logvar)], dim=1)


class PosteriorZ1(nn.Module):
    """x (N, 2) -> (mu, logvar) of q(z_1 | x) = N(m1(x) + shift, S1 e^widen)."""

    def __init__(self, s1: float, shift: float, widen: float) -> None:
        super().__init__()
        self.s1, self.shift, self.widen = s1, shift, widen

    def forward(self, x: Tensor) -> Tensor:
        m1 = self.s1 * (C / P1 + (x - B) @ W / S**2)
        mu = (m1 + self.shift).unsqueeze(1)
        return torch.cat([mu, torch.full_like(mu, math.log(self.s1) + self.widen)], dim=1)


def linear_hvae(shift1: float = 0.0, widen1: float = 0.0, shift2: float = 0.0):
    """The hierarchy above as an hvae; q(z_1|x) shifted/widened and q(z_2|z_1) shifted by the
    arguments. Returns (model, exact -log p(x) function, exact gap KL(q || p(z_1, z_2 | x)))."""
    model = models.build(
        "hvae", VEC, latent_dim=1, upper_dim=1, hidden=(4,), likelihood="gaussian"
    ).double()
    s1 = 1.0 / (1.0 / P1 + float(W @ W) / S**2)
    one = torch.ones((), dtype=DT)
    model.encoder = PosteriorZ1(s1, shift1, widen1)
    model.inference = nn.ModuleList(
        [Affine(S2 * A / V1 * one, -S2 * A * C / V1 + shift2 * one, math.log(S2))]
    )
    model.prior = nn.ModuleList([Affine(A * one, C * one, math.log(V1))])
    model.decoder = Affine(W, B)
    with torch.no_grad():
        model.likelihood.log_scale.fill_(math.log(S))
    cov = P1 * torch.outer(W, W) + S**2 * torch.eye(2, dtype=DT)
    px = MultivariateNormal(B + W * C, cov)
    # KL(q(z_1|x) || p(z_1|x)) + E_q KL(q(z_2|z_1) || p(z_2|z_1)), both between 1-D Gaussians.
    gap = 0.5 * (math.exp(widen1) + shift1**2 / s1 - 1 - widen1) + shift2**2 / (2 * S2)
    return model.eval(), (lambda x: -px.log_prob(x)), gap


def test_iwae_is_exact_with_the_exact_posterior() -> None:
    # With q = p(z_1, z_2 | x) every log weight equals log p(x), so the bound is exact for any k.
    model, exact_nll, gap = linear_hvae()
    assert gap == 0.0
    x = data(6, seed=9)
    with torch.no_grad():
        for k in (1, 5):
            bound = model.nll_bound(x, k=k, generator=torch.Generator().manual_seed(k))
            torch.testing.assert_close(bound, exact_nll(x), rtol=1e-10, atol=1e-10)


def test_iwae_approaches_log_evidence_with_large_k() -> None:
    # k = 1: E[-L_1] = -log p(x) + gap exactly. k = 1000: above -log p(x) (within 5 SE) and below
    # it plus the delta-method bias Var(w / p(x)) / (2k) (x 3) + 5 SE; far below the k = 1 gap.
    model, exact_nll, gap = linear_hvae(shift1=0.5, widen1=0.8, shift2=0.4)
    x = data(1, seed=10)
    exact = float(exact_nll(x))
    g = torch.Generator().manual_seed(11)
    with torch.no_grad():
        b1 = model.nll_bound(x.repeat(8000, 1), k=1, generator=g)
        b1000 = model.nll_bound(x.repeat(200, 1), k=1000, generator=g)
    m1, se1 = mean_se(b1)
    m1000, se1000 = mean_se(b1000)
    assert gap > 0.3
    assert abs(m1 - exact - gap) < 5 * se1, (m1, exact, gap, se1)
    bias = float(torch.exp(exact - b1).var()) / (2 * 1000)  # weights w / p(x) have mean 1
    assert m1000 - exact > -5 * se1000, (m1000, exact, se1000)
    assert m1000 - exact < 3 * bias + 5 * se1000, (m1000, exact, bias, se1000)
    assert m1000 - exact < gap / 20, (m1000, exact, gap)


def test_ancestral_samples_have_the_model_marginal() -> None:
    # sample() returns the decoder mean w z_1 + b with z_2 ~ N(0, 1), z_1 ~ p(z_1 | z_2): its law
    # is N(b + w c, P1 w w^T). Check the mean of w.(x - b) / |w|^2 = z_1 (N(c, P1)) and its
    # variance, each within 5 SE (SE of a Gaussian sample variance: P1 sqrt(2 / (n - 1))).
    model, _, _ = linear_hvae()
    n = 20000
    x = model.sample(n, generator=torch.Generator().manual_seed(12))
    assert x.shape == (n, 2) and x.dtype == DT
    z1 = (x - B) @ W / (W @ W)
    torch.testing.assert_close(x, B + z1[:, None] * W, rtol=0, atol=1e-12)  # on the line
    assert abs(float(z1.mean()) - C) < 5 * math.sqrt(P1 / n)
    assert abs(float(z1.var()) - P1) < 5 * P1 * math.sqrt(2 / (n - 1))
