"""AdaIN replaces the channel statistics of x by the style's ([001], [003]; arXiv:1703.06868).

AdaIN(x) = scale * (x - mu(x)) / sigma(x) + bias with per-sample, per-channel mu, sigma over H, W.
Claims: (1) the output's per-sample, per-channel mean is bias and its (population) standard
deviation is scale; (2) the output does not depend on a positive affine change of each channel
of x. Both hold exactly (up to float64 rounding) with eps = 0. With eps > 0 the standard deviation
is scale * sqrt(v / (v + eps)), a relative error <= eps / (2 v) for a channel of variance v,
which the test computes from the data as its tolerance.
"""

from __future__ import annotations

import pytest
import torch

from genlab.nn.style import adain

DT = torch.float64
SHAPES = [(1, 1, 2, 2), (3, 4, 5, 7), (2, 8, 16, 16), (5, 3, 1, 9)]


def _data(shape: tuple[int, ...], seed: int) -> tuple[torch.Tensor, ...]:
    g = torch.Generator().manual_seed(seed)
    b, c = shape[:2]
    # channels with very different means and spreads, so a wrong reduction axis is visible
    x = torch.randn(shape, generator=g, dtype=DT) * torch.rand(b, c, 1, 1, generator=g, dtype=DT)
    x = (x + 10 * torch.randn(b, c, 1, 1, generator=g, dtype=DT)) * 3
    scale = torch.rand(b, c, generator=g, dtype=DT) * 4 + 0.1
    bias = torch.randn(b, c, generator=g, dtype=DT) * 5
    return x, scale, bias


def _stats(y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    return y.mean(dim=(2, 3)), y.std(dim=(2, 3), correction=0)


@pytest.mark.parametrize("shape", SHAPES)
def test_output_has_style_statistics_exactly(shape: tuple[int, ...]) -> None:
    x, scale, bias = _data(shape, seed=sum(shape))
    mean, std = _stats(adain(x, scale, bias, eps=0.0))
    # float64 rounding on values of size ~100: errors ~1e-13; 1e-10 leaves margin.
    torch.testing.assert_close(mean, bias, rtol=0, atol=1e-10)
    torch.testing.assert_close(std, scale, rtol=0, atol=1e-10)


@pytest.mark.parametrize("shape", SHAPES)
def test_default_eps_statistics_within_bound(shape: tuple[int, ...]) -> None:
    x, scale, bias = _data(shape, seed=1 + sum(shape))
    eps = 1e-5
    mean, std = _stats(adain(x, scale, bias))  # default eps = 1e-5
    v = x.var(dim=(2, 3), correction=0)
    bound = scale * eps / (2 * v) + 1e-12  # |scale - scale sqrt(v/(v+eps))| <= scale eps/(2v)
    torch.testing.assert_close(mean, bias, rtol=0, atol=1e-10)
    assert bool(((std - scale).abs() <= bound).all())
    # and the bound is not vacuous: eps really shrinks the std (by at least half the bound)
    assert bool(((scale - std) >= 0.5 * (bound - 1e-12) * (v / (v + eps))).all())


@pytest.mark.parametrize("shape", SHAPES)
def test_invariant_to_positive_affine_change_of_each_channel(shape: tuple[int, ...]) -> None:
    x, scale, bias = _data(shape, seed=2 + sum(shape))
    g = torch.Generator().manual_seed(7)
    b, c = shape[:2]
    a = torch.rand(b, c, 1, 1, generator=g, dtype=DT) * 5 + 0.05  # a > 0, per sample/channel
    shift = torch.randn(b, c, 1, 1, generator=g, dtype=DT) * 20
    y = adain(x, scale, bias, eps=0.0)
    y_affine = adain(a * x + shift, scale, bias, eps=0.0)
    torch.testing.assert_close(y_affine, y, rtol=0, atol=1e-10)
    # a negative a flips the normalised content, so the invariance needs a > 0
    y_flip = adain(-a * x + shift, scale, bias, eps=0.0)
    torch.testing.assert_close(y_flip - bias[..., None, None], -(y - bias[..., None, None]))


def test_rejects_wrong_style_shape() -> None:
    x, scale, bias = _data((2, 3, 4, 4), seed=0)
    with pytest.raises(ValueError, match="must be"):
        adain(x, scale[:, :2], bias)
