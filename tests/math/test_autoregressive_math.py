"""Autoregressive models: the masks make output i a function of x_<i only, and log p(x) is the
sum of the conditionals, a normalised distribution (genlab.nn.masked, genlab.models.autoregressive;
van den Oord et al. arXiv:1601.06759, Germain et al. arXiv:1502.03509; [003])."""

from __future__ import annotations

import itertools
import math

import pytest
import torch
from scipy import stats
from torch.autograd.functional import jacobian

import genlab.models.autoregressive  # noqa: F401  (registers the models)
from genlab.data.spec import DataSpec
from genlab.math.gaussian import log_mixture_normal
from genlab.models import build
from genlab.models.autoregressive import CategoricalPixelCNN
from genlab.nn.masked import MADE, MaskedConv2d, MaskedLinear, made_degrees, made_masks

# float64 by default in every test of this file (conftest.float64_default)
pytestmark = pytest.mark.usefixtures("float64_default")


def conv_dependence(f, c_in: int, c_out: int, h: int, w: int) -> torch.Tensor:
    """|d out / d in| summed over a few random inputs: (C_out, H*W, C_in, H*W) dependence map."""
    g = torch.Generator().manual_seed(0)
    total = torch.zeros(c_out, h * w, c_in, h * w)
    for _ in range(3):
        x = torch.randn(1, c_in, h, w, generator=g)
        jac = jacobian(f, x)  # (1, C_out, H, W, 1, C_in, H, W)
        total += jac.abs().reshape(c_out, h * w, c_in, h * w)
    return total


def raster_rule(n_pix: int, c_out: int, c_in: int, strict_colour: bool) -> torch.Tensor:
    """allowed[c, i, c', j]: pixel j before i, or j == i and colour c' < c (<= c if not strict)."""
    i = torch.arange(n_pix)[None, :, None, None]
    j = torch.arange(n_pix)[None, None, None, :]
    c = torch.arange(c_out)[:, None, None, None]
    cp = torch.arange(c_in)[None, None, :, None]
    same = (cp < c) if strict_colour else (cp <= c)
    return (j < i) | ((j == i) & same)


@pytest.mark.parametrize("mask_type", ["A", "B"])
def test_masked_conv_single_channel(mask_type: str) -> None:
    """Mask A: output i has zero gradient w.r.t. inputs at positions >= i (raster order); mask B:
    w.r.t. inputs > i. The allowed neighbours inside the kernel do get a gradient."""
    torch.manual_seed(0)
    conv = MaskedConv2d(1, 3, 5, mask_type)
    dep = conv_dependence(conv, 1, 3, 5, 6).sum(0)[:, 0]  # (H*W out, H*W in)
    i, j = torch.meshgrid(torch.arange(30), torch.arange(30), indexing="ij")
    forbidden = j >= i if mask_type == "A" else j > i
    assert (dep[forbidden] == 0).all()
    # inside the 5x5 kernel: the left neighbour and the pixel above always count, and the centre
    # exactly for mask B (pixel (2, 3) = index 15 of the 5x6 image)
    assert dep[15, 14] > 0 and dep[15, 9] > 0
    assert (dep[15, 15] > 0) == (mask_type == "B")


@pytest.mark.parametrize("mask_type", ["A", "B"])
def test_masked_conv_colour_order(mask_type: str) -> None:
    """Three colour groups R < G < B: at the centre, A sees groups < g and B groups <= g."""
    torch.manual_seed(0)
    conv = MaskedConv2d(3, 6, 3, mask_type, colors=3)  # out groups: channels (0,1), (2,3), (4,5)
    dep = conv_dependence(conv, 3, 6, 4, 4)  # (6, 16, 3, 16)
    g_out = torch.arange(6) // 2
    allowed = raster_rule(16, 3, 3, strict_colour=mask_type == "A")[g_out]
    assert (dep[~allowed] == 0).all()
    centre = dep[:, 5, :, 5]  # pixel (1, 1) on itself: (6 out channels, 3 colours)
    expected = raster_rule(16, 3, 3, strict_colour=mask_type == "A")[g_out, 5, :, 5]
    assert torch.equal(centre > 0, expected)


