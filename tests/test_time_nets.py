"""Time-conditioned networks for diffusion and score models (genlab.nn.embeddings, time_unet,
time_mlp): the sinusoidal embedding's values, shapes on 28/8/7/4-pixel inputs, the conditioning
paths (classes with a null class, concatenated images, cross-attended context), gradients to
every parameter, attention against a direct computation, and the default U-Net's size."""

from __future__ import annotations

import math

import pytest
import torch

from genlab.nn.embeddings import TimeEmbedding, sinusoidal_embedding
from genlab.nn.time_mlp import TimeMLP
from genlab.nn.time_unet import AttentionBlock, TimeUNet, level_sizes

SMALL = dict(channels=8, channel_mults=(1, 2, 2), num_res_blocks=1, norm_groups=4)


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _unet(size: tuple[int, int], seed: int = 0, **kw) -> TimeUNet:
    torch.manual_seed(seed)
    return TimeUNet(1, size, **{**SMALL, "zero_init": False, **kw}).double().eval()


def _x(n: int, size: tuple[int, int], seed: int = 1, c: int = 1) -> torch.Tensor:
    return torch.randn(n, c, *size, generator=_gen(seed), dtype=torch.float64)


# --- sinusoidal embedding ---------------------------------------------------------------


def test_sinusoid_at_zero_is_sin0_cos1() -> None:
    emb = sinusoidal_embedding(torch.zeros(3, dtype=torch.float64), 16)
    assert emb.shape == (3, 16)
    assert torch.equal(emb[:, :8], torch.zeros(3, 8, dtype=torch.float64))
    assert torch.equal(emb[:, 8:], torch.ones(3, 8, dtype=torch.float64))


def test_sinusoid_frequencies_are_geometric() -> None:
    dim, max_period = 32, 10000.0
    h = dim // 2
    emb = sinusoidal_embedding(torch.ones(1, dtype=torch.float64), dim, max_period)[0]
    # at t = 1 every angle w_i <= 1 < pi, so atan2 recovers the frequencies exactly
    w = torch.atan2(emb[:h], emb[h:])
    expected = max_period ** (-torch.arange(h, dtype=torch.float64) / h)
    torch.testing.assert_close(w, expected, rtol=1e-12, atol=0)
    ratios = w[1:] / w[:-1]
    torch.testing.assert_close(ratios, torch.full_like(ratios, max_period ** (-1 / h)))
    # the lowest frequency equals the Transformer's 1 / 10000^(2 (h-1) / dim)
    assert math.isclose(float(w[-1]), max_period ** (-2 * (h - 1) / dim), rel_tol=1e-12)


def test_sinusoid_distinct_times_scale_and_integer_input() -> None:
    t = torch.arange(1000)
    emb = sinusoidal_embedding(t.double(), 64)
    dist = torch.cdist(emb, emb) + torch.eye(1000, dtype=torch.float64) * 1e9
    assert float(dist.min()) > 0.1  # 1000 DDPM steps have clearly distinct embeddings
    # integer steps are the same floats in the default dtype
    assert torch.equal(sinusoidal_embedding(t, 64), sinusoidal_embedding(t.float(), 64))
    # scale stretches continuous time: t in [0, 1] with scale 1000 is the step 1000 t
    u = torch.linspace(0, 1, 11, dtype=torch.float64)
    torch.testing.assert_close(
        sinusoidal_embedding(u, 10, scale=1000.0), sinusoidal_embedding(1000 * u, 10)
    )
    odd = sinusoidal_embedding(u, 9)
    assert odd.shape == (11, 9) and torch.equal(odd[:, -1], torch.zeros(11, dtype=torch.float64))
    torch.testing.assert_close(odd[:, :8], sinusoidal_embedding(u, 8))


def test_time_embedding_null_class_convention() -> None:
    torch.manual_seed(0)
    emb = TimeEmbedding(8, 16, num_classes=3).double().requires_grad_(False)
    t = torch.tensor([5, 5, 5, 5])
    none = emb(t)
    null = emb(t, torch.full((4,), -1))
    torch.testing.assert_close(none, null)  # labels=None is all -1
    lab = emb(t, torch.tensor([0, 1, 2, -1]))
    torch.testing.assert_close(lab[3], none[3])
    for k in range(3):
        assert float((lab[k] - none[k]).abs().max()) > 1e-3  # class k differs from null
    assert float((lab[0] - lab[1]).abs().max()) > 1e-3
    with pytest.raises(ValueError, match="labels must lie"):
        emb(t, torch.tensor([0, 1, 3, 0]))
    with pytest.raises(ValueError, match="unconditional network"):
        TimeEmbedding(8)(t, torch.zeros(4, dtype=torch.long))


