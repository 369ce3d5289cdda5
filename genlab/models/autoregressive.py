"""Autoregressive models: PixelCNN over images (or any integer grid) and MADE over vectors.

Both factorise the likelihood exactly by the chain rule ([003] "autoregressive models"):
    log p(x) = sum_i log p(x_i | x_<i),
every conditional coming from one pass of a masked network (genlab.nn.masked). log_prob is exact
(ExactLikelihood), training is maximum likelihood with loss = mean over the batch of -log p(x) in
nats per example, and sampling runs the network once per variable, drawing x_i from
p(x_i | x_<i) with the caller's generator.

pixelcnn (van den Oord et al. arXiv:1601.06759): a 7x7 type-A masked convolution to 2h feature
maps, `num_blocks` residual blocks x + 1x1(ReLU(3x3_B(ReLU(1x1(ReLU(x)))))) (2h -> h -> h -> 2h,
all type B), then ReLU, 1x1, ReLU, 1x1 (type B) to the logits of a categorical over the data's L
grey levels for every pixel and channel (their softmax over 256 values; digits have L = 17,
binarised data L = 2). A stored value x = k / (L - 1) is level k. The categorical is a probability
mass on the levels, so the NLL needs no dequantisation (discrete_likelihood = True; bits/dim =
NLL / (D ln 2) directly) and pixelcnn refuses data off the grid, such as data.dequantize=true.
Chosen over a discretised logistic mixture (PixelCNN++) because the same categorical serves the
VQ-VAE prior, whose codes have no order. Colour images use the R < G < B channel masks. This
plain PixelCNN has a blind spot (van den Oord et al. arXiv:1606.05328): some pixels above-right
of i never reach output i. The likelihood stays exact; the model is only less expressive.

CategoricalPixelCNN is that network on an integer grid k in {0..K-1}^(C, H, W) (or (H, W)): the
image model feeds it the grey level as a number in [-1, 1] (the levels are ordered), a VQ-VAE
prior over its code grid feeds it a learned embedding of each code (embedding_dim > 0).

made (Germain et al. arXiv:1502.03509): a masked MLP gives, for each dimension d, a mixture of
`components` Gaussians p(x_d | x_<d) = sum_j pi_j N(x_d; mu_j, sigma_j^2) (components = 1 is the
Gaussian MADE; the mixture is MADE MoG of Papamakarios et al. arXiv:1705.07057). A density on
R^D (discrete_likelihood = False); samples of bounded data are clamped to its range. Images are
flattened in raster order, so on grey levels it needs data.dequantize=true like any density.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from genlab.data.spec import DataSpec
from genlab.errors import GenlabError
from genlab.math.gaussian import log_mixture_normal
from genlab.models.base import GenerativeModel
from genlab.nn.masked import MADE as MADENet
from genlab.nn.masked import MaskedConv2d, MaskedResidualBlock
from genlab.registry import MODELS

LOG_SIGMA_MIN, LOG_SIGMA_MAX = -7.0, 5.0  # keeps exp(log_sigma) finite early in training


# ----- PixelCNN -----


class CategoricalPixelCNN(nn.Module):
    """PixelCNN over an integer grid k in {0..K-1}^shape, shape (C, H, W) or (H, W) (one channel).

    log_prob(k) = sum over pixels and channels of log softmax(logits)[k], exact; sample(n) draws
    the grid pixel by pixel in raster order, colours R < G < B within a pixel. embedding_dim = 0
    feeds each value as the number 2 k / (K - 1) - 1 (ordered grey levels); embedding_dim > 0 a
    learned embedding per value (unordered codes, e.g. a VQ-VAE prior).
    """

    def __init__(
        self,
        levels: int,
        shape: tuple[int, ...],
        *,
        width: int = 64,
        num_blocks: int = 5,
        kernel_size: int = 7,
        embedding_dim: int = 0,
    ) -> None:
        super().__init__()
        if levels < 2:
            raise ValueError(f"a categorical PixelCNN needs >= 2 levels, got {levels}")
        if len(shape) not in (2, 3):
            raise ValueError(f"grid shape must be (H, W) or (C, H, W), got {shape}")
        self.levels, self.grid_shape = levels, tuple(shape)
        self.shape = tuple(shape) if len(shape) == 3 else (1, *shape)  # (C, H, W)
        c = self.shape[0]
        self.embedding = nn.Embedding(levels, embedding_dim) if embedding_dim > 0 else None
        in_channels = c * max(embedding_dim, 1)
        self.first = MaskedConv2d(in_channels, 2 * width, kernel_size, "A", c)
        self.blocks = nn.Sequential(*[MaskedResidualBlock(width, c) for _ in range(num_blocks)])
        self.head = nn.Sequential(
            nn.ReLU(),
            MaskedConv2d(2 * width, 2 * width, 1, "B", c),
            nn.ReLU(),
            MaskedConv2d(2 * width, c * levels, 1, "B", c),
        )
        # rows above a pixel that can reach it: the sampler only runs the net on those rows
        self.reach = kernel_size // 2 + num_blocks

    def _grid(self, k: Tensor) -> Tensor:
        """k in the user's grid shape -> (B, C, H, W) long."""
        return k.long().unsqueeze(1) if len(self.grid_shape) == 2 else k.long()

    def features(self, k: Tensor) -> Tensor:
        """(B, C, H, W) levels -> (B, C * E, H, W) network input (E = 1 for the numeric input)."""
        if self.embedding is None:
            return (2 * k / (self.levels - 1) - 1).to(self.first.weight.dtype)
        e = self.embedding(k)  # (B, C, H, W, E)
        b, c, h, w, d = e.shape
        return e.permute(0, 1, 4, 2, 3).reshape(b, c * d, h, w)  # colour-major channel blocks

    def body(self, features: Tensor) -> Tensor:
        """(B, C * E, H, W) -> logits (B, C, K, H, W); output (i, c) sees only inputs before it."""
        out = self.head(self.blocks(self.first(features)))  # (B, C * K, H, W)
        b, _, h, w = out.shape
        return out.view(b, self.shape[0], self.levels, h, w)

    def logits(self, k: Tensor) -> Tensor:
        """Logits of every conditional p(k_i | k_<i), (B, C, K, H, W), for k in grid shape."""
        return self.body(self.features(self._grid(k)))

    def log_prob(self, k: Tensor) -> Tensor:
        """log p(k) = sum_i log p(k_i | k_<i) per example (nats), shape (B,), k in grid shape."""
        kk = self._grid(k)
        logp = F.log_softmax(self.body(self.features(kk)), dim=2)  # (B, C, K, H, W)
        return logp.gather(2, kk.unsqueeze(2)).flatten(1).sum(1)

    def row_logits(self, k: Tensor, row: int) -> Tensor:
        """Logits (B, C, K, W) of row `row` of k (B, C, H, W), from the `reach` rows above it
        and the row itself only.

        Equal to the full logits' row: the masks cut everything below the row, and every
        intermediate feature the row needs is computed from real rows (none from the zero
        padding at the top of the crop).
        """
        top = max(0, row - self.reach)
        return self.body(self.features(k[:, :, top : row + 1]))[..., row - top, :]

    @torch.no_grad()
    def sample(self, n: int, *, generator: torch.Generator | None = None) -> Tensor:
        """n grids (n, *shape) of levels, drawn pixel by pixel with `generator`."""
        c, h, w = self.shape
        k = torch.zeros(n, c, h, w, dtype=torch.long, device=self.first.weight.device)
        for i in range(h):
            for j in range(w):
                for ch in range(c):
                    probs = F.softmax(self.row_logits(k, i)[:, ch, :, j].double(), dim=1)
                    k[:, ch, i, j] = torch.multinomial(probs, 1, generator=generator)[:, 0]
        return k.view(n, *self.grid_shape)


