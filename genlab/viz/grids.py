"""Image grids (PIL, no torchvision) and 2-D scatter plots, written atomically."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import Tensor

from genlab.atomic import atomic_write
from genlab.data.spec import DataSpec


def to_uint8(images: Tensor, value_range: tuple[float, float] | None = (0.0, 1.0)) -> np.ndarray:
    """(N, C, H, W) float in value_range -> (N, H, W, C) uint8."""
    low, high = value_range or (float(images.min()), float(images.max()))
    scaled = ((images.detach().float().cpu() - low) / max(high - low, 1e-12)).clamp(0, 1)
    return (scaled * 255 + 0.5).to(torch.uint8).permute(0, 2, 3, 1).numpy()


def grid_array(
    images: Tensor,
    nrow: int | None = None,
    pad: int = 1,
    value_range: tuple[float, float] | None = (0.0, 1.0),
) -> np.ndarray:
    """Tile (N, C, H, W) images into one (rows*H, cols*W, C) uint8 array with `pad` px borders."""
    pixels = to_uint8(images, value_range)
    n, h, w, c = pixels.shape
    cols = nrow or math.ceil(math.sqrt(n))
    rows = math.ceil(n / cols)
    out = np.full((rows * (h + pad) + pad, cols * (w + pad) + pad, c), 255, dtype=np.uint8)
    for i in range(n):
        r, q = divmod(i, cols)
        y, x = pad + r * (h + pad), pad + q * (w + pad)
        out[y : y + h, x : x + w] = pixels[i]
    return out


def save_image(array: np.ndarray, path: str | Path, scale: int = 1) -> Path:
    """Write an (H, W, C) uint8 array as PNG via a temporary file (never a half-written image)."""
    path = Path(path)
    img = Image.fromarray(array[..., 0] if array.shape[-1] == 1 else array)
    if scale > 1:
        img = img.resize((img.width * scale, img.height * scale), Image.NEAREST)
    with atomic_write(path) as tmp:
        img.save(tmp, format="PNG")
    return path


def save_grid(
    images: Tensor,
    path: str | Path,
    nrow: int | None = None,
    value_range: tuple[float, float] | None = (0.0, 1.0),
) -> Path:
    """Save images as a grid; small images (e.g. 8x8 digits) are enlarged for viewing."""
    arr = grid_array(images, nrow, value_range=value_range)
    return save_image(arr, path, scale=max(1, 32 // images.shape[-1]))  # tiles >= 32 px wide


def pyplot():  # -> matplotlib.pyplot, headless; imported on first use (slow to import)
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig, path: str | Path) -> Path:
    """Write a matplotlib figure as PNG atomically and close it."""
    fig.tight_layout()
    with atomic_write(path) as tmp:
        fig.savefig(tmp, format="png")
    pyplot().close(fig)
    return Path(path)


def save_scatter(
    points: Tensor, path: str | Path, reference: Tensor | None = None, title: str = ""
) -> Path:
    """Scatter plot of 2-D samples (blue), over reference data (grey) when given."""
    fig, ax = pyplot().subplots(figsize=(4, 4), dpi=100)
    if reference is not None:
        r = reference.detach().cpu().numpy()
        ax.scatter(r[:, 0], r[:, 1], s=2, c="0.75", label="data")
    p = points.detach().float().cpu().numpy()
    ax.scatter(p[:, 0], p[:, 1], s=2, c="tab:blue", label="samples")
    ax.set_aspect("equal")
    ax.set_title(title)
    return save_figure(fig, path)


def save_samples(
    x: Tensor, spec: DataSpec, path: str | Path, reference: Tensor | None = None, title: str = ""
) -> Path:
    """A picture of samples in data space: an image grid, or a scatter plot for 2-D data."""
    if spec.is_image:
        return save_grid(x, path, value_range=spec.value_range)
    if spec.shape == (2,):
        return save_scatter(x, path, reference, title)
    raise ValueError(f"no picture for data of shape {spec.shape}")
