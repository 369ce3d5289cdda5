"""What every sampler shares: the callables it takes and the draw of its starting point."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

# eps_fn(x_t, t) -> eps_theta(x_t, t), with t a LongTensor (B,) of schedule indices 0..T-1.
EpsFn = Callable[[Tensor, Tensor], Tensor]
# score_fn(x, t) -> s_theta(x, t) ~ grad_x log p_t(x), with t (B,) continuous times (or sigmas).
ScoreFn = Callable[[Tensor, Tensor], Tensor]


def start(
    shape: tuple[int, ...],
    x_init: Tensor | None,
    generator: torch.Generator | None,
    dtype: torch.dtype,
    device: torch.device | str | None,
    scale: float = 1.0,
) -> Tensor:
    """The starting point: x_init when given (its shape must be `shape`), else scale * N(0, I)."""
    if x_init is not None:
        if tuple(x_init.shape) != tuple(shape):
            raise ValueError(f"x_init has shape {tuple(x_init.shape)}, expected {tuple(shape)}")
        return x_init
    return scale * torch.randn(shape, generator=generator, dtype=dtype, device=device)


def noise_like(x: Tensor, generator: torch.Generator | None) -> Tensor:
    """z ~ N(0, I) of x's shape, dtype and device, drawn from `generator`."""
    return torch.randn(x.shape, generator=generator, dtype=x.dtype, device=x.device)


def batch_of(value: float | int, x: Tensor, dtype: torch.dtype | None = None) -> Tensor:
    """A (B,) tensor filled with value on x's device: the time argument given to the callables."""
    return torch.full((x.shape[0],), value, dtype=dtype or x.dtype, device=x.device)
