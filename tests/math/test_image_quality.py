"""PSNR, SSIM and MS-SSIM: closed forms, identities derivable by hand, and monotonicity."""

from __future__ import annotations

import importlib
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from genlab.metrics.image_quality import MS_SSIM_WEIGHTS, ms_ssim, psnr, ssim

DT = torch.float64
C1, C2 = 0.01**2, 0.03**2  # data_range 1


def _smooth_images(b: int, c: int, h: int, w: int, seed: int) -> torch.Tensor:
    """Images in [0, 1] with structure at several scales (blurred noise plus a gradient)."""
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(b, c, h, w, generator=g, dtype=DT)
    x = F.avg_pool2d(x, 3, stride=1, padding=1, count_include_pad=False)
    ramp = torch.linspace(0, 1, w, dtype=DT)
    return 0.6 * x + 0.4 * ramp


def test_psnr_identical_is_inf_and_noise_matches_closed_form() -> None:
    # Claim: PSNR = 10 log10(1 / MSE); for Gaussian noise of std s, MSE ~ s^2, so PSNR ~
    # 10 log10(1 / s^2). Over P pixels MSE / s^2 has relative SE sqrt(2 / P), i.e. an SE of
    # 10 log10(e) sqrt(2 / P) dB on PSNR; we allow 4 of them.
    x = _smooth_images(4, 3, 64, 64, seed=0)
    assert torch.isinf(psnr(x, x)).all() and (psnr(x, x) > 0).all()
    g = torch.Generator().manual_seed(1)
    for s in (0.01, 0.05, 0.2):
        y = x + s * torch.randn(x.shape, generator=g, dtype=DT)  # no clipping
        p = x[0].numel()
        tol = 4 * 10 * math.log10(math.e) * math.sqrt(2 / p)
        got = psnr(x, y)
        assert got.shape == (4,)
        assert torch.all((got - 10 * math.log10(1 / s**2)).abs() < tol), (got, s)
    # data_range enters as range^2: the same images scaled to [0, 255].
    torch.testing.assert_close(psnr(255 * x, 255 * y, data_range=255.0), psnr(x, y))


def test_ssim_and_ms_ssim_of_an_image_with_itself_are_one() -> None:
    x = _smooth_images(2, 3, 64, 64, seed=2)
    torch.testing.assert_close(ssim(x, x), torch.ones(2, dtype=DT), rtol=0, atol=1e-12)
    torch.testing.assert_close(ms_ssim(x, x), torch.ones(2, dtype=DT), rtol=0, atol=1e-12)


def test_ssim_and_ms_ssim_fall_monotonically_with_noise_and_are_symmetric() -> None:
    x = _smooth_images(1, 1, 96, 96, seed=3)
    g = torch.Generator().manual_seed(4)
    noise = torch.randn(x.shape, generator=g, dtype=DT)
    levels = (0.0, 0.02, 0.05, 0.1, 0.2, 0.4)
    s = [float(ssim(x, x + a * noise)) for a in levels]
    ms = [float(ms_ssim(x, x + a * noise)) for a in levels]
    assert all(a > b for a, b in zip(s, s[1:])), s
    assert all(a > b for a, b in zip(ms, ms[1:])), ms
    y = x + 0.1 * noise
    assert float(ssim(x, y)) == pytest.approx(float(ssim(y, x)), rel=1e-13)
    assert float(ms_ssim(x, y)) == pytest.approx(float(ms_ssim(y, x)), rel=1e-13)


def _global_ssim(x: np.ndarray, y: np.ndarray, w: np.ndarray) -> float:
    """SSIM of one window-sized channel with window weights w (summing to 1), by hand."""
    mx, my = (w * x).sum(), (w * y).sum()
    vx, vy = (w * (x - mx) ** 2).sum(), (w * (y - my) ** 2).sum()
    cxy = (w * (x - mx) * (y - my)).sum()
    return ((2 * mx * my + C1) * (2 * cxy + C2)) / ((mx**2 + my**2 + C1) * (vx + vy + C2))


