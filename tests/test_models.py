"""Behaviour of the autoencoder / VAE family beyond the generic protocol (tests/test_protocol.py).

Math checks run in float64; statistical checks compare means with a tolerance of a few standard
errors computed in the test, never a number recorded from a previous run.
"""

from __future__ import annotations

import math
from statistics import NormalDist

import pytest
import torch
from conftest import tiny_data
from torch import Tensor, nn

from genlab import models
from genlab.data.spec import DataSpec
from genlab.errors import GenlabError
from genlab.math.jacobian import jacobian_frobenius_sq
from genlab.models.autoencoder import Autoencoder
from genlab.models.likelihood import Likelihood, choose_kind
from genlab.nn import DecoderNet, EncoderNet
from genlab.viz.latent import arithmetic, interpolate, lerp, manifold

TINY = {"latent_dim": 3, "hidden": (16,)}
VEC = DataSpec("vec2", (2,))
IMG = DataSpec("tiny8x8", (1, 8, 8), (0.0, 1.0), 10, 17)


def build(name: str, spec: DataSpec, seed: int = 0, **cfg: object):
    torch.manual_seed(seed)
    return models.build(name, spec, **{**TINY, **cfg})


def vec_x(n: int = 8, seed: int = 0) -> Tensor:
    return torch.randn(n, 2, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def img_batch(n: int = 8) -> dict[str, Tensor]:
    return tiny_data("image", n=2 * n).batch(torch.arange(n))


def mean_se(values: Tensor) -> tuple[float, float]:
    v = values.double()
    return float(v.mean()), float(v.std() / math.sqrt(len(v)))


# --------------------------------------------------------------------------- VAE loss and beta


def test_vae_loss_parts_are_consistent() -> None:
    model = build("vae", VEC, beta=2.5).double()
    out = model({"x": vec_x()})
    assert model.kl_weight() == 2.5
    torch.testing.assert_close(out["loss"], out["recon"] + 2.5 * out["kl"], rtol=1e-12, atol=0)
    torch.testing.assert_close(out["nelbo"], out["recon"] + out["kl"], rtol=1e-12, atol=0)
    # The KL part is the closed form at the encoder's (mu, logvar), recomputed independently.
    mu, logvar = model.posterior(vec_x())
    kl = 0.5 * (mu**2 + logvar.exp() - 1 - logvar).sum(1).mean()
    torch.testing.assert_close(out["kl"], kl, rtol=1e-12, atol=0)


@pytest.mark.parametrize(
    "step,expected",
    [(0, 0.0), (5, 1.5), (10, 3.0), (25, 3.0)],  # 0, half-way, end of warm-up, beyond
)
def test_kl_warmup_schedule(step: int, expected: float) -> None:
    model = build("vae", VEC, beta=3.0, kl_warmup=10).double()
    model.step = step
    assert model.kl_weight() == pytest.approx(expected, abs=1e-15)
    out = model({"x": vec_x()})
    torch.testing.assert_close(
        out["loss"], out["recon"] + expected * out["kl"], rtol=1e-12, atol=1e-12
    )
    # nelbo never carries the warm-up weight.
    torch.testing.assert_close(out["nelbo"], out["recon"] + out["kl"], rtol=1e-12, atol=0)


def test_beta_vae_preset() -> None:
    model = build("beta-vae", VEC)
    assert model.cfg.beta == 4.0
    model.step = 10**6
    assert model.kl_weight() == 4.0
    model.step = 0
    assert model.kl_weight() == (0.0 if model.cfg.kl_warmup > 0 else 4.0)


# --------------------------------------------------------------------------- nll_bound / IWAE


def test_nll_bound_k1_matches_minus_elbo() -> None:
    """E[nll_bound(x, k=1)] = -ELBO(x) = E[recon] + KL, the forward's nelbo in expectation."""
    torch.manual_seed(0)
    model = build("vae", VEC).double().eval()
    x = vec_x(8)
    reps = 400
    with torch.no_grad():
        fwd = torch.stack([model({"x": x})["nelbo"] for _ in range(reps)])  # batch means
        g = torch.Generator().manual_seed(1)
        bound = model.nll_bound(x.repeat(reps, 1), k=1, generator=g).view(reps, 8).mean(1)
    m_f, se_f = mean_se(fwd)
    m_b, se_b = mean_se(bound)
    assert se_f > 0 and se_b > 0
    assert abs(m_f - m_b) < 5 * math.hypot(se_f, se_b), (m_f, se_f, m_b, se_b)


def test_iwae_bound_decreases_with_k_and_is_reproducible() -> None:
    model = build("vae", VEC).double().eval()
    x = vec_x(8)
    reps = 200
    means, ses = {}, {}
    with torch.no_grad():
        for k in (1, 10, 100):
            g = torch.Generator().manual_seed(k)
            per = model.nll_bound(x.repeat(reps, 1), k=k, generator=g).view(reps, 8).mean(1)
            means[k], ses[k] = mean_se(per)
        for k in (1, 10, 100):
            a = model.nll_bound(x, k=k, generator=torch.Generator().manual_seed(3))
            b = model.nll_bound(x, k=k, generator=torch.Generator().manual_seed(3))
            c = model.nll_bound(x, k=k, generator=torch.Generator().manual_seed(4))
            assert a.shape == (8,)
            assert torch.equal(a, b), f"k={k}: same generator seed must give the same bound"
            assert not torch.equal(a, c), f"k={k}: the bound ignores the generator"
    assert means[10] <= means[1] + 3 * math.hypot(ses[1], ses[10]), (means, ses)
    assert means[100] <= means[10] + 3 * math.hypot(ses[10], ses[100]), (means, ses)
    # An untrained encoder is far from the posterior: the improvement is clearly visible.
    assert means[1] - means[100] > 5 * math.hypot(ses[1], ses[100]), (means, ses)


def test_iwae_bound_per_example_order() -> None:
    """Sample-major batching: example i of a batch gets the bound of example i alone (cvae: with
    its own label)."""
    model = build("cvae", IMG, latent_dim=2, hidden=(16,), arch="mlp").double().eval()
    with torch.no_grad():  # make the decoder depend strongly on the label
        model.decoder.net[0].weight[:, 2:] *= 30
    batch = img_batch(4)
    x, y = batch["x"].double(), torch.tensor([0, 3, 6, 9])
    reps, k = 100, 8
    with torch.no_grad():
        g = torch.Generator().manual_seed(0)
        together = torch.stack([model.nll_bound(x, y, k=k, generator=g) for _ in range(reps)])
        for i in range(len(x)):
            g = torch.Generator().manual_seed(100 + i)
            alone = torch.cat(
                [model.nll_bound(x[i : i + 1], y[i : i + 1], k=k, generator=g) for _ in range(reps)]
            )
            m1, s1 = mean_se(together[:, i])
            m2, s2 = mean_se(alone)
            assert abs(m1 - m2) < 5 * math.hypot(s1, s2), (i, m1, s1, m2, s2)


class LinearEncoder(nn.Module):
    """q(z|x) = N(A (x - b) + shift, diag exp(logvar))."""

    def __init__(self, a: Tensor, b: Tensor, shift: Tensor, logvar: Tensor) -> None:
        super().__init__()
        self.a, self.b, self.shift, self.logvar = a, b, shift, logvar

    def forward(self, x: Tensor, labels: Tensor | None = None) -> Tensor:
        mu = (x - self.b) @ self.a.T + self.shift
        return torch.cat([mu, self.logvar.expand_as(mu)], dim=1)


class LinearDecoder(nn.Module):
    def __init__(self, w: Tensor, b: Tensor) -> None:
        super().__init__()
        self.w, self.b = w, b

    def forward(self, z: Tensor, labels: Tensor | None = None) -> Tensor:
        return z @ self.w.T + self.b


def linear_gaussian_vae(shift: float, widen: float):
    """A VAE whose p(x) = N(b, W W^T + s^2 I) is known; W has orthogonal columns so the exact
    posterior N(Sigma W^T (x - b) / s^2, Sigma), Sigma = (I + W^T W / s^2)^-1, is diagonal."""
    dt = torch.float64
    model = build("vae", VEC, latent_dim=2, arch="mlp", likelihood="gaussian").double()
    th = 0.7
    rot = torch.tensor([[math.cos(th), -math.sin(th)], [math.sin(th), math.cos(th)]], dtype=dt)
    w = rot @ torch.diag(torch.tensor([1.5, 0.6], dtype=dt))
    b = torch.tensor([0.3, -0.2], dtype=dt)
    s = 0.5
    with torch.no_grad():
        model.likelihood.log_scale.fill_(math.log(s))
    var_post = 1.0 / (1.0 + (w**2).sum(0) / s**2)  # diagonal of Sigma
    a = torch.diag(var_post) @ w.T / s**2
    shift_t = torch.full((2,), shift, dtype=dt)
    model.encoder = LinearEncoder(a, b, shift_t, var_post.log() + widen)
    model.decoder = LinearDecoder(w, b)
    cov = w @ w.T + s**2 * torch.eye(2, dtype=dt)
    exact_nll = lambda x: -torch.distributions.MultivariateNormal(b, cov).log_prob(x)  # noqa: E731
    # KL(q || p(z|x)) between diagonal Gaussians: the exact ELBO gap.
    gap = 0.5 * (var_post / var_post * math.exp(widen) + shift**2 / var_post - 1 - widen).sum()
    return model.eval(), exact_nll, float(gap)


def test_iwae_is_exact_with_the_true_posterior() -> None:
    model, exact_nll, gap = linear_gaussian_vae(shift=0.0, widen=0.0)
    assert gap == 0.0
    x = vec_x(6, seed=3) * 2
    with torch.no_grad():
        for k in (1, 5):
            bound = model.nll_bound(x, k=k, generator=torch.Generator().manual_seed(k))
            torch.testing.assert_close(bound, exact_nll(x), rtol=1e-10, atol=1e-10)


def test_iwae_approaches_exact_nll_from_above() -> None:
    model, exact_nll, gap = linear_gaussian_vae(shift=0.4, widen=0.7)
    x = vec_x(1, seed=5)
    exact = float(exact_nll(x))
    reps = 400
    with torch.no_grad():
        g = torch.Generator().manual_seed(0)
        b1 = model.nll_bound(x.repeat(reps * 10, 1), k=1, generator=g)
        b1000 = model.nll_bound(x.repeat(reps, 1), k=1000, generator=g)
    m1, se1 = mean_se(b1)
    m1000, se1000 = mean_se(b1000)
    # k = 1: the ELBO, whose gap is exactly KL(q || p(z|x)).
    assert abs(m1 - exact - gap) < 5 * se1, (m1, exact, gap, se1)
    # Large k: above the exact NLL, and within the delta-method bias Var(w / p(x)) / (2k).
    w_rel = torch.exp(exact - b1)  # importance weights w / p(x), mean 1
    bias = float(w_rel.var()) / (2 * 1000)
    assert m1000 - exact > -5 * se1000, (m1000, exact, se1000)
    assert m1000 - exact < 3 * bias + 5 * se1000, (m1000, exact, bias, se1000)
    assert m1000 - exact < gap / 20


# --------------------------------------------------------------------------- likelihoods


def test_bernoulli_log_prob_is_minus_bce() -> None:
    spec = DataSpec("bin", (1, 2, 3), (0.0, 1.0), 0, 2)
    lik = Likelihood("auto", spec)
    assert lik.kind == "bernoulli" and lik.discrete
    g = torch.Generator().manual_seed(0)
    x = torch.bernoulli(torch.full((5, 1, 2, 3), 0.5, dtype=torch.float64), generator=g)
    logits = 3 * torch.randn(5, 1, 2, 3, generator=g, dtype=torch.float64)
    p = torch.sigmoid(logits)
    expected = (x * p.log() + (1 - x) * (1 - p).log()).flatten(1).sum(1)
    torch.testing.assert_close(lik.log_prob(x, logits), expected, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(lik.mean(logits), p)


@pytest.mark.parametrize("spec", [VEC, IMG], ids=["unbounded", "images"])
def test_gaussian_uses_learned_log_scale(spec: DataSpec) -> None:
    lik = Likelihood("gaussian", spec).double()
    assert not lik.discrete
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        lik.log_scale.copy_(0.5 * torch.randn(spec.shape, generator=g, dtype=torch.float64))
    x = torch.rand(4, *spec.shape, generator=g, dtype=torch.float64)
    out = torch.randn(4, *spec.shape, generator=g, dtype=torch.float64)
    mean = torch.sigmoid(out) if spec.value_range == (0.0, 1.0) else out
    expected = torch.distributions.Normal(mean, lik.log_scale.exp()).log_prob(x).flatten(1).sum(1)
    torch.testing.assert_close(lik.log_prob(x, out), expected, rtol=1e-12, atol=1e-12)
    # The scale is a trainable parameter: log_prob depends on it through autograd.
    lik.log_prob(x, out).sum().backward()
    assert lik.log_scale.grad is not None and lik.log_scale.grad.abs().sum() > 0


@pytest.mark.parametrize("out,log_scale", [(0.0, 0.0), (1.3, -2.0), (-4.0, -4.0), (0.2, 3.0)])
def test_discretized_logistic_sums_to_one(out: float, log_scale: float) -> None:
    spec = DataSpec("pixel", (1, 1, 1), (0.0, 1.0), 0, 17)
    lik = Likelihood("logistic", spec).double()
    assert lik.discrete
    with torch.no_grad():
        lik.log_scale.fill_(log_scale)
    x = (torch.arange(17, dtype=torch.float64) / 16).view(17, 1, 1, 1)
    logp = lik.log_prob(x, torch.full_like(x, out))
    assert (logp <= 0).all()
    assert abs(float(logp.detach().exp().sum()) - 1.0) < 1e-6


def test_choose_kind_auto_and_invalid_combinations() -> None:
    binary = DataSpec("bin", (4,), (0.0, 1.0), 0, 2)
    grey = DataSpec("grey", (4,), (0.0, 1.0), 0, 17)
    cont01 = DataSpec("cont01", (4,), (0.0, 1.0), 0, None)
    assert choose_kind("auto", binary) == "bernoulli"
    assert choose_kind("auto", grey) == "gaussian"
    assert choose_kind("auto", cont01) == "gaussian"
    assert choose_kind("auto", VEC) == "gaussian"
    assert choose_kind("logistic", grey) == "logistic"
    assert choose_kind("bernoulli", grey) == "bernoulli"
    with pytest.raises(GenlabError, match="logistic"):
        choose_kind("logistic", cont01)
    with pytest.raises(GenlabError, match="bernoulli"):
        choose_kind("bernoulli", VEC)
    with pytest.raises(GenlabError, match="logistic"):
        choose_kind("logistic", VEC)
    with pytest.raises(GenlabError):
        build("vae", VEC, likelihood="bernoulli")


# --------------------------------------------------------------------------- conditional VAE


def test_cvae_needs_labels() -> None:
    with pytest.raises(GenlabError, match="needs labels"):
        build("cvae", VEC)
    model = build("cvae", IMG)
    with pytest.raises(GenlabError, match="label"):
        model({"x": img_batch(4)["x"]})


def test_cvae_samples_depend_on_label_and_cycle_by_default() -> None:
    model = build("cvae", IMG, arch="mlp").eval()

    def draw(labels: Tensor | int | None, n: int = 12) -> Tensor:
        lab = None if labels is None else torch.as_tensor(labels)
        return model.sample(n, generator=torch.Generator().manual_seed(7), labels=lab)

    assert torch.equal(draw(3), draw(3))
    assert torch.equal(draw(3), draw(torch.full((12,), 3)))  # a scalar label is repeated
    assert (draw(0) - draw(3)).abs().amax(dim=(1, 2, 3)).min() > 1e-4  # every sample differs
    assert torch.equal(draw(None), draw(torch.arange(12) % 10))


# --------------------------------------------------------------------------- autoencoders


def test_dae_corrupts_the_input() -> None:
    model = build("dae", VEC).double().train()
    assert model.cfg.noise_std == 0.3
    x = vec_x(4000)
    seen: list[Tensor] = []
    model.encoder.register_forward_hook(lambda m, args, out: seen.append(args[0].detach()))
    torch.manual_seed(1)
    loss1 = model({"x": x[:8]})["loss"]
    torch.manual_seed(2)
    loss2 = model({"x": x[:8]})["loss"]
    torch.manual_seed(1)
    loss1_again = model({"x": x[:8]})["loss"]
    assert loss1 != loss2
    assert torch.equal(loss1, loss1_again)
    # The encoder sees x + N(0, 0.3^2): check the noise's mean and standard deviation.
    model({"x": x})
    noise = (seen[-1] - x).flatten()
    n = len(noise)
    assert abs(float(noise.mean())) < 5 * 0.3 / math.sqrt(n)
    # SE of the sample variance of a Gaussian: sigma^2 sqrt(2 / n).
    assert abs(float(noise.var()) - 0.09) < 5 * 0.09 * math.sqrt(2 / n)


def test_ae_without_noise_is_deterministic() -> None:
    model = build("dae", VEC, noise_std=0.0).double().train()
    x = vec_x()
    torch.manual_seed(1)
    loss1 = model({"x": x})["loss"]
    torch.manual_seed(2)
    loss2 = model({"x": x})["loss"]
    assert torch.equal(loss1, loss2)


def test_sparse_ae_loss_includes_l1() -> None:
    model = build("sparse-ae", VEC).double()
    assert model.cfg.sparsity == 0.01
    x = vec_x()
    out = model({"x": x})
    l1 = model.encode(x).abs().sum(1).mean()
    torch.testing.assert_close(out["l1"], l1, rtol=1e-12, atol=0)
    torch.testing.assert_close(out["loss"], out["recon"] + 0.01 * l1, rtol=1e-12, atol=0)


def test_cae_jacobian_penalty() -> None:
    model = build("cae", VEC, hidden=(8, 8)).double()
    assert model.cfg.contractive == 0.01
    x = vec_x(5)
    out = model({"x": x})
    per = []
    for xi in x:
        jac = torch.autograd.functional.jacobian(lambda v: model.encoder(v[None])[0], xi)
        assert jac.shape == (3, 2)
        per.append((jac**2).sum())
    expected = torch.stack(per).mean()
    torch.testing.assert_close(out["jacobian"], expected, rtol=1e-10, atol=0)
    torch.testing.assert_close(
        jacobian_frobenius_sq(model.encoder, x).mean(), expected, rtol=1e-10, atol=0
    )
    torch.testing.assert_close(
        out["loss"], out["recon"] + 0.01 * out["jacobian"], rtol=1e-12, atol=0
    )
    # The penalty is differentiable with respect to the encoder (double backprop).
    (grad,) = torch.autograd.grad(out["jacobian"], model.encoder.head[0].weight)
    assert grad.abs().sum() > 0


def test_code_gaussian_tracks_codes_in_train_mode_only() -> None:
    model = build("ae", VEC, code_momentum=0.9).double()
    x = vec_x(64) * 3 + 1
    with torch.no_grad():
        z = model.encode(x)
    batch_mean, batch_cov = z.mean(0), torch.cov(z.T)
    mean0, cov0 = model.code_mean.clone(), model.code_cov.clone()

    model.eval()
    model({"x": x})
    assert torch.equal(model.code_mean, mean0) and torch.equal(model.code_cov, cov0)

    model.train()
    model({"x": x})
    torch.testing.assert_close(model.code_mean, 0.9 * mean0 + 0.1 * batch_mean)
    torch.testing.assert_close(model.code_cov, 0.9 * cov0 + 0.1 * batch_cov)
    assert (model.code_mean - batch_mean).norm() < (mean0 - batch_mean).norm()
    assert (model.code_cov - batch_cov).norm() < (cov0 - batch_cov).norm()


def test_ae_samples_from_the_code_gaussian() -> None:
    model = build("ae", VEC).double().eval()
    mean = torch.tensor([1.0, -2.0, 0.5], dtype=torch.float64)
    a = torch.tensor([[1.0, 0, 0], [0.5, 0.8, 0], [-0.3, 0.2, 0.4]], dtype=torch.float64)
    with torch.no_grad():
        model.code_mean.copy_(mean)
        model.code_cov.copy_(a @ a.T)
    model.decode = lambda z, labels=None: z  # look at the latent draws themselves
    n = 20000
    z = model.sample(n, generator=torch.Generator().manual_seed(0)).double()
    se = (torch.diagonal(a @ a.T) / n).sqrt()
    assert ((z.mean(0) - mean).abs() < 5 * se).all()
    cov = torch.cov(z.T)
    target = a @ a.T + 1e-5 * torch.eye(3, dtype=torch.float64)
    # SE of a sample covariance entry: sqrt((S_ii S_jj + S_ij^2) / n).
    d = torch.diagonal(target)
    se_cov = ((d[:, None] * d[None, :] + target**2) / n).sqrt()
    assert ((cov - target).abs() < 5 * se_cov).all()


@pytest.mark.parametrize("spec,expected", [(IMG, "bce"), (VEC, "mse")], ids=["images", "vectors"])
def test_recon_auto(spec: DataSpec, expected: str) -> None:
    model = build("ae", spec, arch="mlp").double()
    assert model.recon_loss == expected
    x = img_batch(6)["x"].double() if spec.is_image else vec_x(6)
    out = model({"x": x})
    logits = model.decoder(model.encoder(x))
    if expected == "bce":
        p = torch.sigmoid(logits)
        want = -(x * p.log() + (1 - x) * (1 - p).log()).flatten(1).sum(1).mean()
        torch.testing.assert_close(model.decode(model.encode(x)), p)
    else:
        want = 0.5 * ((logits - x) ** 2).flatten(1).sum(1).mean()
        torch.testing.assert_close(model.decode(model.encode(x)), logits)
    torch.testing.assert_close(out["recon"], want, rtol=1e-10, atol=0)


# --------------------------------------------------------------------------- conv nets


@pytest.mark.parametrize("shape", [(1, 8, 8), (1, 28, 28)], ids=["digits", "fashion"])
def test_conv_nets_shapes(shape: tuple[int, int, int]) -> None:
    spec = DataSpec("img", shape, (0.0, 1.0), 10, 256)
    enc = EncoderNet(spec, 6, arch="conv", channels=(8, 16))
    dec = DecoderNet(3, spec, arch="conv", channels=(8, 16))
    convs = [m for m in enc.modules() if isinstance(m, nn.Conv2d)]
    assert [m.out_channels for m in convs] == [8, 16]
    assert enc.body.top_shape == (16, shape[1] // 4, shape[2] // 4)
    assert any(isinstance(m, nn.ConvTranspose2d) for m in dec.modules())
    x = torch.rand(5, *shape)
    assert enc(x).shape == (5, 6)
    assert dec(torch.randn(5, 3)).shape == (5, *shape)
    for name in ("ae", "vae", "cvae"):
        model = build(name, spec, arch="conv", channels=(8, 16)).eval()
        y = torch.arange(5) if name == "cvae" else None
        assert model.encode(x, y).shape == (5, 3)
        assert model.reconstruct(x, y).shape == (5, *shape)
        out = model({"x": x, "y": torch.arange(5)})
        assert torch.isfinite(out["loss"])


def test_conv_on_odd_sized_images_fails_clearly() -> None:
    spec = DataSpec("odd", (1, 7, 7), (0.0, 1.0), 0, 256)
    with pytest.raises(GenlabError, match="7x7"):
        build("vae", spec, arch="conv")
    with pytest.raises(GenlabError, match="needs images"):
        build("ae", VEC, arch="conv")


def test_auto_arch_falls_back_to_mlp_for_odd_sized_images() -> None:
    spec = DataSpec("odd", (1, 7, 7), (0.0, 1.0), 0, 256)
    model = build("vae", spec, arch="auto")
    assert not any(isinstance(m, torch.nn.Conv2d) for m in model.modules())
    x = model.sample(3, generator=torch.Generator().manual_seed(0))
    assert x.shape == (3, 1, 7, 7)


# --------------------------------------------------------------------------- latent operations


def latent_model() -> Autoencoder:
    return build("ae", VEC, latent_dim=2).double().eval()


def test_lerp_endpoints_exact() -> None:
    g = torch.Generator().manual_seed(0)
    z_a, z_b = torch.randn(2, 3, 4, generator=g, dtype=torch.float64)
    path = lerp(z_a, z_b, 7)
    assert path.shape == (7, 3, 4)
    assert torch.equal(path[0], z_a) and torch.equal(path[-1], z_b)
    torch.testing.assert_close(path[3], (z_a + z_b) / 2, rtol=1e-15, atol=1e-15)
    steps = path[1:] - path[:-1]
    torch.testing.assert_close(steps, ((z_b - z_a) / 6).expand_as(steps))


def test_interpolate_endpoints_are_reconstructions() -> None:
    model = latent_model()
    x_a, x_b = vec_x(3, seed=1), vec_x(3, seed=2)
    path = interpolate(model, x_a, x_b, steps=6)
    assert path.shape == (3, 6, 2)
    with torch.no_grad():
        torch.testing.assert_close(path[:, 0], model.reconstruct(x_a), rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(path[:, -1], model.reconstruct(x_b), rtol=1e-12, atol=1e-12)
        mid = model.decode((model.encode(x_a) + model.encode(x_b)) / 2)
    # steps=5 has an exact midpoint frame
    torch.testing.assert_close(
        interpolate(model, x_a, x_b, steps=5)[:, 2], mid, rtol=1e-12, atol=1e-12
    )


def test_interpolate_with_labels_keeps_each_row_with_its_label() -> None:
    model = build("cvae", IMG, arch="mlp").double().eval()
    batch = tiny_data("image", n=16).batch(torch.arange(8))
    x_a, x_b, y = batch["x"][:4].double(), batch["x"][4:].double(), batch["y"][:4]
    path = interpolate(model, x_a, x_b, steps=4, labels=y)
    assert path.shape == (4, 4, 1, 8, 8)
    with torch.no_grad():
        for j, t in enumerate((0.0, 1 / 3, 2 / 3, 1.0)):
            z = (1 - t) * model.encode(x_a, y) + t * model.encode(x_b, y)
            torch.testing.assert_close(path[:, j], model.decode(z, y), rtol=1e-10, atol=1e-10)


def test_arithmetic_with_equal_a_b_is_reconstruction_of_c() -> None:
    model = latent_model()
    x_a, x_c = vec_x(4, seed=1), vec_x(4, seed=2)
    out = arithmetic(model, x_a, x_a, x_c)
    with torch.no_grad():
        torch.testing.assert_close(out, model.reconstruct(x_c), rtol=1e-12, atol=1e-12)
        want = model.decode(model.encode(vec_x(4, 3)) - model.encode(x_a) + model.encode(x_c))
    torch.testing.assert_close(arithmetic(model, vec_x(4, 3), x_a, x_c), want)


def test_manifold_grid_at_gaussian_quantiles() -> None:
    model = latent_model()
    model.decode = lambda z, labels=None: z  # return the latent grid itself
    z = manifold(model, side=5)
    assert z.shape == (25, 2)
    q = torch.tensor([NormalDist().inv_cdf((i + 0.5) / 5) for i in range(5)])
    grid = z.view(5, 5, 2)  # (row, column, coordinate)
    for r in range(5):
        torch.testing.assert_close(grid[r, :, 0], q, rtol=1e-6, atol=1e-6)  # z1 along a row
        torch.testing.assert_close(grid[:, r, 1], q.flip(0), rtol=1e-6, atol=1e-6)  # z2 down
    torch.testing.assert_close(z.mean(0), torch.zeros(2), rtol=0, atol=1e-6)
    # Symmetric: the grid is its own mirror image in each coordinate.
    torch.testing.assert_close(grid.flip(1)[..., 0], -grid[..., 0], rtol=0, atol=1e-6)
    torch.testing.assert_close(grid.flip(0)[..., 1], -grid[..., 1], rtol=0, atol=1e-6)
