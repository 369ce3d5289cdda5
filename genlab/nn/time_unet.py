"""Time-conditioned U-Net of DDPM: eps_theta(x_t, t) and score networks for images ([001]).

The architecture of Ho et al. (arXiv:2006.11239, appendix B), as refactored by Nichol & Dhariwal
(arXiv:2102.09672, "improved DDPM"): a PixelCNN++-like U-Net of residual blocks with group norm,
the time embedding added inside every residual block, self-attention at low resolutions and in
the middle, skip connections from every encoder block to the decoder ([001]: "U-Net with ResNet
blocks and self attention layers ... time features are fed to residual blocks"; parameters are
shared across t, only the time embedding tells the steps apart). Conditioning ([001] "Score based
models, conditional setting"; Rombach et al. arXiv:2112.10752 figure 3):
  - class: a learned class embedding (with a null class for classifier-free guidance) added to
    the time embedding (see genlab.nn.embeddings);
  - image: `cond` (B, cond_channels, H, W) concatenated to x_t along channels (super-resolution:
    the low-resolution image upsampled to x_t's size; latent diffusion: a spatial latent);
  - sequence: `context` (B, L, context_dim) attended to by a cross-attention layer after each
    self-attention (latent diffusion's cross-attention conditioning, without its feed-forward).

Sizes. Downsampling is a stride-2 3x3 convolution (padding 1), which maps a side n to ceil(n/2),
so odd sizes need no padding: 28 -> 14 -> 7 -> 4, 7 -> 4 -> 2. Upsampling is nearest-neighbour
interpolation to the exact size of the matching encoder map, then a 3x3 convolution, so the
decoder retraces the encoder's sizes (4 -> 7, not 8). The number of resolution levels is
len(channel_mults), reduced so that the smallest feature map keeps at least 2 pixels a side: a
level is halved only while its shorter side is >= 4 (28: 28, 14, 7; 8: 8, 4, 2; 4: 4, 2), and
channel_mults beyond the levels used are ignored (`TimeUNet.resolutions` lists the sizes).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from genlab.nn.embeddings import TimeEmbedding, broadcast_time


def level_sizes(size: tuple[int, int], levels: int) -> list[tuple[int, int]]:
    """Feature-map sizes of the U-Net's levels: halve (rounding up) while the shorter side is
    >= 4, at most levels - 1 times. (28, 28), 3 -> [(28, 28), (14, 14), (7, 7)]."""
    h, w = size
    sizes = [(h, w)]
    while len(sizes) < levels and min(h, w) >= 4:
        h, w = (h + 1) // 2, (w + 1) // 2
        sizes.append((h, w))
    return sizes


def group_norm(channels: int, groups: int) -> nn.GroupNorm:
    """GroupNorm with min(groups, channels) groups (Wu & He arXiv:1803.08494, used by DDPM)."""
    g = min(groups, channels)
    if channels % g:
        raise ValueError(f"{channels} channels cannot be split into {g} normalisation groups")
    return nn.GroupNorm(g, channels)


def zero_(module: nn.Module) -> nn.Module:
    """Zero a layer's parameters, so that a residual branch starts as the identity (DDPM code)."""
    for p in module.parameters():
        nn.init.zeros_(p)
    return module


