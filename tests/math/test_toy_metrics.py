"""Mode-coverage metrics on the ring8 / grid25 mixtures: true samples, collapsed samplers, edges.

Sampling claims use binomial standard errors and the chi-squared law of the G statistic,
computed here; collapsed samplers give exact values.
"""

from __future__ import annotations

import math

import pytest
import scipy.stats
import torch

from genlab.data.toys import MIXTURES
from genlab.metrics.toy import mode_metrics

DT = torch.float64
HQ_MASS = 1 - math.exp(-4.5)  # P(chi2_2 <= 9): a 2-D isotropic Gaussian within 3 std


def _mixture_samples(name: str, n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor, float]:
    means_np, std = MIXTURES[name]
    means = torch.as_tensor(means_np, dtype=DT)
    g = torch.Generator().manual_seed(seed)
    k = torch.randint(0, len(means), (n,), generator=g)
    return means[k] + std * torch.randn(n, 2, generator=g, dtype=DT), means, std


@pytest.mark.parametrize("name", ["ring8", "grid25"])
def test_true_mixture_captures_every_mode(name: str) -> None:
    # Claims: every mode is captured; the high-quality fraction is 1 - exp(-9/2) within 3
    # binomial SEs; with uniform mode choice, 2 n_hq KL(h || uniform) is the G statistic,
    # asymptotically chi-squared with K - 1 dof, so kl_modes < chi2_{K-1}(0.999) / (2 n_hq).
    n = 2500
    x, means, std = _mixture_samples(name, n, seed=0 if name == "ring8" else 1)
    out = mode_metrics(x, means, std)
    k = len(means)
    assert out["modes"] == k
    se = math.sqrt(HQ_MASS * (1 - HQ_MASS) / n)
    assert abs(out["hq"] - HQ_MASS) < 3 * se, (out["hq"], HQ_MASS, se)
    n_hq = out["hq"] * n
    assert 0 <= out["kl_modes"] < scipy.stats.chi2.ppf(0.999, k - 1) / (2 * n_hq)


@pytest.mark.parametrize("name", ["ring8", "grid25"])
def test_collapsed_samplers(name: str) -> None:
    # Claims: all mass on one mode -> 1 mode, KL(one-hot || uniform) = log K; two modes equally
    # -> 2 modes, KL = log(K / 2). The numpy means of MIXTURES are accepted as they are.
    means_np, std = MIXTURES[name]
    means = torch.as_tensor(means_np, dtype=DT)
    k = len(means)
    g = torch.Generator().manual_seed(2)
    noise = 0.5 * std * torch.randn(1000, 2, generator=g, dtype=DT)  # well within 3 std
    one = mode_metrics(means[3] + noise, means_np, std)
    assert one == {"modes": 1.0, "hq": 1.0, "kl_modes": pytest.approx(math.log(k), rel=1e-12)}
    two = torch.cat([means[0] + noise[:500], means[5] + noise[500:]])
    out = mode_metrics(two, means, std)
    assert out["modes"] == 2.0
    assert out["kl_modes"] == pytest.approx(math.log(k / 2), rel=1e-12)


def test_quality_threshold_and_min_count() -> None:
    means_np, std = MIXTURES["ring8"]
    means = torch.as_tensor(means_np, dtype=DT)
    # 20 points at mode 0, one at mode 1, and 9 halfway between modes 2 and 3 (low quality).
    pts = torch.cat([means[0].expand(20, 2), means[1:2], ((means[2] + means[3]) / 2).expand(9, 2)])
    out = mode_metrics(pts, means, std)
    assert out["modes"] == 2 and out["hq"] == pytest.approx(21 / 30)
    # KL of the histogram (20/21, 1/21, 0, ...) against uniform, by hand.
    h = torch.tensor([20 / 21, 1 / 21], dtype=DT)
    assert out["kl_modes"] == pytest.approx(float((h * (h * 8).log()).sum()), rel=1e-12)
    # A stricter capture rule drops the mode with a single sample.
    assert mode_metrics(pts, means, std, min_count=20)["modes"] == 1
    # Just within 3 std is high quality, just beyond is not (the threshold is in units of std).
    edge = means[4] + torch.tensor([[2.99 * std, 0.0], [0.0, 3.01 * std]], dtype=DT)
    assert mode_metrics(edge, means, std)["hq"] == 0.5
    assert mode_metrics(edge, means, std, threshold=4.0)["hq"] == 1.0


def test_no_high_quality_sample() -> None:
    means_np, std = MIXTURES["grid25"]
    far = torch.full((10, 2), 1.0, dtype=DT)  # between four grid modes, 1.41 away from each
    assert mode_metrics(far, means_np, std) == {"modes": 0.0, "hq": 0.0, "kl_modes": math.inf}
