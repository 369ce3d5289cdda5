"""The picture that explains each family, as JSON-able arrays on a grid over the data's box.

One snapshot of a run holds real and generated points, the toy metrics and one picture, picked by
what the model can do (capabilities, not model names):
- "score" (ddpm, iddpm, ncsn, score-sde: a noise-conditional network and samplers): the learned
  score s_theta(x, sigma) as arrows on a grid at a chosen noise level, and a few sample
  trajectories of the chosen sampler (reverse SDE, probability-flow ODE, PC, annealed Langevin,
  ancestral / DDIM / DPM-Solver++). [001]: "the score field of a mixture of two Gaussians", "eps =
  -sigma_t * score", Langevin dynamics x_{i+1} = x_i + e grad log p(x_i) + sqrt(2 e) z_i
  converging to the data. The DDPM field and chains come from genlab.viz.diffusion
  (score_field, reverse_trajectory); the other samplers are run through model.sample itself,
  with the network's inputs recorded, so the paths are exactly the chain the CLI samples.
- "critic" (GANs: a critic D and a generator G): the decision surface D(x) on the grid and G's
  image of a latent grid (GAN Lab style) [000, 001]: min_G max_D E log D(x) + E log(1 - D(G(z)));
  at the optimum D*(x) = p_data(x) / (p_data(x) + p_g(x)).
- "density" (exact likelihood: realnvp, glow, made, gmm, kde, ppca, fa): p(x) = exp(log_prob(x))
  on the grid; for a flow log p(x) = log N(f(x); 0, I) + log |det df/dx| [000, 003].
- "latent" (encode / decode: vae, ae family, aae, bigan, hvae): the latent space (the codes of the
  real points shown, first two coordinates) and the decoder's image of a latent grid [000, 001].
Everything is cheap (a few hundred points, a 32 x 32 grid, few sampler steps), so a page can ask
for several snapshots a second. Non-finite numbers become null (JSON has no NaN).
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np
import torch
from torch import Tensor

from genlab.data.toys import MIXTURES
from genlab.math.divergences import rbf_mmd2
from genlab.metrics.toy import mode_metrics
from genlab.models.adversarial import from_unit_range, to_unit_range
from genlab.models.base import Encoder, ExactLikelihood, GenerativeModel
from genlab.viz.diffusion import reverse_trajectory, score_arrows, score_field

GRID = 32  # heat-map cells per side
ARROWS = 20  # score arrows per side
PATHS = 8  # trajectories drawn
PATH_STATES = 60  # states kept per trajectory (evenly, first and last included)
LATENT_LINES = 9  # grid lines per latent direction
LINE_POINTS = 33  # points per grid line

KINDS = ("score", "critic", "density", "latent", "samples")

# Steps of each sampler in a snapshot: few, so a picture takes a fraction of a second.
SNAPSHOT_STEPS = {
    "ancestral": 50,  # respaced ancestral chain (DDIM, eta = 1) when below T
    "ddim": 20,
    "dpm-solver++": 10,
    "sde-dpm-solver++": 20,
    "euler-maruyama": 50,
    "pc": 25,
    "ode": 20,  # fixed-step Heun
    "langevin": 5,  # per noise level
}


# ----------------------------------------------------------------------------- capabilities
def is_ddpm(model: GenerativeModel) -> bool:
    """A discrete-time noise predictor with a schedule (DDPM, iDDPM)."""
    return hasattr(model, "schedule") and hasattr(model, "eps_logvar")


def has_score(model: GenerativeModel) -> bool:
    """A noise-conditional score network s(x, sigma) or s(x, t) with its samplers."""
    if not hasattr(model, "net") or not getattr(model, "samplers", None):
        return False
    return is_ddpm(model) or (hasattr(model, "score") and _noise_levels(model) is not None)


def has_critic(model: GenerativeModel) -> bool:
    """A critic on data points and a generator of latents (the GAN family)."""
    return all(hasattr(model, a) for a in ("judge", "generate", "critic", "generator"))


def picture_kind(model: GenerativeModel) -> str:
    """The family picture of `model`, by capability (score, critic, density, latent, samples)."""
    if has_score(model):
        return "score"
    if has_critic(model):
        return "critic"
    if isinstance(model, ExactLikelihood):
        return "density"
    if isinstance(model, Encoder):
        return "latent"
    return "samples"


def samplers_of(model: GenerativeModel) -> list[str]:
    """The samplers a model offers (empty for one-sampler models)."""
    return list(getattr(model, "samplers", ()) or ())


# ------------------------------------------------------------------------------ JSON helpers
def to_list(x: Tensor | np.ndarray, digits: int = 4) -> Any:
    """Nested lists of floats rounded to `digits`, non-finite values as None."""
    a = x.detach().cpu().double().numpy() if isinstance(x, Tensor) else np.asarray(x, float)
    a = np.round(a, digits)
    finite = np.isfinite(a)
    if finite.all():
        return a.tolist()
    out = a.astype(object)
    out[~finite] = None
    return out.tolist()


def number(v: float | None, digits: int = 5) -> float | None:
    if v is None or not math.isfinite(v):
        return None
    return round(float(v), digits)


def all_finite(x: Tensor) -> bool:
    return bool(torch.isfinite(x).all())


# ----------------------------------------------------------------------------------- grids
def data_bounds(x: Tensor, pad: float = 0.2) -> list[float]:
    """[xmin, xmax, ymin, ymax] of the points, padded by `pad` of the larger side, square."""
    lo, hi = x.min(0).values.double(), x.max(0).values.double()
    centre, half = (lo + hi) / 2, float((hi - lo).max()) / 2 * (1 + pad)
    half = max(half, 1e-3)
    return [
        float(centre[0]) - half,
        float(centre[0]) + half,
        float(centre[1]) - half,
        float(centre[1]) + half,
    ]


def grid_points(bounds: list[float], side: int, device: torch.device) -> Tensor:
    """Cell centres of a side x side grid over bounds, row-major from the top-left: (side^2, 2)."""
    x0, x1, y0, y1 = bounds
    dx, dy = (x1 - x0) / side, (y1 - y0) / side
    xs = torch.linspace(x0 + dx / 2, x1 - dx / 2, side, dtype=torch.float64)
    ys = torch.linspace(y1 - dy / 2, y0 + dy / 2, side, dtype=torch.float64)  # top row first
    gy, gx = torch.meshgrid(ys, xs, indexing="ij")
    return torch.stack([gx.flatten(), gy.flatten()], dim=1).float().to(device)


def grid_lines(lo: list[float], hi: list[float]) -> Tensor:
    """LATENT_LINES lines along each of 2 axes over the box lo..hi: (2 * LATENT_LINES,
    LINE_POINTS, 2)."""
    a = torch.linspace(lo[0], hi[0], LATENT_LINES)
    b = torch.linspace(lo[1], hi[1], LATENT_LINES)
    ta = torch.linspace(lo[0], hi[0], LINE_POINTS)
    tb = torch.linspace(lo[1], hi[1], LINE_POINTS)
    vertical = torch.stack([a[:, None].expand(-1, LINE_POINTS), tb.expand(LATENT_LINES, -1)], -1)
    horizontal = torch.stack([ta.expand(LATENT_LINES, -1), b[:, None].expand(-1, LINE_POINTS)], -1)
    return torch.cat([vertical, horizontal])


# ------------------------------------------------------------------------------- pictures
@torch.no_grad()
def critic_picture(model: Any, bounds: list[float]) -> dict[str, Any]:
    """GAN: D(x) on the grid and G's image of a latent grid (GAN Lab's two layers) [000, 001].

    D(x) = sigmoid(logit) for the minimax / ns losses (the probability that x is real; D* = p /
    (p + q) at the optimum, [001]); the raw critic f(x) otherwise (LSGAN's regression target,
    WGAN's and hinge's unbounded score). The critic is judged in eval mode (batch norm's running
    statistics); a packed critic (PacGAN) sees each grid point packed with copies of itself.
    The generator grid: z_1, z_2 over [-2.5, 2.5] (the other latent coordinates 0).
    """
    device = model.device
    grid = grid_points(bounds, GRID, device)
    pack = int(getattr(model.cfg, "pack", 1) or 1)
    x = model.to_critic_space(grid).repeat_interleave(pack, dim=0)
    out = model.judge(x, None).reshape(-1).float()
    loss = getattr(model.cfg, "loss", "ns")
    probability = loss in ("minimax", "ns")
    values = torch.sigmoid(out) if probability else out
    d = int(model.cfg.latent_dim)
    lines = grid_lines([-2.5, -2.5], [2.5, 2.5])  # (L, P, 2)
    z = torch.zeros(lines.shape[0] * lines.shape[1], d, device=device)
    z[:, : min(d, 2)] = lines.reshape(-1, 2)[:, : min(d, 2)].to(device)
    mapped = model.generate(z, None)
    mapped = model.to_data_space(mapped[-1] if isinstance(mapped, list) else mapped)
    if d == 1:  # one latent direction: one line
        lines, mapped = lines[:1], mapped.reshape(lines.shape[0], -1, 2)[:1]
    return {
        "kind": "critic",
        "title": "discriminator D(x) and generator G(z)",
        "equation": (
            "D(x) = sigmoid(logit); D*(x) = p_data / (p_data + p_g)"
            if probability
            else f"critic f(x) (loss={loss}); larger = judged more real"
        ),
        "source": "[000, 001] GAN; GAN Lab",
        "value_label": "D(x)" if probability else "f(x)",
        "probability": probability,
        "grid": {"side": GRID, "values": to_list(values.reshape(GRID, GRID))},
        "lines": to_list(mapped.reshape(lines.shape[0], lines.shape[1], -1)[..., :2], 3),
        "latent_lines": to_list(lines, 3),
    }


@torch.no_grad()
def density_picture(model: Any, bounds: list[float]) -> dict[str, Any]:
    """Exact likelihood: p(x) = exp(log_prob(x)) on the grid [000, 003]; for a flow
    log p(x) = log N(f(x); 0, I) + log |det df/dx| (change of variables)."""
    grid = grid_points(bounds, GRID, model.device)
    log_p = model.log_prob(grid).reshape(GRID, GRID).double()
    # exp of the log-density shifted by its max: the heat map is relative; the max is reported
    top = log_p[torch.isfinite(log_p)].max() if bool(torch.isfinite(log_p).any()) else None
    density = torch.exp(log_p - top) if top is not None else log_p
    cell = (bounds[1] - bounds[0]) * (bounds[3] - bounds[2]) / GRID**2
    mass = float(torch.exp(log_p).nan_to_num(0.0).sum()) * cell
    return {
        "kind": "density",
        "title": "density p(x) = exp(log p(x))",
        "equation": "log p(x) = log N(f(x); 0, I) + log|det df/dx| (flows); exact log_prob",
        "source": "[000, 003] normalizing flows, MADE, classic baselines",
        "grid": {"side": GRID, "values": to_list(density, 5)},
        "log_p_max": number(float(top) if top is not None else None, 4),
        "mass_in_view": number(mass, 4),
    }


@torch.no_grad()
def latent_picture(model: Any, real: Tensor) -> dict[str, Any]:
    """Encoder family: codes of the real points (latent space) and the decoder's image of a grid
    of codes (the decoder mapping) [000, 001]; VAE: q(z|x) = N(mu(x), sigma(x)^2), p(z) = N(0, I).

    Only the first two latent coordinates are drawn; the grid's other coordinates are the mean
    of the codes (0 for a VAE whose codes follow the prior)."""
    device = model.device
    z = model.encode(real.to(device)).reshape(len(real), -1).float()
    d = z.shape[1]
    z2 = torch.zeros(len(z), 2, device=device)
    z2[:, : min(d, 2)] = z[:, : min(d, 2)]
    finite = z2[torch.isfinite(z2).all(1)]
    lo = torch.full((2,), -2.5)
    hi = torch.full((2,), 2.5)
    if len(finite):
        lo = torch.minimum(lo, finite.min(0).values.cpu())
        hi = torch.maximum(hi, finite.max(0).values.cpu())
    span = (hi - lo).clamp_min(1e-3)
    lo, hi = lo - 0.05 * span, hi + 0.05 * span
    lines = grid_lines(lo.tolist(), hi.tolist())  # (L, P, 2)
    centre = z[torch.isfinite(z).all(1)].mean(0) if len(finite) else torch.zeros(d, device=device)
    codes = centre.expand(lines.shape[0] * lines.shape[1], d).clone()
    codes[:, : min(d, 2)] = lines.reshape(-1, 2)[:, : min(d, 2)].to(device)
    decoded = model.decode(codes).reshape(lines.shape[0], lines.shape[1], -1)[..., :2]
    if d == 1:
        lines, decoded = lines[:1], decoded[:1]
    return {
        "kind": "latent",
        "title": "latent space z = encode(x) and decoder mapping x = decode(z)",
        "equation": "q(z|x) = N(mu(x), diag sigma(x)^2), p(z) = N(0, I); x_hat = decode(z)",
        "source": "[000, 001] autoencoders and VAEs",
        "latent_dim": d,
        "latent": to_list(z2, 3),
        "latent_bounds": [float(lo[0]), float(hi[0]), float(lo[1]), float(hi[1])],
        "latent_lines": to_list(lines, 3),
        "lines": to_list(decoded, 3),
    }


def _noise_levels(model: Any) -> tuple[str, Tensor] | None:
    """("sigma", sigmas decreasing) for NCSN; ("t", grid of t) for a score SDE; else None."""
    if isinstance(getattr(model, "sigmas", None), Tensor):
        return "sigma", model.sigmas
    if hasattr(model, "sde"):
        t_eps = float(getattr(model.cfg, "t_eps", 1e-5))
        return "t", torch.linspace(t_eps, 1.0, 201, dtype=torch.float64)
    return None


@torch.no_grad()
def _score_at(model: Any, grid: Tensor, noise: float) -> tuple[Tensor, float, str]:
    """s_theta(grid, level) at the noise level picked by `noise` in [0, 1] (0: least noise):
    (scores, sigma of that level, a label)."""
    if is_ddpm(model):
        steps = model.schedule.T
        t = 1 + round(noise * (steps - 1))  # the paper's t in 1..T
        sigma = float(model.schedule.sqrt_one_minus_alpha_bar[t - 1])
        return score_field(model, grid, t), sigma, f"t = {t}, sigma_t = {sigma:.3f}"
    kind, levels = _noise_levels(model)
    if kind == "sigma":  # NCSN: sigmas decreasing, noise 1 -> the largest
        i = round((1.0 - noise) * (len(levels) - 1))
        sigma = float(levels[i])
        level = torch.full((len(grid),), sigma, device=grid.device)
        return model.score(grid, level), sigma, f"sigma_{i + 1} = {sigma:.3f}"
    t = float(levels[round(noise * (len(levels) - 1))])
    tt = torch.full((len(grid),), t, device=grid.device)
    _, std = model.sde.marginal(grid[:1], tt[:1])
    sigma = float(std.reshape(-1)[0])
    return model.score(grid, tt), sigma, f"t = {t:.3f}, std(t) = {sigma:.3f}"


@contextmanager
def recording(net: torch.nn.Module, states: list[tuple[Tensor, Tensor]]) -> Iterator[None]:
    """Record (x, noise level) of every call of the network: the chain a sampler runs."""

    def hook(module: torch.nn.Module, args: tuple[Any, ...]) -> None:
        states.append((args[0].detach().clone(), args[1].detach().reshape(-1)[:1].clone()))

    handle = net.register_forward_pre_hook(hook)
    try:
        yield
    finally:
        handle.remove()


def _keep_last_per_time(states: list[tuple[Tensor, Tensor]]) -> list[Tensor]:
    """Heun evaluates (x_i, t_i), then the Euler guess at t_{i+1}, then x_{i+1} at t_{i+1}: the
    last input at each time is the chain's state."""
    out: list[Tensor] = []
    last_t: float | None = None
    for x, t in states:
        tv = float(t)
        if out and last_t == tv:
            out[-1] = x
        else:
            out.append(x)
        last_t = tv
    return out


