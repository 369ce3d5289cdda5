"""One entry point for every dataset: registry names, `folder:PATH` and `npz:PATH`."""

from __future__ import annotations

import dataclasses
import functools
from dataclasses import dataclass
from pathlib import Path

from genlab.data.images import IMAGE_SUFFIXES, load_folder, load_npz
from genlab.data.spec import Data
from genlab.errors import GenlabError
from genlab.registry import DATASETS

_PREFIXES = ("folder", "npz")


@dataclass
class DataConfig:
    """data.<field> keys of a run config."""

    name: str = ""
    root: str = ""  # directory for file-based datasets ("" = the dataset's default)
    binarize: bool = False  # dynamic binarisation (Bernoulli likelihoods); discrete_levels -> 2
    dequantize: bool = False  # uniform dequantisation y = (k + u) / levels
    limit: int = 0  # keep only the first N training examples (0 = all), for quick runs/tests


def load(
    name: str, root: str = "", *, binarize: bool = False, dequantize: bool = False, limit: int = 0
) -> Data:
    """Load a dataset by registry name or as `folder:PATH` / `npz:PATH` (relative to root if given).

    Returns a fresh Data each call; its tensors are shared with an in-process cache, so treat
    them as read-only.
    """
    if binarize and dequantize:
        raise GenlabError("data.binarize and data.dequantize cannot both be set; choose one")
    if limit < 0:
        raise GenlabError(f"data.limit must be >= 0, got {limit}")
    base = _load_base(name, root)
    spec = base.spec
    if (binarize or dequantize) and not (spec.is_image and spec.discrete_levels):
        flag = "binarize" if binarize else "dequantize"
        raise GenlabError(
            f"data.{flag} needs image data with discrete levels; {spec.name} has {spec.describe()}"
        )
    if binarize:
        spec = dataclasses.replace(spec, discrete_levels=2)
    x_train, y_train = base.x_train, base.y_train
    if limit:
        x_train = x_train[:limit]
        y_train = None if y_train is None else y_train[:limit]
    return Data(
        spec,
        x_train,
        y_train,
        base.x_test,
        base.y_test,
        binarize=binarize,
        dequantize=dequantize,
        source=(name, root),
    )


def untransformed(data: Data) -> Data:
    """The dataset `data` came from, without binarisation, dequantisation or limit."""
    return load(*data.source) if data.source else data


def load_config(cfg: DataConfig) -> Data:
    """load() with the fields of a DataConfig."""
    return load(
        cfg.name, cfg.root, binarize=cfg.binarize, dequantize=cfg.dequantize, limit=cfg.limit
    )


def _load_base(name: str, root: str) -> Data:
    prefix, sep, path = name.partition(":")
    if not sep:
        return _cached_registry(name, root)
    if prefix not in _PREFIXES:
        raise GenlabError(
            f"unknown dataset prefix {prefix + ':'!r} in {name!r}; use folder:PATH or npz:PATH"
        )
    if not path:
        raise GenlabError(f"dataset {name!r} needs a path after {prefix}:")
    full = Path(root).expanduser() / path if root else Path(path).expanduser()
    # The cache key includes file sizes and times, so files edited in place are read again.
    return _cached_file(prefix, name, str(full), _signature(prefix, full))


@functools.lru_cache(maxsize=8)
def _cached_registry(name: str, root: str) -> Data:
    return DATASETS.get(name)(root)


@functools.lru_cache(maxsize=8)
def _cached_file(prefix: str, name: str, full: str, signature: tuple) -> Data:
    data = load_folder(full) if prefix == "folder" else load_npz(full)
    # Name the spec as the user wrote it (not the root-joined path), so runs read the same.
    return dataclasses.replace(data, spec=dataclasses.replace(data.spec, name=name))


def _signature(prefix: str, path: Path) -> tuple:
    """(name, size, mtime) of the file or of the images under the folder; () if missing."""

    def stat(p: Path) -> tuple:
        st = p.stat()
        return (str(p), st.st_size, st.st_mtime_ns)

    try:
        if prefix == "npz":
            return stat(path) if path.is_file() else ()
        if not path.is_dir():
            return ()
        files = [
            p for p in [*path.glob("*"), *path.glob("*/*")] if p.suffix.lower() in IMAGE_SUFFIXES
        ]
        return tuple(stat(p) for p in sorted(files))
    except OSError:
        return ()
