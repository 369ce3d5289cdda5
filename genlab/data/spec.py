"""DataSpec (what a model needs to know about its data) and Data (the in-memory splits)."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor


@dataclass(frozen=True)
class DataSpec:
    """Shape and meaning of one example.

    shape: per-example shape, (D,) for vectors, (C, H, W) for images.
    value_range: (low, high) of the data space; None for unbounded (2-D toys).
    num_classes: 0 when unlabelled.
    discrete_levels: number of grey levels for quantised data (256 for 8-bit, 17 for digits,
        2 for binarised), None for continuous data. Values are stored as k / (levels - 1) in [0, 1].
    """

    name: str
    shape: tuple[int, ...]
    value_range: tuple[float, float] | None = None
    num_classes: int = 0
    discrete_levels: int | None = None

    @property
    def is_image(self) -> bool:
        return len(self.shape) == 3

    @property
    def dim(self) -> int:
        return math.prod(self.shape)

    def describe(self) -> str:
        rng = (
            "unbounded"
            if self.value_range is None
            else f"[{self.value_range[0]:g}, {self.value_range[1]:g}]"
        )
        lev = f"{self.discrete_levels} levels" if self.discrete_levels else "continuous"
        cls = f"{self.num_classes} classes" if self.num_classes else "unlabelled"
        return f"shape {tuple(self.shape)}, values {rng}, {lev}, {cls}"


@dataclass
class Data:
    """A dataset held in memory: float32 tensors in data space, labels as int64 (or None).

    binarize: dynamic binarisation; training batches are drawn x ~ Bernoulli(x) anew each time,
    the test split is binarised once with a fixed seed (the usual protocol).
    dequantize: uniform dequantisation of discrete data, y = (k + u) / levels with u ~ U[0, 1);
    the test split is dequantised once with a fixed seed.
    source: (name, root) for data made by genlab.data.load; None for data built in memory.
    """

    spec: DataSpec
    x_train: Tensor
    y_train: Tensor | None
    x_test: Tensor
    y_test: Tensor | None
    binarize: bool = False
    dequantize: bool = False
    # (name, root) it was loaded from, so metrics can reload the untransformed, unlimited dataset
    source: tuple[str, str] | None = None

    def __post_init__(self) -> None:
        if self.binarize or self.dequantize:
            g = torch.Generator().manual_seed(12345)
            self.x_test = self.transform(self.x_test, g)

    def __len__(self) -> int:
        return len(self.x_train)

    def transform(self, x: Tensor, generator: torch.Generator | None = None) -> Tensor:
        if self.binarize:
            return torch.bernoulli(x, generator=generator)
        if self.dequantize:
            levels = self.spec.discrete_levels or 256
            k = torch.round(x * (levels - 1))
            return (k + torch.rand(x.shape, generator=generator)) / levels
        return x

    def batch(self, index: Tensor, generator: torch.Generator | None = None) -> dict[str, Tensor]:
        """Training batch for the given row indices: {"x": (B, *shape)[, "y": (B,)]}."""
        out = {"x": self.transform(self.x_train[index], generator)}
        if self.y_train is not None:
            out["y"] = self.y_train[index]
        return out

    def split(self, name: str = "test") -> dict[str, Tensor]:
        """A whole split as one batch dict (test already binarised/dequantised once)."""
        x, y = (self.x_test, self.y_test) if name == "test" else (self.x_train, self.y_train)
        return {"x": x} if y is None else {"x": x, "y": y}