# --- U-Net ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "size, levels",
    [
        ((28, 28), [(28, 28), (14, 14), (7, 7)]),
        ((8, 8), [(8, 8), (4, 4), (2, 2)]),
        ((7, 7), [(7, 7), (4, 4), (2, 2)]),
        ((4, 4), [(4, 4), (2, 2)]),
        ((6, 10), [(6, 10), (3, 5)]),
    ],
)
def test_unet_shapes_on_even_and_odd_sizes(size: tuple[int, int], levels: list) -> None:
    assert level_sizes(size, 3) == levels
    net = _unet(size)
    assert net.resolutions == levels
    out = net(_x(3, size), torch.tensor([0, 10, 999]))
    assert out.shape == (3, 1, *size) and bool(torch.isfinite(out).all())
    # one t for the whole batch, as samplers call it
    torch.testing.assert_close(net(_x(3, size), 7), net(_x(3, size), torch.full((3,), 7)))


def test_unet_all_conditioning_paths_shapes() -> None:
    size = (7, 7)
    net = _unet(size, num_classes=10, cond_channels=2, context_dim=5, out_channels=2)
    cond, ctx = _x(4, size, seed=2, c=2), _x(4, (6, 5), seed=3)[:, 0]  # ctx: (4, 6, 5)
    labels = torch.tensor([0, 9, -1, 3])
    for kw in [dict(), dict(labels=labels), dict(context=ctx), dict(labels=labels, context=ctx)]:
        assert net(_x(4, size), torch.arange(4), cond=cond, **kw).shape == (4, 2, 7, 7)


def test_unet_default_28x28_size() -> None:
    net = TimeUNet(1, (28, 28))  # channels 32, mults (1, 2, 2), 2 res blocks, attention at 7x7
    n = sum(p.numel() for p in net.parameters())
    assert 1_500_000 <= n <= 2_000_000, n
    attn_sides = {min(s) for s, blocks in zip(net.resolutions, net.down) if blocks[0].attn}
    assert attn_sides == {7}


def test_unet_zero_init_outputs_zero() -> None:
    torch.manual_seed(0)
    net = TimeUNet(1, (8, 8), **SMALL, num_classes=3)
    out = net(torch.randn(2, 1, 8, 8), torch.tensor([3, 400]), torch.tensor([1, -1]))
    assert torch.equal(out, torch.zeros_like(out))


def test_unet_gradients_reach_every_parameter() -> None:
    size = (8, 8)
    net = _unet(
        size, num_classes=3, cond_channels=1, context_dim=4, attention_resolutions=(8, 4, 2)
    )
    ctx = torch.randn(4, 3, 4, generator=_gen(5), dtype=torch.float64)
    out = net(_x(4, size), torch.tensor([1, 50, 300, 900]), torch.tensor([0, 1, 2, -1]),
              cond=_x(4, size, seed=4), context=ctx)  # fmt: skip
    out.pow(2).sum().backward()
    dead = [n for n, p in net.named_parameters() if p.grad is None or not bool(p.grad.any())]
    assert not dead, dead


@torch.no_grad()
def test_unet_conditioning_changes_output() -> None:
    size = (7, 7)
    net = _unet(size, num_classes=3, cond_channels=1, context_dim=4)
    x, cond = _x(2, size), _x(2, size, seed=2)
    ctx = torch.randn(2, 3, 4, generator=_gen(3), dtype=torch.float64)
    t = torch.tensor([10, 10])
    base = net(x, t, cond=cond)

    def gap(other: torch.Tensor) -> float:
        return float((other - base).abs().max() / base.abs().max())

    assert gap(net(x, torch.tensor([500, 500]), cond=cond)) > 1e-2  # time
    assert gap(net(x, t, torch.tensor([1, 1]), cond=cond)) > 1e-2  # class vs the null class
    assert gap(net(x, t, cond=cond + 1)) > 1e-2  # concatenated image
    assert gap(net(x, t, cond=cond, context=ctx)) > 1e-2  # cross-attended context
    torch.testing.assert_close(net(x, t, torch.tensor([-1, -1]), cond=cond), base)


