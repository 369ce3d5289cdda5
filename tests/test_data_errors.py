"""Bad own data (npz:PATH, folder:PATH) gives one line naming the offending file, and no run.

Each case is checked twice: `genlab.data.load` raises a one-line GenlabError that names the file
(or folder), and `genlab train ae --data SPEC --out OUT train.steps=1` exits 2 with that line on
stderr and leaves no OUT behind. tests/test_data.py has the well-formed cases and a first set
of errors; these are the rest.
"""

from __future__ import annotations

import builtins
import os
import struct
import subprocess
import sys
import zlib
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from conftest import SUBPROCESS_ENV, cli
from PIL import Image

from genlab.data import load
from genlab.errors import GenlabError


def png(path: Path, size: tuple[int, int] = (4, 3), mode: str = "L", seed: int = 0) -> Path:
    """A random PNG of size (W, H)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    shape = (size[1], size[0]) + ((3,) if mode == "RGB" else ())
    Image.fromarray(rng.integers(0, 256, shape, dtype=np.uint8), mode).save(path)
    return path


def folder(root: Path, n: int = 4, **kw) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        png(root / f"{i}.png", seed=i, **kw)
    return root


def chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def png_header_only(width: int, height: int) -> bytes:
    """A valid PNG signature and IHDR declaring width x height grey pixels, and no pixels."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IEND", b"")


def check(spec: str, names: list[object], tmp_path: Path, match: str = "") -> str:
    """The library error and the CLI line both name every entry of `names`; no run is made."""
    with pytest.raises(GenlabError) as info:
        load(spec)
    message = str(info.value)
    assert "\n" not in message
    for name in names:
        assert str(name) in message, (name, message)
    if match:
        assert match in message, message
    out = tmp_path / "run-out"
    rc, err = cli("train", "ae", "--data", spec, "--out", out, "train.steps=1", "--no-progress")
    lines = [line for line in err.splitlines() if line.strip()]
    assert rc == 2 and lines == [f"genlab: error: {message}"], (rc, err)
    assert not out.exists(), "bad data must not leave a run directory"
    return message


# --------------------------------------------------------------------------- npz:

X = np.zeros((10, 2), np.float32)
NPZ_CASES: dict[str, tuple[dict[str, np.ndarray], str]] = {
    "x 1-D": (dict(x=np.zeros(10, np.float32)), "(10,)"),
    "x 5-D": (dict(x=np.zeros((10, 1, 2, 2, 2), np.float32)), "(10, 1, 2, 2, 2)"),
    "x 0-D": (dict(x=np.float32(1.0)), "N >= 2"),
    "zero examples": (dict(x=np.zeros((0, 2), np.float32)), "(0, 2)"),
    "zero features": (dict(x=np.zeros((10, 0), np.float32)), "(10, 0)"),
    "one example": (dict(x=np.zeros((1, 2), np.float32)), "(1, 2)"),
    "two channels": (dict(x=np.zeros((10, 2, 4, 4), np.uint8)), "channels"),
    "NaN": (dict(x=np.where(np.eye(10, 2) > 0, np.nan, X)), "NaN"),
    "+inf": (dict(x=np.where(np.eye(10, 2) > 0, np.inf, X)), "infinite"),
    "-inf in float16": (dict(x=np.full((10, 2), -np.inf, np.float16)), "infinite"),
    "NaN image": (dict(x=np.full((10, 1, 4, 4), np.nan, np.float32)), "NaN"),
    "float image out of range": (dict(x=np.full((10, 1, 4, 4), 2.0, np.float32)), "[0, 1]"),
    "complex x": (dict(x=X.astype(np.complex64)), "complex64"),
    "string x": (dict(x=np.array([["a", "b"]] * 10)), "<U1"),
    "fewer labels": (dict(x=X, y=np.arange(9)), "(9,)"),
    "more labels": (dict(x=X, y=np.arange(11) % 2), "(11,)"),
    "2-D labels": (dict(x=X, y=np.zeros((10, 1), np.int64)), "(10, 1)"),
    "float labels": (dict(x=X, y=np.zeros(10, np.float32)), "float32"),
    "NaN labels": (dict(x=X, y=np.full(10, np.nan)), "float64"),
    "negative labels": (dict(x=X, y=-np.ones(10, np.int64)), "non-negative"),
    "label ids far beyond N": (dict(x=X, y=np.array([0] * 9 + [10**9])), "1000000000"),
    "uint64 labels near 2**64": (dict(x=X, y=np.full(10, 2**64 - 1, np.uint64)), "labels"),
}


