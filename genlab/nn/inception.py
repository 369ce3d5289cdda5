"""InceptionV3 as used for FID: the port of TensorFlow's 2015-12-05 Inception graph.

The network is Inception-v3 (Szegedy et al., arXiv:1512.00567) in the variant that the FID
reference code (Heusel et al., arXiv:1706.08500) runs, as ported to PyTorch by pytorch-fid. It
differs from the ImageNet Inception-v3 of other libraries in four ways, all kept here because FID
values are only comparable when the network is the same:

- the average pools inside blocks 5b-5d, 6b-6e and 7b leave padded zeros out of the mean
  (`count_include_pad=False`, as TensorFlow does);
- the pool branch of the last block (7c) takes a max pool instead of an average pool;
- the classifier has 1008 outputs (TensorFlow's label map), not 1000;
- there is no auxiliary classifier.

genlab never downloads weights. The user supplies the file `pt_inception-2015-12-05-6726825d.pth`
released with pytorch-fid (its SHA-256 starts with 6726825d, as its name says), or the same
tensors saved as .safetensors; `load_inception` reads either. Module and parameter names match
that file's state dict exactly, so it loads with `strict=True`.
"""

from __future__ import annotations

import pickle
from collections.abc import Mapping
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from genlab.errors import GenlabError, first_line
from genlab.nn.weights import check_state_dict

WEIGHTS_FILE = "pt_inception-2015-12-05-6726825d.pth"
INPUT_SIZE = 299
FEATURE_DIM = 2048
NUM_LOGITS = 1008

# Factorised convolutions, padded to keep H x W: a 1xn row filter and an nx1 column filter.
_ROW3 = {"kernel": (1, 3), "padding": (0, 1)}
_COL3 = {"kernel": (3, 1), "padding": (1, 0)}
_ROW7 = {"kernel": (1, 7), "padding": (0, 3)}
_COL7 = {"kernel": (7, 1), "padding": (3, 0)}


class ConvBN(nn.Module):
    """Convolution without bias, BatchNorm (eps 0.001, TensorFlow's value), then ReLU."""

    def __init__(
        self,
        in_c: int,
        out_c: int,
        kernel: int | tuple[int, int],
        stride: int = 1,
        padding: int | tuple[int, int] = 0,
    ) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_c, out_c, kernel, stride=stride, padding=padding, bias=False)
        self.bn = nn.BatchNorm2d(out_c, eps=0.001)

    def forward(self, x: Tensor) -> Tensor:
        return F.relu(self.bn(self.conv(x)))


def _avg_pool_3x3(x: Tensor) -> Tensor:
    # TensorFlow's SAME average pool divides by the number of real (unpadded) pixels.
    return F.avg_pool2d(x, kernel_size=3, stride=1, padding=1, count_include_pad=False)


class Mixed35(nn.Module):
    """35x35 block (5b, 5c, 5d): 1x1 | 1x1-5x5 | 1x1-3x3-3x3 | avgpool-1x1; -> 224 + pool_c."""

    def __init__(self, in_c: int, pool_c: int) -> None:
        super().__init__()
        self.branch1x1 = ConvBN(in_c, 64, 1)
        self.branch5x5_1 = ConvBN(in_c, 48, 1)
        self.branch5x5_2 = ConvBN(48, 64, 5, padding=2)
        self.branch3x3dbl_1 = ConvBN(in_c, 64, 1)
        self.branch3x3dbl_2 = ConvBN(64, 96, 3, padding=1)
        self.branch3x3dbl_3 = ConvBN(96, 96, 3, padding=1)
        self.branch_pool = ConvBN(in_c, pool_c, 1)

    def forward(self, x: Tensor) -> Tensor:
        a = self.branch1x1(x)
        b = self.branch5x5_2(self.branch5x5_1(x))
        c = self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x)))
        d = self.branch_pool(_avg_pool_3x3(x))
        return torch.cat([a, b, c, d], dim=1)


