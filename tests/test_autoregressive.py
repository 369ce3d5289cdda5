"""PixelCNN and MADE as models: shapes, data checks, sampling, the code-grid prior, and a short
training run that lowers the held-out NLL (the masks and normalisation: tests/math)."""

from __future__ import annotations

import math

import pytest
import torch
from conftest import tiny_data

import genlab.models.autoregressive  # noqa: F401  (registers pixelcnn and made)
from genlab.data import load
from genlab.data.spec import Data, DataSpec
from genlab.errors import GenlabError
from genlab.math.gaussian import log_normal
from genlab.models import ExactLikelihood, build
from genlab.models.autoregressive import CategoricalPixelCNN

SMALL_PIXELCNN = {"width": 8, "num_blocks": 2, "kernel_size": 5}


def test_pixelcnn_log_prob_and_samples_on_the_grid() -> None:
    data = tiny_data("image")  # 1x8x8, 17 levels
    torch.manual_seed(0)
    model = build("pixelcnn", data.spec, **SMALL_PIXELCNN)
    assert isinstance(model, ExactLikelihood) and model.discrete_likelihood
    x = data.x_test[:6]
    logp = model.log_prob(x)
    assert logp.shape == (6,) and (logp < 0).all()  # a probability mass: log p <= 0
    out = model({"x": x})
    assert torch.allclose(out["bpd"], -logp.mean() / (64 * math.log(2)))
    s = model.sample(3, generator=torch.Generator().manual_seed(0))
    assert s.shape == (3, 1, 8, 8) and s.min() >= 0 and s.max() <= 1
    assert torch.equal(s * 16, torch.round(s * 16))  # on the grid k / 16
    assert torch.isfinite(model.log_prob(s)).all()


def test_pixelcnn_refuses_data_it_cannot_model() -> None:
    with pytest.raises(GenlabError, match="discrete images"):
        build("pixelcnn", DataSpec("cont", (1, 8, 8), (0.0, 1.0)))
    with pytest.raises(GenlabError, match="pixelcnn trains on image"):
        build("pixelcnn", DataSpec("tiny2d", (2,)))
    base = tiny_data("image")
    deq = Data(base.spec, base.x_train, None, base.x_test, None, dequantize=True)
    model = build("pixelcnn", base.spec, **SMALL_PIXELCNN)
    with pytest.raises(GenlabError, match="dequantize=false"):
        model(deq.batch(torch.arange(4)))


def test_row_logits_crop_is_exact_and_minimal() -> None:
    """The sampler's cropped row logits equal the full logits; one row less of context would not
    (so `reach` is exactly the vertical receptive field)."""
    torch.manual_seed(0)
    net = CategoricalPixelCNN(5, (2, 10, 6), width=4, num_blocks=2, kernel_size=5).double()
    k = torch.randint(0, 5, (3, 2, 10, 6))
    full = net.logits(k)
    assert net.reach == 4
    for row in range(10):
        assert torch.allclose(net.row_logits(k, row), full[..., row, :], rtol=0, atol=1e-12)
    net.reach -= 1
    assert not torch.allclose(net.row_logits(k, 9), full[..., 9, :], rtol=0, atol=1e-6)


def test_categorical_pixelcnn_over_a_code_grid() -> None:
    """The VQ-VAE prior: integer codes (B, h, w) in {0..K-1} with a learned code embedding."""
    torch.manual_seed(0)
    prior = CategoricalPixelCNN(6, (4, 5), width=8, num_blocks=1, embedding_dim=8)
    codes = torch.randint(0, 6, (7, 4, 5))
    logp = prior.log_prob(codes)
    assert logp.shape == (7,) and (logp < 0).all()
    g = torch.Generator().manual_seed(2)
    s = prior.sample(4, generator=g)
    assert s.shape == (4, 4, 5) and s.dtype == torch.long and s.min() >= 0 and s.max() < 6
    assert torch.equal(s, prior.sample(4, generator=torch.Generator().manual_seed(2)))
    logp.sum().backward()
    assert prior.embedding.weight.grad.abs().sum() > 0


def test_made_gaussian_conditionals_and_samples() -> None:
    """components=1: log p(x) = sum_d log N(x_d; mu_d(x_<d), sigma_d^2) (genlab.math.gaussian)."""
    spec = DataSpec("box3", (3,), (0.0, 1.0))
    torch.manual_seed(0)
    model = build("made", spec, hidden=(16, 16), components=1)
    assert not model.discrete_likelihood
    x = torch.rand(5, 3)
    _, mu, log_sigma = model.conditionals(x)
    expected = log_normal(x, mu[:, 0], 2 * log_sigma[:, 0])
    assert torch.allclose(model.log_prob(x), expected, atol=1e-5)
    s = model.sample(50, generator=torch.Generator().manual_seed(0))
    assert s.shape == (50, 3) and s.min() >= 0 and s.max() <= 1  # bounded data: clamped


def paired_improvement(before: torch.Tensor, after: torch.Tensor) -> tuple[float, float]:
    """Mean and standard error of the per-example NLL decrease."""
    d = (before - after).double()
    return float(d.mean()), float(d.std() / math.sqrt(len(d)))


def train_steps(model, data: Data, steps: int, lr: float, batch: int) -> None:
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    g = torch.Generator().manual_seed(0)
    for _ in range(steps):
        idx = torch.randint(0, len(data), (batch,), generator=g)
        loss = model(data.batch(idx))["loss"]
        opt.zero_grad()
        loss.backward()
        opt.step()


@pytest.mark.parametrize(
    "name,dataset,cfg,steps",
    [
        ("pixelcnn", "digits", {"width": 16, "num_blocks": 2, "kernel_size": 5}, 40),
        ("made", "moons", {"hidden": (32, 32), "components": 3}, 150),
    ],
)
def test_short_training_lowers_held_out_nll(name: str, dataset: str, cfg: dict, steps: int) -> None:
    """A few Adam steps lower the test NLL: the mean paired decrease exceeds 3 standard errors."""
    data = load(dataset)
    torch.manual_seed(0)
    model = build(name, data.spec, **cfg)
    x = data.x_test[:300]
    with torch.no_grad():
        before = -model.log_prob(x)
    train_steps(model, data, steps, lr=3e-3, batch=64)
    with torch.no_grad():
        after = -model.log_prob(x)
    mean, se = paired_improvement(before, after)
    assert mean > 3 * se and mean > 0, (mean, se)
