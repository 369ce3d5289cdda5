"""Per-example squared Frobenius norm of a Jacobian, differentiable so it can be a penalty."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor


def jacobian_frobenius_sq(
    f: Callable[[Tensor], Tensor], x: Tensor, *, out: Tensor | None = None
) -> Tensor:
    """Squared Frobenius norm of the Jacobian of f at each example, shape (B,).

    ||J_f(x_b)||_F^2 = sum_j sum_i (d f_j(x_b) / d x_{b,i})^2, for f mapping (B, *in) -> (B, *out)
    with examples independent (no batch norm in training mode): then the gradient of
    sum_b f_j(x_b) with respect to x_b is row j of J_f(x_b), one backward pass per output j.
    The graph is kept (create_graph=True) so the result can be backpropagated, as in the
    contractive autoencoder penalty lambda * ||J_x z||_F^2 ([004]; Rifai et al., ICML 2011).

    `out`: optionally f(x) already computed by the caller from an `x` that requires grad, so the
    encoder runs once for both the loss and the penalty; `f` is then not called.
    """
    if out is None:
        if not x.requires_grad:
            # A detached view that requires grad; the caller's tensor is left untouched.
            x = x.detach().requires_grad_(True)
        out = f(x)
    elif not x.requires_grad:
        raise ValueError("jacobian_frobenius_sq: with out=, x must require grad and out = f(x)")
    out = out.reshape(out.shape[0], -1)  # (B, d)
    total = torch.zeros(out.shape[0], dtype=out.dtype, device=out.device)
    if not out.requires_grad:
        return total  # f does not depend on anything differentiable: the Jacobian is zero
    for j in range(out.shape[1]):
        (g,) = torch.autograd.grad(
            out[:, j].sum(), x, create_graph=True, retain_graph=True, allow_unused=True
        )
        if g is not None:  # None: output j does not depend on x, its row of J is zero
            total = total + g.reshape(g.shape[0], -1).pow(2).sum(dim=1)
    return total
