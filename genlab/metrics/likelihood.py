"""Held-out likelihood: NLL in nats per example and bits per dimension.

Dequantisation convention (Theis et al. arXiv:1511.01844): discrete data k in {0..L-1}^D is
modelled through y = (k + u) / L, u ~ U[0, 1)^D. For any density p on [0, 1]^D, Jensen gives
    log P(k) >= E_u[log p((k + u) / L)] - D log L,
so a continuous model's discrete NLL is its density NLL on dequantised data plus D log L.
bits/dim = NLL / (D ln 2). Discrete likelihoods (Bernoulli, discretised logistic) need no
correction. Models with a Gaussian likelihood on discrete data that was not dequantised get a
density NLL only (no bits/dim), and the report says so.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from genlab.data.spec import Data
from genlab.models.base import ExactLikelihood, GenerativeModel, LikelihoodBound


def bits_per_dim(nll_nats: float, dim: int) -> float:
    return nll_nats / (dim * math.log(2))


def dequantisation_offset(dim: int, levels: int) -> float:
    """D log L: the change of variables from density on [0,1)^D to probability of the bin."""
    return dim * math.log(levels)


@torch.no_grad()
def test_nll(
    model: GenerativeModel,
    data: Data,
    x: Tensor,
    y: Tensor | None,
    *,
    k: int,
    generator: torch.Generator,
    batch_size: int = 256,
) -> Tensor:
    """Per-example NLL (nats) of the model's own likelihood: exact, or the IWAE bound with k."""
    out = []
    for i in range(0, len(x), batch_size):
        xb = x[i : i + batch_size].to(model.device)
        yb = None if y is None else y[i : i + batch_size].to(model.device)
        if isinstance(model, ExactLikelihood):
            out.append(-model.log_prob(xb, yb))
        else:
            assert isinstance(model, LikelihoodBound)
            out.append(model.nll_bound(xb, yb, k=k, generator=generator))
    return torch.cat(out).double().cpu()


def nll_report(model: GenerativeModel, data: Data, per_example: Tensor) -> tuple[dict, str]:
    """NLL and bits/dim under the convention above, with a note saying which was reported."""
    spec = data.spec
    nll = float(per_example.mean())
    se = float(per_example.std() / math.sqrt(len(per_example)))
    levels = spec.discrete_levels
    values = {"nll": nll, "nll_se": se}
    if getattr(model, "discrete_likelihood", False):
        note = "discrete likelihood (probability mass)"
    elif levels and data.dequantize:
        values["nll"] = nll + dequantisation_offset(spec.dim, levels)
        note = f"density on uniformly dequantised data + D log {levels}"
    elif levels:
        return {"nll_density": nll, "nll_se": se}, (
            "Gaussian density on undequantised grey levels: not a discrete NLL, no bits/dim "
            "(train with data.dequantize=true for one)"
        )
    else:
        return values, "density of continuous data (nats)"
    values["bpd"] = bits_per_dim(values["nll"], spec.dim)
    return values, note
