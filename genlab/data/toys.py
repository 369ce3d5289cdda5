"""2-D toy datasets: Gaussian mixtures from the mode-collapse literature and FFJORD's density toys.

Every toy has 20,000 training and 5,000 test points drawn from a numpy Generator with a fixed
seed per dataset, so every call returns identical tensors.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import sklearn.datasets
import torch

from genlab.data.spec import Data, DataSpec
from genlab.registry import DATASETS

N_TRAIN = 20_000
N_TEST = 5_000

# A fixed integer per dataset (not hash(), which is salted per process).
_SEEDS = {
    "ring8": 1008,
    "grid25": 1025,
    "8gaussians": 2008,
    "swissroll": 2001,
    "moons": 2002,
    "circles": 2003,
    "checkerboard": 2004,
    "2spirals": 2005,
    "pinwheel": 2006,
}

_RING8_MEANS = np.stack(
    [np.cos(2 * np.pi * np.arange(8) / 8), np.sin(2 * np.pi * np.arange(8) / 8)], axis=1
)
_GRID25_MEANS = np.array([(a, b) for a in (-4, -2, 0, 2, 4) for b in (-4, -2, 0, 2, 4)], float)

# name -> (means (K, 2), per-coordinate std); equal weights. Used by mode-coverage metrics.
MIXTURES: dict[str, tuple[np.ndarray, float]] = {
    "ring8": (_RING8_MEANS, 0.01),
    "grid25": (_GRID25_MEANS, 0.05),
}


def _make(name: str, sampler: Callable[[np.random.Generator, int], np.ndarray]) -> Data:
    """Draw N_TRAIN + N_TEST points with the dataset's seed, shuffle, and split."""
    rng = np.random.default_rng(_SEEDS[name])
    x = np.asarray(sampler(rng, N_TRAIN + N_TEST), dtype=np.float64)
    assert x.shape == (N_TRAIN + N_TEST, 2), x.shape
    # Some generators emit points grouped by component; shuffle so both splits see every part.
    x = torch.from_numpy(x[rng.permutation(len(x))]).float()
    spec = DataSpec(name, (2,), None, 0, None)
    return Data(spec, x[:N_TRAIN].clone(), None, x[N_TRAIN:].clone(), None)


def _seed_for_sklearn(rng: np.random.Generator) -> int:
    """An integer random_state for sklearn generators, derived from our seeded Generator."""
    return int(rng.integers(0, 2**31 - 1))


def _mixture(name: str) -> Callable[[np.random.Generator, int], np.ndarray]:
    means, std = MIXTURES[name]

    def sample(rng: np.random.Generator, n: int) -> np.ndarray:
        k = rng.integers(0, len(means), size=n)
        return means[k] + std * rng.standard_normal((n, 2))

    return sample


@DATASETS.register("ring8", "8 Gaussians on the unit circle, std 0.01 (mode-collapse benchmark)")
def ring8(root: str = "") -> Data:
    """Mixture of 8 Gaussians, means (cos 2 pi i/8, sin 2 pi i/8), std 0.01 (Metz et al. 2017)."""
    return _make("ring8", _mixture("ring8"))


@DATASETS.register("grid25", "25 Gaussians on a 5x5 grid, std 0.05 (mode-collapse benchmark)")
def grid25(root: str = "") -> Data:
    """Mixture of 25 Gaussians, means {-4,-2,0,2,4}^2, std 0.05 (VEEGAN / PacGAN benchmark)."""
    return _make("grid25", _mixture("grid25"))


@DATASETS.register("8gaussians", "8 Gaussians at radius 4/1.414, std 0.5/1.414 (FFJORD toy)")
def eight_gaussians(root: str = "") -> Data:
    """8 Gaussians, centres on the axes and diagonals at radius 4, std 0.5, all / 1.414 (FFJORD)."""

    def sample(rng: np.random.Generator, n: int) -> np.ndarray:
        angles = 2 * np.pi * np.arange(8) / 8
        centers = 4.0 * np.stack([np.cos(angles), np.sin(angles)], axis=1)
        k = rng.integers(0, 8, size=n)
        return (centers[k] + 0.5 * rng.standard_normal((n, 2))) / 1.414

    return _make("8gaussians", sample)