@pytest.mark.parametrize("colors", [1, 3])
def test_pixelcnn_network_is_autoregressive(colors: int) -> None:
    """The whole stack (A, then B blocks and head): logits of (pixel i, colour c) do not depend on
    pixels after i, nor on colours >= c of pixel i; they do depend on the pixel just before."""
    torch.manual_seed(0)
    net = CategoricalPixelCNN(4, (colors, 4, 5), width=6, num_blocks=2, kernel_size=3)

    def f(features: torch.Tensor) -> torch.Tensor:
        return net.body(features).sum(2)  # sum over the K logits: (1, C, H, W)

    dep = conv_dependence(f, colors, colors, 4, 5)  # (C, 20, C, 20)
    allowed = raster_rule(20, colors, colors, strict_colour=True)
    assert (dep[~allowed] == 0).all()
    assert dep[:, 7, :, 6].sum() > 0  # pixel (1, 2) sees (1, 1)
    if colors == 3:
        assert dep[2, 7, 1, 7] > 0  # blue sees green of the same pixel


def test_made_output_d_ignores_inputs_of_degree_ge_d() -> None:
    """MADE: output d (every parameter of p(x_d | x_<d)) has zero gradient w.r.t. inputs of
    degree >= d, and non-zero w.r.t. each input of degree < d (hidden widths >= D - 1)."""
    torch.manual_seed(0)
    dim, params = 5, 3
    net = MADE(dim, (16, 12), params)
    x = torch.randn(64, dim, generator=torch.Generator().manual_seed(1))
    # rows are independent, so d(sum_b out_b)/dx_b is example b's Jacobian: (P, D, B, D)
    dep = jacobian(lambda v: net(v).sum(0), x).abs().sum(2)  # (P, D out, D in)
    d_out, d_in = torch.meshgrid(torch.arange(dim), torch.arange(dim), indexing="ij")
    assert (dep[:, d_in >= d_out] == 0).all()
    assert (dep.sum(0)[d_in < d_out] > 0).all()


def test_made_masks_follow_the_degree_rule() -> None:
    """The product of the masks connects input e to output d exactly when e < d (paths exist)."""
    dim = 4
    masks = made_masks(made_degrees(dim, (3, 5)), dim, 2)
    paths = masks[0].T
    for m in masks[1:]:
        paths = paths @ m.T  # (D, P*D): number of paths input -> output
    out_var = torch.arange(2 * dim) % dim
    connected = torch.arange(dim)[:, None] < out_var[None, :]
    assert torch.equal(paths > 0, connected)
    layer = MaskedLinear(masks[0])
    expected = (layer.weight * masks[0]).T + layer.bias  # row e: the masked column e, plus bias
    assert torch.allclose(layer(torch.eye(dim)), expected, rtol=0, atol=1e-15)


def all_grids(levels: int, shape: tuple[int, ...]) -> torch.Tensor:
    """Every grid in {0..levels-1}^shape, (levels^n, *shape)."""
    n = math.prod(shape)
    rows = list(itertools.product(range(levels), repeat=n))
    return torch.tensor(rows).view(-1, *shape)


@pytest.mark.parametrize(
    "levels,shape,embedding_dim",
    [(2, (2, 3), 0), (3, (2, 3), 4), (2, (3, 1, 2), 0)],
    ids=["binary-2x3", "codes3-2x3-embedded", "rgb-binary-1x2"],
)
def test_pixelcnn_log_prob_is_normalised(levels: int, shape: tuple, embedding_dim: int) -> None:
    """sum over all k of exp(log p(k)) = 1 (brute force over the enumerable space), and log p(k)
    equals the sum of the conditionals read one by one from the sampler's row_logits."""
    torch.manual_seed(0)
    net = CategoricalPixelCNN(
        levels, shape, width=4, num_blocks=1, kernel_size=3, embedding_dim=embedding_dim
    )
    k = all_grids(levels, shape)
    logp = net.log_prob(k)
    # float64 round-off of a logsumexp over <= 729 terms: far below 1e-10
    assert abs(torch.logsumexp(logp, 0).item()) < 1e-10
    grid = net._grid(k)
    c, h, w = net.shape
    by_one = torch.zeros(len(k))
    for i in range(h):
        logits = net.row_logits(grid, i).log_softmax(2)  # (N, C, K, W)
        for j, ch in itertools.product(range(w), range(c)):
            by_one += logits[torch.arange(len(k)), ch, grid[:, ch, i, j], j]
    assert torch.allclose(by_one, logp, atol=1e-12, rtol=0)


def test_pixelcnn_samples_follow_exp_log_prob() -> None:
    """Samples drawn pixel by pixel have the frequencies exp(log p(k)): chi-square test at level
    1e-3 over the 2^6 binary 2x3 grids (expected counts >= 5 checked)."""
    torch.manual_seed(0)
    net = CategoricalPixelCNN(2, (2, 3), width=4, num_blocks=1, kernel_size=3)
    k = all_grids(2, (2, 3))
    with torch.no_grad():
        p = net.log_prob(k).exp()
    n = 6000
    x = net.sample(n, generator=torch.Generator().manual_seed(3))
    index = (x.view(n, -1) * (2 ** torch.arange(5, -1, -1))).sum(1)  # row of all_grids
    counts = torch.bincount(index, minlength=64).double()
    expected = n * p
    assert expected.min() >= 5
    chi2 = float(((counts - expected) ** 2 / expected).sum())
    assert stats.chi2.sf(chi2, df=63) > 1e-3


