"""Improved precision / recall and density / coverage: exact identities, brute force, mode drops."""

from __future__ import annotations

import numpy as np
import pytest
import sklearn.neighbors
import torch

import genlab.metrics.precision_recall as pr
from genlab.metrics.precision_recall import density_coverage, precision_recall

DT = torch.float64
CENTRES = torch.tensor([[0.0, 0.0], [20.0, 0.0], [0.0, 20.0], [20.0, 20.0]], dtype=DT)


def _clusters(n_per: int, which: list[int], g: torch.Generator) -> torch.Tensor:
    """n_per standard-normal points around each of CENTRES[which] (20 apart: no ball reaches
    across clusters for the sample sizes used here)."""
    return torch.cat([CENTRES[c] + torch.randn(n_per, 2, generator=g, dtype=DT) for c in which])


def _brute(real: np.ndarray, fake: np.ndarray, k: int) -> tuple[float, float, float, float]:
    """All four metrics from sklearn's exact k-NN and a full distance matrix (no blocks)."""

    def radii(x: np.ndarray) -> np.ndarray:
        # n_neighbors=k+1 on the set itself: the first neighbour is the point.
        d, _ = sklearn.neighbors.NearestNeighbors(n_neighbors=k + 1).fit(x).kneighbors(x)
        return d[:, k]

    r_real, r_fake = radii(real), radii(fake)
    d = np.linalg.norm(fake[:, None, :] - real[None, :, :], axis=-1)  # (M, N)
    inside = d <= r_real[None, :]
    precision = inside.any(axis=1).mean()
    recall = (d <= r_fake[:, None]).any(axis=0).mean()
    density = inside.sum() / (k * len(fake))
    coverage = inside.any(axis=0).mean()
    return precision, recall, density, coverage


def test_matches_brute_force_with_small_blocks(monkeypatch: pytest.MonkeyPatch) -> None:
    # Claim: the blocked computation equals the definitions evaluated directly (sklearn k-NN);
    # a 7-distance block forces many uneven blocks.
    g = torch.Generator().manual_seed(0)
    real = torch.randn(60, 3, generator=g, dtype=DT)
    fake = 1.3 * torch.randn(45, 3, generator=g, dtype=DT) + 0.4
    monkeypatch.setattr(pr, "_BLOCK_ELEMS", 7)
    for k in (1, 3, 5):
        got = precision_recall(real=real, fake=fake, k=k) + density_coverage(
            real=real, fake=fake, k=k
        )
        ref = _brute(real.numpy(), fake.numpy(), k)
        np.testing.assert_allclose(got, ref, rtol=1e-12)
        if k == 1:
            assert all(0 < v < 1 for v in got), got  # a non-trivial case


def test_identical_sets() -> None:
    # Claim: real == fake gives precision = recall = coverage = 1 (every point is its own ball's
    # centre), and density = (k + 1) / k exactly: each real ball holds its centre and its k
    # nearest neighbours, the k-th exactly on its sphere (boundaries count as inside, decided
    # exactly despite the round-off of the fast distance form). High-dimensional features with a
    # large common offset make that round-off large.
    g = torch.Generator().manual_seed(1)
    x = torch.randn(300, 64, generator=g, dtype=DT) + 10.0
    assert precision_recall(real=x, fake=x, k=3) == (1.0, 1.0)
    for k in (3, 5):
        density, coverage = density_coverage(real=x, fake=x, k=k)
        assert density == (k + 1) / k
        assert coverage == 1.0


def test_dropped_modes_exact_subset() -> None:
    # Claim: fake = the real points of 2 of 4 equal clusters. Every fake point is a real point
    # (precision 1); the real points of the kept clusters are fake points (inside), those of the
    # dropped clusters are 20 away from any fake ball (recall = coverage = 1/2); each kept real
    # ball holds its centre and k neighbours of its own cluster: density = (k + 1) / k.
    g = torch.Generator().manual_seed(2)
    real = _clusters(100, [0, 1, 2, 3], g)
    fake = real[:200]
    assert precision_recall(real=real, fake=fake, k=3) == (1.0, 0.5)
    density, coverage = density_coverage(real=real, fake=fake, k=5)
    assert coverage == 0.5
    assert density == 6 / 5


def test_dropped_modes_independent_samples() -> None:
    # Claim: fake drawn independently from 2 of the 4 clusters: recall and coverage <= 1/2
    # exactly (the dropped clusters are out of reach), and close to 1/2; precision close to 1.
    # "Close" is a stated level: a fresh point of the same distribution falls outside the union
    # of k-NN balls only when it is none of the k nearest neighbours of any reference point,
    # a few percent of points for k = 3 in 2-D; we require at most 10% lost.
    g = torch.Generator().manual_seed(3)
    real = _clusters(250, [0, 1, 2, 3], g)
    fake = _clusters(250, [0, 1], g)
    precision, recall = precision_recall(real=real, fake=fake, k=3)
    assert precision >= 0.9
    assert 0.45 <= recall <= 0.5
    _, coverage = density_coverage(real=real, fake=fake, k=5)
    assert 0.45 <= coverage <= 0.5
    # Swapping the roles swaps precision and recall.
    assert precision_recall(real=fake, fake=real, k=3) == (recall, precision)


def test_arguments_are_keyword_only() -> None:
    x = torch.zeros(4, 2)
    with pytest.raises(TypeError):
        precision_recall(x, x)  # type: ignore[misc]
    with pytest.raises(TypeError):
        density_coverage(x, x)  # type: ignore[misc]
