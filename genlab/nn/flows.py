"""Invertible layers of normalizing flows ([003] "Normalizing Flows"; RealNVP, Glow).

Every layer is a Bijection: `forward(x) -> (y, logdet)` with logdet = log |det dy/dx| per example,
shape (B,), and `inverse(y) -> x`. Layers act on each example alone (no batch statistics after
ActNorm's one-off initialisation), so the Jacobian of a batch is block-diagonal and the change of
variables log p(x) = log p(z) + sum_k log |det J_k| holds per example. Tensors are vectors (B, D)
or images (B, C, H, W); per-feature parameters act on dim 1 (features or channels).

- AffineCoupling (Dinh et al. arXiv:1605.08803 eq. (7)-(9)):
      y = b * x + (1 - b) * (x * exp(s(b * x)) + t(b * x)),  log|det| = sum (1 - b) * s(b * x)
  with a binary mask b (checkerboard, channel or half masks) and s bounded: scale * tanh(raw)
  (RealNVP's code) or log sigmoid(raw + 2) (Glow's code).
- ActNorm (Kingma & Dhariwal arXiv:1807.03039 table 1): y = (x + bias) * exp(log_scale) per
  channel, initialised on the first training batch to zero mean and unit variance per channel;
  log|det| = H W sum(log_scale).
- InvConv1x1 (Glow table 1): y = W x at every pixel, log|det| = H W log |det W|, W a random
  rotation at init, either a plain matrix (slogdet) or W = P L (U + diag(sign(s) exp(log|s|)))
  (Glow's LU form: log|det W| = sum log|s|). On vectors it is an invertible linear map.
- Squeeze (RealNVP section 3.6): (C, H, W) -> (4C, H/2, W/2), each 2x2 block into channels.
- Logit (RealNVP section 4.1): bounded data in [-1, 1] -> logit(alpha + (1 - 2 alpha) (x + 1) / 2).
- MultiScale (RealNVP section 3.6, figure 4(b) of [003]): levels of layers, half of the channels
  factored out to the prior after every level but the last; the output is one flat z (B, D).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from genlab.errors import GenlabError
from genlab.nn.mlp import MLP
from genlab.nn.sync import broadcast_
from genlab.nn.time_unet import zero_


def _per_feature(p: Tensor, x: Tensor) -> Tensor:
    """A (C,) parameter shaped to broadcast over dim 1 of x: (1, C) or (1, C, 1, 1)."""
    return p.view(1, -1, *([1] * (x.ndim - 2)))


def _positions(x: Tensor) -> int:
    """Pixels per channel (H * W for images, 1 for vectors)."""
    return math.prod(x.shape[2:])


class Bijection(nn.Module):
    """An invertible layer: forward(x) -> (y, log|det dy/dx| per example), inverse(y) -> x."""

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        raise NotImplementedError

    def inverse(self, y: Tensor) -> Tensor:
        raise NotImplementedError


class Chain(Bijection):
    """Composition f_K o ... o f_1: log-determinants add, the inverse runs backwards."""

    def __init__(self, layers: Sequence[Bijection]) -> None:
        super().__init__()
        self.layers = nn.ModuleList(layers)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        logdet = x.new_zeros(x.shape[0])
        for layer in self.layers:
            x, ld = layer(x)
            logdet = logdet + ld
        return x, logdet

    def inverse(self, y: Tensor) -> Tensor:
        for layer in reversed(self.layers):
            y = layer.inverse(y)
        return y


# ----------------------------------------------------------------------------- masks


def checkerboard_mask(shape: Sequence[int], parity: int) -> Tensor:
    """b = 1 where (i + j) % 2 == parity, on every channel: (1, C, H, W)."""
    c, h, w = shape
    if h * w < 2:
        raise GenlabError(f"a checkerboard mask needs at least 2 pixels; got {c}x{h}x{w}")
    i, j = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
    board = ((i + j) % 2 == parity).float()
    return board.expand(c, h, w).reshape(1, c, h, w).clone()


def channel_mask(shape: Sequence[int], parity: int) -> Tensor:
    """b = 1 on the first C // 2 channels (parity 0) or on the others (parity 1): (1, C, H, W)."""
    c, h, w = shape
    if c < 2:
        raise GenlabError(f"a channel mask needs at least 2 channels; got {c}x{h}x{w}")
    first = (torch.arange(c) < c // 2).float()
    b = first if parity == 0 else 1 - first
    return b.view(1, c, 1, 1).expand(1, c, h, w).clone()


def half_mask(dim: int, parity: int) -> Tensor:
    """b = 1 on the first D // 2 features (parity 0) or on the others (parity 1): (1, D)."""
    if dim < 2:
        raise GenlabError(f"coupling layers need at least 2 dimensions; got {dim}")
    first = (torch.arange(dim) < dim // 2).float()
    return (first if parity == 0 else 1 - first).view(1, dim)


# ----------------------------------------------------------------------------- coupling nets


class CouplingConvNet(nn.Sequential):
    """Glow's NN(): conv3x3 -> ReLU -> [conv1x1 -> ReLU]... -> zero-initialised conv3x3 to 2C."""

    def __init__(self, in_channels: int, widths: Sequence[int]) -> None:
        if not widths:
            raise GenlabError("model.channels needs at least one width for the coupling nets")
        layers: list[nn.Module] = [nn.Conv2d(in_channels, widths[0], 3, padding=1), nn.ReLU()]
        for a, b in zip(widths[:-1], widths[1:]):
            layers += [nn.Conv2d(a, b, 1), nn.ReLU()]
        # zero output: s = 0 (tanh) and t = 0, so each coupling starts near the identity (Glow)
        layers.append(zero_(nn.Conv2d(widths[-1], 2 * in_channels, 3, padding=1)))
        super().__init__(*layers)


def coupling_mlp(dim: int, hidden: Sequence[int]) -> MLP:
    """An MLP D -> 2D (s and t) with a zero-initialised output layer."""
    net = MLP(dim, hidden, 2 * dim)
    zero_(net[-1])
    return net


# ----------------------------------------------------------------------------- layers


class AffineCoupling(Bijection):
    """y = b x + (1 - b)(x exp(s(b x)) + t(b x)) (RealNVP eq. (9)); `net`: b x -> (raw s, t)
    stacked on dim 1, e.g. CouplingConvNet or coupling_mlp.

    scale="tanh": s = scale * tanh(raw), a learned scale per feature (RealNVP's code);
    scale="sigmoid": s = log sigmoid(raw + 2) (Glow's code), a contraction at init.
    """

    def __init__(self, mask: Tensor, net: nn.Module, scale: str = "tanh") -> None:
        super().__init__()
        if scale not in ("tanh", "sigmoid"):
            raise GenlabError(f"coupling scale must be tanh or sigmoid; got {scale!r}")
        self.register_buffer("mask", mask, persistent=False)  # b: 1 = kept and conditioned on
        self.net = net
        self.scale_kind = scale
        self.scale = nn.Parameter(torch.ones(mask.shape[1])) if scale == "tanh" else None

    def log_s_t(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """(s, t), zero where b = 1, from the kept part b * x."""
        b = self.mask.to(x.dtype)
        raw, t = self.net(x * b).chunk(2, dim=1)
        if self.scale is not None:
            log_s = _per_feature(self.scale, x) * torch.tanh(raw)
        else:
            log_s = F.logsigmoid(raw + 2.0)
        return log_s * (1 - b), t * (1 - b)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        log_s, t = self.log_s_t(x)
        return x * torch.exp(log_s) + t, log_s.flatten(1).sum(1)

    def inverse(self, y: Tensor) -> Tensor:
        log_s, t = self.log_s_t(y)  # b * y = b * x: the kept part passes unchanged
        return (y - t) * torch.exp(-log_s)


class ActNorm(Bijection):
    """y = (x + bias) * exp(log_scale) per channel, data-initialised (Glow section 3.1).

    The first forward in training mode sets bias = -mean and log_scale = -log(std + 1e-6) of
    that batch per channel; the `initialized` buffer keeps a loaded checkpoint from initialising
    again. Under torch.distributed every rank takes rank 0's statistics (genlab.nn.sync): rank 0's
    first micro-batch is shard 0 of the global batch, the batch one process with
    train.grad_accum initialises on, so N processes start exactly as one process does.
    """

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.bias = nn.Parameter(torch.zeros(channels))
        self.log_scale = nn.Parameter(torch.zeros(channels))
        self.register_buffer("initialized", torch.tensor(False))

    @torch.no_grad()
    def initialize(self, x: Tensor) -> None:
        dims = [0, *range(2, x.ndim)]
        # statistics in at least float32 (bf16/fp16 under autocast), float64 kept as it is
        x = x.to(torch.promote_types(x.dtype, torch.float32))
        moments = torch.stack([x.mean(dims), (x * x).mean(dims)])  # (2, C)
        mean, sq = broadcast_(moments.contiguous())  # rank 0's shard-0 statistics everywhere
        std = (sq - mean**2).clamp_min(0).sqrt()
        self.bias.copy_(-mean)
        self.log_scale.copy_(-torch.log(std + 1e-6))
        self.initialized.fill_(True)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        if self.training and not bool(self.initialized):
            self.initialize(x)
        y = (x + _per_feature(self.bias, x)) * torch.exp(_per_feature(self.log_scale, x))
        logdet = _positions(x) * self.log_scale.sum()
        return y, logdet.expand(x.shape[0])

    def inverse(self, y: Tensor) -> Tensor:
        return y * torch.exp(-_per_feature(self.log_scale, y)) - _per_feature(self.bias, y)


class InvConv1x1(Bijection):
    """Invertible 1x1 convolution y = W x (Glow section 3.2), plain or LU-decomposed."""

    def __init__(self, channels: int, lu: bool = True) -> None:
        super().__init__()
        w = torch.linalg.qr(torch.randn(channels, channels))[0]  # random rotation, log|det| = 0
        self.lu = lu
        if not lu:
            self.weight = nn.Parameter(w)
            return
        p, lower, upper = torch.linalg.lu(w)
        s = torch.diagonal(upper)
        self.register_buffer("perm", p)  # fixed, from the random init: saved with the weights
        self.register_buffer("sign_s", torch.sign(s))
        self.lower = nn.Parameter(lower)
        self.upper = nn.Parameter(torch.triu(upper, 1))
        self.log_s = nn.Parameter(torch.log(s.abs()))
        self.register_buffer("below", torch.tril(torch.ones(channels, channels), -1), False)

    def weight_logdet(self) -> tuple[Tensor, Tensor]:
        """(W, log |det W|)."""
        if not self.lu:
            return self.weight, torch.linalg.slogdet(self.weight)[1]
        eye = torch.eye(len(self.log_s), dtype=self.log_s.dtype, device=self.log_s.device)
        lower = self.lower * self.below + eye
        upper = self.upper * self.below.T + torch.diag(self.sign_s * torch.exp(self.log_s))
        return self.perm @ lower @ upper, self.log_s.sum()

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        w, logdet = self.weight_logdet()
        y = torch.einsum("ij,bj...->bi...", w, x)
        return y, (_positions(x) * logdet).expand(x.shape[0])

    def inverse(self, y: Tensor) -> Tensor:
        w, _ = self.weight_logdet()
        return torch.einsum("ij,bj...->bi...", torch.linalg.inv(w), y)


def squeezed_shape(shape: Sequence[int]) -> tuple[int, int, int]:
    """(C, H, W) -> (4C, H/2, W/2); a GenlabError when H or W is odd."""
    c, h, w = shape
    if h % 2 or w % 2:
        raise GenlabError(f"cannot squeeze a {c}x{h}x{w} tensor: height and width must be even")
    return 4 * c, h // 2, w // 2


class Squeeze(Bijection):
    """Space to depth, (B, C, H, W) -> (B, 4C, H/2, W/2): a permutation, log|det| = 0."""

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        b, c, h, w = x.shape
        squeezed_shape((c, h, w))
        y = x.view(b, c, h // 2, 2, w // 2, 2).permute(0, 1, 3, 5, 2, 4)
        return y.reshape(b, 4 * c, h // 2, w // 2), x.new_zeros(b)

    def inverse(self, y: Tensor) -> Tensor:
        b, c4, h, w = y.shape
        x = y.view(b, c4 // 4, 2, 2, h, w).permute(0, 1, 4, 2, 5, 3)
        return x.reshape(b, c4 // 4, 2 * h, 2 * w)


class Logit(Bijection):
    """u in [-1, 1] -> logit(p), p = alpha + (1 - 2 alpha)(u + 1) / 2 (RealNVP section 4.1),
    so that bounded data becomes unbounded; log|det| = sum log((1 - 2 alpha) / 2) - log p(1-p).
    """

    def __init__(self, alpha: float) -> None:
        super().__init__()
        if not 0 < alpha < 0.5:
            raise GenlabError(f"model.logit_alpha must lie in (0, 0.5); got {alpha}")
        self.alpha = alpha

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        p = self.alpha + (1 - 2 * self.alpha) * (x + 1) / 2
        y = torch.log(p) - torch.log1p(-p)
        ld = math.log((1 - 2 * self.alpha) / 2) - torch.log(p) - torch.log1p(-p)
        return y, ld.flatten(1).sum(1)

    def inverse(self, y: Tensor) -> Tensor:
        return 2 * (torch.sigmoid(y) - self.alpha) / (1 - 2 * self.alpha) - 1


class MultiScale(Bijection):
    """x (B, *shape) -> z (B, D): level k maps its input to out_shapes[k]; after every level
    but the last, the second half of the channels is factored out to the prior (z_k) and the
    first half goes on (RealNVP section 3.6). z = [z_1, ..., z_L] flattened, so the whole map
    is one bijection of R^D whose log-determinant is the sum of the levels'.
    """

    def __init__(self, levels: Sequence[Bijection], out_shapes: Sequence[Sequence[int]]) -> None:
        super().__init__()
        if len(levels) != len(out_shapes) or not levels:
            raise ValueError("MultiScale needs one output shape per level")
        self.levels = nn.ModuleList(levels)
        self.z_shapes: list[tuple[int, ...]] = []  # the factored-out parts, then the last level
        for k, (c, h, w) in enumerate(out_shapes):
            if k < len(out_shapes) - 1:
                if c % 2:
                    raise GenlabError(f"cannot factor out half of {c} channels")
                self.z_shapes.append((c // 2, h, w))
            else:
                self.z_shapes.append((c, h, w))

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        logdet = x.new_zeros(x.shape[0])
        zs = []
        for k, level in enumerate(self.levels):
            x, ld = level(x)
            logdet = logdet + ld
            if k < len(self.levels) - 1:
                x, z = x.chunk(2, dim=1)  # (B, C/2, H, W) each: keep, factor out
                zs.append(z.flatten(1))
        zs.append(x.flatten(1))
        return torch.cat(zs, dim=1), logdet

    def inverse(self, y: Tensor) -> Tensor:
        sizes = [math.prod(s) for s in self.z_shapes]
        parts = [p.reshape(-1, *s) for p, s in zip(y.split(sizes, dim=1), self.z_shapes)]
        x = parts[-1]
        for k in reversed(range(len(self.levels))):
            if k < len(self.levels) - 1:
                x = torch.cat([x, parts[k]], dim=1)
            x = self.levels[k].inverse(x)
        return x
