"""Inception Score on predictive distributions with known scores, and against scipy's KL."""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.stats
import torch

from genlab.metrics.inception_score import inception_score

DT = torch.float64


def test_uniform_predictions_score_one() -> None:
    # Claim: p(y|x) = p(y) for every x gives KL = 0, IS = 1 in every split.
    mean, std = inception_score(torch.full((100, 10), 0.1, dtype=DT), splits=10)
    assert mean == pytest.approx(1.0, abs=1e-12) and std == pytest.approx(0.0, abs=1e-12)


def test_confident_balanced_predictions_score_the_number_of_classes() -> None:
    # Claim: one-hot p(y|x), each class equally often in every split: p(y) is uniform and each
    # KL(p(y|x) || p(y)) = log K, so IS = K.
    k = 10
    probs = torch.eye(k, dtype=DT)[torch.arange(1000) % k]
    mean, std = inception_score(probs, splits=10)
    assert mean == pytest.approx(k, rel=1e-12) and std == pytest.approx(0.0, abs=1e-12)
    # Unbalanced classes lower the score: only 5 of the 10 classes are ever predicted -> IS = 5.
    mean5, _ = inception_score(torch.eye(k, dtype=DT)[torch.arange(1000) % 5], splits=10)
    assert mean5 == pytest.approx(5.0, rel=1e-12)


def test_mixture_of_confident_and_uniform_is_in_between_and_matches_closed_form() -> None:
    # Claim: p(y|x) = a e_c + (1 - a) / K, balanced over c, has p(y) uniform and
    # KL = (a + (1-a)/K) log(K a + 1 - a) + (K-1)(1-a)/K log(1 - a), so 1 < IS < K.
    k, a = 10, 0.6
    probs = a * torch.eye(k, dtype=DT)[torch.arange(500) % k] + (1 - a) / k
    kl = (a + (1 - a) / k) * math.log(k * a + 1 - a) + (k - 1) * (1 - a) / k * math.log(1 - a)
    mean, _ = inception_score(probs, splits=5)
    assert 1.0 < mean < k
    assert mean == pytest.approx(math.exp(kl), rel=1e-12)


def test_matches_scipy_kl_with_uneven_splits() -> None:
    # Claim: per split, IS = exp(mean_x KL(p(y|x) || mean of the split)); splits are the blocks
    # [i N / s, (i + 1) N / s); mean and population std over splits. KL from scipy.stats.entropy.
    g = torch.Generator().manual_seed(0)
    logits = 3 * torch.randn(103, 7, generator=g, dtype=DT)
    probs = logits.softmax(dim=1)
    p = probs.numpy()
    n, s = len(p), 10
    scores = []
    for i in range(s):
        part = p[i * n // s : (i + 1) * n // s]
        py = part.mean(axis=0)
        scores.append(math.exp(np.mean([scipy.stats.entropy(row, py) for row in part])))
    mean, std = inception_score(probs, splits=s)
    assert mean == pytest.approx(float(np.mean(scores)), rel=1e-12)
    assert std == pytest.approx(float(np.std(scores)), rel=1e-9)
    assert std > 0


def test_rejects_invalid_input() -> None:
    probs = torch.full((5, 4), 0.25, dtype=DT)
    with pytest.raises(ValueError, match="splits"):
        inception_score(probs, splits=10)
    with pytest.raises(ValueError, match="sum to 1"):
        inception_score(probs * 1.01, splits=1)
    with pytest.raises(ValueError, match="negative"):
        inception_score(torch.tensor([[1.5, -0.5]]), splits=1)
    # Within the 1e-3 tolerance is accepted (e.g. float32 softmax output).
    inception_score(probs * (1 + 5e-4), splits=1)
