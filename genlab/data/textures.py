"""Procedural greyscale textures (64x64): bricks, weave, dots, waves — example images for texture
synthesis (genlab.models.texture), since digits and clothes are objects, not textures.

Each kind has 10 variants (random phase, jitter, per-element shading and pixel noise, drawn by a
numpy generator with a fixed seed, so the dataset is the same everywhere); variants 0-7 of each
kind are the training split, 8-9 the test split. Kinds are in blocks of 8 in the training split:
x_train[0] is bricks, [8] weave, [16] dots, [24] waves (model.example picks one). Values are
quantised to 256 grey levels in [0, 1]; the label is the kind.
"""

from __future__ import annotations

import numpy as np

from genlab.data.images import _to_data
from genlab.data.spec import Data, DataSpec
from genlab.registry import DATASETS

SIZE = 64
KINDS = ("bricks", "weave", "dots", "waves")
VARIANTS = 10
TRAIN_VARIANTS = 8
SEED = 2015  # Gatys et al.'s year; any fixed value


def _grid(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Pixel coordinates (rows, columns) shifted by a random phase, each (SIZE, SIZE)."""
    dy, dx = rng.integers(0, SIZE, size=2)
    y, x = np.mgrid[0:SIZE, 0:SIZE].astype(np.float64)
    return y + dy, x + dx


def bricks(rng: np.random.Generator) -> np.ndarray:
    """Running-bond bricks 16 x 8 px with 2 px mortar, each brick its own shade."""
    y, x = _grid(rng)
    row = np.floor(y / 8).astype(int)
    xs = x + 8 * (row % 2)  # every other row shifted by half a brick
    col = np.floor(xs / 16).astype(int)
    shade = rng.uniform(0.45, 0.8, size=(64, 64))[row % 64, col % 64]
    mortar = ((y % 8) < 2) | ((xs % 16) < 2)
    return np.where(mortar, 0.15, shade)


def weave(rng: np.random.Generator) -> np.ndarray:
    """Plain weave: horizontal and vertical threads of period 8 alternately on top."""
    y, x = _grid(rng)
    cell_y, cell_x = np.floor(y / 8).astype(int), np.floor(x / 8).astype(int)
    horizontal_on_top = (cell_y + cell_x) % 2 == 0
    across = np.where(horizontal_on_top, y % 8, x % 8)  # position across the top thread
    along = np.where(horizontal_on_top, x % 8, y % 8)
    thread = np.sin(np.pi * (across + 0.5) / 8) ** 0.7  # rounded thread profile
    dip = 0.75 + 0.25 * np.sin(np.pi * (along + 0.5) / 8)  # darker where it goes under
    return 0.1 + 0.8 * thread * dip


def dots(rng: np.random.Generator) -> np.ndarray:
    """Bright disks of radius ~2.5 on a jittered 11 px square lattice, dark background."""
    y, x = _grid(rng)
    period = 11
    cy, cx = np.floor(y / period).astype(int), np.floor(x / period).astype(int)
    jitter = rng.uniform(-1.5, 1.5, size=(2, 16, 16))
    centre_y = (cy + 0.5) * period + jitter[0][cy % 16, cx % 16]
    centre_x = (cx + 0.5) * period + jitter[1][cy % 16, cx % 16]
    r = np.hypot(y - centre_y, x - centre_x)
    return 0.15 + 0.7 / (1 + np.exp(4 * (r - 2.5)))


def waves(rng: np.random.Generator) -> np.ndarray:
    """Slanted sine stripes (wavelength ~9 px) bent by a slow sine."""
    y, x = _grid(rng)
    theta = rng.uniform(0.3, 0.5)
    u = x * np.cos(theta) + y * np.sin(theta)
    v = -x * np.sin(theta) + y * np.cos(theta)
    phase = 2 * np.pi * u / 9 + 1.5 * np.sin(2 * np.pi * v / 32)
    return 0.5 + 0.35 * np.sin(phase)


_MAKERS = (bricks, weave, dots, waves)


def make_textures(seed: int = SEED) -> tuple[np.ndarray, np.ndarray]:
    """(x, y): x (4 * VARIANTS, 1, 64, 64) uint8 grey levels, y the kind, variant-major per kind."""
    rng = np.random.default_rng(seed)
    images, labels = [], []
    for k, make in enumerate(_MAKERS):
        for _ in range(VARIANTS):
            img = make(rng) + rng.normal(0, 0.03, size=(SIZE, SIZE))  # a little grain
            images.append(np.clip(np.rint(img * 255), 0, 255).astype(np.uint8))
            labels.append(k)
    return np.stack(images)[:, None], np.asarray(labels, dtype=np.int64)


@DATASETS.register("textures", "procedural 64x64 grey textures: bricks, weave, dots, waves")
def textures(root: str = "") -> Data:
    """4 kinds x 10 variants: 32 train (kinds in blocks of 8) / 8 test, 256 grey levels."""
    x, y = make_textures()
    variant = np.arange(len(y)) % VARIANTS
    train = np.flatnonzero(variant < TRAIN_VARIANTS)
    test = np.flatnonzero(variant >= TRAIN_VARIANTS)
    spec = DataSpec("textures", (1, SIZE, SIZE), (0.0, 1.0), len(KINDS), 256)
    return _to_data(spec, x, y, train, test, 255.0)
