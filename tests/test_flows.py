"""RealNVP and Glow models: shapes, capabilities, errors for bad shapes, ActNorm's data init in
training, and a short training run on moons that must beat the best Gaussian.

The shared protocol (finite loss, one step, sample range, checkpoints) is test_protocol.py's and
the change-of-variables mathematics is tests/math/test_flows.py's; here are the model's own checks.
"""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from conftest import tiny_data

import genlab.models.flow  # noqa: F401  (registers realnvp and glow)
from genlab import models
from genlab.config import resolve
from genlab.data.load import load
from genlab.data.spec import DataSpec
from genlab.errors import GenlabError
from genlab.models.base import Encoder, ExactLikelihood
from genlab.nn.flows import ActNorm
from genlab.train import train

VECTOR = tiny_data("vector")
IMAGE = tiny_data("image")  # 1x8x8 in [0, 1], 17 levels
SMALL = dict(hidden=(16,), channels=(8,), steps=2)


def build(name: str, spec: DataSpec, **cfg) -> models.GenerativeModel:
    torch.manual_seed(0)
    return models.build(name, spec, **{**SMALL, **cfg})


@pytest.mark.parametrize("name", ["realnvp", "glow"])
@pytest.mark.parametrize("data", [VECTOR, IMAGE], ids=["vector", "image"])
def test_shapes_and_capabilities(name: str, data) -> None:
    model = build(name, data.spec)
    assert isinstance(model, ExactLikelihood) and isinstance(model, Encoder)
    assert model.discrete_likelihood is False
    x = data.batch(torch.arange(6))["x"]
    parts = model(data.batch(torch.arange(6)))
    assert set(parts) == {"loss", "nll", "log_pz", "logdet"}
    torch.testing.assert_close(parts["loss"], -model.log_prob(x).mean())
    model.eval()
    assert model.log_prob(x).shape == (6,)
    z = model.encode(x)
    assert z.shape == (6, data.spec.dim)
    torch.testing.assert_close(model.decode(z), x, rtol=0, atol=1e-4)  # float32 round trip
    assert model.sample(3).shape == (3, *data.spec.shape)


def test_temperature_zero_samples_the_image_of_the_origin() -> None:
    model = build("glow", IMAGE.spec).eval()
    x = model.sample(2, temperature=0.0)
    torch.testing.assert_close(x, model.decode(torch.zeros(2, 64)))
    with pytest.raises(GenlabError, match="one sampler"):
        model.sample(2, sampler="ddim")


def test_loss_is_the_nll_of_the_range_mapped_density() -> None:
    # Densities on [0, 1] and on [0, 2] of the same flow differ by D log 2: x -> x / 2 halves
    # every coordinate, so p_[0,2](2 u) = p_[0,1](u) / 2^D.
    a = build("realnvp", DataSpec("a", (1, 8, 8), (0.0, 1.0)))
    b = build("realnvp", DataSpec("b", (1, 8, 8), (0.0, 2.0)))
    b.load_state_dict(a.state_dict())
    u = IMAGE.batch(torch.arange(4))["x"]
    torch.testing.assert_close(b.log_prob(2 * u), a.log_prob(u) - 64 * math.log(2))


def test_shapes_that_cannot_be_squeezed_fail_clearly() -> None:
    fashion = DataSpec("fashion-mnist", (1, 28, 28), (0.0, 1.0), 10, 256)
    build("glow", fashion, levels=2)  # 28 -> 14 -> 7
    with pytest.raises(GenlabError, match=r"model.levels=3 \(glow\).*7x7.*fewer levels"):
        build("glow", fashion, levels=3)
    build("realnvp", fashion, levels=3)  # two squeezes: 28 -> 14 -> 7
    with pytest.raises(GenlabError, match="model.levels=4"):
        build("realnvp", fashion, levels=4)
    build("glow", IMAGE.spec, levels=3)  # digits: 8 -> 4 -> 2 -> 1
    with pytest.raises(GenlabError, match="levels"):
        build("glow", IMAGE.spec, levels=4)
    with pytest.raises(GenlabError, match="checkerboard mask needs at least 2 pixels"):
        build("realnvp", IMAGE.spec, levels=4)  # ends on 1x1 pixels
    with pytest.raises(GenlabError, match="2 dimensions"):
        build("realnvp", DataSpec("line", (1,)))
    with pytest.raises(GenlabError, match="logit_alpha"):
        build("realnvp", IMAGE.spec, logit_alpha=0.0)


def test_actnorm_initialises_on_the_first_training_batch_only() -> None:
    model = build("glow", VECTOR.spec)
    norms = [m for m in model.modules() if isinstance(m, ActNorm)]
    model.eval()
    model.log_prob(VECTOR.x_train[:8])  # evaluation never initialises
    assert not any(bool(m.initialized) for m in norms)
    model.train()
    model({"x": VECTOR.x_train[:16]})
    assert all(bool(m.initialized) for m in norms)
    # the first ActNorm sees the data itself: its output has mean 0, variance ~1 per feature
    first = norms[0]
    y, _ = first(VECTOR.x_train[:16])
    torch.testing.assert_close(y.mean(0), torch.zeros(2), rtol=0, atol=1e-5)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with torch.no_grad():
        model({"x": VECTOR.x_train[16:32] + 5})  # a later batch does not re-initialise
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in before.items())


def test_short_training_beats_the_best_gaussian_on_moons(tmp_path: Path) -> None:
    # A flow starts at the identity map, i.e. near N(0, I). After 400 steps its held-out NLL
    # must be below that of the best Gaussian (mean and covariance fitted to the training set),
    # which no affine flow can beat; the paired per-point difference must exceed 4 standard
    # errors. The test set is the first 2000 held-out points.
    over = [
        "train.steps=400",
        "train.batch_size=256",
        "train.lr=0.003",
        "train.checkpoint_every=100000",
        "train.sample_every=100000",
        "model.steps=6",
        "model.hidden=[32,32]",
    ]
    run = train(resolve("realnvp", "moons", None, over), tmp_path / "run", progress=False)
    data = load("moons")
    x, test = data.x_train.double(), data.x_test[:2000]
    mu, cov = x.mean(0), torch.cov(x.T)
    gauss = torch.distributions.MultivariateNormal(mu, cov)
    nll_gauss = -gauss.log_prob(test.double())
    with torch.no_grad():
        nll_flow = -run.model.log_prob(test).double()
    diff = nll_gauss - nll_flow
    se = diff.std() / math.sqrt(len(diff))
    assert diff.mean() > 4 * se, (float(nll_flow.mean()), float(nll_gauss.mean()), float(se))
    untrained = build("realnvp", data.spec, steps=6, hidden=(32, 32)).eval()
    with torch.no_grad():
        assert nll_flow.mean() < -untrained.log_prob(test).double().mean()
