"""Normalizing flows ([003]; Dinh et al. arXiv:1605.08803, Kingma & Dhariwal arXiv:1807.03039).

Claims checked, in float64 on small inputs:
- every layer's log-determinant equals log |det J| of its Jacobian computed by autograd, per
  example, and inverse(forward(x)) = x;
- the whole model's log p(x) equals log N(f(x); 0, I) + log |det df/dx| with the Jacobian of the
  data-to-z map by autograd (2-D and 1x8x8, both architectures), i.e. the change of variables;
- the density integrates, over a box, to the share of the model's own samples that fall in it
  (sample() draws from the density log_prob() evaluates); sampled points have a finite log p.

Tolerance of the float64 identities: 1e-9. Rounding in float64 is ~1e-16 relative per
operation; a few hundred operations and a 64x64 LU leave errors below 1e-12, while any wrong or
missing term in a log-determinant is of order 0.1 here (random weights of scale 0.3).
"""

from __future__ import annotations

import math

import pytest
import torch
from torch import Tensor

import genlab.models.flow  # noqa: F401  (registers realnvp and glow)
from genlab import models
from genlab.data.spec import DataSpec
from genlab.errors import GenlabError
from genlab.nn.flows import (
    ActNorm,
    AffineCoupling,
    Bijection,
    CouplingConvNet,
    InvConv1x1,
    Logit,
    Squeeze,
    channel_mask,
    checkerboard_mask,
    coupling_mlp,
    half_mask,
)

DT = torch.float64
TOL = dict(rtol=1e-9, atol=1e-9)