@pytest.mark.parametrize("arrays,fragment", NPZ_CASES.values(), ids=NPZ_CASES.keys())
def test_bad_npz_arrays(tmp_path: Path, arrays: dict, fragment: str) -> None:
    path = tmp_path / "bad.npz"
    np.savez(path, **arrays)
    check(f"npz:{path}", [path], tmp_path, fragment)


def _truncated(path: Path) -> None:
    np.savez(path, x=np.random.default_rng(0).random((50, 3)))
    path.write_bytes(path.read_bytes()[:300])


def _bad_crc(path: Path) -> None:
    """A zip whose member data no longer matches its CRC-32 (flipped bytes, same length)."""
    np.savez(path, x=np.ones((50, 3)))
    raw = bytearray(path.read_bytes())
    start = raw.index(b"\x93NUMPY") + 200
    raw[start : start + 8] = b"\x01" * 8
    path.write_bytes(bytes(raw))


def _npy_not_npz(path: Path) -> None:
    with open(path, "wb") as f:
        np.save(f, np.zeros((10, 2)))


def _short_data(path: Path) -> None:
    """A .npy member whose header declares far more data than it holds."""
    import zipfile

    header = "{'descr': '<f8', 'fortran_order': False, 'shape': (10000000000000, 2), }"
    header = header.ljust(117) + "\n"
    npy = b"\x93NUMPY\x01\x00" + struct.pack("<H", len(header)) + header.encode() + bytes(64)
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("x.npy", npy)


FILES: dict[str, Callable[[Path], object]] = {
    "text file": lambda p: p.write_text("x,y\n1,2\n"),
    "empty file": lambda p: p.write_bytes(b""),
    "truncated zip": _truncated,
    "corrupt member (CRC)": _bad_crc,
    "plain .npy": _npy_not_npz,
    "header larger than the data": _short_data,
}


@pytest.mark.parametrize("make", FILES.values(), ids=FILES.keys())
def test_bad_npz_files(tmp_path: Path, make) -> None:
    path = tmp_path / "bad.npz"
    make(path)
    check(f"npz:{path}", [path], tmp_path)


def test_npz_that_is_a_directory(tmp_path: Path) -> None:
    (tmp_path / "dir.npz").mkdir()
    check(f"npz:{tmp_path / 'dir.npz'}", [tmp_path / "dir.npz"], tmp_path, "not found")


# --------------------------------------------------------------------------- folder:


def test_empty_folder_through_the_cli(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "notes.txt").write_text("no images here")
    check(f"folder:{tmp_path / 'empty'}", [tmp_path / "empty"], tmp_path, "no .png")


@pytest.mark.parametrize("content", [None, "readme.txt", "image.gif"])
def test_class_folder_without_images(tmp_path: Path, content: str | None) -> None:
    """Class ids follow sorted folder names: silently dropping `bee/` would relabel `cat/`."""
    root = tmp_path / "classes"
    folder(root / "ant")
    folder(root / "cat")
    (root / "bee").mkdir()
    if content:
        (root / "bee" / content).write_bytes(b"GIF89a not an image we read")
    check(f"folder:{root}", [root / "bee"], tmp_path, "has no")


def test_empty_sub_folder_beside_loose_images_is_ignored(tmp_path: Path) -> None:
    """Loose images are the unlabelled layout: a sub-folder without images is not a class."""
    root = folder(tmp_path / "loose", n=10)
    (root / "thumbnails").mkdir()
    data = load(f"folder:{root}")
    assert data.spec.num_classes == 0 and len(data.x_train) + len(data.x_test) == 10


def test_mixed_sizes_across_class_folders(tmp_path: Path) -> None:
    root = tmp_path / "classes"
    folder(root / "a", size=(4, 3))
    png(root / "b" / "0.png", size=(4, 3))
    png(root / "b" / "1.png", size=(3, 4))
    check(f"folder:{root}", [root / "a" / "0.png", root / "b" / "1.png", "3x4", "4x3"], tmp_path)


def _truncated_png(path: Path) -> None:
    png(path, size=(64, 64))
    path.write_bytes(path.read_bytes()[:-80])


def _truncated_jpeg(path: Path) -> None:
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 256, (64, 64), dtype=np.uint8)).save(path, format="JPEG")
    path.write_bytes(path.read_bytes()[:300])


def _gif_named_png(path: Path) -> None:
    Image.fromarray(np.zeros((3, 4), np.uint8)).save(path, format="GIF")


