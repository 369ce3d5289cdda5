"""Datasets: toys, digits, IDX files, folder:, npz:, binarise/dequantise, errors."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from genlab.data import Data, DataConfig, DataSpec, load, load_config
from genlab.data.images import read_idx
from genlab.data.toys import MIXTURES
from genlab.errors import GenlabError
from genlab.registry import DATASETS

TOYS = [e.name for e in DATASETS if e.obj.__module__ == "genlab.data.toys"]
FFJORD_TOYS = [n for n in TOYS if n not in MIXTURES]
FASHION = Path("/usr/share/datasets/fashion-mnist")


def test_toy_list_is_complete() -> None:
    expected = {"ring8", "grid25", "8gaussians", "swissroll", "moons", "circles"}
    expected |= {"checkerboard", "2spirals", "pinwheel"}
    assert set(TOYS) == expected


@pytest.mark.parametrize("name", TOYS)
def test_toy_shape_dtype_determinism(name: str) -> None:
    a = DATASETS.get(name)()  # call the generator itself twice, bypassing load's cache
    b = DATASETS.get(name)()
    assert a.spec == DataSpec(name, (2,), None, 0, None)
    assert a.x_train.shape == (20_000, 2) and a.x_test.shape == (5_000, 2)
    assert a.x_train.dtype == a.x_test.dtype == torch.float32
    assert a.y_train is None and a.y_test is None
    assert torch.equal(a.x_train, b.x_train) and torch.equal(a.x_test, b.x_test)
    assert not torch.equal(a.x_train[:5_000], a.x_test)
    assert torch.isfinite(a.x_train).all()


@pytest.mark.parametrize("name", sorted(MIXTURES))
def test_mixture_modes_and_std(name: str) -> None:
    means, std = MIXTURES[name]
    x = DATASETS.get(name)().x_train.double().numpy()
    k = np.argmin(((x[:, None, :] - means[None]) ** 2).sum(-1), axis=1)
    counts = np.bincount(k, minlength=len(means))
    n, K = len(x), len(means)
    # Equal weights: each count is Binomial(n, 1/K); 5 standard deviations.
    assert np.all(np.abs(counts - n / K) < 5 * np.sqrt(n * (1 / K) * (1 - 1 / K)))
    resid = x - means[k]
    # Pooled std over 2n coordinates has relative standard error 1/sqrt(4n) ~ 0.35%.
    assert abs(resid.std() / std - 1) < 0.03
    assert np.abs(resid.mean(0)).max() < 5 * std / np.sqrt(n)
    for j in range(K):  # every mode has the stated spread, not just the pool
        assert abs(resid[k == j].std() / std - 1) < 0.05


@pytest.mark.parametrize("name", FFJORD_TOYS)
def test_ffjord_toy_range(name: str) -> None:
    x = load(name).x_train
    assert torch.quantile(x.abs().flatten(), 0.999) < 4.5
    assert x.abs().max() < 6.0
    assert (x.std(0) > 0.5).all()


def test_digits() -> None:
    d = load("digits")
    assert d.spec == DataSpec("digits", (1, 8, 8), (0.0, 1.0), 10, 17)
    assert len(d.x_train) == 1437 and len(d.x_test) == 360
    assert d.x_train.shape[1:] == (1, 8, 8) and d.x_train.dtype == torch.float32
    assert d.y_train.dtype == torch.int64
    k = torch.cat([d.x_train, d.x_test]) * 16
    assert torch.equal(k, k.round()) and k.min() == 0 and k.max() == 16
    assert set(torch.unique(k).tolist()) == set(range(17))
    assert set(d.y_test.tolist()) == set(range(10)) == set(d.y_train.tolist())
    # Stratified: every class has 36 test images, give or take one.
    assert (torch.bincount(d.y_test, minlength=10) - 36).abs().max() <= 1


@pytest.mark.skipif(not FASHION.is_dir(), reason="dataset-fashion-mnist not installed")
def test_fashion_mnist() -> None:
    d = load("fashion-mnist")
    assert d.spec == DataSpec("fashion-mnist", (1, 28, 28), (0.0, 1.0), 10, 256)
    assert d.x_train.shape == (60_000, 1, 28, 28) and d.x_test.shape == (10_000, 1, 28, 28)
    assert d.y_train.shape == (60_000,) and d.y_test.shape == (10_000,)
    k = d.x_test * 255
    assert torch.allclose(k, k.round(), atol=1e-4) and k.min() == 0 and k.max() == 255
    assert torch.equal(torch.bincount(d.y_train), torch.full((10,), 6000))
    assert torch.equal(torch.bincount(d.y_test), torch.full((10,), 1000))


# --------------------------------------------------------------------------- IDX


def write_idx(path: Path, arr: np.ndarray) -> None:
    codes = {np.dtype("u1"): 0x08, np.dtype("i2"): 0x0B, np.dtype("f4"): 0x0D}
    header = bytes([0, 0, codes[arr.dtype], arr.ndim])
    header += np.array(arr.shape, dtype=">u4").tobytes()
    data = arr.astype(arr.dtype.newbyteorder(">")).tobytes()
    with gzip.open(path, "wb") as f:
        f.write(header + data)


def write_mnist(root: Path, n_train: int = 12, n_test: int = 4) -> tuple[np.ndarray, ...]:
    rng = np.random.default_rng(0)
    arrays = (
        rng.integers(0, 256, (n_train, 5, 4), dtype=np.uint8),
        rng.integers(0, 10, n_train).astype(np.uint8),
        rng.integers(0, 256, (n_test, 5, 4), dtype=np.uint8),
        rng.integers(0, 10, n_test).astype(np.uint8),
    )
    names = ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz")
    names += ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz")
    for name, arr in zip(names, arrays, strict=True):
        write_idx(root / name, arr)
    return arrays


def test_read_idx_round_trip(tmp_path: Path) -> None:
    for arr in (
        np.arange(24, dtype=np.uint8).reshape(2, 3, 4),
        np.array([-300, 2, 1000], dtype=np.int16),  # multi-byte: checks big-endian decoding
        np.linspace(-1, 1, 6, dtype=np.float32).reshape(3, 2),
    ):
        write_idx(tmp_path / "a.gz", arr)
        out = read_idx(tmp_path / "a.gz")
        assert out.shape == arr.shape and np.array_equal(out, arr)


def test_mnist_from_root(tmp_path: Path) -> None:
    x_tr, y_tr, x_te, y_te = write_mnist(tmp_path)
    d = load("mnist", str(tmp_path))
    assert d.spec == DataSpec("mnist", (1, 5, 4), (0.0, 1.0), 10, 256)
    assert torch.equal(d.x_train, torch.from_numpy(x_tr)[:, None].float() / 255)
    assert torch.equal(d.y_test, torch.from_numpy(y_te).long())
    assert len(d.x_test) == 4 and d.y_train.dtype == torch.int64


def test_idx_corrupt(tmp_path: Path) -> None:
    write_mnist(tmp_path)
    bad = tmp_path / "t10k-images-idx3-ubyte.gz"
    with gzip.open(bad, "wb") as f:  # header says 4x5x4 but the data is short
        f.write(bytes([0, 0, 8, 3]) + np.array([4, 5, 4], ">u4").tobytes() + bytes(10))
    with pytest.raises(GenlabError, match="t10k-images-idx3-ubyte.gz"):
        load("mnist", str(tmp_path))
    bad.write_bytes(b"not gzip at all")
    with pytest.raises(GenlabError, match="corrupt IDX file .*t10k-images"):
        read_idx(bad)
    with gzip.open(bad, "wb") as f:
        f.write(bytes([8, 3, 0, 0]) + bytes(64))
    with pytest.raises(GenlabError, match="magic"):
        read_idx(bad)


def test_idx_missing_root(tmp_path: Path) -> None:
    where = tmp_path / "nowhere"
    with pytest.raises(GenlabError) as e:
        load("mnist", str(where))
    msg = str(e.value)
    assert str(where / "train-images-idx3-ubyte.gz") in msg and "--data-root" in msg
    assert "\n" not in msg
    with pytest.raises(GenlabError, match="apt-get install dataset-fashion-mnist"):
        load("fashion-mnist", str(where))


# --------------------------------------------------------------------------- folder:


def save_png(path: Path, size: tuple[int, int] = (4, 3), mode: str = "L", value: int = 0) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(value)
    shape = (size[1], size[0]) + ((3,) if mode == "RGB" else ())
    Image.fromarray(rng.integers(0, 256, shape, dtype=np.uint8), mode).save(path)


def test_folder_classes(tmp_path: Path) -> None:
    for i in range(6):
        save_png(tmp_path / "cat" / f"{i}.png", value=i)
        save_png(tmp_path / "ant" / f"{i}.png", value=10 + i)
    d = load(f"folder:{tmp_path}")
    assert d.spec == DataSpec(f"folder:{tmp_path}", (1, 3, 4), (0.0, 1.0), 2, 256)
    assert len(d.x_train) + len(d.x_test) == 12 and len(d.x_test) == 1
    assert set(torch.cat([d.y_train, d.y_test]).tolist()) == {0, 1}  # ant = 0, cat = 1
    k = d.x_train * 255
    assert torch.allclose(k, k.round(), atol=1e-4)
    # The pixels survive: ant/0.png is the first training or test image with label 0.
    ant0 = np.asarray(Image.open(tmp_path / "ant" / "0.png"), dtype=np.float32) / 255
    x_all = torch.cat([d.x_train, d.x_test])
    assert any(torch.allclose(x[0], torch.from_numpy(ant0)) for x in x_all)


def test_folder_unlabelled_colour(tmp_path: Path) -> None:
    for i in range(19):
        save_png(tmp_path / f"{i:02d}.png", value=i)
    save_png(tmp_path / "rgb.png", mode="RGB")
    d = load(f"folder:{tmp_path}")
    assert d.spec.shape == (3, 3, 4) and d.spec.num_classes == 0 and d.y_train is None
    assert len(d.x_test) == 2 and len(d.x_train) == 18
    grey = d.x_train[0]  # a grey image converted to RGB has equal channels
    assert torch.equal(grey[0], grey[1]) and torch.equal(grey[1], grey[2])


def test_folder_errors(tmp_path: Path) -> None:
    with pytest.raises(GenlabError, match="no .* images"):
        load(f"folder:{tmp_path}")
    save_png(tmp_path / "a.png", size=(4, 3))
    save_png(tmp_path / "b.png", size=(5, 3))
    with pytest.raises(GenlabError, match=r"b\.png is 5x3 .* 4x3"):
        load(f"folder:{tmp_path}")
    (tmp_path / "b.png").unlink()
    (tmp_path / "c.png").write_bytes(b"\x89PNG this is not an image")
    with pytest.raises(GenlabError, match=r"c\.png"):
        load(f"folder:{tmp_path}")
    with pytest.raises(GenlabError, match="not a directory"):
        load(f"folder:{tmp_path / 'missing'}")


# --------------------------------------------------------------------------- npz:


def test_npz_float_vectors_round_trip(tmp_path: Path) -> None:
    x = np.random.default_rng(0).normal(size=(50, 3)).astype(np.float32)
    y = np.arange(50) % 4
    np.savez(tmp_path / "v.npz", x=x, y=y)
    d = load("npz:v.npz", str(tmp_path))  # relative to root
    assert d.spec == DataSpec("npz:v.npz", (3,), None, 4, None)
    assert len(d.x_test) == 5 and len(d.x_train) == 45
    got = torch.cat([d.x_train, d.x_test])
    order = torch.cat([d.y_train, d.y_test])  # rows keep their labels
    assert sorted(map(tuple, got.tolist())) == sorted(map(tuple, x.tolist()))
    for row, label in zip(got, order, strict=True):
        assert y[np.flatnonzero((x == row.numpy()).all(1))[0]] == label
    np.savez(tmp_path / "u.npz", x=np.clip(x, 0, 1))
    assert load(f"npz:{tmp_path / 'u.npz'}").spec.value_range == (0.0, 1.0)


def test_npz_uint8_images(tmp_path: Path) -> None:
    x = np.random.default_rng(1).integers(0, 256, (20, 6, 5), dtype=np.uint8)
    np.savez_compressed(tmp_path / "i.npz", x=x)
    d = load(f"npz:{tmp_path / 'i.npz'}")
    assert d.spec.shape == (1, 6, 5) and d.spec.discrete_levels == 256
    assert d.spec.value_range == (0.0, 1.0) and d.y_train is None
    got = torch.cat([d.x_train, d.x_test]) * 255
    assert torch.allclose(got.sort(0).values, torch.from_numpy(x)[:, None].float().sort(0).values)


def test_npz_errors(tmp_path: Path) -> None:
    x = np.zeros((10, 2), np.float32)
    cases = {
        "nan": dict(x=np.where(np.eye(10, 2) > 0, np.nan, x)),
        "no array 'x'": dict(z=x),
        "y must have shape": dict(x=x, y=np.arange(9)),
        r"\(N, D\)": dict(x=np.zeros(10)),
        "uint8 or floating": dict(x=np.zeros((10, 2), np.int64)),
        "cannot read": dict(x=np.array([{"a": 1}] * 10, dtype=object)),
    }
    for i, (match, arrays) in enumerate(cases.items()):
        np.savez(tmp_path / f"{i}.npz", **arrays)
        with pytest.raises(GenlabError, match=f"(?i){match}"):
            load(f"npz:{tmp_path / f'{i}.npz'}")
    with pytest.raises(GenlabError, match="not found"):
        load(f"npz:{tmp_path / 'missing.npz'}")


def test_npz_never_allows_pickle(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls = []
    real = np.load

    def spy(*args, **kwargs):
        calls.append(kwargs.get("allow_pickle"))
        return real(*args, **kwargs)

    monkeypatch.setattr(np, "load", spy)
    np.savez(tmp_path / "p.npz", x=np.zeros((4, 2), np.float32))
    load(f"npz:{tmp_path / 'p.npz'}")
    assert calls == [False]


# --------------------------------------------------------------------------- transforms, load


def test_binarize() -> None:
    d = load("digits", binarize=True)
    assert d.spec.discrete_levels == 2 and d.binarize
    assert set(torch.unique(d.x_test).tolist()) <= {0.0, 1.0}
    idx = torch.arange(64)
    a = d.batch(idx, torch.Generator().manual_seed(1))["x"]
    b = d.batch(idx, torch.Generator().manual_seed(2))["x"]
    assert set(torch.unique(a).tolist()) <= {0.0, 1.0} and not torch.equal(a, b)
    assert torch.equal(a, d.batch(idx, torch.Generator().manual_seed(1))["x"])
    # The cached dataset is untouched: a plain load still has 17 grey levels.
    plain = load("digits")
    assert plain.spec.discrete_levels == 17 and not plain.binarize
    assert len(torch.unique(plain.x_test)) == 17


def test_dequantize() -> None:
    d = load("digits", dequantize=True)
    levels = d.spec.discrete_levels
    k = torch.round(d.x_train[:200] * (levels - 1))
    y = d.batch(torch.arange(200), torch.Generator().manual_seed(0))["x"]
    assert (y >= k / levels).all() and (y < (k + 1) / levels).all()
    assert len(torch.unique(y)) > 17 and len(torch.unique(d.x_test)) > 17


def test_transform_errors() -> None:
    with pytest.raises(GenlabError, match="binarize"):
        load("ring8", binarize=True)
    with pytest.raises(GenlabError, match="dequantize"):
        load("moons", dequantize=True)
    with pytest.raises(GenlabError, match="both"):
        load("digits", binarize=True, dequantize=True)


def test_unknown_dataset_suggests() -> None:
    with pytest.raises(GenlabError, match="ring8"):
        load("rin8")
    with pytest.raises(GenlabError, match="folder:PATH"):
        load("fodler:x")


def test_limit_config_and_fresh_objects() -> None:
    d = load_config(DataConfig(name="digits", limit=100))
    assert isinstance(d, Data) and len(d) == 100 and len(d.y_train) == 100
    assert len(d.x_test) == 360
    assert load("digits") is not load("digits")
    assert len(load("digits")) == 1437