class Reduce35(nn.Module):
    """Grid reduction 35 -> 17 (6a): stride-2 3x3 | 1x1-3x3-3x3/2 | maxpool/2; 288 -> 768."""

    def __init__(self, in_c: int) -> None:
        super().__init__()
        self.branch3x3 = ConvBN(in_c, 384, 3, stride=2)
        self.branch3x3dbl_1 = ConvBN(in_c, 64, 1)
        self.branch3x3dbl_2 = ConvBN(64, 96, 3, padding=1)
        self.branch3x3dbl_3 = ConvBN(96, 96, 3, stride=2)

    def forward(self, x: Tensor) -> Tensor:
        a = self.branch3x3(x)
        b = self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x)))
        c = F.max_pool2d(x, kernel_size=3, stride=2)
        return torch.cat([a, b, c], dim=1)


class Mixed17(nn.Module):
    """17x17 block (6b-6e) with 7x7 convolutions factorised into 1x7 and 7x1; 768 -> 768."""

    def __init__(self, in_c: int, mid_c: int) -> None:
        super().__init__()
        self.branch1x1 = ConvBN(in_c, 192, 1)
        self.branch7x7_1 = ConvBN(in_c, mid_c, 1)
        self.branch7x7_2 = ConvBN(mid_c, mid_c, **_ROW7)
        self.branch7x7_3 = ConvBN(mid_c, 192, **_COL7)
        self.branch7x7dbl_1 = ConvBN(in_c, mid_c, 1)
        self.branch7x7dbl_2 = ConvBN(mid_c, mid_c, **_COL7)
        self.branch7x7dbl_3 = ConvBN(mid_c, mid_c, **_ROW7)
        self.branch7x7dbl_4 = ConvBN(mid_c, mid_c, **_COL7)
        self.branch7x7dbl_5 = ConvBN(mid_c, 192, **_ROW7)
        self.branch_pool = ConvBN(in_c, 192, 1)

    def forward(self, x: Tensor) -> Tensor:
        a = self.branch1x1(x)
        b = self.branch7x7_3(self.branch7x7_2(self.branch7x7_1(x)))
        c = self.branch7x7dbl_3(self.branch7x7dbl_2(self.branch7x7dbl_1(x)))
        c = self.branch7x7dbl_5(self.branch7x7dbl_4(c))
        d = self.branch_pool(_avg_pool_3x3(x))
        return torch.cat([a, b, c, d], dim=1)


class Reduce17(nn.Module):
    """Grid reduction 17 -> 8 (7a): 1x1-3x3/2 | 1x1-1x7-7x1-3x3/2 | maxpool/2; 768 -> 1280."""

    def __init__(self, in_c: int) -> None:
        super().__init__()
        self.branch3x3_1 = ConvBN(in_c, 192, 1)
        self.branch3x3_2 = ConvBN(192, 320, 3, stride=2)
        self.branch7x7x3_1 = ConvBN(in_c, 192, 1)
        self.branch7x7x3_2 = ConvBN(192, 192, **_ROW7)
        self.branch7x7x3_3 = ConvBN(192, 192, **_COL7)
        self.branch7x7x3_4 = ConvBN(192, 192, 3, stride=2)

    def forward(self, x: Tensor) -> Tensor:
        a = self.branch3x3_2(self.branch3x3_1(x))
        b = self.branch7x7x3_2(self.branch7x7x3_1(x))
        b = self.branch7x7x3_4(self.branch7x7x3_3(b))
        c = F.max_pool2d(x, kernel_size=3, stride=2)
        return torch.cat([a, b, c], dim=1)