class ResBlock(nn.Module):
    """x (B, C_in, H, W), emb (B, E) -> (B, C_out, H, W): the DDPM residual block.

    h = conv3(SiLU(GN(x))); h += Linear(SiLU(emb)); h = conv3(dropout(SiLU(GN(h))));
    out = skip(x) + h, skip a 1x1 convolution when C_in != C_out (Ho et al. arXiv:2006.11239
    appendix B; their resnet_block). With zero_init the second convolution starts at zero.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        emb_dim: int,
        *,
        dropout: float = 0.0,
        groups: int = 8,
        zero_init: bool = True,
    ) -> None:
        super().__init__()
        self.norm1 = group_norm(in_channels, groups)
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, padding=1)
        self.emb_proj = nn.Linear(emb_dim, out_channels)
        self.norm2 = group_norm(out_channels, groups)
        self.dropout = nn.Dropout(dropout)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1)
        if zero_init:
            zero_(self.conv2)
        same = in_channels == out_channels
        self.skip = nn.Identity() if same else nn.Conv2d(in_channels, out_channels, 1)

    def forward(self, x: Tensor, emb: Tensor) -> Tensor:
        h = self.conv1(F.silu(self.norm1(x)))  # (B, C_out, H, W)
        h = h + self.emb_proj(F.silu(emb))[:, :, None, None]
        h = self.conv2(self.dropout(F.silu(self.norm2(h))))
        return self.skip(x) + h


def _heads(x: Tensor, num_heads: int) -> Tensor:
    """(B, N, C) -> (B, heads, N, C / heads)."""
    b, n, c = x.shape
    return x.view(b, n, num_heads, c // num_heads).transpose(1, 2)


class AttentionBlock(nn.Module):
    """x (B, C, H, W) [, context (B, L, D)] -> (B, C, H, W): self- then cross-attention.

    Self-attention over the H W positions, x + proj(softmax(q k^T / sqrt(d)) v) with q, k, v
    linear maps of GN(x) (Ho et al. appendix B, after Wang et al.'s non-local block; multi-head
    as in Nichol & Dhariwal). With context_dim, a second residual attention takes its queries from
    GN(x) and its keys and values from the context tokens (Rombach et al. arXiv:2112.10752 eq. 3);
    context=None skips that layer, the sequence-conditioned net's unconditional path.
    """

    def __init__(
        self,
        channels: int,
        *,
        num_heads: int = 1,
        context_dim: int = 0,
        groups: int = 8,
        zero_init: bool = True,
    ) -> None:
        super().__init__()
        if channels % num_heads:
            raise ValueError(f"{channels} channels cannot be split into {num_heads} heads")
        self.num_heads = num_heads
        self.norm = group_norm(channels, groups)
        self.qkv = nn.Linear(channels, 3 * channels)
        self.proj = nn.Linear(channels, channels)
        self.context_dim = context_dim
        if context_dim > 0:
            self.norm_cross = group_norm(channels, groups)
            self.q = nn.Linear(channels, channels)
            self.kv = nn.Linear(context_dim, 2 * channels)
            self.proj_cross = nn.Linear(channels, channels)
        if zero_init:
            for proj in [self.proj, self.proj_cross] if context_dim > 0 else [self.proj]:
                zero_(proj)

    def _attend(self, q: Tensor, k: Tensor, v: Tensor) -> Tensor:
        """(B, N, C), (B, L, C), (B, L, C) -> (B, N, C), softmax(q k^T / sqrt(C / heads)) v."""
        nh = self.num_heads
        out = F.scaled_dot_product_attention(_heads(q, nh), _heads(k, nh), _heads(v, nh))
        return out.transpose(1, 2).flatten(2)

    def forward(self, x: Tensor, context: Tensor | None = None) -> Tensor:
        b, c, h, w = x.shape
        tokens = self.norm(x).flatten(2).transpose(1, 2)  # (B, H W, C)
        q, k, v = self.qkv(tokens).chunk(3, dim=2)
        out = x + self.proj(self._attend(q, k, v)).transpose(1, 2).view(b, c, h, w)
        if self.context_dim == 0:
            if context is not None:
                raise ValueError("context given to a network without cross-attention")
            return out
        if context is None:
            return out
        if context.dim() != 3 or context.shape[0] != b or context.shape[2] != self.context_dim:
            raise ValueError(
                f"context must have shape ({b}, L, {self.context_dim}), got {tuple(context.shape)}"
            )
        tokens = self.norm_cross(out).flatten(2).transpose(1, 2)  # (B, H W, C)
        k, v = self.kv(context.to(tokens.dtype)).chunk(2, dim=2)  # (B, L, C) each
        cross = self.proj_cross(self._attend(self.q(tokens), k, v))  # (B, H W, C)
        return out + cross.transpose(1, 2).view(b, c, h, w)


class Downsample(nn.Module):
    """(B, C, H, W) -> (B, C, ceil(H/2), ceil(W/2)): stride-2 3x3 convolution (DDPM)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, stride=2, padding=1)

    def forward(self, x: Tensor) -> Tensor:
        return self.conv(x)