@torch.no_grad()
def sample_with_paths(
    model: Any, n: int, sampler: str, steps: int, generator: torch.Generator
) -> tuple[Tensor, Tensor, str]:
    """n samples (data space) and their chain (K, n, D) in model space, with a label.

    DDPM ancestral / DDIM: genlab.viz.diffusion.reverse_trajectory (the samplers' `trajectory`
    record). Every other sampler: model.sample with the network's inputs recorded.
    """
    if is_ddpm(model) and sampler in ("ancestral", "ddim"):
        chain, times = reverse_trajectory(
            model, n, sampler=sampler, steps=steps, generator=generator
        )
        how = f"{sampler}, {len(times) - 1} steps"
        return from_unit_range(chain[-1], model.spec), chain, how
    states: list[tuple[Tensor, Tensor]] = []
    with recording(model.net, states):
        x = model.sample(n, generator=generator, sampler=sampler, steps=steps)
    xs = _keep_last_per_time(states) if sampler == "ode" else [s for s, _ in states]
    chain = torch.stack([*xs, to_unit_range(x, model.spec)])
    per = "per noise level" if sampler == "langevin" else ""
    return x, chain, f"{sampler}, {steps} steps {per}".strip()


@torch.no_grad()
def score_picture(
    model: Any,
    bounds: list[float],
    chain: Tensor,
    how: str,
    noise: float,
) -> dict[str, Any]:
    """Score family: s_theta(x, sigma) on a grid at one noise level, arrows in its direction with
    length tanh(sigma |s|) (genlab.viz.diffusion), and PATHS sample trajectories [001]."""
    grid = grid_points(bounds, ARROWS, model.device)
    s, sigma, label = _score_at(model, to_unit_range(grid, model.spec), noise)
    arrows = torch.cat([grid.float(), score_arrows(s.float(), sigma)], dim=1)
    k = chain.shape[0]
    keep = torch.linspace(0, k - 1, min(k, PATH_STATES)).round().long().unique()
    paths = from_unit_range(chain[keep][:, :PATHS], model.spec).transpose(0, 1)  # (P, K', D)
    return {
        "kind": "score",
        "title": "learned score field s_theta(x, sigma) and sample trajectories",
        "equation": (
            "s_theta(x, t) = -eps_theta(x, t) / sigma_t ~ grad_x log p_t(x); "
            "Langevin: x <- x + e s(x) + sqrt(2e) z"
        ),
        "source": "[001] score field of a Gaussian mixture, Langevin dynamics, reverse SDE / ODE",
        "level": label,
        "sigma": number(sigma, 5),
        "noise": noise,
        "sampler": how,
        "arrows": to_list(arrows, 3),
        "arrow_side": ARROWS,
        "paths": to_list(paths[..., :2], 3),
    }


