"""Image-to-image tasks built from any image dataset: a deterministic source for each target x.

pix2pix learns the paired map source(x) -> x; CycleGAN and CoGAN see the two domains unpaired
(sources of some examples, targets of others). The ground-truth pairs are kept for evaluation:
PSNR / SSIM of translate(source(x)) against x on the test split.

  inpaint  x with its central square (half the side) set to the low end of the range
  edges    Sobel gradient magnitude of x, scaled to the range (edges -> image)
  invert   low + high - x (MNIST-style <-> inverted)
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from genlab.data.spec import DataSpec

TASKS = ("inpaint", "edges", "invert")


def source_of(task: str, x: Tensor, spec: DataSpec) -> Tensor:
    """The task's input for targets x (B, C, H, W), in the same value range as x."""
    low, high = spec.value_range or (0.0, 1.0)
    if task == "inpaint":
        h, w = x.shape[-2:]
        out = x.clone()
        out[..., h // 4 : h // 4 + h // 2, w // 4 : w // 4 + w // 2] = low
        return out
    if task == "edges":
        kx = torch.tensor([[-1.0, 0.0, 1.0], [-2.0, 0.0, 2.0], [-1.0, 0.0, 1.0]], device=x.device)
        kernel = torch.stack([kx, kx.T]).unsqueeze(1).to(x.dtype)  # (2, 1, 3, 3)
        c = x.shape[1]
        g = F.conv2d(
            F.pad((x - low) / (high - low), (1, 1, 1, 1), mode="replicate").flatten(0, 1)[:, None],
            kernel,
        )
        mag = g.pow(2).sum(1).sqrt().view(x.shape[0], c, *x.shape[-2:])
        return low + (high - low) * (mag / 4).clamp(0, 1)  # |Sobel| <= 4 sqrt(2); 4 keeps contrast
    if task == "invert":
        return low + high - x
    raise ValueError(f"unknown task {task!r}; choose from {', '.join(TASKS)}")