class Mixed8(nn.Module):
    """8x8 block (7b, 7c) with expanded 1x3 / 3x1 outputs; -> 320 + 768 + 768 + 192 = 2048.

    `pool="avg"` is 7b (average pool without padded zeros); `pool="max"` is 7c, where the
    TensorFlow 2015 graph has a max pool in the pool branch.
    """

    def __init__(self, in_c: int, pool: str) -> None:
        super().__init__()
        if pool not in ("avg", "max"):
            raise ValueError(f"pool must be 'avg' or 'max', got {pool!r}")
        self.pool = pool
        self.branch1x1 = ConvBN(in_c, 320, 1)
        self.branch3x3_1 = ConvBN(in_c, 384, 1)
        self.branch3x3_2a = ConvBN(384, 384, **_ROW3)
        self.branch3x3_2b = ConvBN(384, 384, **_COL3)
        self.branch3x3dbl_1 = ConvBN(in_c, 448, 1)
        self.branch3x3dbl_2 = ConvBN(448, 384, 3, padding=1)
        self.branch3x3dbl_3a = ConvBN(384, 384, **_ROW3)
        self.branch3x3dbl_3b = ConvBN(384, 384, **_COL3)
        self.branch_pool = ConvBN(in_c, 192, 1)

    def forward(self, x: Tensor) -> Tensor:
        a = self.branch1x1(x)
        b = self.branch3x3_1(x)
        b = torch.cat([self.branch3x3_2a(b), self.branch3x3_2b(b)], dim=1)
        c = self.branch3x3dbl_2(self.branch3x3dbl_1(x))
        c = torch.cat([self.branch3x3dbl_3a(c), self.branch3x3dbl_3b(c)], dim=1)
        if self.pool == "avg":
            d = _avg_pool_3x3(x)
        else:
            d = F.max_pool2d(x, kernel_size=3, stride=1, padding=1)
        d = self.branch_pool(d)
        return torch.cat([a, b, c, d], dim=1)


class InceptionV3(nn.Module):
    """FID Inception: (B, 3, 299, 299) in [-1, 1] -> (pool features (B, 2048), logits (B, 1008)).

    A fixed feature extractor: it is built in eval mode, stays there (`train()` is a no-op, so
    BatchNorm always uses its running statistics) and no parameter requires a gradient. Built
    with random weights; use `load_inception` to get the FID weights
    (`pt_inception-2015-12-05-6726825d.pth` from pytorch-fid). Architecture: Szegedy et al.,
    arXiv:1512.00567; FID protocol: Heusel et al., arXiv:1706.08500.
    """

    def __init__(self) -> None:
        super().__init__()
        self.Conv2d_1a_3x3 = ConvBN(3, 32, 3, stride=2)
        self.Conv2d_2a_3x3 = ConvBN(32, 32, 3)
        self.Conv2d_2b_3x3 = ConvBN(32, 64, 3, padding=1)
        self.Conv2d_3b_1x1 = ConvBN(64, 80, 1)
        self.Conv2d_4a_3x3 = ConvBN(80, 192, 3)
        self.Mixed_5b = Mixed35(192, pool_c=32)
        self.Mixed_5c = Mixed35(256, pool_c=64)
        self.Mixed_5d = Mixed35(288, pool_c=64)
        self.Mixed_6a = Reduce35(288)
        self.Mixed_6b = Mixed17(768, mid_c=128)
        self.Mixed_6c = Mixed17(768, mid_c=160)
        self.Mixed_6d = Mixed17(768, mid_c=160)
        self.Mixed_6e = Mixed17(768, mid_c=192)
        self.Mixed_7a = Reduce17(768)
        self.Mixed_7b = Mixed8(1280, pool="avg")
        self.Mixed_7c = Mixed8(2048, pool="max")
        self.fc = nn.Linear(FEATURE_DIM, NUM_LOGITS)
        self.requires_grad_(False)
        self.eval()

    def train(self, mode: bool = True) -> InceptionV3:
        """Ignore `mode`: a fixed feature extractor always runs with eval-mode BatchNorm."""
        return super().train(False)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        if x.dim() != 4 or x.shape[1] != 3:
            raise ValueError(f"expected (B, 3, H, W) input, got shape {tuple(x.shape)}")
        x = self.Conv2d_1a_3x3(x)  # (B, 32, 149, 149)
        x = self.Conv2d_2a_3x3(x)  # (B, 32, 147, 147)
        x = self.Conv2d_2b_3x3(x)  # (B, 64, 147, 147)
        x = F.max_pool2d(x, kernel_size=3, stride=2)  # (B, 64, 73, 73)
        x = self.Conv2d_3b_1x1(x)  # (B, 80, 73, 73)
        x = self.Conv2d_4a_3x3(x)  # (B, 192, 71, 71)
        x = F.max_pool2d(x, kernel_size=3, stride=2)  # (B, 192, 35, 35)
        x = self.Mixed_5d(self.Mixed_5c(self.Mixed_5b(x)))  # (B, 288, 35, 35)
        x = self.Mixed_6a(x)  # (B, 768, 17, 17)
        x = self.Mixed_6e(self.Mixed_6d(self.Mixed_6c(self.Mixed_6b(x))))  # (B, 768, 17, 17)
        x = self.Mixed_7a(x)  # (B, 1280, 8, 8)
        x = self.Mixed_7c(self.Mixed_7b(x))  # (B, 2048, 8, 8)
        features = x.mean(dim=(2, 3))  # (B, 2048): global average pool
        return features, self.fc(features)  # dropout is the identity in eval mode


