"""Transposed convolution is the transpose (adjoint) of the strided convolution matrix ([004]).

The notes' 1-D example upsamples a signal of size 2 to size 4 with w = [1, 2, 1]. Stride 1 with
padding 1 at size 4 gives A_w = [[2,1,0,0],[1,2,1,0],[0,1,2,1],[0,0,1,2]]; stride 2 keeps rows
0 and 2: A_{w,s} = [[2,1,0,0],[0,1,2,1]]. (The notes print the second row as [0,1,2,0] and a
garbled A^T; row 2 of their own A_w is [0,1,2,1], which is what is checked here.)
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

DT = torch.float64


def _matrix(op, in_shape: tuple[int, ...]) -> torch.Tensor:
    """The matrix of a linear map on tensors of in_shape (no batch dim), built column by column
    from basis vectors: column i = op(e_i) flattened."""
    n = 1
    for size in in_shape:
        n *= size
    basis = torch.eye(n, dtype=DT).reshape(n, *in_shape)  # batch of all basis vectors
    return op(basis).reshape(n, -1).T  # (out_dim, in_dim)


W_1D = torch.tensor([1.0, 2.0, 1.0], dtype=DT).reshape(1, 1, 3)  # (C_out, C_in, k)


def test_1d_example_convolution_matrices() -> None:
    # Claim [004]: A_w of w = [1, 2, 1] at size 4 and its stride-2 subsampling A_{w,s}, which is
    # A_w with every second row removed.
    A_w = _matrix(lambda v: F.conv1d(v, W_1D, padding=1), (1, 4))
    expected_A_w = torch.tensor([[2, 1, 0, 0], [1, 2, 1, 0], [0, 1, 2, 1], [0, 0, 1, 2]], dtype=DT)
    torch.testing.assert_close(A_w, expected_A_w, rtol=0, atol=0)
    A_ws = _matrix(lambda v: F.conv1d(v, W_1D, stride=2, padding=1), (1, 4))
    expected_A_ws = torch.tensor([[2, 1, 0, 0], [0, 1, 2, 1]], dtype=DT)
    torch.testing.assert_close(A_ws, expected_A_ws, rtol=0, atol=0)
    torch.testing.assert_close(A_ws, A_w[::2], rtol=0, atol=0)


def test_1d_example_transposed_convolution_is_A_transpose() -> None:
    # Claim [004]: upsampling y (size 2) to size 4 by transposed convolution equals A_{w,s}^T y,
    # for the basis vectors (so the matrices are equal) and for random y.
    A_ws = torch.tensor([[2, 1, 0, 0], [0, 1, 2, 1]], dtype=DT)

    def up(y: torch.Tensor) -> torch.Tensor:
        # output_padding=1 picks size 4 among the sizes (3 or 4) that stride 2 maps to size 2.
        return F.conv_transpose1d(y, W_1D, stride=2, padding=1, output_padding=1)

    torch.testing.assert_close(_matrix(up, (1, 2)), A_ws.T, rtol=0, atol=0)
    y = torch.randn(7, 1, 2, generator=torch.Generator().manual_seed(0), dtype=DT)
    torch.testing.assert_close(up(y).squeeze(1), y.squeeze(1) @ A_ws, rtol=1e-12, atol=1e-12)


def _conv_pair(C_in: int = 3, C_out: int = 4, k: int = 4, seed: int = 1):
    weight = torch.randn(C_out, C_in, k, k, generator=torch.Generator().manual_seed(seed), dtype=DT)

    def conv(x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(x, weight, stride=2, padding=1)

    def conv_t(y: torch.Tensor) -> torch.Tensor:
        # The same weight tensor: conv_transpose2d reads it as (C_in of y, C_out of result, k, k).
        return F.conv_transpose2d(y, weight, stride=2, padding=1)

    return conv, conv_t


def test_2d_transposed_convolution_is_the_adjoint() -> None:
    # Claim [004], general 2-D case: <conv(x), y> = <x, conv_transpose(y)> for random x, y
    # (C_in=3, C_out=4, kernel 4, stride 2, padding 1, input 8x8 -> 4x4 -> 8x8).
    conv, conv_t = _conv_pair()
    g = torch.Generator().manual_seed(2)
    x = torch.randn(5, 3, 8, 8, generator=g, dtype=DT)
    y = torch.randn(5, 4, 4, 4, generator=g, dtype=DT)
    assert conv(x).shape == y.shape and conv_t(y).shape == x.shape
    lhs = (conv(x) * y).sum((1, 2, 3))
    rhs = (x * conv_t(y)).sum((1, 2, 3))
    torch.testing.assert_close(lhs, rhs, rtol=1e-10, atol=1e-10)


def test_2d_transposed_convolution_matrix_is_the_transpose() -> None:
    # Claim [004]: the matrix of conv_transpose2d is exactly A_{w,s}^T, built from basis vectors
    # at a small size (3x6x6 -> 4x3x3: A is 36 x 108).
    conv, conv_t = _conv_pair()
    A = _matrix(conv, (3, 6, 6))
    A_t = _matrix(conv_t, (4, 3, 3))
    assert A.shape == (36, 108)
    torch.testing.assert_close(A_t, A.T, rtol=1e-12, atol=1e-12)