def test_ssim_of_window_sized_images_is_the_weighted_global_formula() -> None:
    # Claim: an 11x11 image has one 'valid' window position, so SSIM is the global formula with
    # the Gaussian weights (sigma 1.5) as the weights of every mean, variance and covariance
    # (averaged over channels). With a very wide sigma the window is uniform and the statistics
    # are the plain (population) ones.
    g = torch.Generator().manual_seed(5)
    x = torch.rand(2, 3, 11, 11, generator=g, dtype=DT)
    y = (0.7 * x + 0.3 * torch.rand(2, 3, 11, 11, generator=g, dtype=DT)) ** 1.5
    t = np.arange(11) - 5.0
    g1 = np.exp(-(t**2) / (2 * 1.5**2))
    w = np.outer(g1, g1) / np.outer(g1, g1).sum()
    uniform = np.full((11, 11), 1 / 121)
    for weights, sigma, tol in ((w, 1.5, 1e-12), (uniform, 1e7, 1e-9)):
        ref = [
            np.mean([_global_ssim(x[b, c].numpy(), y[b, c].numpy(), weights) for c in range(3)])
            for b in range(2)
        ]
        np.testing.assert_allclose(ssim(x, y, sigma=sigma).numpy(), ref, rtol=tol)
    assert float(ssim(x, y)[0]) < 0.99  # a non-trivial pair


def test_ssim_is_invariant_to_the_value_scale_given_data_range() -> None:
    # Claim: C1 = (K1 L)^2, C2 = (K2 L)^2 scale like the statistics, so SSIM(a x, a y; L = a)
    # = SSIM(x, y; L = 1).
    x = _smooth_images(2, 1, 32, 32, seed=6)
    y = x.flip(-1)
    torch.testing.assert_close(ssim(255 * x, 255 * y, data_range=255.0), ssim(x, y))
    torch.testing.assert_close(ms_ssim(255 * x, 255 * y, data_range=255.0), ms_ssim(x, y))
    # Not invariant to an offset: the luminance term compares absolute means.
    assert not torch.allclose(ssim(x - 0.5, y - 0.5), ssim(x, y))


def test_small_images_shrink_the_window() -> None:
    # Claim: an 8x8 image uses the largest odd window <= 8 (7), sigma scaled by 7/11, and
    # MS-SSIM falls back to one scale, i.e. to SSIM (positive here, so unaffected by the clamp).
    g = torch.Generator().manual_seed(7)
    x, noise = torch.rand(2, 3, 1, 8, 8, generator=g, dtype=DT)
    y = 0.7 * x + 0.3 * noise
    assert (ssim(x, y) > 0).all()
    torch.testing.assert_close(ssim(x, y), ssim(x, y, window_size=7, sigma=1.5 * 7 / 11))
    assert not torch.allclose(ssim(x, y), ssim(x, y, window_size=5, sigma=1.5 * 5 / 11))
    torch.testing.assert_close(ms_ssim(x, y), ssim(x, y))


@pytest.mark.parametrize(("size", "scales"), [(28, 2), (64, 3), (176, 5)])
def test_ms_ssim_of_a_brightness_shift(size: int, scales: int) -> None:
    # Claim: y = x + c leaves every variance and covariance unchanged, so cs = 1 at every scale
    # and MS-SSIM reduces to the coarsest-scale term, SSIM(P x, P x + c) ** w_M, with P the
    # (M-1)-fold 2x2 average pooling. M = the number of scales whose coarsest image is >= 11
    # pixels (28 -> 14: 2; 64 -> 32 -> 16: 3; 176 / 16 = 11: all 5), and w_M is renormalised
    # over the first M weights when M < 5.
    x = _smooth_images(1, 1, size, size, seed=8)
    c = 0.15
    coarse = x
    for _ in range(scales - 1):
        coarse = F.avg_pool2d(coarse, 2)
    weights = MS_SSIM_WEIGHTS[:scales]
    w_last = weights[-1] / (sum(weights) if scales < len(MS_SSIM_WEIGHTS) else 1.0)
    ref = ssim(coarse, coarse + c) ** w_last
    torch.testing.assert_close(ms_ssim(x, x + c), ref, rtol=1e-10, atol=0)
    assert float(ref) < 1 - 1e-4  # the shift is visible


def test_ssim_map_matches_torchmetrics_on_valid_positions() -> None:
    # An independent implementation. torchmetrics pads by reflection and averages the whole map;
    # its positions at least 5 pixels from the border use only real pixels: our 'valid' SSIM.
    tm = importlib.import_module("torchmetrics.functional.image")  # a test dependency
    x = _smooth_images(3, 3, 40, 40, seed=9)
    g = torch.Generator().manual_seed(10)
    y = (x + 0.1 * torch.randn(x.shape, generator=g, dtype=DT)).clamp(0, 1)
    _, full = tm.structural_similarity_index_measure(
        y, x, data_range=1.0, reduction="none", return_full_image=True
    )
    ref = full[..., 5:-5, 5:-5].flatten(1).mean(dim=1)
    torch.testing.assert_close(ssim(y, x), ref.to(DT), rtol=1e-10, atol=1e-12)
