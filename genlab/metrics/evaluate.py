"""`evaluate(model, data, metrics)`: held-out metrics with their sample sizes and protocol notes."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from genlab.data.spec import Data
from genlab.errors import GenlabError
from genlab.metrics.likelihood import nll_report, test_nll
from genlab.models.base import Encoder, ExactLikelihood, GenerativeModel, LikelihoodBound
from genlab.registry import METRICS


@dataclass
class Report:
    """Metric values (flat, numeric: written to eval.json), notes on protocol, skipped metrics."""

    values: dict[str, float] = field(default_factory=dict)
    notes: dict[str, str] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)


@dataclass
class Context:
    model: GenerativeModel
    data: Data
    n: int
    k: int
    generator: torch.Generator

    def test_split(self) -> tuple[torch.Tensor, torch.Tensor | None]:
        split = self.data.split("test")
        return split["x"][: self.n], (split["y"][: self.n] if "y" in split else None)


@METRICS.register("nll", "held-out negative log-likelihood (exact, or IWAE bound) and bits/dim")
def nll_metric(ctx: Context) -> tuple[dict[str, float], str]:
    if not isinstance(ctx.model, (ExactLikelihood, LikelihoodBound)):
        raise NotImplementedError(f"{type(ctx.model).__name__} has no likelihood")
    x, y = ctx.test_split()
    per = test_nll(ctx.model, ctx.data, x, y, k=ctx.k, generator=ctx.generator)
    values, note = nll_report(ctx.model, ctx.data, per)
    exact = isinstance(ctx.model, ExactLikelihood)
    how = "exact" if exact else f"IWAE bound, k={ctx.k}"
    return {**values, "nll_n": float(len(x)), **({} if exact else {"iwae_k": float(ctx.k)})}, (
        f"{how}; {note}; n={len(x)} test examples"
    )


@METRICS.register("elbo", "held-out evidence lower bound (nats per example), NLL convention")
def elbo_metric(ctx: Context) -> tuple[dict[str, float], str]:
    if not isinstance(ctx.model, LikelihoodBound):
        raise NotImplementedError(f"{type(ctx.model).__name__} has no variational bound")
    x, y = ctx.test_split()
    per = test_nll(ctx.model, ctx.data, x, y, k=1, generator=ctx.generator)
    values, note = nll_report(ctx.model, ctx.data, per)  # same dequantisation offset as nll
    if "nll" in values:
        return {"elbo": -values["nll"], "elbo_n": float(len(x))}, f"k=1; {note}; n={len(x)}"
    return {"elbo_density": -values["nll_density"], "elbo_n": float(len(x))}, f"k=1; {note}"


@METRICS.register("recon", "reconstruction error on the test split: MSE per dimension")
def recon_metric(ctx: Context) -> tuple[dict[str, float], str]:
    if not isinstance(ctx.model, Encoder):
        raise NotImplementedError(f"{type(ctx.model).__name__} has no encoder")
    x, y = ctx.test_split()
    errs = []
    with torch.no_grad():
        for i in range(0, len(x), 256):
            xb = x[i : i + 256].to(ctx.model.device)
            yb = None if y is None else y[i : i + 256].to(ctx.model.device)
            x_hat = ctx.model.reconstruct(xb, yb)
            errs.append(((x_hat - xb) ** 2).flatten(1).mean(1).cpu())
    mse = torch.cat(errs).double()
    return {"recon_mse": float(mse.mean()), "recon_n": float(len(x))}, (
        f"mean squared error per dimension in data space; n={len(x)}"
    )


DEFAULT = ("nll", "elbo", "recon")


def evaluate(
    model: GenerativeModel,
    data: Data,
    metrics: list[str] | tuple[str, ...] | None = None,
    *,
    n: int | None = None,
    k: int = 100,
    seed: int = 0,
) -> Report:
    """Run `metrics` (default: all that apply) on the test split; n limits its size."""
    names = list(metrics) if metrics else list(DEFAULT)
    for name in names:
        METRICS.entry(name)  # unknown names fail before any work
    if n is not None and n <= 0:
        raise GenlabError(f"--n must be positive; got {n}")
    g = torch.Generator(model.device).manual_seed(seed)
    ctx = Context(model, data, n or len(data.x_test), k, g)
    report = Report()
    model.eval()
    for name in names:
        try:
            values, note = METRICS.get(name)(ctx)
        except NotImplementedError as e:
            report.skipped[name] = str(e)
            continue
        report.values.update(values)
        report.notes[name] = note
    return report