# ------------------------------------------------------------------------------- metrics
def toy_metrics(generated: Tensor, reference: Tensor, dataset: str) -> dict[str, Any]:
    """MMD^2 to held-out points (Gaussian kernel, median bandwidth; genlab.math.divergences) and,
    on the mixtures ring8 / grid25, modes captured and % high quality (within 3 std of a mode;
    genlab.metrics.toy.mode_metrics, VEEGAN / PacGAN protocol)."""
    out: dict[str, Any] = {"n": len(generated), "mmd2": None}
    finite = generated[torch.isfinite(generated).all(1)]
    out["finite_fraction"] = number(len(finite) / max(len(generated), 1), 4)
    if len(finite) >= 2:
        out["mmd2"] = number(rbf_mmd2(finite.cpu(), reference.cpu()), 6)
    if dataset in MIXTURES:
        means, std = MIXTURES[dataset]
        out["modes_total"] = len(means)
        if len(finite):
            m = mode_metrics(finite.cpu(), means, std)
            out["modes"] = int(m["modes"])
            out["hq_percent"] = number(100.0 * m["hq"] * len(finite) / len(generated), 2)
            out["kl_modes"] = number(m["kl_modes"], 4)
        else:
            out.update(modes=0, hq_percent=0.0, kl_modes=None)
    return out


