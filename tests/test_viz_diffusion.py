"""The diffusion figure and its chains: forward paths, recorded reverse chains, the score field."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from PIL import Image

from genlab.config import resolve
from genlab.data import load_config
from genlab.diffusion import NoiseSchedule
from genlab.errors import GenlabError
from genlab.samplers import ancestral, ddim
from genlab.train.run import build_model
from genlab.viz.diffusion import (
    diffusion_figure,
    forward_trajectory,
    noise_level_step,
    reverse_trajectory,
    score_field,
)

T = 12


def tiny_ddpm(*overrides: str, seed: int = 0):
    """An untrained MLP DDPM on moons with small T, its zero output layer randomised so that
    eps_theta is not identically 0 (the chains and the score then depend on the network)."""
    cfg = resolve(
        "ddpm", "moons", None, ["model.hidden=[16,16]", f"model.timesteps={T}", *overrides]
    )
    data = load_config(cfg.data)
    torch.manual_seed(seed)
    model = build_model(cfg, data.spec).double()
    with torch.no_grad():
        model.net.net.head.weight.normal_(0, 0.3)
    return model.eval(), data


def test_forward_paths_start_at_the_data_and_have_the_closed_form_marginal() -> None:
    schedule = NoiseSchedule.from_name("linear", T)
    x0 = torch.tensor([[1.5, -0.5]], dtype=torch.float64).expand(20000, 2)
    g = torch.Generator().manual_seed(0)
    states = forward_trajectory(schedule, x0, generator=g)
    assert states.shape == (T + 1, 20000, 2)
    assert torch.equal(states[0], x0)
    # the chain's x_t ~ q(x_t | x_0) = N(sqrt(alpha_bar_t) x_0, (1 - alpha_bar_t) I) (Ho eq. (4)):
    # mean and variance within 5 standard errors of the 20,000 chains
    for t in (1, T // 2, T):
        ab = float(schedule.alpha_bar[t - 1])
        xt = states[t]
        se_mean = ((1 - ab) / len(xt)) ** 0.5
        assert torch.allclose(xt.mean(0), ab**0.5 * x0[0], atol=5 * se_mean)
        se_var = (1 - ab) * (2 / (len(xt) - 1)) ** 0.5  # Gaussian: sd(s^2) = var sqrt(2/(n-1))
        assert torch.allclose(xt.var(0), torch.full((2,), 1 - ab, dtype=xt.dtype), atol=5 * se_var)


@pytest.mark.parametrize("overrides", [(), ("model.loss=hybrid", "model.schedule=cosine")])
def test_recorded_reverse_chain_ends_at_the_models_sample(overrides: tuple[str, ...]) -> None:
    model, _ = tiny_ddpm(*overrides)
    states, times = reverse_trajectory(model, 64, generator=torch.Generator().manual_seed(3))
    assert states.shape == (T + 1, 64, 2) and times == list(range(T, -1, -1))
    x = model.sample(64, generator=torch.Generator().manual_seed(3), sampler="ancestral")
    assert torch.equal(states[-1], x)  # the same calls and draws as DDPM.sample
    assert not torch.equal(states[-2], states[-1])

    states, times = reverse_trajectory(
        model, 64, sampler="ddim", steps=5, generator=torch.Generator().manual_seed(3)
    )
    x = model.sample(64, generator=torch.Generator().manual_seed(3), sampler="ddim", steps=5)
    assert states.shape == (6, 64, 2) and times[0] == T and times[-1] == 0
    assert torch.equal(states[-1], x)

    # ancestral on fewer steps than T: DDIM with eta = 1, as in DDPM.sample
    states, _ = reverse_trajectory(model, 64, steps=4, generator=torch.Generator().manual_seed(3))
    x = model.sample(64, generator=torch.Generator().manual_seed(3), steps=4)
    assert states.shape == (5, 64, 2) and torch.equal(states[-1], x)


def test_sampler_trajectory_argument_records_every_state() -> None:
    schedule = NoiseSchedule.from_name("linear", T)

    def eps_fn(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return 0.1 * x  # the exact eps of N(0, I) data is x sigma_t; any function will do here

    x_init = torch.randn(10, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    for fn, kw, k in ((ancestral, {}, T), (ddim, {"steps": 4, "eta": 1.0}, 4)):
        states: list[torch.Tensor] = []
        g = torch.Generator().manual_seed(2)
        out = fn(eps_fn, schedule, (10, 2), x_init=x_init, generator=g, trajectory=states, **kw)
        again = fn(eps_fn, schedule, (10, 2), x_init=x_init, generator=g.manual_seed(2), **kw)
        assert len(states) == k + 1 and states[0] is x_init
        assert torch.equal(states[-1], out) and torch.equal(out, again)  # recording changes nothing


def test_score_field_is_minus_eps_over_sigma() -> None:
    model, _ = tiny_ddpm()
    x = torch.randn(7, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    t = noise_level_step(model.schedule, 0.5)
    sigma = float(model.schedule.sqrt_one_minus_alpha_bar[t - 1])
    assert abs(sigma - 0.5) < 0.1
    eps = model.net(x, torch.full((7,), t - 1))
    assert torch.allclose(score_field(model, x, t), -eps / sigma)


def test_figure_is_written(tmp_path: Path) -> None:
    model, data = tiny_ddpm()
    ref = data.split("test")["x"][:300]
    out = diffusion_figure(model, ref, tmp_path / "d.png", n=200, title="tiny")
    with Image.open(out) as img:
        assert img.format == "PNG" and img.width > 600 and img.height > 600
    ddim_out = diffusion_figure(model, ref, tmp_path / "e.png", n=50, sampler="ddim", steps=4)
    assert ddim_out.stat().st_size > 10_000


def test_figure_refuses_other_models(tmp_path: Path) -> None:
    cfg = resolve("vae", "moons", None, ["model.latent_dim=2"])
    data = load_config(cfg.data)
    vae = build_model(cfg, data.spec)
    with pytest.raises(GenlabError, match="needs a DDPM"):
        diffusion_figure(vae, data.split("test")["x"][:10], tmp_path / "x.png")