def test_made_density_integrates_to_one() -> None:
    """A 2-D MADE density integrates to 1: trapezoid rule on [-L, L]^2 (error bounded below)."""
    torch.manual_seed(0)
    model = build("made", DataSpec("tiny2d", (2,)), hidden=(8,), components=3).double()
    with torch.no_grad():  # moderate conditionals (sigma ~ 1, still depending on x1), so the
        model.net.net[-1].weight.mul_(0.3)  # error bound below is tight on a small box
    h, half = 0.04, 15.0
    t = torch.arange(-half, half + h / 2, h)
    xx, yy = torch.meshgrid(t, t, indexing="ij")
    x = torch.stack([xx.flatten(), yy.flatten()], 1)
    with torch.no_grad():
        logits, mu, log_sigma = model.conditionals(x)
        density = model.log_prob(x).exp().view(len(t), len(t))
    total = torch.trapezoid(torch.trapezoid(density, dx=h, dim=1), dx=h).item()
    # Error budget. p(x1) is a fixed Gaussian mixture and p(x2 | x1) one for each x1, so the
    # inner and outer sums are trapezoid rules on Gaussian mixtures: aliasing error at most
    # 2 exp(-2 pi^2 sigma^2 / h^2) each, plus the mass outside [-L, L], at most
    # 2 Phi(-(L - max|mu|) / max sigma) per dimension; 1e-12 covers float64 summation.
    sigma_min, sigma_max = log_sigma.exp().min().item(), log_sigma.exp().max().item()
    alias = 4 * math.exp(-2 * math.pi**2 * sigma_min**2 / h**2)
    tail = 4 * stats.norm.sf((half - mu.abs().max().item()) / sigma_max)
    assert abs(total - 1) < alias + tail + 1e-12, (total, alias, tail)


def test_log_mixture_normal_matches_torch_distributions() -> None:
    """log sum_j pi_j N(x; mu_j, sigma_j^2) equals torch's MixtureSameFamily, elementwise."""
    g = torch.Generator().manual_seed(0)
    logits, mu, log_sigma = (torch.randn(4, 3, 2, generator=g) for _ in range(3))
    x = torch.randn(4, 2, generator=g)
    d = torch.distributions
    mix = d.MixtureSameFamily(
        d.Categorical(logits=logits.transpose(1, 2)),
        d.Normal(mu.transpose(1, 2), log_sigma.exp().transpose(1, 2)),
    )
    assert torch.allclose(log_mixture_normal(x, logits, mu, log_sigma), mix.log_prob(x))


def test_made_samples_follow_the_conditionals() -> None:
    """Probability integral transform: for x ~ MADE, u_d = F(x_d | x_<d) (the mixture CDF of the
    conditionals at the sample) are independent U(0, 1); Kolmogorov-Smirnov and chi-square tests
    at level 1e-3."""
    torch.manual_seed(0)
    model = build("made", DataSpec("tiny3d", (3,)), hidden=(16, 16), components=3).double()
    with torch.no_grad():  # spread the conditionals (sigma from ~e^-2 to ~e^2, distinct means)
        model.net.net[-1].weight.mul_(3)
        model.net.net[-1].bias.uniform_(-2, 2, generator=torch.Generator().manual_seed(0))
    x = model.sample(4000, generator=torch.Generator().manual_seed(7))
    with torch.no_grad():
        logits, mu, log_sigma = model.conditionals(x)  # (N, J, D)
    pi = logits.softmax(1)
    u = (pi * torch.special.ndtr((x[:, None] - mu) / log_sigma.exp())).sum(1)  # (N, D)
    for d in range(3):
        assert stats.kstest(u[:, d].numpy(), "uniform").pvalue > 1e-3
    # jointly uniform on the cube: chi-square over 4^3 cells (expected 62.5 each), level 1e-3
    cell = (u * 4).long().clamp(max=3)
    counts = torch.bincount(cell[:, 0] * 16 + cell[:, 1] * 4 + cell[:, 2], minlength=64).double()
    chi2 = float(((counts - 62.5) ** 2 / 62.5).sum())
    assert stats.chi2.sf(chi2, df=63) > 1e-3
