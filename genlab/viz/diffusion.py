"""The picture of a 2-D diffusion model: forward and reverse chains and the learned score field.

One PNG, three rows, drawn like the DDPM and score-model figures of [001] (Ayan Das 2021, Kreis et
al. 2022, Song 2021):
  (a) the forward chain q(x_t | x_{t-1}) = N(sqrt(1 - beta_t) x_{t-1}, beta_t I) (Ho et al.
      arXiv:2006.11239 eq. (2)): a few data points diffused step by step, drawn as thin paths
      over the data, then the marginals q(x_t) = E_x0 N(sqrt(alpha_bar_t) x_0, (1 - alpha_bar_t) I)
      (eq. (4)) at a few t;
  (b) the learned reverse chain p_theta(x_{t-1} | x_t) run by the model's sampler (ancestral:
      Ho et al. Algorithm 2, or DDIM), recorded with the samplers' `trajectory` argument: a few
      paths from x_T ~ N(0, I) to x_0, then the chain's marginals at the same t as in (a);
  (c) the learned score s_theta(x, t) = -eps_theta(x, t) / sigma_t, sigma_t = sqrt(1 - alpha_bar_t)
      ([001] "eps = -sigma_t * score"), as arrows on a grid over samples of q(x_t), at a few
      noise levels (directions exact, lengths tanh(sigma_t |s|) = tanh(|eps_theta|) so that the
      arrows near the data, where the score vanishes, read next to the large ones far from it).
Time t is the paper's, 0..T (x_0 is data); the network's index is t - 1 (genlab.diffusion).
Everything is drawn in the model's space (the network's input), which is data space for the
unbounded 2-D toys.
"""

from __future__ import annotations

import math
from pathlib import Path

import torch
from torch import Tensor

from genlab.diffusion import NoiseSchedule
from genlab.errors import GenlabError
from genlab.models.adversarial import to_unit_range
from genlab.models.base import GenerativeModel
from genlab.models.ddpm import DDPM
from genlab.samplers import ancestral, ddim
from genlab.viz.grids import pyplot, save_figure

MARGINAL_SIGMAS = (0.3, 0.7)  # rows (a), (b): marginals at these sigma_t, then at t = T
SCORE_SIGMAS = (0.1, 0.3, 0.6, 0.9)  # row (c)
GRID = 21  # arrows per side in (c)


def noise_level_step(schedule: NoiseSchedule, sigma: float) -> int:
    """The step t in 1..T whose sigma_t = sqrt(1 - alpha_bar_t) is nearest to `sigma`."""
    return int(torch.argmin((schedule.sqrt_one_minus_alpha_bar - sigma).abs())) + 1


def forward_trajectory(
    schedule: NoiseSchedule, x0: Tensor, *, generator: torch.Generator | None = None
) -> Tensor:
    """States x_0, x_1, ..., x_T of the forward chain from x0 (n, D): a (T + 1, n, D) tensor.

    x_t = sqrt(1 - beta_t) x_{t-1} + sqrt(beta_t) eps, eps ~ N(0, I) (Ho et al. eq. (2); [001]
    "forward process"): one chain per point, so consecutive states are a path whose marginal at
    every t is q(x_t | x_0) = N(sqrt(alpha_bar_t) x_0, (1 - alpha_bar_t) I) (eq. (4)).
    """
    states = [x0]
    x = x0
    for i in range(schedule.T):  # index i is the paper's t = i + 1
        beta = float(schedule.betas[i])
        eps = torch.randn(x.shape, generator=generator, dtype=x.dtype, device=x.device)
        x = math.sqrt(1.0 - beta) * x + math.sqrt(beta) * eps
        states.append(x)
    return torch.stack(states)


def _require_ddpm(model: GenerativeModel) -> DDPM:
    if not isinstance(model, DDPM):
        raise GenlabError(f"the diffusion figure needs a DDPM; got {type(model).__name__}")
    if model.cfg.conditional:
        raise GenlabError("the diffusion figure draws unconditional DDPMs only")
    return model


