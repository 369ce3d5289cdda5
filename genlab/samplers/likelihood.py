"""Exact log-likelihood of a score SDE through its probability-flow ODE (Song et al. 2021).

Not a sampler (nothing is registered): a plain function of a score function and an SDE object,
solved with scipy's RK45 as the ODE sampler is.
"""

from __future__ import annotations

import numpy as np
import scipy.integrate
import torch
from torch import Tensor

from genlab.diffusion.sde import SDE, reverse_drift
from genlab.samplers.common import ScoreFn, batch_of

DIVERGENCES = ("auto", "exact", "hutchinson")
PROBES = ("rademacher", "gaussian")
EXACT_MAX_DIM = 8  # "auto" takes the exact divergence up to this dimension (2-D toys)


def _divergence(v: Tensor, x: Tensor, probe: Tensor | None) -> Tensor:
    """div_x v(x) per example, (B,): exact (probe None, one backward pass per dimension) or
    Hutchinson's estimate probe^T (dv/dx) probe (one backward pass). Examples must not interact."""
    flat_v = v.flatten(1)
    if probe is not None:
        (g,) = torch.autograd.grad((v * probe).sum(), x, allow_unused=True)
        return (
            torch.zeros(len(x), dtype=x.dtype, device=x.device)
            if g is None
            else (g * probe).flatten(1).sum(1)
        )
    div = torch.zeros(len(x), dtype=x.dtype, device=x.device)
    for i in range(flat_v.shape[1]):
        (g,) = torch.autograd.grad(flat_v[:, i].sum(), x, retain_graph=True, allow_unused=True)
        if g is not None:  # None: v_i does not depend on x, d v_i / d x_i = 0
            div = div + g.flatten(1)[:, i]
    return div


def ode_log_likelihood(
    score_fn: ScoreFn,
    sde: SDE,
    x: Tensor,
    *,
    t_min: float = 1e-5,
    divergence: str = "auto",
    probe: str = "rademacher",
    rtol: float = 1e-5,
    atol: float = 1e-5,
    generator: torch.Generator | None = None,
) -> Tensor:
    """log p_{t_min}(x) per example in nats, (B,), by the instantaneous change of variables.

    Along the probability-flow ODE dx/dt = f~(x, t) = f(x, t) - g(t)^2 s(x, t) / 2 (Song et al.
    arXiv:2011.13456 eq. (13)) the log-density obeys d log p_t(x(t)) / dt = -div f~(x(t), t)
    (Chen et al. arXiv:1806.07366 theorem 1), so with x(t_min) = x
        log p_{t_min}(x) = log p_T(x(T)) + int_{t_min}^T div f~(x(t), t) dt,
    p_T replaced by the SDE's prior (Song et al. appendix D.2; [001] "exact likelihood"). The
    state [x, int div] is integrated from t_min to T by scipy's RK45 in float64 (score_fn sees
    x's dtype and device). divergence: "exact" by autograd (D backward passes per evaluation),
    "hutchinson" E[eps^T (d f~ / dx) eps] with one probe eps per example drawn once for the
    whole solve (Grathwohl et al. arXiv:1810.01367, FFJORD), Rademacher or Gaussian (`probe`),
    an unbiased estimate; "auto": exact for D <= 8, else Hutchinson. Autograd is enabled inside,
    so this may be called under torch.no_grad().
    """
    if divergence not in DIVERGENCES:
        raise ValueError(f"unknown divergence {divergence!r}; choose {', '.join(DIVERGENCES)}")
    if probe not in PROBES:
        raise ValueError(f"unknown probe {probe!r}; choose {', '.join(PROBES)}")
    if not 0 < t_min < sde.T:
        raise ValueError(f"need 0 < t_min < T; got {t_min}")
    shape, b = tuple(x.shape), x.shape[0]
    dim = x[0].numel()
    exact = divergence == "exact" or (divergence == "auto" and dim <= EXACT_MAX_DIM)
    eps = None
    if not exact:
        eps = torch.randn(shape, generator=generator, dtype=x.dtype, device=x.device)
        if probe == "rademacher":
            eps = torch.sign(eps)  # +-1 with probability 1/2 each (0 has probability 0)

    def rhs(t: float, y: np.ndarray) -> np.ndarray:
        with torch.enable_grad():
            xt = torch.from_numpy(y[: b * dim]).reshape(shape).to(x.dtype).to(x.device)
            xt.requires_grad_(True)
            tb = batch_of(t, xt)
            v = reverse_drift(sde, score_fn(xt, tb), xt, tb, probability_flow=True)
            div = _divergence(v, xt, eps)
        out = torch.cat([v.detach().flatten(), div.detach()])
        return out.cpu().to(torch.float64).numpy()

    y0 = np.concatenate([x.detach().cpu().to(torch.float64).numpy().ravel(), np.zeros(b)])
    sol = scipy.integrate.solve_ivp(rhs, (t_min, sde.T), y0, method="RK45", rtol=rtol, atol=atol)
    if not sol.success:
        raise RuntimeError(f"probability-flow ODE solver failed: {sol.message}")
    y_T = torch.from_numpy(sol.y[:, -1])
    z = y_T[: b * dim].reshape(shape)
    log_p = sde.prior_logp(z) + y_T[b * dim :]  # (B,), float64
    return log_p.to(dtype=x.dtype, device=x.device)
