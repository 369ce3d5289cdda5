"""GAN networks and the critic-side layers of the mode-collapse tricks (networks only, no losses).

- `Generator`: z (B, in_dim) -> (B, *shape). MLP with ReLU, or the DCGAN stack of Radford et al.
  arXiv:1511.06434 [000, 002, 003, 004]: a linear projection to the top feature map, then
  transposed convolutions (kernel 4, stride 2, padding 1) with batch norm and ReLU, tanh last.
- `Critic`: x (B, *in_shape) -> (B,) scores. MLP with LeakyReLU(0.2), or the DCGAN stack:
  strided convolutions (kernel 4, stride 2, padding 1) with LeakyReLU(0.2), batch norm on the
  inner layers (not the first), and a linear head. Optional minibatch stddev and minibatch
  discrimination on the penultimate features, and spectral normalisation of every Linear / Conv.
- `MinibatchStdDev` (Karras et al. arXiv:1710.10196 [000, 003]) and `MinibatchDiscrimination`
  (Salimans et al. arXiv:1606.03498 [000, 002]): layers whose output for one example depends on
  the other examples of the batch, so the critic can see a lack of variety.
- `pack_samples`: PacGAN's packing (Lin et al. arXiv:1712.04086).
- `dcgan_init`: the DCGAN initialisation, weights N(0, 0.02), batch-norm scales N(1, 0.02).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor, nn
from torch.nn.utils.parametrizations import spectral_norm

from genlab.nn import sync
from genlab.nn.conv import halvings

ARCHS = ("mlp", "dcgan")  # the model adds the style-based / multi-scale generators later


def conv_stages(shape: Sequence[int], channels: Sequence[int]) -> int:
    """Number of stride-2 stages for an image (C, H, W): exact halvings, at most len(channels)."""
    _, h, w = shape
    n = halvings(h, w, len(channels))
    if n == 0:
        raise ValueError(f"image {h}x{w} is too small or odd-sized for strided convolutions")
    return n


def dcgan_init(module: nn.Module) -> None:
    """DCGAN init: Linear / Conv weights N(0, 0.02), norm scales N(1, 0.02), biases 0.

    Radford et al. arXiv:1511.06434, section 4 ("all weights were initialized from a zero-centered
    Normal distribution with standard deviation 0.02"); pix2pix uses the same (Isola et al. 6.2).
    """
    for m in module.modules():
        if isinstance(m, (nn.Linear, nn.Conv2d, nn.ConvTranspose2d)):
            nn.init.normal_(m.weight, 0.0, 0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d, nn.InstanceNorm2d)) and m.affine:
            nn.init.normal_(m.weight, 1.0, 0.02)
            nn.init.zeros_(m.bias)


def pack_samples(x: Tensor, pack: int) -> Tensor:
    """(B, F, ...) -> (B / pack, pack * F, ...): consecutive examples joined along dim 1.

    Row i of the result is cat(x[pack*i], ..., x[pack*i + pack - 1]) along features / channels,
    so a critic built for pack * F inputs judges `pack` examples jointly (PacGAN,
    arXiv:1712.04086). B must be divisible by pack.
    """
    b = x.shape[0]
    if b % pack:
        raise ValueError(f"batch of {b} is not divisible by pack={pack}")
    return x.reshape(b // pack, pack * x.shape[1], *x.shape[2:])


class MinibatchStdDev(nn.Module):
    """Append one feature: the mean over features (and positions) of the batch standard deviation.

    (B, F) -> (B, F + 1) or (B, C, H, W) -> (B, C + 1, H, W). With s_f = sqrt(Var_batch(x_f) + eps)
    per feature / position, the appended value is mean_f s_f, the same for every example
    (Karras et al. arXiv:1710.10196, section 3, over the whole batch, i.e. one group).
    """

    def __init__(self, eps: float = 1e-8) -> None:
        super().__init__()
        self.eps = eps

    def forward(self, x: Tensor) -> Tensor:
        std = (x.var(dim=0, unbiased=False) + self.eps).sqrt()  # (F,) or (C, H, W)
        stat = std.mean().expand(x.shape[0], 1, *x.shape[2:])  # (B, 1[, H, W])
        return torch.cat([x, stat.to(x.dtype)], dim=1)


class MinibatchDiscrimination(nn.Module):
    """Append `kernels` features measuring closeness to the other examples of the batch.

    Salimans et al. arXiv:1606.03498, section 3.2: M_i = f(x_i) T with T of shape (A, B, C),
    c_b(x_i, x_j) = exp(-||M_i,b - M_j,b||_L1) and o(x_i)_b = sum_j c_b(x_i, x_j) (the sum runs
    over the whole batch, x_i itself included, as in the paper). (N, A) -> (N, A + B).
    """

    def __init__(self, in_features: int, kernels: int, kernel_dim: int = 16) -> None:
        super().__init__()
        self.kernels, self.kernel_dim = kernels, kernel_dim
        self.T = nn.Parameter(
            torch.randn(in_features, kernels * kernel_dim) / math.sqrt(in_features)
        )

    def forward(self, f: Tensor) -> Tensor:
        m = (f @ self.T).view(-1, self.kernels, self.kernel_dim).transpose(0, 1)  # (B, N, C)
        l1 = torch.cdist(m, m, p=1)  # (B, N, N)
        o = torch.exp(-l1).sum(dim=2).transpose(0, 1)  # (N, B)
        return torch.cat([f, o], dim=1)


class Generator(nn.Module):
    """z (B, in_dim) -> (B, *shape); tanh output in [-1, 1] when `bounded`, else unbounded.

    arch "mlp": Linear layers of widths `hidden` with ReLU. arch "dcgan" (images): Linear to the
    top map (channels[n-1], H / 2^n, W / 2^n), batch norm, ReLU, then n transposed convolutions
    (4, 2, 1) through channels[n-2], ..., channels[0] to C, batch norm + ReLU on all but the last;
    n = number of exact halvings of (H, W), at most len(channels). DCGAN initialisation.
    """

    def __init__(
        self,
        in_dim: int,
        shape: Sequence[int],
        *,
        arch: str = "mlp",
        hidden: Sequence[int] = (256, 256),
        channels: Sequence[int] = (64, 128),
        bounded: bool = False,
    ) -> None:
        super().__init__()
        self.shape = tuple(shape)
        layers: list[nn.Module]
        if arch == "dcgan":
            n = conv_stages(shape, channels)
            chans = list(channels[:n])[::-1]  # top (widest) first
            _, h, w = shape
            self.top_shape = (chans[0], h >> n, w >> n)
            layers = [
                nn.Linear(in_dim, math.prod(self.top_shape), bias=False),
                nn.Unflatten(1, self.top_shape),
                nn.BatchNorm2d(chans[0]),
                nn.ReLU(),
            ]
            for a, b in zip(chans[:-1], chans[1:]):
                layers += [
                    nn.ConvTranspose2d(a, b, 4, stride=2, padding=1, bias=False),
                    nn.BatchNorm2d(b),
                    nn.ReLU(),
                ]
            layers.append(nn.ConvTranspose2d(chans[-1], shape[0], 4, stride=2, padding=1))
            self.net = nn.Sequential(*layers)
            dcgan_init(self)
        elif arch == "mlp":
            dims = [in_dim, *hidden]
            layers = []
            for a, b in zip(dims[:-1], dims[1:]):
                layers += [nn.Linear(a, b), nn.ReLU()]
            layers += [nn.Linear(dims[-1], math.prod(shape)), nn.Unflatten(1, self.shape)]
            self.net = nn.Sequential(*layers)
        else:
            raise ValueError(f"unknown generator arch {arch!r}; choose from {', '.join(ARCHS)}")
        self.out = nn.Tanh() if bounded else nn.Identity()

    def forward(self, z: Tensor) -> Tensor:
        return self.out(self.net(z))


class Critic(nn.Module):
    """x (B, *in_shape) -> (B,) critic scores (logits for minimax / ns).

    features (MLP or DCGAN conv stack) -> [MinibatchStdDev] -> flatten -> [MinibatchDiscrimination]
    -> Linear head. arch "mlp": Linear layers of widths `hidden`, each followed by LeakyReLU(0.2).
    arch "dcgan": conv (4, 2, 1) + LeakyReLU(0.2) through `channels` (as many as the image can be
    halved), batch norm on every conv but the first when `batch_norm`; DCGAN initialisation.
    `spectral_norm` wraps every Linear / Conv (the head included) in torch's spectral-norm
    parametrisation W / sigma(W), one power iteration per training forward (Miyato et al.
    arXiv:1802.05957 [003]); the minibatch-discrimination tensor T is not normalised.
    """

    def __init__(
        self,
        in_shape: Sequence[int],
        *,
        arch: str = "mlp",
        hidden: Sequence[int] = (256, 256),
        channels: Sequence[int] = (64, 128),
        batch_norm: bool = True,
        minibatch_stddev: bool = False,
        minibatch_discrimination: int = 0,
        spectral_norm: bool = False,
    ) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        if arch == "dcgan":
            n = conv_stages(in_shape, channels)
            c, h, w = in_shape
            for i, out_c in enumerate(channels[:n]):
                norm = batch_norm and i > 0
                layers.append(nn.Conv2d(c, out_c, 4, stride=2, padding=1, bias=not norm))
                if norm:
                    layers.append(nn.BatchNorm2d(out_c))
                layers.append(nn.LeakyReLU(0.2))
                c = out_c
            feature_shape: tuple[int, ...] = (c, h >> n, w >> n)
        elif arch == "mlp":
            dims = [math.prod(in_shape), *hidden]
            layers.append(nn.Flatten())
            for a, b in zip(dims[:-1], dims[1:]):
                layers += [nn.Linear(a, b), nn.LeakyReLU(0.2)]
            feature_shape = (dims[-1],)
        else:
            raise ValueError(f"unknown critic arch {arch!r}; choose from {', '.join(ARCHS)}")
        if minibatch_stddev:
            layers.append(MinibatchStdDev())
            feature_shape = (feature_shape[0] + 1, *feature_shape[1:])
        layers.append(nn.Flatten())
        features = math.prod(feature_shape)
        if minibatch_discrimination > 0:
            layers.append(MinibatchDiscrimination(features, minibatch_discrimination))
            features += minibatch_discrimination
        self.features = nn.Sequential(*layers)
        self.head = nn.Linear(features, 1)
        if arch == "dcgan":
            dcgan_init(self)
        if spectral_norm:
            apply_spectral_norm(self)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.features(x)).squeeze(1)


def apply_spectral_norm(module: nn.Module) -> None:
    """Spectral normalisation (torch parametrisation) on every Linear / Conv2d inside `module`.

    torch runs one power iteration per training forward, updating the buffers u, v. Under
    train.grad_accum, `power_iterations_per_step` makes every micro-batch start from the u, v
    the step's first micro-batch started from, as every DDP process starts from rank 0's
    buffers: the iterations depend on the weights only, so each micro-batch then normalises
    with the same sigma as a process of its own would, and all end with the same u, v.
    """
    for m in list(module.modules()):
        if isinstance(m, (nn.Linear, nn.Conv2d, nn.ConvTranspose2d)):
            spectral_norm(m)
            m.register_forward_pre_hook(power_iterations_per_step)


@torch.no_grad()
def power_iterations_per_step(module: nn.Module, args: object) -> None:
    """Forward pre-hook of a spectrally normalised layer (see apply_spectral_norm)."""
    m = sync.micro_batch_index()
    if m is None or not module.training or not sync.first_call(module):
        return
    norm = module.parametrizations.weight[0]
    if m == 0:
        module._sn_start = (norm._u.clone(), norm._v.clone())
    elif getattr(module, "_sn_start", None) is not None:
        norm._u.copy_(module._sn_start[0])
        norm._v.copy_(module._sn_start[1])
