"""Image datasets: sklearn digits, MNIST-format IDX files, image folders and .npz arrays.

Images are float32 in [0, 1] stored as k / (levels - 1); labels are int64. Nothing is downloaded.
"""

from __future__ import annotations

import gzip
import math
import warnings
import zipfile
import zlib
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from genlab.data.spec import Data, DataSpec
from genlab.errors import GenlabError
from genlab.registry import DATASETS

SPLIT_SEED = 0  # fixed seed of the 10% test split of folder: and npz: datasets
TEST_FRACTION = 0.1

DEFAULT_ROOTS = {
    "fashion-mnist": "/usr/share/datasets/fashion-mnist",  # Debian package dataset-fashion-mnist
    "mnist": "/usr/share/datasets/mnist",
}
IDX_FILES = (
    "train-images-idx3-ubyte.gz",
    "train-labels-idx1-ubyte.gz",
    "t10k-images-idx3-ubyte.gz",
    "t10k-labels-idx1-ubyte.gz",
)
# IDX type codes (third magic byte) -> big-endian numpy dtypes.
_IDX_DTYPES = {
    0x08: np.dtype(">u1"),
    0x09: np.dtype(">i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
PIL_FORMATS = ("PNG", "JPEG")  # the only decoders folder: datasets use
_GREY_MODES = ("1", "L", "LA")


def _to_data(
    spec: DataSpec,
    x: np.ndarray,
    y: np.ndarray | None,
    train: np.ndarray,
    test: np.ndarray,
    scale: float | None,
) -> Data:
    """Build Data from a uint8/float array, index splits and a divisor (None = keep values)."""
    xt = torch.from_numpy(np.ascontiguousarray(x))
    xt = xt.float() / scale if scale is not None else xt.float()
    yt = None if y is None else torch.from_numpy(np.asarray(y, dtype=np.int64))
    tr, te = torch.from_numpy(train), torch.from_numpy(test)
    return Data(
        spec,
        xt[tr],
        None if yt is None else yt[tr],
        xt[te],
        None if yt is None else yt[te],
    )


def fixed_split(n: int, what: str) -> tuple[np.ndarray, np.ndarray]:
    """Train/test row indices: 10% (at least 1) test drawn with a fixed seed, each in file order."""
    if n < 2:
        raise GenlabError(f"{what} has {n} example(s); need at least 2 for a train/test split")
    n_test = max(1, round(n * TEST_FRACTION))
    perm = np.random.default_rng(SPLIT_SEED).permutation(n)
    return np.sort(perm[n_test:]), np.sort(perm[:n_test])


# --------------------------------------------------------------------------- digits


@DATASETS.register("digits", "scikit-learn 8x8 handwritten digits, 17 grey levels, 10 classes")
def digits(root: str = "") -> Data:
    """sklearn's bundled 8x8 digits (UCI optdigits test set): 1,437 train / 360 test, stratified."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    bunch = load_digits()
    x = bunch.images.astype(np.float64)[:, None]  # (N, 1, 8, 8), integer counts 0..16
    y = bunch.target.astype(np.int64)
    train, test = train_test_split(np.arange(len(y)), test_size=360, stratify=y, random_state=0)
    spec = DataSpec("digits", (1, 8, 8), (0.0, 1.0), 10, 17)
    return _to_data(spec, x, y, np.sort(train), np.sort(test), 16.0)


# --------------------------------------------------------------------------- IDX (MNIST format)


def read_idx(path: str | Path) -> np.ndarray:
    """Read an IDX file (gzip-compressed if its name ends in .gz) into a native-endian array.

    Format (LeCun's MNIST page): magic 0x00 0x00 <type code> <ndim>, then ndim big-endian
    uint32 sizes, then the data, big-endian, row-major.
    """
    path = Path(path)
    try:
        if path.suffix == ".gz":
            with gzip.open(path, "rb") as f:
                raw = f.read()
        else:
            raw = path.read_bytes()
    except FileNotFoundError:
        raise GenlabError(f"IDX file not found: {path}") from None
    except (OSError, EOFError, zlib.error) as e:  # gzip.BadGzipFile is an OSError
        raise GenlabError(f"corrupt IDX file {path}: {e}") from None
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in _IDX_DTYPES or raw[3] == 0:
        raise GenlabError(f"corrupt IDX file {path}: bad magic number {raw[:4].hex() or 'none'}")
    dtype, ndim = _IDX_DTYPES[raw[2]], raw[3]
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise GenlabError(f"corrupt IDX file {path}: truncated header")
    dims = tuple(int(d) for d in np.frombuffer(raw, ">u4", ndim, 4))
    expected = math.prod(dims) * dtype.itemsize
    if len(raw) - header != expected:
        raise GenlabError(
            f"corrupt IDX file {path}: header {dims} needs {expected} data bytes, "
            f"file has {len(raw) - header}"
        )
    return np.frombuffer(raw, dtype, offset=header).reshape(dims).astype(dtype.newbyteorder("="))


def _idx_path(folder: Path, name: str, filename: str, hint: str) -> Path:
    path = folder / filename
    if path.is_file():
        return path
    if (folder / filename[:-3]).is_file():  # an already-decompressed copy
        return folder / filename[:-3]
    raise GenlabError(
        f"dataset {name}: file not found: {path}; {hint}pass --data-root DIR "
        f"(config data.root=DIR) for a folder with {', '.join(IDX_FILES)}"
    )


def load_idx_dataset(name: str, root: str, hint: str = "") -> Data:
    """A 10-class MNIST-format dataset from the four standard IDX files in `root`."""
    folder = Path(root or DEFAULT_ROOTS[name]).expanduser()
    paths = [_idx_path(folder, name, f, hint) for f in IDX_FILES]
    arrays = [read_idx(p) for p in paths]
    x_tr, y_tr, x_te, y_te = arrays
    for p, x in ((paths[0], x_tr), (paths[2], x_te)):
        if x.ndim != 3 or x.dtype != np.uint8:
            raise GenlabError(f"{p}: expected uint8 images (N, H, W), got {x.dtype} {x.shape}")
    for p, y, x in ((paths[1], y_tr, x_tr), (paths[3], y_te, x_te)):
        if y.ndim != 1 or len(y) != len(x) or (len(y) and y.max() > 9):
            raise GenlabError(f"{p}: expected {len(x)} labels 0..9, got {y.dtype} {y.shape}")
    if x_tr.shape[1:] != x_te.shape[1:]:
        raise GenlabError(f"{paths[2]}: image size {x_te.shape[1:]} differs from {x_tr.shape[1:]}")
    spec = DataSpec(name, (1, *x_tr.shape[1:]), (0.0, 1.0), 10, 256)

    def images(x: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(x[:, None]).float() / 255.0  # (N, 1, H, W)

    def labels(y: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(y.astype(np.int64))

    return Data(spec, images(x_tr), labels(y_tr), images(x_te), labels(y_te))


@DATASETS.register("fashion-mnist", "Zalando Fashion-MNIST 28x28 grey, 60k/10k, 10 classes (IDX)")
def fashion_mnist(root: str = "") -> Data:
    """Fashion-MNIST (Xiao et al. 2017) from IDX gz files, by default the Debian package's copy."""
    return load_idx_dataset(
        "fashion-mnist", root, "install it with `apt-get install dataset-fashion-mnist` or "
    )


@DATASETS.register("mnist", "MNIST handwritten digits 28x28 grey, 60k/10k, 10 classes (IDX)")
def mnist(root: str = "") -> Data:
    """MNIST (LeCun et al. 1998) from the four standard IDX gz files in a given root."""
    return load_idx_dataset("mnist", root)


# --------------------------------------------------------------------------- folder:PATH


def _listdir(folder: Path, what: str) -> list[Path]:
    try:
        return list(folder.iterdir())
    except OSError as e:
        raise GenlabError(f"{what}: cannot list {folder}: {e.strerror or e}") from None


def _image_files(folder: Path, what: str) -> list[Path]:
    """Files named *.png/*.jpg/*.jpeg; broken links and special files count too (and are then
    refused when read), so an unreadable image is reported rather than silently skipped."""
    return sorted(
        p
        for p in _listdir(folder, what)
        if not p.name.startswith(".") and p.suffix.lower() in IMAGE_SUFFIXES and not p.is_dir()
    )


def _read_image(path: Path) -> np.ndarray:
    """One image as uint8 (H, W) for grey or (H, W, 3) for colour; alpha is dropped."""
    if not path.is_file():  # a broken link, a FIFO (which would block), a device
        raise GenlabError(f"cannot read image {path}: not a regular file (or a broken link)")
    try:
        # Only the PNG and JPEG decoders: whatever the name says, Pillow would otherwise pick a
        # decoder by content, and some (EPS) run an external program (Ghostscript).
        # A decompression bomb (a small file declaring a huge size) is an error, not a warning.
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            im = Image.open(path, formats=PIL_FORMATS)
        with im:
            im.load()
            if im.mode == "P":  # palette: grey only if the palette is
                im = im.convert("RGB")
                arr = np.asarray(im)
                return arr[..., 0].copy() if (arr == arr[..., :1]).all() else arr
            if im.mode in _GREY_MODES:
                return np.asarray(im.convert("L"))
            if im.mode.startswith(("I", "F")):  # 16/32-bit: 256 levels would be a lie
                raise GenlabError(f"image {path}: mode {im.mode} unsupported; save 8-bit images")
            return np.asarray(im.convert("RGB"))
    except GenlabError:
        raise
    except UnidentifiedImageError:
        raise GenlabError(f"cannot read image {path}: not a PNG or JPEG image") from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        raise GenlabError(f"cannot read image {path}: too large ({e})") from None
    except (OSError, SyntaxError, ValueError) as e:
        raise GenlabError(f"cannot read image {path}: {e}") from None


def load_folder(path: str) -> Data:
    """Images (PNG/JPEG) in a folder; class sub-folders (sorted names -> ids) give labels."""
    folder = Path(path).expanduser()
    what = f"folder:{path}"
    if not folder.is_dir():
        raise GenlabError(f"{what}: {folder} is not a directory")
    loose = _image_files(folder, what)
    subdirs = sorted(p for p in _listdir(folder, what) if p.is_dir() and not p.name.startswith("."))
    found = [(d, _image_files(d, what)) for d in subdirs]
    classes = [(d, files) for d, files in found if files]
    empty = [d for d, files in found if not files]
    if classes and not loose and empty:
        # Class ids follow the sorted folder names: skipping an empty one would shift them.
        raise GenlabError(
            f"{what}: class folder {empty[0]} has no {'/'.join(IMAGE_SUFFIXES)} images; "
            "add images or remove it"
        )
    if loose and classes:
        raise GenlabError(
            f"{what}: images both directly in {folder} (e.g. {loose[0].name}) and in class "
            f"sub-folders (e.g. {classes[0][0].name}/); use one layout"
        )
    if not loose and not classes:
        raise GenlabError(
            f"{what}: no {'/'.join(IMAGE_SUFFIXES)} images in {folder} or its sub-folders"
        )
    files = loose or [f for _, fs in classes for f in fs]
    labels = None if loose else np.concatenate([[i] * len(fs) for i, (_, fs) in enumerate(classes)])

    images = []
    for f in files:
        img = _read_image(f)
        if images and img.shape[:2] != images[0].shape[:2]:
            (h0, w0), (h, w) = images[0].shape[:2], img.shape[:2]
            raise GenlabError(
                f"{what}: image {f} is {w}x{h} but {files[0]} is {w0}x{h0}; "
                "all images must have the same size"
            )
        images.append(img)
    colour = any(im.ndim == 3 for im in images)
    if colour:  # one colour image makes the dataset RGB: grey images get three equal channels
        images = [im if im.ndim == 3 else np.repeat(im[..., None], 3, axis=2) for im in images]
        x = np.stack(images).transpose(0, 3, 1, 2)  # (N, 3, H, W)
    else:
        x = np.stack(images)[:, None]  # (N, 1, H, W)
    train, test = fixed_split(len(x), what)
    spec = DataSpec(what, tuple(x.shape[1:]), (0.0, 1.0), len(classes), 256)
    return _to_data(spec, x, labels, train, test, 255.0)


# --------------------------------------------------------------------------- npz:PATH


def load_npz(path: str) -> Data:
    """Arrays from an .npz: `x` as (N, D) vectors or (N, H, W) / (N, C, H, W) images, optional `y`.

    uint8 x is scaled by 1/255 (256 levels); float x is kept as is (continuous).
    """
    file = Path(path).expanduser()
    what = f"npz:{path}"
    if not file.is_file():
        raise GenlabError(f"{what}: file not found: {file}")
    try:
        with open(file, "rb") as f:
            # np.load would take a plain .npy, or try a pickle on anything else: zip only.
            if not zipfile.is_zipfile(f):
                raise GenlabError(f"{what}: {file} is not an .npz (zip) archive")
        # allow_pickle=False: an .npz must never run code on load.
        with np.load(file, allow_pickle=False) as npz:
            if "x" not in npz.files:
                raise GenlabError(
                    f"{what}: no array 'x' in {file} (arrays: {', '.join(npz.files)})"
                )
            x = npz["x"]
            y = npz["y"] if "y" in npz.files else None
    except GenlabError:
        raise
    except (OSError, ValueError, EOFError, zlib.error, zipfile.BadZipFile) as e:
        raise GenlabError(f"{what}: cannot read {file}: {e}") from None
    except MemoryError:  # a header declaring a shape far larger than the file
        raise GenlabError(f"{what}: {file} declares arrays too large to load (corrupt?)") from None
    for name, arr in (("x", x), ("y", y)):
        # NpzFile hands back the raw bytes of a member that is not a .npy array
        if arr is not None and not isinstance(arr, np.ndarray):
            raise GenlabError(f"{what}: {name} in {file} is not a .npy array")

    if x.ndim not in (2, 3, 4) or len(x) < 2 or 0 in x.shape:
        raise GenlabError(
            f"{what}: x must be (N, D), (N, H, W) or (N, C, H, W) with N >= 2, got {x.shape}"
        )
    if x.ndim == 3:
        x = x[:, None]
    if x.ndim == 4 and x.shape[1] not in (1, 3):
        raise GenlabError(f"{what}: images need 1 or 3 channels in (N, C, H, W), got {x.shape}")
    if x.dtype == np.uint8:
        scale, value_range, levels = 255.0, (0.0, 1.0), 256
    elif np.issubdtype(x.dtype, np.floating):
        if not np.isfinite(x).all():
            raise GenlabError(f"{what}: x contains NaN or infinite values")
        scale, levels = None, None
        inside = bool(x.min() >= 0.0 and x.max() <= 1.0)
        if x.ndim == 4 and not inside:
            raise GenlabError(
                f"{what}: float images must lie in [0, 1], got [{x.min():g}, {x.max():g}]"
            )
        value_range = (0.0, 1.0) if inside else None
    else:
        raise GenlabError(f"{what}: x must be uint8 or floating point, got {x.dtype}")

    num_classes = 0
    if y is not None:
        if y.ndim != 1 or len(y) != len(x):
            raise GenlabError(f"{what}: y must have shape ({len(x)},) to match x, got {y.shape}")
        if not np.issubdtype(y.dtype, np.integer) or (len(y) and y.min() < 0):
            raise GenlabError(f"{what}: y must hold non-negative integer labels, got {y.dtype}")
        num_classes = int(y.max()) + 1
        # Class ids are 0..K-1; K beyond the number of examples means ids that are not
        # dense (and a class embedding or classifier head of K rows would be allocated).
        if num_classes > len(y):
            raise GenlabError(
                f"{what}: y has labels up to {num_classes - 1} but only {len(y)} examples; "
                "labels must be class ids 0..K-1"
            )
    train, test = fixed_split(len(x), what)
    spec = DataSpec(what, tuple(x.shape[1:]), value_range, num_classes, levels)
    return _to_data(spec, x, y, train, test, scale)
