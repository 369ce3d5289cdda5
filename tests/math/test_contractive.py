"""The contractive-autoencoder penalty ||J_x z||_F^2 ([004]; Rifai et al. 2011) per example."""

from __future__ import annotations

import pytest
import torch

from genlab.math.jacobian import jacobian_frobenius_sq

DT = torch.float64


def test_tanh_layer_matches_analytic_formula() -> None:
    # Claim (Rifai et al. 2011, eq. for a sigmoid-type encoder): for h = tanh(W x + b),
    # ||J||_F^2 = sum_j (1 - h_j^2)^2 ||W_j||^2, W_j the j-th row of W.
    g = torch.Generator().manual_seed(0)
    W = torch.randn(3, 5, generator=g, dtype=DT)
    b = torch.randn(3, generator=g, dtype=DT)
    x = torch.randn(6, 5, generator=g, dtype=DT)

    def f(v: torch.Tensor) -> torch.Tensor:
        return torch.tanh(v @ W.T + b)

    h = f(x)
    analytic = ((1 - h.pow(2)).pow(2) * W.pow(2).sum(1)).sum(1)
    got = jacobian_frobenius_sq(f, x)
    assert got.shape == (6,)
    torch.testing.assert_close(got, analytic, rtol=1e-12, atol=1e-12)


def test_mlp_matches_full_jacobian_per_example() -> None:
    # Claim: equals the squared Frobenius norm of the full Jacobian of each example, here for a
    # 2-layer MLP on (B, 2, 3) inputs (non-flat input, several outputs).
    torch.manual_seed(1)  # module initialisation only
    mlp = torch.nn.Sequential(
        torch.nn.Flatten(), torch.nn.Linear(6, 7), torch.nn.Softplus(), torch.nn.Linear(7, 3)
    ).to(DT)
    x = torch.randn(4, 2, 3, generator=torch.Generator().manual_seed(2), dtype=DT)
    expected = torch.stack(
        [
            torch.autograd.functional.jacobian(lambda v: mlp(v.unsqueeze(0))[0], x[i]).pow(2).sum()
            for i in range(x.shape[0])
        ]
    )
    torch.testing.assert_close(jacobian_frobenius_sq(mlp, x), expected, rtol=1e-12, atol=1e-12)
    assert not x.requires_grad  # the caller's tensor is left as it was


def test_penalty_is_differentiable() -> None:
    # Claim: the penalty is a differentiable function of the parameters and the input (so it can
    # be trained on): torch.autograd.gradcheck against finite differences, float64.
    g = torch.Generator().manual_seed(3)
    W = torch.randn(2, 3, generator=g, dtype=DT, requires_grad=True)
    b = torch.randn(2, generator=g, dtype=DT, requires_grad=True)
    x = torch.randn(2, 3, generator=g, dtype=DT, requires_grad=True)

    def penalty(x: torch.Tensor, W: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return jacobian_frobenius_sq(lambda v: torch.tanh(v @ W.T + b), x)

    assert torch.autograd.gradcheck(penalty, (x, W, b))


def test_out_argument_gives_same_value_and_gradient() -> None:
    # Claim: passing z = f(x) already computed (x requiring grad) gives the same penalty and the
    # same parameter gradient as letting the function call f.
    torch.manual_seed(4)  # module initialisation only
    enc = torch.nn.Sequential(torch.nn.Linear(5, 4), torch.nn.Tanh(), torch.nn.Linear(4, 2)).to(DT)
    x = torch.randn(3, 5, generator=torch.Generator().manual_seed(5), dtype=DT)

    # The last bias does not enter the Jacobian: its gradient is None, materialised as zeros.
    params = list(enc.parameters())
    p1 = jacobian_frobenius_sq(enc, x)
    g1 = torch.autograd.grad(p1.sum(), params, allow_unused=True, materialize_grads=True)

    x_req = x.clone().requires_grad_(True)
    z = enc(x_req)
    p2 = jacobian_frobenius_sq(enc, x_req, out=z)
    g2 = torch.autograd.grad(p2.sum(), params, allow_unused=True, materialize_grads=True)

    torch.testing.assert_close(p2, p1, rtol=1e-12, atol=1e-12)
    for a, b in zip(g1, g2):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)
    with pytest.raises(ValueError):
        jacobian_frobenius_sq(enc, x, out=enc(x))  # x does not require grad: no Jacobian to take