def inception_input(x: Tensor, value_range: tuple[float, float] = (0.0, 1.0)) -> Tensor:
    """(B, C, H, W), C in {1, 3}, in `value_range` -> (B, 3, 299, 299) in [-1, 1] for InceptionV3.

    The FID protocol: map to [0, 1], repeat a grey channel three times, resize bilinearly
    (align_corners=False, no antialiasing, as pytorch-fid) to 299x299, then x -> 2x - 1.
    """
    if x.dim() != 4 or x.shape[1] not in (1, 3):
        raise ValueError(f"expected (B, 1 or 3, H, W) images, got shape {tuple(x.shape)}")
    lo, hi = value_range
    if not hi > lo:
        raise ValueError(f"value_range must have low < high, got {value_range}")
    x = (x.float() - lo) / (hi - lo)  # [0, 1]
    if x.shape[1] == 1:
        x = x.expand(-1, 3, -1, -1)
    x = F.interpolate(x, size=(INPUT_SIZE, INPUT_SIZE), mode="bilinear", align_corners=False)
    return 2 * x - 1


def _read_state_dict(path: Path) -> Mapping[str, object]:
    """The raw mapping stored at `path`; GenlabError when it cannot be read."""
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            return load_file(str(path), device="cpu")
        # weights_only: tensors and plain containers only, never code from the pickle.
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        reason = (
            "refused by weights-only loading (it holds objects other than tensors, or the pickle "
            "is corrupt); no code from the file was run"
        )
    except Exception as e:  # corrupt, truncated, not a weights file
        first = first_line(e, 200)
        reason = f"corrupt or not a weights file ({type(e).__name__}: {first})"
    raise GenlabError(
        f"cannot read Inception weights {path} (expected a torch or .safetensors state dict, "
        f"{WEIGHTS_FILE} from pytorch-fid): {reason}"
    )


def load_inception(path: str | Path) -> InceptionV3:
    """An InceptionV3 (eval mode, no gradients) with the FID weights read from `path`.

    `path` is `pt_inception-2015-12-05-6726825d.pth` released with pytorch-fid (SHA-256 prefix
    6726825d), read with `torch.load(weights_only=True)` so the pickle can run no code, or the
    same state dict saved with safetensors (a `.safetensors` suffix). Missing, unreadable or
    mismatched files raise GenlabError with a one-line reason.
    """
    path = Path(path)
    if not path.is_file():
        raise GenlabError(
            f"Inception weights file not found: {path} (expected {WEIGHTS_FILE} from pytorch-fid)"
        )
    raw = _read_state_dict(path)
    if not isinstance(raw, Mapping) or not all(
        isinstance(k, str) and isinstance(v, Tensor) for k, v in raw.items()
    ):
        raise GenlabError(
            f"{path} is not a state dict of tensors (expected {WEIGHTS_FILE} from pytorch-fid)"
        )
    model = InceptionV3()
    expected = model.state_dict()
    # BatchNorm's batch counter is unused in eval mode and absent from older files: optional.
    optional = {k for k in expected if k.endswith("num_batches_tracked")}
    check_state_dict(
        expected,
        raw,
        str(path),
        "the FID Inception",
        hint=f"expected {WEIGHTS_FILE} from pytorch-fid",
        optional=optional,
    )
    state = dict(raw)
    for key in optional - set(raw):
        state[key] = expected[key]
    model.load_state_dict(state, strict=True)
    return model
