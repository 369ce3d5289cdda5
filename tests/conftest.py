"""Shared fixtures: tiny in-memory datasets and one thread per test process."""

from __future__ import annotations

import os

import pytest
import torch

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
torch.set_num_threads(1)

from genlab.data.spec import Data, DataSpec  # noqa: E402

# Child processes (CLI, torchrun) get one thread each: tests run two workers on two cores.
SUBPROCESS_ENV = {**os.environ, "OMP_NUM_THREADS": "1", "OMP_WAIT_POLICY": "PASSIVE"}


def tiny_data(kind: str, n: int = 64, seed: int = 0) -> Data:
    """Random data of the given kind: "vector" (2-D, unlabelled) or "image" (1x8x8, 17 levels)."""
    g = torch.Generator().manual_seed(seed)
    if kind == "vector":
        spec = DataSpec("tiny2d", (2,))
        x = torch.randn(n, 2, generator=g)
        return Data(spec, x[: n // 2], None, x[n // 2 :], None)
    spec = DataSpec("tiny8x8", (1, 8, 8), (0.0, 1.0), 10, 17)
    x = torch.randint(0, 17, (n, 1, 8, 8), generator=g).float() / 16
    y = torch.randint(0, 10, (n,), generator=g)
    half = n // 2
    return Data(spec, x[:half], y[:half], x[half:], y[half:])


@pytest.fixture
def vector_data() -> Data:
    return tiny_data("vector")


@pytest.fixture
def image_data() -> Data:
    return tiny_data("image")
