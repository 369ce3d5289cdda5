"""DataSpec (what a model needs to know about its data) and Data (the in-memory splits)."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
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

    def __post_init__(self) -> None:
        # A spec also comes from a run's spec.json, which may be edited or crafted: wrong types
        # here would only fail later, deep inside a network constructor, with a traceback.
        if not isinstance(self.name, str):
            raise TypeError(f"DataSpec.name must be a string; got {self.name!r:.80}")
        if (
            not isinstance(self.shape, tuple)
            or len(self.shape) not in (1, 3)
            or not all(_is_int(d) and d > 0 for d in self.shape)
        ):
            raise ValueError(
                f"DataSpec.shape must be (D,) or (C, H, W) of positive ints; got {self.shape!r:.80}"
            )
        if self.value_range is not None:
            vr = self.value_range
            if not (
                isinstance(vr, tuple)
                and len(vr) == 2
                and all(isinstance(v, (int, float)) and math.isfinite(v) for v in vr)
                and vr[0] < vr[1]
            ):
                raise ValueError(
                    f"DataSpec.value_range must be None or finite (low, high); got {vr!r:.80}"
                )
        classes = self.num_classes
        if not (_is_int(classes) and classes >= 0):
            raise ValueError(f"DataSpec.num_classes must be an int >= 0; got {classes!r:.80}")
        levels = self.discrete_levels
        if levels is not None and not (_is_int(levels) and levels >= 2):
            raise ValueError(
                f"DataSpec.discrete_levels must be None or an int >= 2; got {levels!r:.80}"
            )

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


def _is_int(value: object) -> bool:
    """A Python or numpy integer, not a bool."""
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool)