# ------------------------------------------------------------------------------ snapshot
def snapshot(
    model: GenerativeModel,
    real: Tensor,
    reference: Tensor,
    bounds: list[float],
    dataset: str,
    view: dict[str, Any],
    *,
    n: int = 300,
    seed: int = 0,
) -> dict[str, Any]:
    """Generated points, the family picture and the toy metrics of `model` now.

    real: the points drawn as data (and encoded by the latent picture); reference: held-out
    points for the metrics; view: {"sampler", "steps", "noise"} of the score picture. Samples use
    a generator seeded with `seed` (the same noise at every snapshot, so only training moves
    them); torch's global RNG and the model's train/eval mode are left as they were.
    """
    was_training = model.training
    device = model.device
    with torch.random.fork_rng(devices=[]), torch.no_grad():
        model.eval()
        try:
            g = torch.Generator(device).manual_seed(seed)
            kind = picture_kind(model)
            if kind == "score":
                sampler = view.get("sampler") or samplers_of(model)[0]
                steps = int(view.get("steps") or SNAPSHOT_STEPS.get(sampler, 50))
                x, chain, how = sample_with_paths(model, n, sampler, steps, g)
                picture = score_picture(model, bounds, chain, how, float(view.get("noise", 0.2)))
            else:
                x = model.sample(n, generator=g)
                if kind == "critic":
                    picture = critic_picture(model, bounds)
                elif kind == "density":
                    picture = density_picture(model, bounds)
                elif kind == "latent":
                    picture = latent_picture(model, real)
                else:
                    picture = {"kind": "samples", "title": "samples"}
        finally:
            model.train(was_training)
    x = x.detach().reshape(len(x), -1)[:, :2].float().cpu()
    return {
        "generated": to_list(x, 3),
        "picture": picture,
        "metrics": toy_metrics(x, reference, dataset),
    }