def _bmp_named_png(path: Path) -> None:
    Image.fromarray(np.zeros((3, 4), np.uint8)).save(path, format="BMP")


def _sixteen_bit(path: Path) -> None:
    Image.fromarray(np.zeros((3, 4), np.uint16)).save(path)


def _bomb(path: Path) -> None:  # 30000 x 30000 = 9e8 pixels declared in a 57-byte file
    path.write_bytes(png_header_only(30000, 30000))


def _bomb_warning(path: Path) -> None:  # above Pillow's warning limit, below its error limit
    path.write_bytes(png_header_only(10000, 10000))


def _broken_link(path: Path) -> None:
    path.symlink_to(path.parent / "missing-target.png")


def _fifo(path: Path) -> None:
    os.mkfifo(path)  # opening it would block forever


BAD_IMAGES: dict[str, Callable[[Path], object]] = {
    "truncated PNG": _truncated_png,
    "truncated JPEG": _truncated_jpeg,
    "zero bytes": lambda p: p.write_bytes(b""),
    "text named .png": lambda p: p.write_text("hello, I am not a picture\n"),
    "PNG signature only": lambda p: p.write_bytes(b"\x89PNG\r\n\x1a\n"),
    "GIF named .png": _gif_named_png,
    "BMP named .png": _bmp_named_png,
    "16-bit PNG": _sixteen_bit,
    "decompression bomb": _bomb,
    "bomb below the error limit": _bomb_warning,
    "broken symlink": _broken_link,
    "FIFO": _fifo,
}


@pytest.mark.parametrize("layout", ["loose", "classes"])
@pytest.mark.parametrize("make", BAD_IMAGES.values(), ids=BAD_IMAGES.keys())
def test_bad_image_file(tmp_path: Path, make, layout: str) -> None:
    root = tmp_path / "images"
    where = root if layout == "loose" else root / "k"
    folder(where, n=5)
    if layout == "classes":
        folder(root / "j", n=5)
    bad = where / "2.png"
    bad.unlink()
    make(bad)
    check(f"folder:{root}", [bad], tmp_path)


@pytest.fixture
def deny(monkeypatch: pytest.MonkeyPatch) -> Callable[[Path], None]:
    """Make a file unreadable: chmod 000, and (as root, who reads anything) an open() that says
    EACCES for that path, as the kernel would for another user."""
    denied: set[str] = set()
    real_open = builtins.open

    def fake_open(file, *args, **kwargs):
        if isinstance(file, (str, os.PathLike)) and os.path.abspath(file) in denied:
            raise PermissionError(13, "Permission denied", os.fspath(file))
        return real_open(file, *args, **kwargs)

    def apply(path: Path) -> None:
        path.chmod(0)
        if os.geteuid() == 0:
            denied.add(os.path.abspath(path))
            monkeypatch.setattr(builtins, "open", fake_open)

    return apply


def test_unreadable_image(tmp_path: Path, deny) -> None:
    root = folder(tmp_path / "images", n=5)
    deny(root / "3.png")
    check(f"folder:{root}", [root / "3.png"], tmp_path, "Permission denied")


def test_unreadable_npz(tmp_path: Path, deny) -> None:
    path = tmp_path / "x.npz"
    np.savez(path, x=X)
    deny(path)
    check(f"npz:{path}", [path], tmp_path, "Permission denied")


def test_unlistable_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = folder(tmp_path / "images", n=5)
    real = Path.iterdir

    def iterdir(self):
        if self == root:
            raise PermissionError(13, "Permission denied", str(self))
        return real(self)

    monkeypatch.setattr(Path, "iterdir", iterdir)
    check(f"folder:{root}", [root], tmp_path, "Permission denied")


# --------------------------------------------------------------------------- the real entry point


def test_bad_data_by_subprocess(tmp_path: Path) -> None:
    """`python -m genlab` prints the same one line (no traceback) and writes no run."""
    root = tmp_path / "classes"
    folder(root / "a", size=(4, 3))
    png(root / "b" / "0.png", size=(5, 3))
    out = tmp_path / "out"
    proc = subprocess.run(
        [sys.executable, "-m", "genlab", "train", "ae", "--data", f"folder:{root}"]
        + ["--out", str(out), "train.steps=1"],
        capture_output=True,
        text=True,
        env=SUBPROCESS_ENV,
        timeout=300,
    )
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and str(root / "b" / "0.png") in lines[0], proc.stderr
    assert "5x3" in lines[0] and "4x3" in lines[0]
    assert not out.exists()