class Upsample(nn.Module):
    """(B, C, h, w) -> (B, C, H, W) for a given size: nearest-neighbour, then a 3x3 convolution.

    DDPM doubles the size; resizing to the encoder map's exact size lets odd sizes (7 -> 4 -> 7)
    go back up.
    """

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: Tensor, size: tuple[int, int]) -> Tensor:
        return self.conv(F.interpolate(x, size=size, mode="nearest"))


class Stage(nn.Module):
    """A residual block, followed by an attention block at the resolutions that have one."""

    def __init__(self, res: ResBlock, attn: AttentionBlock | None) -> None:
        super().__init__()
        self.res, self.attn = res, attn

    def forward(self, x: Tensor, emb: Tensor, context: Tensor | None) -> Tensor:
        x = self.res(x, emb)
        return x if self.attn is None else self.attn(x, context)


class TimeUNet(nn.Module):
    """x_t (B, C, H, W), t (B,) [, labels, cond, context] -> (B, out_channels, H, W).

    The DDPM U-Net (Ho et al. arXiv:2006.11239 appendix B; Nichol & Dhariwal arXiv:2102.09672;
    [001] "DDPM implementation"). Level k (of the sizes listed in `resolutions`) has
    channels * channel_mults[k] channels and num_res_blocks residual blocks, each followed by
    self-attention when the level's shorter side is in attention_resolutions (default: the
    lowest resolution only); the middle is ResBlock, attention, ResBlock; the decoder has
    num_res_blocks + 1 blocks per level, each taking one encoder map as a skip. out_channels
    defaults to in_channels (eps or score prediction); 2 in_channels suits a learned variance.
    t is whatever the caller's schedule indexes (integer steps, or continuous t with
    time_scale=1000, see genlab.nn.embeddings); labels follow TimeEmbedding's convention (-1 or
    None = the null class). zero_init starts every residual branch and the output layer at zero,
    as the DDPM code does, so the untrained network outputs exactly 0.
    """

    def __init__(
        self,
        in_channels: int,
        size: tuple[int, int],
        *,
        channels: int = 32,
        channel_mults: Sequence[int] = (1, 2, 2),
        num_res_blocks: int = 2,
        attention_resolutions: Sequence[int] | None = None,
        dropout: float = 0.0,
        num_classes: int = 0,
        out_channels: int | None = None,
        cond_channels: int = 0,
        context_dim: int = 0,
        num_heads: int = 1,
        norm_groups: int = 8,
        time_scale: float = 1.0,
        zero_init: bool = True,
    ) -> None:
        super().__init__()
        if not channel_mults or num_res_blocks < 1:
            raise ValueError("TimeUNet needs at least one level and one residual block per level")
        self.in_channels, self.cond_channels = in_channels, cond_channels
        self.num_classes, self.context_dim = num_classes, context_dim
        self.out_channels = out_channels or in_channels
        self.size = tuple(size)
        self.resolutions = level_sizes(self.size, len(channel_mults))
        sides = [min(s) for s in self.resolutions]
        if attention_resolutions is None:
            attention_resolutions = [sides[-1]]
        unknown = sorted(set(attention_resolutions) - set(sides))
        if unknown:
            raise ValueError(
                f"attention_resolutions {unknown} match no level of a {size[0]}x{size[1]} input; "
                f"the levels' sides are {sides}"
            )
        mults = list(channel_mults)[: len(self.resolutions)]
        emb_dim = 4 * channels
        self.time_embed = TimeEmbedding(
            channels, emb_dim, num_classes=num_classes, scale=time_scale
        )
        opts = dict(dropout=dropout, groups=norm_groups, zero_init=zero_init)
        attn_opts = dict(
            num_heads=num_heads, context_dim=context_dim, groups=norm_groups, zero_init=zero_init
        )

        def stage(c_in: int, c_out: int, side: int) -> Stage:
            attn = AttentionBlock(c_out, **attn_opts) if side in attention_resolutions else None
            return Stage(ResBlock(c_in, c_out, emb_dim, **opts), attn)

        self.input = nn.Conv2d(in_channels + cond_channels, channels, 3, padding=1)
        skip_channels = [channels]  # the channels of every map the decoder will receive as a skip
        c = channels
        self.down = nn.ModuleList()  # per level: ModuleList of Stage
        self.downsample = nn.ModuleList()
        for k, (mult, side) in enumerate(zip(mults, sides)):
            blocks = nn.ModuleList()
            for _ in range(num_res_blocks):
                blocks.append(stage(c, channels * mult, side))
                c = channels * mult
                skip_channels.append(c)
            self.down.append(blocks)
            if k < len(mults) - 1:
                self.downsample.append(Downsample(c))
                skip_channels.append(c)
        self.mid = nn.ModuleList(
            [
                Stage(ResBlock(c, c, emb_dim, **opts), AttentionBlock(c, **attn_opts)),
                Stage(ResBlock(c, c, emb_dim, **opts), None),
            ]
        )
        self.up = nn.ModuleList()
        self.upsample = nn.ModuleList()
        for k in reversed(range(len(mults))):
            blocks = nn.ModuleList()
            for _ in range(num_res_blocks + 1):
                blocks.append(stage(c + skip_channels.pop(), channels * mults[k], sides[k]))
                c = channels * mults[k]
            self.up.append(blocks)
            if k > 0:
                self.upsample.append(Upsample(c))
        assert not skip_channels
        self.out = nn.Sequential(
            group_norm(c, norm_groups), nn.SiLU(), nn.Conv2d(c, self.out_channels, 3, padding=1)
        )
        if zero_init:
            zero_(self.out[-1])

    def forward(
        self,
        x: Tensor,
        t: Tensor | float,
        labels: Tensor | None = None,
        cond: Tensor | None = None,
        context: Tensor | None = None,
    ) -> Tensor:
        b, c, h, w = x.shape
        if (c, h, w) != (self.in_channels, *self.size):
            raise ValueError(
                f"TimeUNet built for ({self.in_channels}, {self.size[0]}, {self.size[1]}) inputs, "
                f"got {tuple(x.shape[1:])}"
            )
        if self.cond_channels:
            if cond is None or cond.shape != (b, self.cond_channels, h, w):
                got = None if cond is None else tuple(cond.shape)
                raise ValueError(
                    f"cond must have shape ({b}, {self.cond_channels}, {h}, {w}) (upsample a "
                    f"low-resolution image to x's size first), got {got}"
                )
            x = torch.cat([x, cond.to(x.dtype)], dim=1)  # (B, C + cond_channels, H, W)
        elif cond is not None:
            raise ValueError("cond given to a network built with cond_channels=0")
        emb = self.time_embed(broadcast_time(t, b, x.device), labels)  # (B, 4 channels)

        hs = [self.input(x)]  # encoder maps, each later concatenated in the decoder
        for k, blocks in enumerate(self.down):
            for block in blocks:
                hs.append(block(hs[-1], emb, context))
            if k < len(self.downsample):
                hs.append(self.downsample[k](hs[-1]))
        hid = hs[-1]
        for block in self.mid:
            hid = block(hid, emb, context)  # (B, C_last, H_last, W_last)
        for k, blocks in enumerate(self.up):
            for block in blocks:
                hid = block(torch.cat([hid, hs.pop()], dim=1), emb, context)
            if k < len(self.upsample):
                hid = self.upsample[k](hid, hs[-1].shape[-2:])
        return self.out(hid)  # (B, out_channels, H, W)
