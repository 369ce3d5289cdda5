"""Full-reference image quality per image: PSNR, SSIM and MS-SSIM of x against y, (B, C, H, W).

Each function returns one value per image, shape (B,), in float64. `data_range` is the width of
the value range (1.0 for [0, 1], 2.0 for [-1, 1], 255.0 for bytes).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

_K1, _K2 = 0.01, 0.03
MS_SSIM_WEIGHTS = (0.0448, 0.2856, 0.3001, 0.2363, 0.1333)


def _pair64(x: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
    if x.ndim != 4 or x.shape != y.shape:
        raise ValueError(
            f"x and y must be images (B, C, H, W) of one shape; got {tuple(x.shape)} and "
            f"{tuple(y.shape)}"
        )
    return x.detach().to(torch.float64), y.detach().to(torch.float64)


def psnr(x: Tensor, y: Tensor, data_range: float = 1.0) -> Tensor:
    """Peak signal-to-noise ratio per image in dB: (B,), +inf for identical images.

    PSNR = 10 log10(data_range^2 / MSE), MSE = mean over (C, H, W) of (x - y)^2.
    Source: Wang et al. 2004, "Image quality assessment: from error visibility to structural
    similarity", IEEE TIP 13(4), section I.
    """
    x, y = _pair64(x, y)
    mse = (x - y).pow(2).flatten(1).mean(dim=1)
    return 10.0 * torch.log10(data_range**2 / mse)  # mse = 0 gives +inf


def _gaussian_window(size: int, sigma: float, dtype: torch.dtype, device: torch.device) -> Tensor:
    """Normalised 1-D Gaussian window of odd `size`, centred: (size,)."""
    t = torch.arange(size, dtype=dtype, device=device) - (size - 1) / 2
    g = torch.exp(-(t**2) / (2.0 * sigma**2))
    return g / g.sum()


def _fit_window(h: int, w: int, window_size: int, sigma: float) -> tuple[int, float]:
    """Shrink the window to the largest odd size <= min(h, w), scaling sigma with it."""
    if window_size < 1 or window_size % 2 == 0:
        raise ValueError(f"window_size must be odd and positive; got {window_size}")
    size = min(window_size, min(h, w))
    if size % 2 == 0:
        size -= 1
    return size, sigma * size / window_size


def _ssim_maps(
    x: Tensor, y: Tensor, data_range: float, window_size: int, sigma: float
) -> tuple[Tensor, Tensor]:
    """Luminance and contrast-structure maps over 'valid' window positions: 2 x (B, C, H', W')."""
    size, sigma = _fit_window(x.shape[-2], x.shape[-1], window_size, sigma)
    c = x.shape[1]
    g = _gaussian_window(size, sigma, x.dtype, x.device)
    # Separable depthwise filtering (one Gaussian per channel), no padding: the 'valid' part.
    gh = g.view(1, 1, size, 1).expand(c, 1, size, 1)
    gw = g.view(1, 1, 1, size).expand(c, 1, 1, size)

    def blur(t: Tensor) -> Tensor:
        return F.conv2d(F.conv2d(t, gh, groups=c), gw, groups=c)

    mu_x, mu_y = blur(x), blur(y)
    var_x = blur(x * x) - mu_x**2
    var_y = blur(y * y) - mu_y**2
    cov = blur(x * y) - mu_x * mu_y
    c1, c2 = (_K1 * data_range) ** 2, (_K2 * data_range) ** 2
    luminance = (2.0 * mu_x * mu_y + c1) / (mu_x**2 + mu_y**2 + c1)
    cs = (2.0 * cov + c2) / (var_x + var_y + c2)
    return luminance, cs


def ssim(
    x: Tensor, y: Tensor, data_range: float = 1.0, window_size: int = 11, sigma: float = 1.5
) -> Tensor:
    """Structural similarity per image: (B,), the mean over channels and window positions.

    SSIM = ((2 mu_x mu_y + C1)(2 s_xy + C2)) / ((mu_x^2 + mu_y^2 + C1)(s_x^2 + s_y^2 + C2)) with
    local statistics weighted by a Gaussian window (size 11, sigma 1.5), C1 = (0.01 L)^2,
    C2 = (0.03 L)^2, L = data_range, over the 'valid' positions only (no padding). Images smaller
    than the window use the largest odd window <= min(H, W), with sigma scaled by the same factor
    (sigma * size / window_size). Source: Wang et al. 2004, IEEE TIP 13(4), section III.
    """
    x, y = _pair64(x, y)
    luminance, cs = _ssim_maps(x, y, data_range, window_size, sigma)
    return (luminance * cs).flatten(1).mean(dim=1)


def _num_scales(h: int, w: int, max_scales: int, window_size: int) -> int:
    """Scales (at least 1) whose coarsest image, after 2x2 pooling, still holds the window."""
    m = 1
    while m < max_scales and min(h >> m, w >> m) >= window_size:
        m += 1
    return m


def ms_ssim(
    x: Tensor,
    y: Tensor,
    data_range: float = 1.0,
    weights: tuple[float, ...] = MS_SSIM_WEIGHTS,
) -> Tensor:
    """Multi-scale SSIM per image: (B,).

    MS-SSIM = l_M^{w_M} prod_{j=1}^{M} cs_j^{w_j}, i.e. contrast-structure cs_j (window-mean) at
    scales 1..M-1 and the SSIM (mean of l * cs) at the coarsest scale M, with 2x2 average pooling
    between scales; the product is taken per channel, then averaged over channels. Negative
    per-scale values are clamped to 0 before the fractional power (a common convention; a
    negative base has no real power). Small images cannot hold len(weights) scales with the 11
    window: M is the largest count (at least 1) whose coarsest scale keeps min(H, W) >= 11, and
    the first M weights are then renormalised to sum to 1 (all weights are used unchanged when
    M = len(weights)); an image below 11 pixels gets one scale with the window shrunk as in ssim,
    so MS-SSIM equals SSIM there. Source: Wang, Simoncelli & Bovik 2003, "Multi-scale structural
    similarity for image quality assessment", eq. (7) and the weights of section 3.2.
    """
    x, y = _pair64(x, y)
    window_size, sigma = 11, 1.5
    m = _num_scales(x.shape[-2], x.shape[-1], len(weights), window_size)
    w = torch.tensor(weights[:m], dtype=torch.float64, device=x.device)
    if m < len(weights):
        w = w / w.sum()
    prod = torch.ones(x.shape[:2], dtype=torch.float64, device=x.device)  # (B, C)
    for j in range(m):
        luminance, cs = _ssim_maps(x, y, data_range, window_size, sigma)
        value = (cs if j < m - 1 else luminance * cs).flatten(2).mean(dim=2)  # (B, C)
        prod = prod * value.clamp(min=0.0).pow(w[j])
        if j < m - 1:
            x, y = F.avg_pool2d(x, 2), F.avg_pool2d(y, 2)
    return prod.mean(dim=1)
