"""Exponential moving average of a model's weights (used for sampling when enabled)."""

from __future__ import annotations

import copy

import torch
from torch import nn


class EMA:
    """theta_ema <- d_n theta_ema + (1 - d_n) theta after update n; buffers are copied.

    d_n = min(decay, (1 + n) / (10 + n)) (the num_updates warm-up of TensorFlow's
    ExponentialMovingAverage): with a constant d, the average still holds d^n of the random initial
    weights after n updates (13% after 2,000 steps at 0.999), enough to turn a short run's samples
    into noise.
    """

    def __init__(self, model: nn.Module, decay: float) -> None:
        self.decay = decay
        self.model = copy.deepcopy(model).eval().requires_grad_(False)

    def decay_at(self, n: int) -> float:
        return min(self.decay, (1 + n) / (10 + n))

    @torch.no_grad()
    def update(self, model: nn.Module, n: int) -> None:
        """The n-th update (n = 1, 2, ...: the training step just taken)."""
        decay = self.decay_at(n)
        for ema_p, p in zip(self.model.parameters(), model.parameters()):
            ema_p.lerp_(p.detach(), 1.0 - decay)
        for ema_b, b in zip(self.model.buffers(), model.buffers()):
            ema_b.copy_(b)
