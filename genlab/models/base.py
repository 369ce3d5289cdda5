"""The model protocol: one base class, phases with their own optimisers, optional capabilities.

Every model is `class Name(GenerativeModel)` with a `@dataclass NameConfig` above it and
`__init__(self, cfg, spec)`. `forward(batch, phase)` returns the loss dict; `sample(n)` returns
examples in data space. Optional capabilities (encode, decode, reconstruct, log_prob, nll_bound)
are found with the runtime-checkable Protocols below, never with extra base classes.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import ClassVar, Protocol, runtime_checkable

import torch
from torch import Tensor, nn

from genlab.data.spec import DataSpec

OptimizerFactory = Callable[[list[nn.Parameter]], torch.optim.Optimizer]


@dataclass
class Phase:
    """One optimisation phase: its parameters, how to build its optimiser, and how often it runs.

    A training step runs every phase in order, each `repeat` times (WGAN: critic x 5, then
    generator x 1).
    """

    name: str
    params: list[nn.Parameter]
    optimizer: OptimizerFactory
    repeat: int = 1


def adam(lr: float, betas: tuple[float, float] = (0.9, 0.999)) -> OptimizerFactory:
    return lambda params: torch.optim.Adam(params, lr=lr, betas=betas)


class GenerativeModel(nn.Module):
    """Base class of every genlab model.

    The Trainer sets `self.step` (completed training steps) before each step, so schedules such as
    KL warm-up are pure functions of it and resume exactly.
    """

    config_class: ClassVar[type]
    # The data a model can train on: "vector" (e.g. 2-D toys) and/or "image". Image-to-image
    # models (pix2pix, CycleGAN) declare ("image",); build() refuses other data with one line.
    data_kinds: ClassVar[tuple[str, ...]] = ("vector", "image")

    def __init__(self, cfg: object, spec: DataSpec) -> None:
        super().__init__()
        self.cfg = cfg
        self.spec = spec
        self.step = 0

    def forward(self, batch: dict[str, Tensor], phase: str = "main") -> dict[str, Tensor]:
        """Loss of one phase on a batch: {"loss": scalar to backpropagate, **named parts}."""
        raise NotImplementedError

    def phases(self, lr: float) -> list[Phase]:
        """Default: one "main" phase over all parameters with Adam."""
        return [Phase("main", [p for p in self.parameters() if p.requires_grad], adam(lr))]

    def after_step(self, phase: str) -> None:
        """Hook after an optimiser step of `phase` (weight clipping, codebook EMA...)."""

    @torch.no_grad()
    def sample(
        self,
        n: int,
        *,
        generator: torch.Generator | None = None,
        labels: Tensor | None = None,
        sampler: str | None = None,
        **kw: object,
    ) -> Tensor:
        """n examples in data space, shape (n, *spec.shape)."""
        raise NotImplementedError

    def prior_sample(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        """z ~ N(0, I), shape (n, cfg.latent_dim), drawn with `generator` on the model's device."""
        return torch.randn(n, self.cfg.latent_dim, generator=generator, device=self.device)

    @property
    def device(self) -> torch.device:
        for t in self.parameters():
            return t.device
        for t in self.buffers():
            return t.device
        return torch.device("cpu")

    def check_labels(self, n: int, labels: Tensor | None) -> Tensor | None:
        """Labels as a (n,) long tensor on the model's device (a scalar is repeated n times)."""
        if labels is None:
            return None
        labels = torch.as_tensor(labels, dtype=torch.long, device=self.device)
        if labels.ndim == 0:
            labels = labels.expand(n)
        return labels


@runtime_checkable
class Encoder(Protocol):
    def encode(self, x: Tensor, labels: Tensor | None = None) -> Tensor: ...
    def decode(self, z: Tensor, labels: Tensor | None = None) -> Tensor: ...
    def reconstruct(self, x: Tensor, labels: Tensor | None = None) -> Tensor: ...


@runtime_checkable
class LikelihoodBound(Protocol):
    """Upper bound on -log p(x) per example in nats (ELBO / IWAE), for the model's own likelihood.

    `discrete_likelihood` says whether p is a probability mass (else a density that needs the
    dequantisation convention of genlab.metrics for discrete data). A model whose bound is not
    the IWAE bound names it in an optional class attribute `likelihood_method: str`, which
    evaluate prints instead of "IWAE bound, k=...".
    """

    discrete_likelihood: bool

    def nll_bound(
        self,
        x: Tensor,
        labels: Tensor | None = None,
        *,
        k: int = 1,
        generator: torch.Generator | None = None,
    ) -> Tensor: ...


@runtime_checkable
class ExactLikelihood(Protocol):
    """Exact log p(x) per example in nats (flows, autoregressive models)."""

    discrete_likelihood: bool

    def log_prob(self, x: Tensor, labels: Tensor | None = None) -> Tensor: ...


@runtime_checkable
class FitsData(Protocol):
    """Models with statistics fitted to the whole training split, not by gradient steps.

    `fit_data` is called once per new run, before the first step (never on resume: the fitted
    values are buffers, saved with the weights), with the training split in the form the model
    trains on (binarised / dequantised once with a fixed seed; genlab.train.run does it before
    writing the run, the Trainer when given a model not yet fitted). It returns named values to
    log at step 0. A model whose `phases()` is empty (the classic baselines, fitted by
    scikit-learn) is trained by this call alone; others (texture synthesis: the target Gram
    matrices) go on with gradient steps.
    """

    def fit_data(self, x: Tensor, labels: Tensor | None = None) -> dict[str, float]: ...


@runtime_checkable
class Translator(Protocol):
    """Image-to-image models: `source_of(x)` is the task's input for target x (genlab.data.tasks),
    `translate(source)` the model's output; evaluation compares translate(source_of(x)) with x."""

    def source_of(self, x: Tensor) -> Tensor: ...
    def translate(self, source: Tensor, labels: Tensor | None = None) -> Tensor: ...
