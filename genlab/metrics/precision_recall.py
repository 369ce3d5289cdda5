"""k-NN manifold metrics on feature rows: improved precision / recall, density / coverage.

The real and generated sets are keyword-only (`real=`, `fake=`): the metrics are not symmetric and
a swapped call would silently exchange precision and recall. Distances are Euclidean, computed in
float64 with torch.cdist over blocks of rows so that 10k x 10k sets never hold more than
_BLOCK_ELEMS distances (64 MB) at once. A point on a ball's sphere counts as inside, and the
decision is exact: cdist's fast matmul form (|a|^2 + |b|^2 - 2 a.b) only screens, and pairs within
its round-off of a sphere, as well as the radii themselves, are re-measured by direct differences.
This matters when sets share points (real vs itself, memorised samples): a ball's k-th neighbour
lies exactly on its sphere, and round-off would otherwise drop it at random.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch import Tensor

_BLOCK_ELEMS = 2**23  # distances per block: 8M float64 = 64 MB
# Pairs whose matmul-form squared distance is within this fraction of |a|^2 + |b|^2 of a ball's
# squared radius are re-measured exactly (the matmul form's round-off is below 1e-12 of it).
_RECHECK = 1e-9


def _rows64(x: Tensor, name: str) -> Tensor:
    if x.ndim != 2:
        raise ValueError(f"{name} must be feature rows (N, D); got shape {tuple(x.shape)}")
    return x.detach().to(torch.float64).contiguous()


def _step(n_cols: int) -> int:
    """Rows per block so that a block of distances to n_cols points holds <= _BLOCK_ELEMS."""
    return max(1, _BLOCK_ELEMS // max(1, n_cols))


def _exact_dist(a: Tensor, b: Tensor) -> Tensor:
    """|a - b| over the last dim by direct differences: no cancellation, and symmetric in a, b
    bit for bit ((b - a)^2 = (a - b)^2 exactly), unlike the matmul form of cdist."""
    return (a - b).pow(2).sum(dim=-1).sqrt()


def _knn_radii(x: Tensor, k: int) -> Tensor:
    """Distance from each row of x (N, D) to its k-th nearest other row: (N,), float64.

    NND_k(x_i) = the k-th smallest |x_i - x_j| over j != i (the zero self-distance is skipped).
    Source: Kynkaanniemi et al. arXiv:1904.06991, eq. (1).
    """
    if not 1 <= k < len(x):
        raise ValueError(f"k must satisfy 1 <= k < N; got k={k} for N={len(x)}")
    step = _step(len(x))
    out = []
    for i in range(0, len(x), step):
        block = x[i : i + step]  # (b, D)
        # The k+1 nearest include the row itself; re-measured exactly, the largest is NND_k.
        idx = torch.cdist(block, x).topk(k + 1, dim=1, largest=False).indices  # (b, k+1)
        d = torch.stack([_exact_dist(block, x[idx[:, c]]) for c in range(k + 1)], dim=1)
        out.append(d.max(dim=1).values)
    return torch.cat(out)


def _inside_blocks(points: Tensor, centres: Tensor, radii: Tensor) -> Iterator[Tensor]:
    """Yield inside[j, i] = (|points_j - centres_i| <= radii_i) by blocks of points, (b, N) bool.

    Pairs within round-off of a sphere are decided by the exact distance."""
    step = _step(len(centres))
    c_norm2 = centres.pow(2).sum(dim=1)  # (N,)
    r2 = radii.pow(2)
    for i in range(0, len(points), step):
        block = points[i : i + step]  # (b, D)
        d2 = torch.cdist(block, centres).pow(2)  # (b, N), matmul form
        inside = d2 <= r2[None, :]
        tol = _RECHECK * (block.pow(2).sum(dim=1)[:, None] + c_norm2[None, :])
        near = ((d2 - r2[None, :]).abs() <= tol).nonzero()  # (n_near, 2)
        if len(near):
            rows, cols = near[:, 0], near[:, 1]
            exact = _exact_dist(block[rows], centres[cols])
            inside[rows, cols] = exact <= radii[cols]
        yield inside


def _fraction_in_manifold(points: Tensor, centres: Tensor, radii: Tensor) -> float:
    """Fraction of points inside the union of the balls B(centre_i, radius_i)."""
    hits = sum(int(inside.any(dim=1).sum()) for inside in _inside_blocks(points, centres, radii))
    return hits / len(points)


def _check_pair(real: Tensor, fake: Tensor) -> tuple[Tensor, Tensor]:
    real, fake = _rows64(real, "real"), _rows64(fake, "fake")
    if real.shape[1] != fake.shape[1]:
        raise ValueError(f"real and fake need the same D; got {real.shape[1]} and {fake.shape[1]}")
    if len(fake) == 0:
        raise ValueError("fake is empty")
    return real, fake


def precision_recall(*, real: Tensor, fake: Tensor, k: int = 3) -> tuple[float, float]:
    """Improved precision and recall of generated rows `fake` against reference rows `real`.

    With manifold(S) = union over s in S of the ball B(s, NND_k(s)) (NND_k: distance to the k-th
    nearest other point of S): precision = fraction of fake rows in manifold(real); recall =
    fraction of real rows in manifold(fake). Boundaries count as inside.
    Source: Kynkaanniemi et al. arXiv:1904.06991, eqs. (1)-(3).
    """
    real, fake = _check_pair(real, fake)
    precision = _fraction_in_manifold(fake, real, _knn_radii(real, k))
    recall = _fraction_in_manifold(real, fake, _knn_radii(fake, k))
    return precision, recall


def density_coverage(*, real: Tensor, fake: Tensor, k: int = 5) -> tuple[float, float]:
    """Density and coverage of generated rows `fake` (M, D) against reference rows `real` (N, D).

    density = 1/(k M) sum_j sum_i 1[fake_j in B(real_i, NND_k(real_i))];
    coverage = 1/N sum_i 1[exists j: fake_j in B(real_i, NND_k(real_i))].
    Density is not capped at 1 (fake rows in dense overlapping balls count several times).
    Source: Naeem et al. arXiv:2002.09797, eqs. (3)-(4).
    """
    real, fake = _check_pair(real, fake)
    radii = _knn_radii(real, k)
    hits = torch.zeros((), dtype=torch.float64)
    covered = torch.zeros(len(real), dtype=torch.bool)
    for inside in _inside_blocks(fake, real, radii):  # (b, N)
        hits += inside.sum()
        covered |= inside.any(dim=0)
    return float(hits / (k * len(fake))), float(covered.double().mean())
