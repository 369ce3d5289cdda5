"""DDPM, NCSN and score-SDE models: losses by hand, predictions, guidance, samplers, likelihoods.

The shared protocol (finite loss, one step, sample range, checkpoints) is test_protocol.py's; here
are the checks particular to the diffusion models, each able to fail. float64 where it matters,
fixed seeds, tolerances from a stated solver tolerance or a Monte Carlo standard error.
"""

from __future__ import annotations

import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import SUBPROCESS_ENV, tiny_data
from torch import Tensor

from genlab import models
from genlab.data.spec import Data, DataSpec
from genlab.diffusion import VPSDE
from genlab.errors import GenlabError
from genlab.math.gaussian import log_normal
from genlab.metrics.evaluate import evaluate
from genlab.models.denoising import drop_labels
from genlab.samplers.likelihood import ode_log_likelihood

VECTOR = tiny_data("vector")
IMAGE = tiny_data("image")  # 1x8x8 in [0, 1], 17 levels, 10 classes


def build(name: str, data: Data = VECTOR, **cfg) -> models.GenerativeModel:
    torch.manual_seed(0)
    small = {"hidden": (32, 32), "channels": (8, 16), "num_res_blocks": 1}
    return models.build(name, data.spec, **{**small, **cfg}).double()


def randomize(model: torch.nn.Module, seed: int = 1) -> None:
    """Random weights everywhere (the output layers start at zero), so outputs depend on inputs."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(0.3 * torch.randn(p.shape, generator=g, dtype=p.dtype))


def gaussian_score(mu: Tensor, cov: Tensor, sde: VPSDE):
    """The exact score of x(t) when x(0) ~ N(mu, cov) under a VP SDE: N(a mu, a^2 cov + s^2 I)."""

    def score(x: Tensor, t: Tensor) -> Tensor:
        ab = sde.alpha_bar(t).to(x.dtype).reshape(-1, 1, 1)
        a = ab.sqrt()
        cov_t = ab * cov + (1 - ab) * torch.eye(len(mu), dtype=x.dtype)  # (B, D, D)
        r = (x.flatten(1) - a[:, :, 0] * mu).unsqueeze(-1)  # (B, D, 1)
        return -torch.linalg.solve(cov_t, r).squeeze(-1).reshape(x.shape)

    return score


def gaussian_logp(x: Tensor, mu: Tensor, cov: Tensor, sde: VPSDE, t: float) -> Tensor:
    """log N(x; a mu, a^2 cov + s^2 I): the exact log-density of x(t)."""
    ab = float(sde.alpha_bar(t))
    cov_t = ab * cov + (1 - ab) * torch.eye(len(mu), dtype=x.dtype)
    dist = torch.distributions.MultivariateNormal(math.sqrt(ab) * mu, cov_t)
    return dist.log_prob(x.flatten(1))


def random_cov(d: int, seed: int) -> Tensor:
    g = torch.Generator().manual_seed(seed)
    a = torch.randn(d, d, generator=g, dtype=torch.float64) / math.sqrt(d)
    return a @ a.T + 0.3 * torch.eye(d, dtype=torch.float64)


# ----------------------------------------------------------------------------- DDPM losses


@pytest.mark.parametrize("prediction", ["eps", "x0", "v"])
def test_ddpm_loss_is_the_mse_computed_by_hand(prediction: str) -> None:
    model = build("ddpm", prediction=prediction, timesteps=100)
    randomize(model)
    g = torch.Generator().manual_seed(2)
    x0 = torch.randn(16, 2, generator=g, dtype=torch.float64)
    t = torch.randint(0, 100, (16,), generator=g)
    eps = torch.randn(16, 2, generator=g, dtype=torch.float64)
    # Ho et al.: linear betas 1e-4 .. 0.02 scaled by 1000 / T; alpha_bar = prod (1 - beta)
    betas = torch.linspace(1e-4 * 10, 0.02 * 10, 100, dtype=torch.float64)
    ab = torch.cumprod(1 - betas, 0)[t][:, None]
    xt = ab.sqrt() * x0 + (1 - ab).sqrt() * eps
    target = {"eps": eps, "x0": x0, "v": ab.sqrt() * eps - (1 - ab).sqrt() * x0}[prediction]
    expected = ((model.net(xt, t) - target) ** 2).mean()
    got = model.losses(x0, t=t, eps=eps)["loss"]
    torch.testing.assert_close(got, expected, rtol=1e-12, atol=0)


def test_ddpm_forward_maps_images_to_minus_one_one() -> None:
    """forward() = losses() on 2 x - 1, with the same random draws (t, then eps)."""
    model = build("ddpm", IMAGE, arch="mlp", timesteps=50)
    randomize(model)
    x = IMAGE.x_train[:8].double()
    torch.manual_seed(5)
    got = model({"x": x})["loss"]
    torch.manual_seed(5)
    t = torch.randint(0, 50, (8,))
    eps = torch.randn_like(x)
    expected = model.losses(2 * x - 1, t=t, eps=eps)["loss"]
    torch.testing.assert_close(got, expected, rtol=1e-12, atol=0)


def test_hybrid_loss_adds_the_weighted_bound_term_with_a_stopped_mean() -> None:
    model = build("iddpm", timesteps=100)
    randomize(model)
    g = torch.Generator().manual_seed(3)
    x0 = torch.randn(16, 2, generator=g, dtype=torch.float64)
    t = torch.randint(0, 100, (16,), generator=g)
    eps = torch.randn(16, 2, generator=g, dtype=torch.float64)
    parts = model.losses(x0, t=t, eps=eps)
    torch.testing.assert_close(parts["loss"], parts["mse"] + 0.001 * parts["vlb"])
    # L_vlb trains the variance only: its gradient on the mean half of the output layer is zero
    head = model.net.net.head
    model.zero_grad()
    parts["vlb"].backward()
    assert head.weight.grad[:2].abs().max() == 0 and head.weight.grad[2:].abs().max() > 0


@pytest.mark.parametrize("name", ["ddpm", "iddpm"])
def test_predictions_give_the_same_posterior_mean(name: str, monkeypatch) -> None:
    """An eps-, x0- or v-network whose output is the truth for (x0, eps) gives mu~(x0, x_t)."""
    g = torch.Generator().manual_seed(4)
    x0 = torch.randn(8, 2, generator=g, dtype=torch.float64)
    eps = torch.randn(8, 2, generator=g, dtype=torch.float64)
    t = torch.randint(0, 100, (8,), generator=g)
    u = torch.rand(8, 2, generator=g, dtype=torch.float64) * 2 - 1  # a learned-variance output
    means = []
    for prediction in ("eps", "x0", "v"):
        model = build(name, prediction=prediction, timesteps=100)
        s = model.schedule
        xt = s.q_sample(x0, t, eps)
        truth = {"eps": eps, "x0": x0, "v": s.v_target(x0, t, eps)}[prediction]
        out = truth if name == "ddpm" else torch.cat([truth, u], dim=1)
        monkeypatch.setattr(model.net, "forward", lambda x, tt, y=None, out=out: out)
        mean, logvar = model.p_mean_logvar(xt, t)
        torch.testing.assert_close(mean, s.q_posterior(x0, xt, t)[0], rtol=1e-9, atol=1e-9)
        means.append(mean)
    assert not torch.allclose(means[0], xt)  # the mean is not trivially x_t


# ----------------------------------------------------------------------------- guidance


def test_classifier_free_guidance_weights() -> None:
    model = build("ddpm-cfg", IMAGE, arch="mlp", timesteps=50)
    randomize(model)
    g = torch.Generator().manual_seed(6)
    xt = torch.randn(6, 1, 8, 8, generator=g, dtype=torch.float64)
    t = torch.randint(0, 50, (6,), generator=g)
    y = torch.arange(6) % 10
    cond = model.net(xt, t, y)
    uncond = model.net(xt, t, torch.full_like(y, -1))
    assert not torch.allclose(cond, uncond)  # the label matters
    torch.testing.assert_close(model.eps_logvar(xt, t, y, 0.0)[0], cond)
    torch.testing.assert_close(model.eps_logvar(xt, t, y, -1.0)[0], uncond)
    torch.testing.assert_close(model.eps_logvar(xt, t, y, 2.5)[0], 3.5 * cond - 2.5 * uncond)


def test_label_dropout_rate() -> None:
    labels = torch.arange(20000) % 10
    out = drop_labels(labels, 0.2, torch.Generator().manual_seed(0))
    dropped = (out == -1).double()
    se = math.sqrt(0.2 * 0.8 / len(labels))
    assert abs(float(dropped.mean()) - 0.2) < 4 * se
    assert torch.equal(out[out != -1], labels[out != -1])


def test_guidance_and_labels_need_a_conditional_model() -> None:
    model = build("ddpm", timesteps=10)
    with pytest.raises(GenlabError, match="conditional"):
        model.sample(2, guidance=1.0)
    with pytest.raises(GenlabError, match="unconditional"):
        model.sample(2, labels=torch.tensor([0, 1]))


# ----------------------------------------------------------------------------- samplers

# (model, config, sampler, steps, network calls expected: T = 20, L = 3 noise levels)
SAMPLER_CASES = [
    ("ddpm", {}, "ancestral", None, 20),
    ("ddpm", {}, "ancestral", 5, 5),  # respaced: DDIM with eta = 1
    ("ddpm", {}, "ddim", 7, 7),
    ("ddpm", {}, "ddim", None, 20),  # the default 50 steps, capped at T
    ("ddpm", {}, "dpm-solver++", 6, 6),
    ("ddpm", {}, "sde-dpm-solver++", 6, 6),
    ("iddpm", {}, "ancestral", None, 20),
    ("iddpm", {}, "dpm-solver++", 4, 4),
    ("iddpm", {}, "sde-dpm-solver++", None, 20),  # the default 20 steps, capped at T
    ("ddpm-cfg", {}, "ddim", 5, 5),  # guided: one batched call per step
    ("ncsn", {"num_scales": 3}, "langevin", 4, 3 * 4 + 1),  # + the final denoising step
    ("score-sde", {}, "euler-maruyama", 8, 8),
    ("score-sde", {"sde": "ve"}, "pc", 5, 10),  # predictor + one corrector step
    ("score-sde", {"sde": "subvp"}, "ode", 6, 12),  # Heun: 2 calls per step
    # model.sample_steps is the K of the config's sampler only: another sampler keeps its default
    ("ddpm", {"sampler": "dpm-solver++", "sample_steps": 4}, None, None, 4),
    ("ddpm", {"sampler": "dpm-solver++", "sample_steps": 4}, "ancestral", None, 20),
]


@pytest.mark.parametrize("name,cfg,sampler,steps,calls", SAMPLER_CASES)
def test_every_sampler_runs_with_its_step_count(name, cfg, sampler, steps, calls) -> None:
    fields = {"timesteps": 20} if "ddpm" in name else {}
    model = build(name, IMAGE, **fields, **cfg).float()
    # a small random output layer: an all-zero score would make pc's step size 0 / 0
    with torch.no_grad():
        out = model.net.net.out[-1].weight
        out.copy_(0.01 * torch.randn(out.shape, generator=torch.Generator().manual_seed(0)))
    count = [0]
    model.net.register_forward_hook(lambda *a: count.__setitem__(0, count[0] + 1))
    x = model.sample(6, generator=torch.Generator().manual_seed(0), sampler=sampler, steps=steps)
    assert x.shape == (6, 1, 8, 8) and torch.isfinite(x).all()
    assert x.min() >= 0 and x.max() <= 1
    assert count[0] == calls


def test_ode_sampler_default_is_adaptive_and_bad_names_fail() -> None:
    model = build("score-sde", sampler="ode")
    x = model.sample(5, generator=torch.Generator().manual_seed(0))
    assert x.shape == (5, 2) and torch.isfinite(x).all()
    with pytest.raises(GenlabError, match="unknown sampler 'bogus'"):
        model.sample(2, sampler="bogus")
    with pytest.raises(GenlabError, match="eta"):
        model.sample(2, sampler="pc", eta=1.0)
    with pytest.raises(GenlabError, match="steps"):
        build("ddpm", timesteps=10).sample(2, sampler="ddim", steps=11)


# ----------------------------------------------------------------------------- likelihoods


class ExactPriorVPSDE(VPSDE):
    """VP SDE whose prior is the exact p_T of N(mu, cov) data, so the ODE identity is exact."""

    def __init__(self, mu: Tensor, cov: Tensor) -> None:
        super().__init__()
        self.mu, self.cov = mu, cov

    def prior_logp(self, z: Tensor) -> Tensor:
        return gaussian_logp(z, self.mu, self.cov, VPSDE(), self.T)


def test_ode_log_likelihood_of_gaussian_data_is_exact_in_2d() -> None:
    mu = torch.tensor([0.8, -0.5], dtype=torch.float64)
    cov = random_cov(2, 0)
    sde = ExactPriorVPSDE(mu, cov)
    x = torch.randn(10, 2, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    got = ode_log_likelihood(gaussian_score(mu, cov, sde), sde, x, rtol=1e-7, atol=1e-7)
    # solver tolerance 1e-7 on a state of size ~1 over one unit of time: 1e-4 is generous
    torch.testing.assert_close(got, gaussian_logp(x, mu, cov, sde, 1e-5), rtol=0, atol=1e-4)


@pytest.mark.parametrize("probe", ["rademacher", "gaussian"])
def test_ode_log_likelihood_with_hutchinson_is_unbiased_in_16d(probe: str) -> None:
    d, b = 16, 48
    mu = torch.linspace(-1, 1, d, dtype=torch.float64)
    cov = random_cov(d, 1)  # non-diagonal: Rademacher probes are not exact here
    sde = ExactPriorVPSDE(mu, cov)
    x = torch.randn(b, d, generator=torch.Generator().manual_seed(2), dtype=torch.float64) + mu
    exact = gaussian_logp(x, mu, cov, sde, 1e-5)
    score = gaussian_score(mu, cov, sde)
    g = torch.Generator().manual_seed(3)
    est = ode_log_likelihood(score, sde, x, probe=probe, generator=g, rtol=1e-6, atol=1e-6)
    err = est - exact
    assert err.std() > 1e-3  # a real estimate, not an exact divergence in disguise
    # unbiased: the mean error is within 4 standard errors of 0 (+ the solver's 1e-3)
    assert abs(float(err.mean())) < 4 * float(err.std()) / math.sqrt(b) + 1e-3
    exact_div = ode_log_likelihood(score, sde, x[:4], divergence="exact", rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(exact_div, exact[:4], rtol=0, atol=1e-3)


def test_score_model_log_prob_is_the_gaussian_density_in_data_space(monkeypatch) -> None:
    """log_prob on [0, 1] data = log N(2x - 1) at t_eps + D log 2, under torch.no_grad too."""
    spec = DataSpec("tiny2x2", (1, 2, 2), (0.0, 1.0))
    model = models.build("score-sde", spec, arch="mlp", hidden=(8,)).double()
    mu = torch.tensor([0.2, -0.1, 0.0, 0.3], dtype=torch.float64)
    cov = 0.05 * random_cov(4, 2)
    model.sde = ExactPriorVPSDE(mu, cov)  # the model's VP SDE (default betas), exact p_T
    exact_score = gaussian_score(mu, cov, model.sde)
    monkeypatch.setattr(model, "score", lambda x, t, labels=None, guidance=0.0: exact_score(x, t))
    g = torch.Generator().manual_seed(4)
    x_unit = mu + torch.randn(6, 4, generator=g, dtype=torch.float64) @ torch.linalg.cholesky(cov).T
    x = ((x_unit + 1) / 2).reshape(6, 1, 2, 2)
    with torch.no_grad():
        got = model.log_prob(x)
    expected = gaussian_logp(x_unit, mu, cov, model.sde, model.cfg.t_eps) + 4 * math.log(2)
    # the solver's default tolerances (1e-5) bound the error well below 1e-3
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-3)


def test_ddpm_bound_is_tight_for_the_exact_model_of_standard_normal_data(monkeypatch) -> None:
    """Data N(0, I): q's reverse kernel is exactly N(sqrt(alpha_t) x_t, beta_t I), which is the
    model with eps(x_t) = sqrt(1 - alpha_bar_t) x_t and variance beta. Then p = q jointly and the
    bound's expectation is -log N(x; 0, I): equal within 4 standard errors."""
    model = build("ddpm", timesteps=200, variance="beta")
    s = model.schedule

    def exact_eps(x: Tensor, t: Tensor, labels=None) -> Tensor:
        return s.sqrt_one_minus_alpha_bar[t].to(x.dtype)[:, None] * x

    monkeypatch.setattr(model.net, "forward", exact_eps)
    x = torch.randn(400, 2, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    bound = model.nll_bound(x, generator=torch.Generator().manual_seed(6))
    gap = bound + log_normal(x, torch.zeros_like(x), 0.0)
    assert torch.isfinite(bound).all()
    assert abs(float(gap.mean())) < 4 * float(gap.std()) / math.sqrt(len(x))
    # a wrong variance makes the same bound strictly looser, by more than its noise
    monkeypatch.setattr(model.cfg, "variance", "beta_tilde")
    looser = model.nll_bound(x, generator=torch.Generator().manual_seed(6))
    diff = looser - bound
    assert float(diff.mean()) > 4 * float(diff.std()) / math.sqrt(len(x))


def test_nll_metric_for_ddpm_and_score_models() -> None:
    """The discrete DDPM bound is reported as is; the ODE density gets the D log L offset."""
    ddpm = build("ddpm", IMAGE, timesteps=10).float()
    report = evaluate(ddpm, IMAGE, ["nll"], n=8, k=3)
    assert report.values["nll"] > 0 and "bpd" in report.values
    assert "discrete likelihood" in report.notes["nll"]
    # the note names the DDPM bound, not an IWAE bound with an unused k
    assert report.notes["nll"].startswith("DDPM variational bound")
    assert "iwae_k" not in report.values
    deq = Data(
        IMAGE.spec, IMAGE.x_train, IMAGE.y_train, IMAGE.x_test, IMAGE.y_test, dequantize=True
    )
    sde = build("score-sde", IMAGE).float()
    report = evaluate(sde, deq, ["nll"], n=4)
    assert "dequantised" in report.notes["nll"] and "bpd" in report.values
    assert report.notes["nll"].startswith("probability-flow ODE")
    # untrained, the score is 0 and the flow is the linear VP drift: a finite density
    assert math.isfinite(report.values["bpd"])


# ----------------------------------------------------------------------------- CLI


def genlab(*args: object) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "genlab", *map(str, args)],
        capture_output=True,
        text=True,
        env=SUBPROCESS_ENV,
        timeout=300,
    )


def test_cli_trains_and_samples_ddpm_with_every_sampler_option(tmp_path: Path) -> None:
    run = tmp_path / "ddpm-moons"
    steps = ["train.steps=10", "train.batch_size=32", "train.sample_every=10"]
    model = ["model.hidden=[16]", "model.timesteps=50", "data.limit=256"]
    proc = genlab("train", "ddpm", "--data", "moons", "--out", run, *steps, *model, "--no-progress")
    assert proc.returncode == 0, proc.stderr
    out = tmp_path / "x.npz"
    proc = genlab("sample", run, "-n", 20, "--sampler", "ddim", "--steps", 10, "--out", out)
    assert proc.returncode == 0, proc.stderr
    x = np.load(out)["x"]
    assert x.shape == (20, 2) and np.isfinite(x).all()
    for bad, word in ((["--sampler", "bogus"], "sampler"), (["--guidance", "1"], "conditional")):
        proc = genlab("sample", run, *bad, "--out", tmp_path / "y.npz")
        assert proc.returncode == 2 and "Traceback" not in proc.stderr
        lines = [line for line in proc.stderr.splitlines() if line.strip()]
        assert len(lines) == 1 and word in lines[0], proc.stderr