@dataclass
class PixelCNNConfig:
    width: int = 64  # h: the residual stream has 2h feature maps, the 3x3 convolutions h
    num_blocks: int = 5  # type-B residual blocks after the type-A convolution
    kernel_size: int = 7  # of the first, type-A convolution


@MODELS.register(
    "pixelcnn", "PixelCNN: masked convolutions, exact categorical likelihood over grey levels"
)
class PixelCNN(GenerativeModel):
    """PixelCNN on discrete images: log p(x) = sum_i log Cat(k_i | logits(k_<i)) (module doc)."""

    config_class = PixelCNNConfig
    data_kinds = ("image",)
    discrete_likelihood = True  # a probability mass on the grey levels: no dequantisation

    def __init__(self, cfg: PixelCNNConfig, spec: DataSpec) -> None:
        super().__init__(cfg, spec)
        if not spec.discrete_levels or spec.value_range != (0.0, 1.0):
            raise GenlabError(
                f"pixelcnn models discrete images (grey levels in [0, 1]); {spec.name} is "
                f"{spec.describe()}"
            )
        self.levels = spec.discrete_levels
        self.net = CategoricalPixelCNN(
            self.levels,
            spec.shape,
            width=cfg.width,
            num_blocks=cfg.num_blocks,
            kernel_size=cfg.kernel_size,
        )

    def levels_of(self, x: Tensor) -> Tensor:
        """Data x = k / (L - 1) -> the levels k (long); values off the grid are an error."""
        scaled = x * (self.levels - 1)
        k = torch.round(scaled)
        if (scaled - k).abs().max() > 1e-3 or k.min() < 0 or k.max() > self.levels - 1:
            raise GenlabError(
                f"pixelcnn needs images on the grid of {self.levels} grey levels k / "
                f"{self.levels - 1}; got other values (train with data.dequantize=false)"
            )
        return k.long()

    def log_prob(self, x: Tensor, labels: Tensor | None = None) -> Tensor:
        """Exact log p(x) per image in nats, a probability mass (labels are ignored)."""
        return self.net.log_prob(self.levels_of(x))

    def forward(self, batch: dict[str, Tensor], phase: str = "main") -> dict[str, Tensor]:
        nll = -self.log_prob(batch["x"]).mean()
        return {"loss": nll, "nll": nll, "bpd": nll / (self.spec.dim * math.log(2))}

    @torch.no_grad()
    def sample(
        self,
        n: int,
        *,
        generator: torch.Generator | None = None,
        labels: Tensor | None = None,
        sampler: str | None = None,
        **kw: object,
    ) -> Tensor:
        """Ancestral sampling pixel by pixel; levels k mapped to k / (L - 1) in [0, 1]."""
        k = self.net.sample(n, generator=generator)
        return k.to(self.net.first.weight.dtype) / (self.levels - 1)