def test_unet_samples_do_not_interact() -> None:
    # group norm and attention act per sample: a batch's outputs are those of its samples alone
    size = (7, 7)
    net = _unet(size, num_classes=3, context_dim=4, attention_resolutions=(7, 4, 2))
    x, t, y = _x(3, size), torch.tensor([1, 200, 900]), torch.tensor([2, -1, 0])
    ctx = torch.randn(3, 5, 4, generator=_gen(6), dtype=torch.float64)
    batch = net(x, t, y, context=ctx)
    for i in range(3):
        one = net(x[i : i + 1], t[i : i + 1], y[i : i + 1], context=ctx[i : i + 1])
        torch.testing.assert_close(one, batch[i : i + 1])


def test_attention_block_matches_direct_formula() -> None:
    torch.manual_seed(0)
    block = AttentionBlock(8, num_heads=2, context_dim=3, groups=4, zero_init=False).double()
    x = torch.randn(2, 8, 3, 4, generator=_gen(1), dtype=torch.float64)
    ctx = torch.randn(2, 5, 3, generator=_gen(2), dtype=torch.float64)

    def attend(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        heads = [slice(0, 4), slice(4, 8)]  # two heads of 4 channels
        outs = [
            torch.softmax(q[..., s] @ k[..., s].transpose(1, 2) / 2.0, dim=-1) @ v[..., s]
            for s in heads
        ]
        return torch.cat(outs, dim=-1)

    def tokens(y: torch.Tensor, norm: torch.nn.GroupNorm) -> torch.Tensor:
        return norm(y).flatten(2).transpose(1, 2)  # (B, 12, 8)

    q, k, v = block.qkv(tokens(x, block.norm)).split(8, dim=2)
    h = x + block.proj(attend(q, k, v)).transpose(1, 2).reshape(2, 8, 3, 4)
    kc, vc = block.kv(ctx).split(8, dim=2)
    cross = block.proj_cross(attend(block.q(tokens(h, block.norm_cross)), kc, vc))
    expected = h + cross.transpose(1, 2).reshape(2, 8, 3, 4)
    torch.testing.assert_close(block(x, ctx), expected)
    torch.testing.assert_close(block(x), h)  # context=None: self-attention only


def test_unet_rejects_bad_inputs() -> None:
    with pytest.raises(ValueError, match="match no level"):
        TimeUNet(1, (8, 8), **SMALL, attention_resolutions=(7,))
    net = _unet((8, 8), cond_channels=1)
    x = _x(2, (8, 8))
    with pytest.raises(ValueError, match="cond must have shape"):
        net(x, 3)
    with pytest.raises(ValueError, match="cond must have shape"):
        net(x, 3, cond=_x(2, (4, 4)))  # a low-resolution image must be upsampled first
    with pytest.raises(ValueError, match="built for"):
        net(_x(2, (7, 7)), 3, cond=_x(2, (7, 7)))
    with pytest.raises(ValueError, match="labels given"):
        net(x, 3, torch.tensor([0, 1]), cond=x)
    with pytest.raises(ValueError, match="without cross-attention"):
        net(x, 3, cond=x, context=torch.zeros(2, 1, 4, dtype=torch.float64))


# --- MLP ------------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["add", "concat"])
def test_time_mlp(mode: str) -> None:
    torch.manual_seed(0)
    net = TimeMLP(2, (32, 32), 3, emb_dim=16, num_classes=4, time_mode=mode).double()
    x = torch.randn(5, 2, generator=_gen(1), dtype=torch.float64)
    t = torch.rand(5, generator=_gen(2), dtype=torch.float64)
    y = torch.tensor([0, 1, 2, 3, -1])
    out = net(x, t, y)
    assert out.shape == (5, 3)
    out.pow(2).sum().backward()
    dead = [n for n, p in net.named_parameters() if p.grad is None or not bool(p.grad.any())]
    assert not dead, dead
    with torch.no_grad():
        base = net(x, 0.1)
        assert float((net(x, 0.9) - base).abs().min()) > 0  # time changes every output
        assert float((net(x, 0.1, torch.zeros(5, dtype=torch.long)) - base).abs().min()) > 0
        torch.testing.assert_close(net(x, 0.1, torch.full((5,), -1)), base)
    assert TimeMLP(2, time_mode=mode)(x.float(), torch.zeros(5)).shape == (5, 2)
    with pytest.raises(ValueError, match="unknown time_mode"):
        TimeMLP(2, time_mode="film")
