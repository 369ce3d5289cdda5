"""Gram matrices of features ([003] "Style Transfer"; Gatys et al. arXiv:1505.07376).

Claims: (1) G = F F^T / (H W) is invariant to any permutation of the H W spatial positions (the
texture model keeps no spatial arrangement); (2) G is symmetric positive semi-definite
(v^T G v = ||F^T v||^2 / M >= 0); (3) gram_matrix equals the sum G_ij = (1/M) sum_k F_ik F_jk
written out by hand; (4) gram_loss is sum_l w_l mean_ij (G - A)^2, Gatys' E_l times 4 when G
is normalised by M. Tolerances are the float64 rounding bound of an M-term dot product,
|fl(sum) - sum| <= gamma_M sum_k |F_ik F_jk|, gamma_M = M u / (1 - M u), u = 2^-53
(Higham, "Accuracy and Stability of Numerical Algorithms", eq. (3.5)), computed per entry.
"""

from __future__ import annotations

import pytest
import torch

from genlab.math.gram import gram_loss, gram_loss_per_layer, gram_matrix

DT = torch.float64
U = torch.finfo(DT).eps / 2  # unit roundoff
SHAPES = [(1, 1, 1, 1), (2, 3, 4, 5), (3, 8, 7, 6), (1, 16, 16, 16)]


def _features(shape: tuple[int, ...], seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    # ReLU-like, non-negative features with channels of different scales
    f = torch.randn(shape, generator=g, dtype=DT).relu()
    return f * torch.rand(shape[0], shape[1], 1, 1, generator=g, dtype=DT) * 5


def _bound(f: torch.Tensor) -> torch.Tensor:
    """Bound on the difference of two evaluations of G (any summation order, each within
    gamma_M sum_k |F_ik F_jk| / M of the exact value, plus u |G| for the division by M):
    2 (gamma_M + u) (|F| |F|^T) / M per entry."""
    b, c, h, w = f.shape
    m = h * w
    gamma = m * U / (1 - m * U)
    a = f.reshape(b, c, m).abs()
    return 2 * (gamma + U) * (a @ a.transpose(1, 2)) / m


@pytest.mark.parametrize("shape", SHAPES)
def test_gram_is_invariant_to_spatial_permutation(shape: tuple[int, ...]) -> None:
    f = _features(shape, seed=sum(shape))
    b, c, h, w = shape
    perm = torch.randperm(h * w, generator=torch.Generator().manual_seed(1))
    shuffled = f.reshape(b, c, h * w)[:, :, perm].reshape(b, c, h, w)
    if h * w > 1:
        assert not torch.equal(shuffled, f)
    diff = (gram_matrix(shuffled) - gram_matrix(f)).abs()
    assert (diff <= _bound(f)).all(), diff.max()


@pytest.mark.parametrize("shape", SHAPES)
def test_gram_is_symmetric_positive_semidefinite(shape: tuple[int, ...]) -> None:
    f = _features(shape, seed=sum(shape) + 1)
    g = gram_matrix(f)
    assert g.shape == shape[:1] + (shape[1], shape[1])
    assert ((g - g.transpose(1, 2)).abs() <= _bound(f)).all()
    # eigenvalues of a PSD matrix perturbed by E are >= -||E||_2 >= -||E||_F
    eig = torch.linalg.eigvalsh((g + g.transpose(1, 2)) / 2)
    slack = torch.linalg.matrix_norm(_bound(f))  # Frobenius norm of the entrywise bound
    assert (eig >= -slack[:, None]).all(), (eig.min(), slack)


@pytest.mark.parametrize("shape", SHAPES[:3])
def test_gram_equals_the_sum_written_out(shape: tuple[int, ...]) -> None:
    f = _features(shape, seed=sum(shape) + 2)
    b, c, h, w = shape
    expected = torch.zeros(b, c, c, dtype=DT)
    for n in range(b):
        for i in range(c):
            for j in range(c):
                total = 0.0
                for y in range(h):
                    for x in range(w):
                        total += float(f[n, i, y, x]) * float(f[n, j, y, x])
                expected[n, i, j] = total / (h * w)
    diff = (gram_matrix(f) - expected).abs()
    assert (diff <= _bound(f)).all(), diff.max()


def test_gram_loss_is_weighted_mean_square_and_gatys_times_four() -> None:
    g = torch.Generator().manual_seed(0)
    shapes = [(2, 3, 8, 8), (2, 5, 4, 4)]
    feats = [torch.randn(s, generator=g, dtype=DT) for s in shapes]
    targets = [torch.randn(s[1], s[1], generator=g, dtype=DT) for s in shapes]
    grams = [gram_matrix(f) for f in feats]
    weights = [0.3, 2.0]
    per_layer = gram_loss_per_layer(grams, targets, weights)
    assert per_layer.shape == (2, 2)
    for n in range(2):
        for layer, (gm, a, wl) in enumerate(zip(grams, targets, weights)):
            c = a.shape[0]
            by_hand = wl * sum(
                (float(gm[n, i, j]) - float(a[i, j])) ** 2 for i in range(c) for j in range(c)
            )
            assert per_layer[n, layer].item() == pytest.approx(by_hand / c**2, rel=1e-12)
            # Gatys eq. (4): E_l = 1 / (4 N^2 M^2) sum (G_raw - A_raw)^2 with unnormalised G, A
            m = shapes[layer][2] * shapes[layer][3]
            e_gatys = ((gm[n] * m - a * m) ** 2).sum() / (4 * c**2 * m**2)
            assert per_layer[n, layer].item() == pytest.approx(4 * wl * e_gatys.item(), rel=1e-12)
    total = gram_loss(grams, targets, weights)
    assert torch.allclose(total, per_layer.sum(dim=1), rtol=1e-15, atol=0)
    # default weights 1/L; zero at the target
    assert torch.equal(gram_loss(grams, [gm[0] for gm in grams])[0], torch.zeros((), dtype=DT))
    default = gram_loss_per_layer(grams, targets)
    assert torch.allclose(default, per_layer / torch.tensor(weights, dtype=DT) / 2, rtol=1e-14)