# ----- MADE -----


@dataclass
class MADEConfig:
    hidden: tuple[int, ...] = (256, 256)  # masked hidden layer widths
    components: int = 5  # Gaussians per conditional p(x_d | x_<d) (1: Gaussian MADE)


@MODELS.register("made", "MADE: masked MLP, exact likelihood, mixture-of-Gaussian conditionals")
class MADE(GenerativeModel):
    """MADE density on vectors: log p(x) = sum_d log sum_j pi_j N(x_d; mu_j, sigma_j^2)."""

    config_class = MADEConfig
    data_kinds = ("vector", "image")  # images are flattened in raster order
    discrete_likelihood = False  # a density on R^D

    def __init__(self, cfg: MADEConfig, spec: DataSpec) -> None:
        super().__init__(cfg, spec)
        if cfg.components < 1:
            raise GenlabError(f"model.components must be >= 1; got {cfg.components}")
        self.net = MADENet(spec.dim, cfg.hidden, 3 * cfg.components)

    def conditionals(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """(logits, mu, log_sigma), each (B, J, D): the mixture of p(x_d | x_<d) for every d."""
        logits, mu, log_sigma = self.net(x).chunk(3, dim=1)
        return logits, mu, log_sigma.clamp(LOG_SIGMA_MIN, LOG_SIGMA_MAX)

    def log_prob(self, x: Tensor, labels: Tensor | None = None) -> Tensor:
        """Exact log density per example in nats (labels are ignored)."""
        x = x.reshape(len(x), -1)
        return log_mixture_normal(x, *self.conditionals(x)).sum(1)

    def forward(self, batch: dict[str, Tensor], phase: str = "main") -> dict[str, Tensor]:
        nll = -self.log_prob(batch["x"]).mean()
        return {"loss": nll, "nll": nll}

    @torch.no_grad()
    def sample(
        self,
        n: int,
        *,
        generator: torch.Generator | None = None,
        labels: Tensor | None = None,
        sampler: str | None = None,
        **kw: object,
    ) -> Tensor:
        """x_1, then x_2 | x_1, ...: a component j ~ pi, then x_d = mu_j + sigma_j eps."""
        dtype = self.net.net[0].weight.dtype
        x = torch.zeros(n, self.spec.dim, device=self.device, dtype=dtype)
        for d in range(self.spec.dim):
            logits, mu, log_sigma = (t[:, :, d] for t in self.conditionals(x))  # (n, J) each
            j = torch.multinomial(F.softmax(logits.double(), dim=1), 1, generator=generator)
            eps = torch.randn(n, generator=generator, device=x.device, dtype=dtype)
            x[:, d] = mu.gather(1, j)[:, 0] + log_sigma.gather(1, j)[:, 0].exp() * eps
        if self.spec.value_range is not None:
            x = x.clamp(*self.spec.value_range)
        return x.view(n, *self.spec.shape)
