"""VQ-VAE's quantiser and losses do what [001] says (genlab.nn.quantize, genlab.models.vqvae;
van den Oord et al. arXiv:1711.00937): nearest-code assignment, the straight-through gradient
and where the codebook and commitment terms send their gradients."""

from __future__ import annotations

import math

import pytest
import torch

from genlab.models.vqvae import codebook_loss, commitment_loss
from genlab.nn.quantize import VectorQuantizer, perplexity

EPS = torch.finfo(torch.float64).eps


# float64 by default in every test of this file (conftest.float64_default)
pytestmark = pytest.mark.usefixtures("float64_default")


def quantizer(k: int = 7, d: int = 3, seed: int = 0) -> VectorQuantizer:
    torch.manual_seed(seed)
    q = VectorQuantizer(k, d)
    with torch.no_grad():
        q.codebook.normal_()  # codes spread like the inputs below
    return q


def test_nearest_code_equals_brute_force() -> None:
    q = quantizer(k=16, d=4)
    g = torch.Generator().manual_seed(1)
    z_e = torch.randn(5, 4, 6, 7, generator=g)  # (B, D, h, w)
    codes = q(z_e).codes  # (B, h, w)
    e = q.codebook.detach()
    for b in range(5):
        for i in range(6):
            for j in range(7):
                dists = [float(((z_e[b, :, i, j] - e[c]) ** 2).sum()) for c in range(16)]
                assert int(codes[b, i, j]) == min(range(16), key=dists.__getitem__)


def test_quantised_value_is_the_code() -> None:
    q = quantizer()
    z_e = torch.randn(4, 3, 2, 2, generator=torch.Generator().manual_seed(2))
    out = q(z_e)
    assert torch.equal(out.e, q.codebook[out.codes].movedim(-1, 1))
    # z_q = z_e + (e - z_e) is e up to one rounding of each addition
    tol = 4 * EPS * (z_e.abs() + out.e.abs()).max()
    assert (out.z_q - out.e).abs().max() <= tol


def test_straight_through_gradient_wrt_z_e_equals_gradient_wrt_z_q() -> None:
    """[001]: grad_{z_e} ||x - Dec(z_q)||^2 = grad_{z_q} ||x - Dec(z_q)||^2."""
    q = quantizer()
    g = torch.Generator().manual_seed(3)
    z_e = torch.randn(4, 3, 2, 2, generator=g, requires_grad=True)
    x = torch.randn(4, 5, generator=g)
    w = torch.randn(5, 12, generator=g)

    def loss(z: torch.Tensor) -> torch.Tensor:  # a small nonlinear "decoder" and squared error
        return ((x - torch.tanh(z.flatten(1) @ w.T)) ** 2).sum()

    out = q(z_e)
    (grad_z_e,) = torch.autograd.grad(loss(out.z_q), z_e)
    z_q = out.e.detach().requires_grad_(True)
    (grad_z_q,) = torch.autograd.grad(loss(z_q), z_q)
    # the two graphs evaluate at z_q and at e, equal up to the rounding of the previous test
    assert torch.allclose(grad_z_e, grad_z_q, rtol=1e-10, atol=1e-12)
    assert grad_z_e.abs().max() > 0.1  # a real gradient, not a vacuous zero


def test_codebook_loss_moves_only_the_codebook() -> None:
    """||sg[z_e] - e||^2: zero gradient to the encoder, 2 (e_k - z_e) summed to code k."""
    q = quantizer()
    encoder = torch.nn.Linear(2, 3)
    x = torch.randn(10, 2, 4, generator=torch.Generator().manual_seed(4))
    z_e = encoder(x.transpose(1, 2)).transpose(1, 2)  # (B, D=3, 4)
    out = q(z_e)
    grads = torch.autograd.grad(
        codebook_loss(z_e, out.e).sum(),
        [encoder.weight, encoder.bias, q.codebook],
        allow_unused=True,
    )
    assert grads[0] is None and grads[1] is None
    z = q.flatten(z_e).detach()
    k = out.codes.flatten()
    expected = torch.zeros_like(q.codebook)
    expected.index_add_(0, k, 2 * (q.codebook.detach()[k] - z))
    assert torch.allclose(grads[2], expected, rtol=1e-12, atol=1e-12)
    assert expected.abs().max() > 0.1


def test_commitment_loss_moves_only_the_encoder() -> None:
    """||z_e - sg[e]||^2: zero gradient to the codebook, 2 (z_e - e_k) to z_e."""
    q = quantizer()
    z_e = torch.randn(6, 3, 2, 2, generator=torch.Generator().manual_seed(5), requires_grad=True)
    out = q(z_e)
    grad_z_e, grad_codebook = torch.autograd.grad(
        commitment_loss(z_e, out.e).sum(), [z_e, q.codebook], allow_unused=True
    )
    assert grad_codebook is None
    assert torch.allclose(grad_z_e, 2 * (z_e - out.e).detach(), rtol=1e-12, atol=1e-12)


def test_losses_are_the_squared_distances_per_example() -> None:
    q = quantizer()
    z_e = torch.randn(3, 3, 2, 2, generator=torch.Generator().manual_seed(6))
    out = q(z_e)
    direct = ((z_e - out.e) ** 2).sum(dim=(1, 2, 3))
    assert torch.allclose(codebook_loss(z_e, out.e), direct, rtol=1e-14)
    assert torch.allclose(commitment_loss(z_e, out.e), direct, rtol=1e-14)


def test_perplexity_of_uniform_and_single_code_use() -> None:
    k = 8
    assert math.isclose(float(perplexity(torch.arange(4 * k) % k, k)), k, rel_tol=1e-6)
    assert math.isclose(float(perplexity(torch.full((50,), 3), k)), 1.0, rel_tol=1e-6)
    # two codes used 3:1 -> exp(H) with H = -(3/4 log 3/4 + 1/4 log 1/4)
    h = -(0.75 * math.log(0.75) + 0.25 * math.log(0.25))
    codes = torch.tensor([0, 0, 0, 5])
    assert math.isclose(float(perplexity(codes, k)), math.exp(h), rel_tol=1e-6)


def test_ema_codebook_converges_to_the_mean_of_its_assigned_outputs() -> None:
    """N_i <- g N_i + (1-g) n_i, m_i <- g m_i + (1-g) s_i: m_i / N_i -> s_i / n_i for a fixed
    batch; after t updates the initial code weighs g^t, and Laplace smoothing adds O(eps)."""
    torch.manual_seed(0)
    q = VectorQuantizer(4, 2, ema=True, decay=0.5, restart_threshold=0.0)
    centres = torch.tensor([[-3.0, 0.0], [3.0, 0.0], [0.0, 3.0], [0.0, -3.0]])
    with torch.no_grad():
        q.codebook.copy_(centres + 0.5)
        q.ema_sum.copy_(q.codebook)
    g = torch.Generator().manual_seed(7)
    z = (centres.repeat(25, 1) + 0.3 * torch.randn(100, 2, generator=g)).T[None]  # (1, 2, 100)
    codes = q(z).codes
    for _ in range(60):
        q.update(z, codes)
    k = codes.flatten()
    means = torch.zeros(4, 2).index_add_(0, k, q.flatten(z)) / torch.bincount(k)[:, None]
    # g^60 ~ 1e-18 of the initial codes remain; smoothing scales N_i by 1 + O(eps / N_i + K eps
    # / N) ~ 1e-6 here (N_i = 25, N = 100, eps = 1e-5), times |e| <= 4: error < 1e-5
    assert torch.allclose(q.codebook, means, rtol=0, atol=1e-5)