@torch.no_grad()
def reverse_trajectory(
    model: GenerativeModel,
    n: int,
    *,
    sampler: str = "ancestral",
    steps: int | None = None,
    generator: torch.Generator | None = None,
) -> tuple[Tensor, list[int]]:
    """The reverse chain of n samples in model space: states (K + 1, n, *shape) and their t's.

    The choice of DDPM.sample, recorded with the samplers' `trajectory` argument: "ancestral"
    runs Ho et al. Algorithm 2 through all T steps (K = T, times T, ..., 0) with the model's
    variance, or DDIM with eta = 1 when `steps` (or model.sample_steps) < T; "ddim" runs Song et
    al.'s DDIM, eta = 0, on `steps` (default 50) indices (times tau_1 + 1, ..., tau_S + 1, 0). So
    the last state is DDPM.sample's output (in model space) for the same generator state.
    """
    model = _require_ddpm(model)
    T = model.schedule.T
    p = next(model.parameters())
    states: list[Tensor] = []
    opts = dict(
        generator=generator,
        dtype=p.dtype,
        device=p.device,
        clip=(-1.0, 1.0) if model.cfg.clip and model.spec.value_range is not None else None,
        trajectory=states,
    )
    shape = (n, *model.spec.shape)
    steps = steps or model.cfg.sample_steps or None

    def eps_fn(xt: Tensor, t: Tensor) -> Tensor:
        return model.eps_logvar(xt, t)[0]

    if sampler == "ancestral" and steps in (None, T):
        if model.learned_variance:
            ancestral(model.eps_logvar, model.schedule, shape, variance="learned", **opts)
        else:
            ancestral(eps_fn, model.schedule, shape, variance=model.cfg.variance, **opts)
        times = list(range(T, -1, -1))
    elif sampler in ("ancestral", "ddim"):
        steps = steps or 50
        ddim(eps_fn, model.schedule, shape, steps=steps, eta=float(sampler == "ancestral"), **opts)
        times = [s + 1 for s in model.schedule.timesteps(steps).tolist()] + [0]
    else:
        raise GenlabError(f"the diffusion figure runs ancestral or ddim; got {sampler!r}")
    return torch.stack(states), times


@torch.no_grad()
def score_field(model: GenerativeModel, x: Tensor, t: int) -> Tensor:
    """s_theta(x, t) = -eps_theta(x, t) / sqrt(1 - alpha_bar_t) at the paper's step t in 1..T.

    [001] "eps = -sigma_t * score"; Song et al. arXiv:2011.13456 (the VP-SDE's score).
    """
    model = _require_ddpm(model)
    index = torch.full((x.shape[0],), t - 1, dtype=torch.long, device=x.device)
    eps = model.eps_logvar(x, index)[0]
    return -eps / float(model.schedule.sqrt_one_minus_alpha_bar[t - 1])


def score_arrows(s: Tensor, sigma: float) -> Tensor:
    """Arrow vectors in the direction of s with length tanh(sigma_t |s|) = tanh(|eps_theta|):
    |eps| is about 1 one sigma_t away from the data, so the arrows near the data (where the score
    vanishes) read next to those far from it (where |s| ~ |x| / sigma_t^2), and saturate there."""
    norm = s.norm(dim=1, keepdim=True)
    return s / norm.clamp_min(1e-12) * torch.tanh(sigma * norm)


def _limits(reference: Tensor) -> tuple[tuple[float, float], tuple[float, float]]:
    """Axis limits that hold the data and the N(0, I) prior (+-3), with a margin."""
    lo = torch.minimum(reference.min(0).values, torch.full((2,), -3.0)).tolist()
    hi = torch.maximum(reference.max(0).values, torch.full((2,), 3.0)).tolist()
    pad = [0.05 * (h - lo_) for lo_, h in zip(lo, hi)]
    return (lo[0] - pad[0], hi[0] + pad[0]), (lo[1] - pad[1], hi[1] + pad[1])