def randomize(module: torch.nn.Module, seed: int = 1, scale: float = 0.3) -> None:
    """Random weights everywhere (coupling nets start at zero: identity, nothing to test)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(scale * torch.randn(p.shape, generator=g, dtype=p.dtype))


def brute_logdet(f, x: Tensor) -> Tensor:
    """log |det J_f(x_b)| per example from the autograd Jacobian of f on that example alone."""
    out = []
    for xb in x:
        jac = torch.autograd.functional.jacobian(lambda v: f(v.unsqueeze(0)).flatten(), xb)
        out.append(torch.linalg.slogdet(jac.reshape(jac.shape[0], -1))[1])
    return torch.stack(out)


def check_bijection(layer: Bijection, x: Tensor) -> None:
    y, logdet = layer(x)
    assert logdet.shape == (x.shape[0],)
    torch.testing.assert_close(logdet, brute_logdet(lambda v: layer(v)[0], x), **TOL)
    torch.testing.assert_close(layer.inverse(y), x, **TOL)


def data(*shape: int, seed: int = 0) -> Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=DT)


# ----------------------------------------------------------------------------- layers


@pytest.mark.parametrize("scale", ["tanh", "sigmoid"])
@pytest.mark.parametrize("parity", [0, 1])
def test_vector_coupling_logdet_and_inverse(scale: str, parity: int) -> None:
    torch.manual_seed(0)
    layer = AffineCoupling(half_mask(3, parity), coupling_mlp(3, (8,)), scale).to(DT)
    randomize(layer)
    x = data(4, 3)
    check_bijection(layer, x)
    # the kept half b * x passes unchanged, the other half is transformed
    b = half_mask(3, parity).to(DT)
    y = layer(x)[0]
    assert torch.equal(y * b, x * b)
    assert (y - x)[:, b[0] == 0].abs().min() > 1e-3


@pytest.mark.parametrize("kind", ["checkerboard", "channel"])
@pytest.mark.parametrize("scale", ["tanh", "sigmoid"])
def test_image_coupling_logdet_and_inverse(kind: str, scale: str) -> None:
    torch.manual_seed(0)
    shape = (2, 4, 4)
    mask = (checkerboard_mask if kind == "checkerboard" else channel_mask)(shape, 1)
    layer = AffineCoupling(mask, CouplingConvNet(2, (4, 4)), scale).to(DT)
    randomize(layer)
    check_bijection(layer, data(3, *shape))


def test_masks_partition_the_input() -> None:
    # b and 1 - b of the alternating masks: the two parities are complements, each half-sized
    for a, b in [
        (checkerboard_mask((2, 4, 4), 0), checkerboard_mask((2, 4, 4), 1)),
        (channel_mask((4, 2, 2), 0), channel_mask((4, 2, 2), 1)),
        (half_mask(4, 0), half_mask(4, 1)),
    ]:
        assert torch.equal(a + b, torch.ones_like(a))
        assert a.sum() == b.sum() == a.numel() / 2
    assert checkerboard_mask((1, 2, 2), 0)[0, 0].tolist() == [[1, 0], [0, 1]]
    with pytest.raises(GenlabError, match="2 pixels"):
        checkerboard_mask((4, 1, 1), 0)
    with pytest.raises(GenlabError, match="2 channels"):
        channel_mask((1, 4, 4), 0)
    with pytest.raises(GenlabError, match="2 dimensions"):
        half_mask(1, 0)


def test_actnorm_data_init_and_logdet() -> None:
    # Glow section 3.1: after the first training batch, each channel has mean 0 and variance 1.
    # With log_scale = -log(std + 1e-6) the variance is std^2 / (std + 1e-6)^2, 1 to within
    # 2e-6 / std; the channel stds here are >= 0.5, so 1e-5 bounds it.
    layer = ActNorm(3).to(DT)
    x = data(64, 3, 4, 4) * torch.tensor([0.5, 2.0, 7.0], dtype=DT).view(1, 3, 1, 1) + 3.0
    y, _ = layer(x)
    assert bool(layer.initialized)
    torch.testing.assert_close(y.mean((0, 2, 3)), torch.zeros(3, dtype=DT), rtol=0, atol=1e-12)
    var = y.pow(2).mean((0, 2, 3))
    torch.testing.assert_close(var, torch.ones(3, dtype=DT), rtol=0, atol=1e-5)
    # later batches (and eval mode) do not re-initialise
    params = [p.clone() for p in layer.parameters()]
    layer(data(8, 3, 4, 4, seed=5))
    assert all(torch.equal(a, b) for a, b in zip(params, layer.parameters()))
    layer.eval()
    check_bijection(layer, data(3, 3, 2, 2, seed=2))
    vec = ActNorm(5).to(DT)
    vec(data(16, 5) * 3)  # initialise on vectors
    vec.eval()
    check_bijection(vec, data(4, 5, seed=3))


def test_actnorm_waits_for_training_mode() -> None:
    layer = ActNorm(2).to(DT).eval()
    x = data(4, 2)
    y, logdet = layer(x)
    assert not bool(layer.initialized)
    assert torch.equal(y, x) and torch.equal(logdet, torch.zeros(4, dtype=DT))


@pytest.mark.parametrize("lu", [True, False])
def test_invconv_logdet_and_inverse(lu: bool) -> None:
    torch.manual_seed(0)
    layer = InvConv1x1(4, lu=lu).to(DT)
    # at init W is a rotation: W W^T = I and log|det W| = 0 (Glow's initialisation)
    w, logdet = layer.weight_logdet()
    torch.testing.assert_close(w @ w.T, torch.eye(4, dtype=DT), rtol=0, atol=1e-6)
    assert abs(float(logdet.detach())) < 1e-5  # float32 QR and LU at construction, then cast
    randomize(layer)
    if lu:
        layer.log_s.data += 0.5  # keep the random W well away from singular
    else:
        layer.weight.data += torch.eye(4, dtype=DT)
    check_bijection(layer, data(3, 4, 3, 3))  # images: H W log|det W|
    check_bijection(layer, data(3, 4))  # vectors: an invertible linear map


def test_lu_weight_is_p_l_u() -> None:
    # W = P L (U + diag(sign(s) exp(log|s|))), L unit lower-triangular, so det W = +-prod s
    torch.manual_seed(0)
    layer = InvConv1x1(5, lu=True).to(DT)
    randomize(layer)
    w, logdet = layer.weight_logdet()
    torch.testing.assert_close(logdet, torch.linalg.slogdet(w)[1], **TOL)


def test_squeeze_is_a_permutation() -> None:
    layer = Squeeze()
    x = data(2, 2, 4, 6)
    y, logdet = layer(x)
    assert y.shape == (2, 8, 2, 3) and torch.equal(logdet, torch.zeros(2, dtype=DT))
    assert torch.equal(layer.inverse(y), x)
    jac = torch.autograd.functional.jacobian(lambda v: layer(v.unsqueeze(0))[0].flatten(), x[0])
    jac = jac.reshape(48, 48)
    assert torch.equal(jac.sum(0), torch.ones(48, dtype=DT))  # one 1 per row and column
    assert torch.equal(jac.sum(1), torch.ones(48, dtype=DT))
    assert set(jac.unique().tolist()) == {0.0, 1.0}
    # each 2x2 block becomes the channels of one pixel
    img = torch.arange(4.0).view(1, 1, 2, 2)
    assert layer(img)[0].flatten().tolist() == [0.0, 1.0, 2.0, 3.0]
    with pytest.raises(GenlabError, match="cannot squeeze a 1x7x7"):
        layer(torch.zeros(1, 1, 7, 7))


def test_logit_logdet_and_inverse() -> None:
    layer = Logit(0.05)
    x = torch.rand(4, 1, 3, 3, generator=torch.Generator().manual_seed(0), dtype=DT) * 2 - 1
    check_bijection(layer, x)
    ends = layer(torch.tensor([[-1.0, 1.0]], dtype=DT))[0]
    torch.testing.assert_close(ends, torch.tensor([[-1.0, 1.0]], dtype=DT) * math.log(19), **TOL)


# ----------------------------------------------------------------------------- whole models


def log_standard_normal_by_hand(z: Tensor) -> Tensor:
    return (-0.5 * z.pow(2) - 0.5 * math.log(2 * math.pi)).sum(1)


def flow_model(name: str, spec: DataSpec, **cfg) -> models.GenerativeModel:
    torch.manual_seed(0)
    small = dict(hidden=(8,), channels=(4,), steps=2)
    model = models.build(name, spec, **{**small, **cfg}).to(DT)
    randomize(model, scale=0.1)  # 0.3 compounds over deep stacks to exp(+-20)
    model.eval()
    return model


MODELS_2D = [("realnvp", {}), ("glow", {}), ("glow", {"lu": False})]


@pytest.mark.parametrize("name,cfg", MODELS_2D)
def test_model_log_prob_is_the_change_of_variables_2d(name: str, cfg: dict) -> None:
    model = flow_model(name, DataSpec("toy", (2,)), **cfg)
    x = data(5, 2) * 1.5
    z = model.encode(x)
    expected = log_standard_normal_by_hand(z) + brute_logdet(model.encode, x)
    torch.testing.assert_close(model.log_prob(x), expected, **TOL)
    torch.testing.assert_close(model.flow.inverse(z), x, **TOL)


@pytest.mark.parametrize("name,levels", [("realnvp", 3), ("glow", 3), ("glow", 1)])
def test_model_log_prob_is_the_change_of_variables_images(name: str, levels: int) -> None:
    # 1x8x8 in [0, 1]: the range map, the logit, squeezes and factored-out halves all count;
    # realnvp with 3 levels ends on 4x2x2 checkerboards, glow with 3 on 16x1x1
    spec = DataSpec("tiny8x8", (1, 8, 8), (0.0, 1.0), 0, 17)
    model = flow_model(name, spec, levels=levels)
    x = torch.rand(3, 1, 8, 8, generator=torch.Generator().manual_seed(0), dtype=DT)
    z = model.encode(x)
    assert z.shape == (3, 64)
    expected = log_standard_normal_by_hand(z) + brute_logdet(model.encode, x)
    torch.testing.assert_close(model.log_prob(x), expected, **TOL)
    torch.testing.assert_close(model.decode(z), x, **TOL)


@pytest.mark.parametrize("name", ["realnvp", "glow"])
def test_density_integrates_to_the_sample_frequency_2d(name: str) -> None:
    # integral of p over the box B = [-1, 1]^2 by the midpoint rule on grids of side h and h/2
    # vs the share of n model samples in B; allowed gap: 4 binomial standard errors of the share
    # plus 3 times the Richardson estimate |I_h - I_h/2| of the quadrature error of I_h/2
    # (for a smooth integrand that error is about |I_h - I_h/2| / 3).
    model = flow_model(name, DataSpec("toy", (2,)), hidden=(16,), steps=4)

    def box_integral(m: int) -> float:
        h = 2.0 / m
        c = -1 + h * (torch.arange(m, dtype=DT) + 0.5)
        grid = torch.cartesian_prod(c, c)
        with torch.no_grad():
            return float(model.log_prob(grid).exp().sum() * h * h)

    coarse, fine = box_integral(200), box_integral(400)
    n = 20000
    x = model.sample(n, generator=torch.Generator().manual_seed(7))
    share = float((x.abs() <= 1).all(1).double().mean())
    assert 0.1 < share < 0.9, "the box should cut the density, not hold all or none of it"
    se = math.sqrt(share * (1 - share) / n)
    assert abs(fine - share) <= 4 * se + 3 * abs(coarse - fine), (fine, coarse, share, se)
    with torch.no_grad():
        assert torch.isfinite(model.log_prob(x)).all()


@pytest.mark.parametrize("name", ["realnvp", "glow"])
def test_image_samples_have_finite_log_prob(name: str) -> None:
    spec = DataSpec("tiny8x8", (1, 8, 8), (0.0, 1.0), 0, 17)
    model = flow_model(name, spec)
    x = model.sample(16, generator=torch.Generator().manual_seed(0))
    assert x.min() >= 0 and x.max() <= 1
    with torch.no_grad():
        assert torch.isfinite(model.log_prob(x)).all()
