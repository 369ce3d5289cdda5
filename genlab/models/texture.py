"""Texture synthesis by Gram-matrix matching (Gatys et al. arXiv:1505.07376, [003]).

A texture is described by the Gram matrices A^l = gram_matrix(F^l(x_example)) of the features F^l
of a fixed CNN at several scales l (genlab.nn.texture: random filters by default, Ustyuzhaninov
et al. arXiv:1606.00021, or the user's filters from a safetensors file). A new texture is an
image x minimising the texture loss (genlab.math.gram, Gatys eq. (5) up to the factor 1/4)
    L(x) = sum_l w_l mean_ij (G^l_ij(x) - A^l_ij)^2,   G^l = gram_matrix(F^l(x)),
started from noise. Images are held unconstrained, x = low + (high - low) sigmoid(u), so every
iterate lies in the data range and the optimiser needs no projection.

- `fit_data(x)` (the FitsData protocol, called once by the Trainer with the training split)
  takes the example image x[cfg.example] and stores its Gram matrices A^l as buffers (so they
  are saved with the weights). Before it runs the targets are zero and `fitted` is 0: the model
  still trains and samples (towards all-zero features, i.e. a dark image: no texture).
- Training (phase "main") optimises `canvases` images u with the Trainer's Adam; the batch is
  not used. The loss is L averaged over the canvases, logged per scale as gram_0, gram_1, ...
- `sample(n, generator=g)` synthesises n new textures: u ~ N(0, I) drawn with g, then
  `sample_steps` steps of L-BFGS (Gatys et al.; strong-Wolfe line search) or Adam on L. Both are
  deterministic for a given generator seed on a given device.
- `gram_loss_of(x)`: L per image of data-space images, to report the loss a synthesis reached.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor, nn

from genlab.data.spec import DataSpec
from genlab.errors import GenlabError
from genlab.math.gram import gram_loss_per_layer, gram_matrix
from genlab.models.adversarial import to_unit_range
from genlab.models.base import GenerativeModel
from genlab.models.denoising import choose_sampler
from genlab.nn.texture import TextureFeatures
from genlab.registry import MODELS


@dataclass
class TextureConfig:
    channels: tuple[int, ...] = (32, 64, 128)  # feature widths; one conv+ReLU stage per scale
    kernel: int = 3  # odd filter size of every stage
    feature_seed: int = 0  # seed of the random filters (fixed: the features define the model)
    weights: str = ""  # safetensors file with the feature net's filters ("" = random filters)
    layer_weights: tuple[float, ...] = ()  # w_l per stage; () = 1 / (number of stages) each
    example: int = 0  # index into the training split of the example texture (fit_data)
    canvases: int = 4  # images optimised by the training phase
    sampler: Literal["lbfgs", "adam"] = "lbfgs"  # optimiser of sample()
    sample_steps: int = 100  # L-BFGS iterations or Adam steps of sample()
    sample_lr: float = 0.05  # Adam's learning rate in sample() (L-BFGS uses lr 1 + line search)


@MODELS.register(
    "texture", "Gram-matrix texture synthesis from one example on random CNN features (Gatys)"
)
class Texture(GenerativeModel):
    """Synthesise textures matching the Gram matrices of an example image (see module doc)."""

    config_class = TextureConfig
    data_kinds = ("image",)
    samplers = ("lbfgs", "adam")

    def __init__(self, cfg: TextureConfig, spec: DataSpec) -> None:
        super().__init__(cfg, spec)
        c, h, w = spec.shape
        stages = len(cfg.channels)
        if min(h, w) < 2 ** (stages - 1):
            raise GenlabError(
                f"model.channels has {stages} stages, each halving the image; {spec.name} images "
                f"are {h}x{w}: use at most {max(1, min(h, w).bit_length())} stages"
            )
        if cfg.layer_weights and len(cfg.layer_weights) != stages:
            raise GenlabError(
                f"model.layer_weights has {len(cfg.layer_weights)} values for {stages} stages"
            )
        if cfg.canvases < 1 or cfg.sample_steps < 0:
            raise GenlabError("model.canvases must be >= 1 and model.sample_steps >= 0")
        self.features = TextureFeatures(c, cfg.channels, cfg.kernel, cfg.feature_seed, cfg.weights)
        self.layer_weights = list(cfg.layer_weights) or [1.0 / stages] * stages
        for i, width in enumerate(cfg.channels):
            self.register_buffer(f"target{i}", torch.zeros(width, width))  # A^l, (C_l, C_l)
        self.register_buffer("fitted", torch.zeros(()))  # 1 once fit_data has set the targets
        self.canvas = nn.Parameter(torch.randn(cfg.canvases, *spec.shape))  # u, unconstrained

    # ----- images <-> unconstrained u, and the texture loss -----

    def to_data(self, u: Tensor) -> Tensor:
        """x = low + (high - low) sigmoid(u) in the data range (unbounded data: x = u)."""
        if self.spec.value_range is None:
            return u
        low, high = self.spec.value_range
        return low + (high - low) * torch.sigmoid(u)

    def targets(self) -> list[Tensor]:
        return [getattr(self, f"target{i}") for i in range(len(self.cfg.channels))]

    def grams(self, x: Tensor) -> list[Tensor]:
        """G^l of data-space images x (B, C, H, W): a list of (B, C_l, C_l)."""
        return [gram_matrix(f) for f in self.features(to_unit_range(x, self.spec))]

    def gram_losses(self, x: Tensor) -> Tensor:
        """w_l mean_ij (G^l_ij(x) - A^l_ij)^2 per image and scale, (B, L)."""
        return gram_loss_per_layer(self.grams(x), self.targets(), self.layer_weights)

    def gram_loss_of(self, x: Tensor) -> Tensor:
        """The texture loss L of data-space images x (B, C, H, W) to the example, per image (B,)."""
        return self.gram_losses(x).sum(dim=1)

    # ----- fitting the example, training the canvases -----

    @torch.no_grad()
    def fit_data(self, x: Tensor, labels: Tensor | None = None) -> dict[str, float]:
        """A^l = G^l(x[cfg.example]): the example's Gram matrices become the target buffers."""
        if tuple(x.shape[1:]) != tuple(self.spec.shape):
            raise GenlabError(
                f"texture fit_data: images of shape {tuple(x.shape[1:])}, model built for "
                f"{tuple(self.spec.shape)}"
            )
        index = self.cfg.example
        if not 0 <= index < len(x):
            raise GenlabError(f"model.example must be in 0..{len(x) - 1}; got {index}")
        example = x[index : index + 1].to(self.device, torch.float32)
        for i, g in enumerate(self.grams(example)):
            getattr(self, f"target{i}").copy_(g[0])
        self.fitted.fill_(1.0)
        return {"example": float(index)}

    def canvas_images(self) -> Tensor:
        """The training canvases in data space, (canvases, C, H, W)."""
        return self.to_data(self.canvas)

    def forward(self, batch: dict[str, Tensor], phase: str = "main") -> dict[str, Tensor]:
        """L of the canvases (mean over them), with its part per scale; the batch is unused."""
        per_scale = self.gram_losses(self.canvas_images()).mean(dim=0)  # (L,)
        loss = per_scale.sum()
        return {"loss": loss, **{f"gram_{i}": v for i, v in enumerate(per_scale)}}

    # ----- sampling: synthesis from noise -----

    def synthesize(
        self, u: Tensor, steps: int, sampler: str = "lbfgs", lr: float | None = None
    ) -> Tensor:
        """Minimise sum_b L(to_data(u_b)) over u from the given start; returns u after `steps`."""
        u = u.detach().clone().requires_grad_(True)
        if steps == 0:
            return u.detach()

        def objective() -> Tensor:
            return self.gram_loss_of(self.to_data(u)).sum()  # images are independent: sum

        if sampler == "lbfgs":
            # zero tolerances: the loss is small in absolute terms (Gram entries of unit-scale
            # features), so the default ones (1e-7, 1e-9) would stop it after a few iterations
            opt = torch.optim.LBFGS(
                [u],
                lr=1.0,
                max_iter=steps,
                history_size=20,
                tolerance_grad=0.0,
                tolerance_change=0.0,
                line_search_fn="strong_wolfe",
            )

            def closure() -> Tensor:
                opt.zero_grad()
                loss = objective()
                loss.backward()
                return loss

            opt.step(closure)  # one call runs `steps` iterations (fewer if a line search stalls)
        else:
            opt = torch.optim.Adam([u], lr=self.cfg.sample_lr if lr is None else lr)
            for _ in range(steps):
                opt.zero_grad()
                objective().backward()
                opt.step()
        return u.detach()

    @torch.no_grad()
    def sample(
        self,
        n: int,
        *,
        generator: torch.Generator | None = None,
        labels: Tensor | None = None,
        sampler: str | None = None,
        steps: int | None = None,
        **kw: object,
    ) -> Tensor:
        """n new textures: u ~ N(0, I) drawn with `generator`, then `steps` (default
        cfg.sample_steps) steps of `sampler` (default cfg.sampler) on L; in data space."""
        name = choose_sampler(sampler, self.cfg.sampler, self.samplers, kw)
        steps = self.cfg.sample_steps if steps is None else steps
        u = torch.randn(n, *self.spec.shape, generator=generator, device=self.device)
        with torch.enable_grad():  # sample() runs under no_grad; synthesis needs gradients
            u = self.synthesize(u, steps, name)
        return self.to_data(u)
