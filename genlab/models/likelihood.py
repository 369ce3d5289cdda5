"""Observation models p(x | decoder output) shared by the autoencoder family.

gaussian: N(x; mean, sigma^2) with a learned per-dimension log sigma ([001] "Gaussian VAE").
bernoulli: Bernoulli(x; sigmoid(logits)) for binary data ([004] "Bernoulli loss for MNIST").
logistic: discretised logistic on the data's grey levels (PixelCNN++, arXiv:1701.05517), a
    discrete likelihood whose NLL is directly in nats per image.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from genlab.data.spec import DataSpec
from genlab.errors import GenlabError
from genlab.math.gaussian import log_bernoulli, log_discretized_logistic, log_normal

KINDS = ("gaussian", "bernoulli", "logistic")


def choose_kind(kind: str, spec: DataSpec) -> str:
    """auto: Bernoulli for binary data, Gaussian otherwise."""
    if kind == "auto":
        return "bernoulli" if spec.discrete_levels == 2 else "gaussian"
    if kind in ("bernoulli", "logistic") and spec.value_range != (0.0, 1.0):
        raise GenlabError(
            f"likelihood={kind} needs data in [0, 1]; {spec.name} is {spec.describe()}"
        )
    if kind == "logistic" and not spec.discrete_levels:
        raise GenlabError(f"likelihood=logistic needs discrete data; {spec.name} is continuous")
    return kind


class Likelihood(nn.Module):
    """log p(x | out) per example, and the mean of p(x | out) in data space."""

    def __init__(self, kind: str, spec: DataSpec) -> None:
        super().__init__()
        self.kind = choose_kind(kind, spec)
        self.spec = spec
        # Images in [0, 1] get a sigmoid mean; unbounded data an identity mean.
        self.bounded = spec.value_range == (0.0, 1.0)
        if self.kind != "bernoulli":
            self.log_scale = nn.Parameter(torch.zeros(spec.shape))

    @property
    def discrete(self) -> bool:
        """True when log_prob is a probability mass (no dequantisation needed)."""
        return self.kind != "gaussian"

    def mean(self, out: Tensor) -> Tensor:
        return torch.sigmoid(out) if self.bounded or self.kind == "bernoulli" else out

    def log_prob(self, x: Tensor, out: Tensor) -> Tensor:
        if self.kind == "bernoulli":
            return log_bernoulli(x, out)
        if self.kind == "logistic":
            levels = self.spec.discrete_levels
            return log_discretized_logistic(x, self.mean(out), self.log_scale, levels)
        return log_normal(x, self.mean(out), 2 * self.log_scale)