@DATASETS.register("swissroll", "2-D swiss roll, sklearn noise 1.0, scaled by 1/5 (FFJORD toy)")
def swissroll(root: str = "") -> Data:
    """Swiss roll: sklearn make_swiss_roll(noise=1.0), columns (0, 2), divided by 5 (FFJORD)."""

    def sample(rng: np.random.Generator, n: int) -> np.ndarray:
        x, _ = sklearn.datasets.make_swiss_roll(n, noise=1.0, random_state=_seed_for_sklearn(rng))
        return x[:, [0, 2]] / 5.0

    return _make("swissroll", sample)


@DATASETS.register("moons", "two interleaved half-moons, noise 0.1 (FFJORD toy)")
def moons(root: str = "") -> Data:
    """Two moons: sklearn make_moons(noise=0.1) * 2 + (-1, -0.2) (FFJORD)."""

    def sample(rng: np.random.Generator, n: int) -> np.ndarray:
        x, _ = sklearn.datasets.make_moons(n, noise=0.1, random_state=_seed_for_sklearn(rng))
        return x * 2.0 + np.array([-1.0, -0.2])

    return _make("moons", sample)


@DATASETS.register("circles", "two concentric circles, noise 0.08, scaled by 3 (FFJORD toy)")
def circles(root: str = "") -> Data:
    """Concentric circles: sklearn make_circles(factor=0.5, noise=0.08) * 3 (FFJORD)."""

    def sample(rng: np.random.Generator, n: int) -> np.ndarray:
        x, _ = sklearn.datasets.make_circles(
            n, factor=0.5, noise=0.08, random_state=_seed_for_sklearn(rng)
        )
        return x * 3.0

    return _make("circles", sample)


@DATASETS.register(
    "checkerboard", "uniform on the black squares of a 4x4 checkerboard (FFJORD toy)"
)
def checkerboard(root: str = "") -> Data:
    """Checkerboard: uniform on alternating unit squares of [-2, 2]^2, scaled by 2 (FFJORD)."""

    def sample(rng: np.random.Generator, n: int) -> np.ndarray:
        x1 = rng.random(n) * 4 - 2
        # A unit-high band in [-2, -1) or [0, 1), shifted up by one on odd columns.
        x2 = rng.random(n) - 2 * rng.integers(0, 2, size=n) + np.floor(x1) % 2
        return np.stack([x1, x2], axis=1) * 2.0

    return _make("checkerboard", sample)


@DATASETS.register("2spirals", "two interleaved spirals with Gaussian noise 0.1 (FFJORD toy)")
def two_spirals(root: str = "") -> Data:
    """Two spirals of 1.5 turns, point reflection of each other, /3, noise 0.1 (FFJORD)."""

    def sample(rng: np.random.Generator, n: int) -> np.ndarray:
        half = n // 2
        # sqrt makes points uniform in arc area rather than in angle.
        t = np.sqrt(rng.random((half, 1))) * 540 * (2 * np.pi) / 360
        d1x = -np.cos(t) * t + rng.random((half, 1)) * 0.5
        d1y = np.sin(t) * t + rng.random((half, 1)) * 0.5
        arm = np.hstack([d1x, d1y])
        x = np.vstack([arm, -arm]) / 3
        return x + 0.1 * rng.standard_normal(x.shape)

    return _make("2spirals", sample)


@DATASETS.register("pinwheel", "5-armed pinwheel of stretched, rotated Gaussians (FFJORD toy)")
def pinwheel(root: str = "") -> Data:
    """Pinwheel: 5 arms, radial std 0.3, tangential std 0.1, twist 0.25, scaled by 2 (FFJORD)."""

    def sample(rng: np.random.Generator, n: int) -> np.ndarray:
        num_arms, per_arm = 5, n // 5
        radial_std, tangential_std, rate = 0.3, 0.1, 0.25
        rads = np.linspace(0, 2 * np.pi, num_arms, endpoint=False)
        feats = rng.standard_normal((num_arms * per_arm, 2)) * np.array(
            [radial_std, tangential_std]
        )
        feats[:, 0] += 1.0
        arm = np.repeat(np.arange(num_arms), per_arm)
        # Points further out are rotated more, which bends each arm.
        angles = rads[arm] + rate * np.exp(feats[:, 0])
        cos, sin = np.cos(angles), np.sin(angles)
        # Row vector times rotation [[cos, -sin], [sin, cos]], as in FFJORD's einsum.
        x = np.stack(
            [feats[:, 0] * cos + feats[:, 1] * sin, -feats[:, 0] * sin + feats[:, 1] * cos], 1
        )
        return 2.0 * x

    return _make("pinwheel", sample)