@torch.no_grad()
def diffusion_figure(
    model: GenerativeModel,
    reference: Tensor,
    path: str | Path,
    *,
    n: int = 1000,
    paths: int = 6,
    sampler: str = "ancestral",
    steps: int | None = None,
    generator: torch.Generator | None = None,
    title: str = "",
) -> Path:
    """Forward chains, reverse chains and the score field of a 2-D DDPM in one PNG (module doc).

    reference: data points (N, 2) in data space (the test split); n: samples for the marginals of
    the reverse chain and the noised data (at most len(reference) for the latter); paths: chains
    drawn as paths in (a) and (b); sampler, steps: the reverse chain (reverse_trajectory);
    generator: every random draw (None: a generator seeded with 0, so the figure is repeatable).
    """
    model = _require_ddpm(model)
    if tuple(model.spec.shape) != (2,):
        raise GenlabError(f"the diffusion figure is for 2-D data; {model.spec.name} is not")
    device = model.device
    g = generator or torch.Generator(device).manual_seed(0)
    schedule, T = model.schedule, model.schedule.T
    dtype = next(model.parameters()).dtype
    data = to_unit_range(reference.to(device=device, dtype=dtype), model.spec)[:n]
    cpu = data.float().cpu()
    xlim, ylim = _limits(cpu)
    pick = torch.randperm(len(data), generator=torch.Generator().manual_seed(0))[:paths]
    fwd = forward_trajectory(schedule, data[pick.to(device)], generator=g).float().cpu()
    rev, times = reverse_trajectory(model, n, sampler=sampler, steps=steps, generator=g)
    rev = rev.float().cpu()
    marginal_t = [noise_level_step(schedule, s) for s in MARGINAL_SIGMAS] + [T]
    score_t = [noise_level_step(schedule, s) for s in SCORE_SIGMAS]

    plt = pyplot()
    cols = max(1 + len(marginal_t), len(score_t))
    fig, axes = plt.subplots(3, cols, figsize=(3.4 * cols, 3.4 * 3), dpi=90, squeeze=False)
    colors = plt.get_cmap("tab10")

    def frame(ax, text: str) -> None:
        ax.set_xlim(*xlim)
        ax.set_ylim(*ylim)
        ax.set_aspect("equal")
        ax.set_title(text, fontsize=8)
        ax.tick_params(labelsize=6)

    def data_scatter(ax, pts: Tensor, color: str = "0.75") -> None:
        ax.scatter(pts[:, 0], pts[:, 1], s=1.5, c=color, linewidths=0)

    def sigma_of(t: int) -> float:
        return float(schedule.sqrt_one_minus_alpha_bar[t - 1])

    # (a) forward: paths over the data, then q(x_t) at a few t
    ax = axes[0, 0]
    data_scatter(ax, cpu)
    for k in range(fwd.shape[1]):
        ax.plot(fwd[:, k, 0], fwd[:, k, 1], lw=0.6, alpha=0.8, color=colors(k % 10))
        ax.scatter(fwd[0, k, 0], fwd[0, k, 1], s=14, color=colors(k % 10), zorder=3)
    frame(ax, f"(a) forward chain x_0 -> x_{T}\nq(x_t|x_t-1) = N(sqrt(1-beta_t) x_t-1, beta_t I)")
    for j, t in enumerate(marginal_t, start=1):
        ax = axes[0, j]
        index = torch.full((len(data),), t - 1, dtype=torch.long, device=device)
        xt = schedule.q_sample(data, index, generator=g).float().cpu()
        data_scatter(ax, cpu, "0.88")
        ax.scatter(xt[:, 0], xt[:, 1], s=1.5, c="tab:orange", linewidths=0)
        frame(
            ax,
            f"q(x_t|x_0) = N(sqrt(abar_t) x_0, (1-abar_t) I)\nt = {t}, sigma_t = {sigma_of(t):.2f}",
        )

    # (b) reverse: paths from x_T to x_0 over the data, then the chain's marginals
    ax = axes[1, 0]
    data_scatter(ax, cpu)
    for k in range(min(paths, n)):
        c = colors(k % 10)
        ax.plot(rev[:, k, 0], rev[:, k, 1], lw=0.6, alpha=0.8, color=c)
        ax.scatter(rev[0, k, 0], rev[0, k, 1], s=14, facecolors="none", edgecolors=[c], zorder=3)
        ax.scatter(rev[-1, k, 0], rev[-1, k, 1], s=14, color=c, zorder=3)
    n_steps = len(times) - 1
    how = (
        "Ho et al. Alg. 2" if n_steps == T and sampler == "ancestral" else f"DDIM, {n_steps} steps"
    )
    frame(
        ax, f"(b) reverse chain x_{T} -> x_0 ({how})\np_theta(x_t-1|x_t) = N(mu_theta, sigma_t^2 I)"
    )
    for j, t in enumerate(marginal_t, start=1):
        ax = axes[1, j]
        k = min(range(len(times)), key=lambda i: abs(times[i] - t))  # DDIM: the nearest state
        data_scatter(ax, cpu, "0.88")
        ax.scatter(rev[k, :, 0], rev[k, :, 1], s=1.5, c="tab:blue", linewidths=0)
        frame(ax, f"p_theta(x_t), reverse chain\nt = {times[k]}")

    # (c) the learned score on a grid over q(x_t)
    gx, gy = torch.meshgrid(
        torch.linspace(*xlim, GRID, dtype=dtype),
        torch.linspace(*ylim, GRID, dtype=dtype),
        indexing="xy",
    )
    grid = torch.stack([gx.flatten(), gy.flatten()], dim=1).to(device)
    cell = 0.9 * min(xlim[1] - xlim[0], ylim[1] - ylim[0]) / (GRID - 1)  # longest arrow
    for j, t in enumerate(score_t):
        ax = axes[2, j]
        index = torch.full((len(data),), t - 1, dtype=torch.long, device=device)
        xt = schedule.q_sample(data, index, generator=g).float().cpu()
        s = score_field(model, grid, t).float().cpu()
        data_scatter(ax, xt, "0.75")
        gc = grid.float().cpu()
        u = score_arrows(s, sigma_of(t)) * cell
        ax.quiver(
            gc[:, 0],
            gc[:, 1],
            u[:, 0],
            u[:, 1],
            color="tab:red",
            width=0.004,
            angles="xy",
            scale_units="xy",
            scale=1.0,
        )
        frame(
            ax,
            f"(c) s_theta(x,t) = -eps_theta(x,t) / sigma_t\nt = {t}, sigma_t = {sigma_of(t):.2f}",
        )
    for ax in axes.flat:  # panels a row does not use
        if not ax.has_data():
            ax.axis("off")
    if title:
        fig.suptitle(title)
    return save_figure(fig, path)
