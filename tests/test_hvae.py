"""The hierarchical VAE beyond the shared protocol: shapes, loss parts, sampling, a short fit.

The bound's mathematics is in tests/math/test_hvae_math.py.
"""

from __future__ import annotations

import math

import pytest
import torch
from conftest import tiny_data
from torch import Tensor

import genlab.models.hvae  # noqa: F401  (registers hvae)
from genlab import models
from genlab.data.spec import DataSpec
from genlab.errors import GenlabError
from genlab.models.base import Encoder, LikelihoodBound

TINY = {"latent_dim": 3, "upper_dim": 2, "hidden": (16,), "channels": (4, 8)}
VEC = DataSpec("vec2", (2,))
IMG = DataSpec("tiny8x8", (1, 8, 8), (0.0, 1.0), 10, 17)


def build(spec: DataSpec, seed: int = 0, **cfg: object):
    torch.manual_seed(seed)
    return models.build("hvae", spec, **{**TINY, **cfg})


def mean_se(v: Tensor) -> tuple[float, float]:
    v = v.double()
    return float(v.mean()), float(v.std() / math.sqrt(len(v)))


@pytest.mark.parametrize("layers", [2, 3])
@pytest.mark.parametrize("spec,arch", [(VEC, "mlp"), (IMG, "mlp"), (IMG, "conv")])
def test_shapes_and_capabilities(spec: DataSpec, arch: str, layers: int) -> None:
    model = build(spec, arch=arch, layers=layers).eval()
    assert model.dims == [3] + [2] * (layers - 1)
    assert isinstance(model, Encoder) and isinstance(model, LikelihoodBound)
    x = tiny_data("image" if spec.is_image else "vector").x_train[:5]
    post = model.posterior(x)
    assert [z.shape for z, _, _ in post] == [(5, d) for d in model.dims]
    out = model({"x": x})
    assert {f"kl{i}" for i in range(1, layers + 1)} <= set(out)
    assert all(v.ndim == 0 and torch.isfinite(v) for v in out.values())
    assert model.encode(x).shape == (5, 3)
    assert model.reconstruct(x).shape == x.shape
    bound = model.nll_bound(x, k=4, generator=torch.Generator().manual_seed(0))
    assert bound.shape == (5,) and torch.isfinite(bound).all()
    s = model.sample(6, generator=torch.Generator().manual_seed(0))
    assert s.shape == (6, *spec.shape)


def test_loss_parts_are_consistent_and_warmup_weights_the_kl() -> None:
    model = build(VEC, beta=2.0, kl_warmup=10).double()
    x = torch.randn(8, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    for step, beta in ((0, 0.0), (5, 1.0), (20, 2.0)):
        model.step = step
        assert model.kl_weight() == pytest.approx(beta, abs=1e-15)
        torch.manual_seed(1)
        out = model({"x": x})
        torch.testing.assert_close(out["kl"], out["kl1"] + out["kl2"], rtol=1e-12, atol=0)
        torch.testing.assert_close(out["loss"], out["recon"] + beta * out["kl"])
        torch.testing.assert_close(out["nelbo"], out["recon"] + out["kl"], rtol=1e-12, atol=0)
    # the top KL is the closed form at q(z_2|z_1)'s parameters: non-negative for every draw
    assert out["kl2"] >= 0


def test_image_samples_are_in_range_and_reproducible() -> None:
    for likelihood in ("gaussian", "bernoulli", "logistic"):
        model = build(IMG, likelihood=likelihood).eval()
        with torch.no_grad():  # widen the prior nets so samples reach the sigmoid's tails
            for p in model.prior.parameters():
                p.mul_(5)
        a = model.sample(16, generator=torch.Generator().manual_seed(3))
        b = model.sample(16, generator=torch.Generator().manual_seed(3))
        c = model.sample(16, generator=torch.Generator().manual_seed(4))
        assert a.min() >= 0 and a.max() <= 1, likelihood
        assert torch.equal(a, b) and not torch.equal(a, c), likelihood
        assert model.discrete_likelihood == (likelihood != "gaussian")


def test_bad_configs_are_one_line_errors() -> None:
    with pytest.raises(GenlabError, match="layers must be >= 2"):
        build(VEC, layers=1)
    with pytest.raises(GenlabError, match="latent_dim"):
        build(VEC, latent_dim=0)
    with pytest.raises(GenlabError, match="needs data in"):
        build(VEC, likelihood="bernoulli")
    assert build(VEC, upper_dim=0).dims == [3, 3]


def test_short_training_lowers_the_bound() -> None:
    # 2-D data from two Gaussian blobs; 150 Adam steps must lower the held-out -ELBO (k = 1,
    # averaged over 50 draws per example) by more than 5 standard errors of the difference.
    g = torch.Generator().manual_seed(0)
    centres = torch.tensor([[-2.0, 0.0], [2.0, 1.0]])
    x = centres[torch.randint(0, 2, (512,), generator=g)] + 0.3 * torch.randn(512, 2, generator=g)
    train, test = x[:384], x[384:]
    model = build(VEC, hidden=(32,), latent_dim=2)

    def held_out() -> tuple[float, float]:
        model.eval()
        with torch.no_grad():
            gen = torch.Generator().manual_seed(1)
            per = model.nll_bound(test.repeat(50, 1), k=1, generator=gen).view(50, -1).mean(0)
        model.train()
        return mean_se(per)

    before, se_before = held_out()
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    torch.manual_seed(2)
    for step in range(150):
        batch = train[torch.randint(0, len(train), (64,))]
        model.step = step
        opt.zero_grad()
        model({"x": batch})["loss"].backward()
        opt.step()
    after, se_after = held_out()
    assert before - after > 5 * math.hypot(se_before, se_after), (before, after)
