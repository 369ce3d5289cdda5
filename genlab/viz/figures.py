"""Figures of a trained model: samples, reconstructions, interpolations, the 2-D latent manifold."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import Tensor

from genlab.errors import GenlabError
from genlab.models.base import Encoder, GenerativeModel, Translator
from genlab.viz.grids import save_grid, save_samples
from genlab.viz.latent import interpolate, manifold


def require_encoder(model: GenerativeModel, what: str) -> Encoder:
    if not isinstance(model, Encoder):
        raise GenlabError(f"{what} needs a model with an encoder; {type(model).__name__} has none")
    return model


def labels_for(model: GenerativeModel, y: Tensor | None) -> Tensor | None:
    return y if getattr(model.cfg, "conditional", False) else None


def class_labels(model: GenerativeModel, n: int, label: int | None = None) -> Tensor | None:
    """Labels to sample with: None if unconditional; else class `label`, or 0..K-1 cycled."""
    if not getattr(model.cfg, "conditional", False):
        return None
    if label is not None:
        return torch.full((n,), label, dtype=torch.long, device=model.device)
    return torch.arange(n, device=model.device) % model.spec.num_classes


@torch.no_grad()
def sample_figure(
    model: GenerativeModel,
    path: str | Path,
    *,
    reference: Tensor | None = None,
    seed: int = 0,
    title: str = "",
) -> Path:
    """64 samples as a grid (images), or 2,000 points over the reference data (2-D)."""
    n = 64 if model.spec.is_image else 2000
    g = torch.Generator(model.device).manual_seed(seed)
    x = model.sample(n, generator=g, labels=class_labels(model, n))
    return save_samples(x, model.spec, path, reference=reference, title=title)


@torch.no_grad()
def reconstructions(
    model: GenerativeModel,
    x: Tensor,
    y: Tensor | None,
    path: str | Path,
    reference: Tensor | None = None,
) -> Path:
    """Images: originals and reconstructions in alternating rows. 2-D: reconstructed points.

    Translators (pix2pix, CycleGAN): rows of task sources, translations and targets.
    """
    x = x.to(model.device)
    y = None if y is None else y.to(model.device)
    if isinstance(model, Translator):
        source = model.source_of(x)
        groups = [source, model.translate(source, labels_for(model, y)), x]
    else:
        enc = require_encoder(model, "reconstruct")
        groups = [x, enc.reconstruct(x, labels_for(model, y))]
    if not model.spec.is_image:
        return save_samples(groups[1], model.spec, path, reference=x.cpu(), title="reconstructions")
    cols = 8
    rows = []
    for i in range(0, len(x), cols):
        rows += [g[i : i + cols] for g in groups]
    return save_grid(torch.cat(rows), path, nrow=cols, value_range=model.spec.value_range)


@torch.no_grad()
def interpolations(
    model: GenerativeModel,
    x_a: Tensor,
    x_b: Tensor,
    path: str | Path,
    steps: int = 10,
    y: Tensor | None = None,
) -> Path:
    """One row per pair: decoded points on the latent segment from x_a to x_b."""
    enc = require_encoder(model, "interpolate")
    dev = model.device
    labels = labels_for(model, None if y is None else y.to(dev))
    path_x = interpolate(enc, x_a.to(dev), x_b.to(dev), steps, labels)  # (B, steps, *shape)
    if model.spec.is_image:
        flat = path_x.reshape(-1, *model.spec.shape)
        return save_grid(flat, path, nrow=steps, value_range=model.spec.value_range)
    return save_samples(path_x.reshape(-1, 2), model.spec, path, title="latent interpolations")


@torch.no_grad()
def latent_manifold(model: GenerativeModel, path: str | Path, side: int = 15) -> Path:
    """Kingma & Welling's manifold figure; needs a 2-D latent."""
    enc = require_encoder(model, "the manifold plot")
    if getattr(model.cfg, "latent_dim", None) != 2:
        raise GenlabError("the latent manifold plot needs model.latent_dim=2")
    if not model.spec.is_image:
        raise GenlabError("the latent manifold plot is for image data")
    labels = None
    if getattr(model.cfg, "conditional", False):
        labels = torch.zeros(side * side, dtype=torch.long, device=model.device)
    x = manifold(enc, side, labels, device=model.device)
    return save_grid(x, path, nrow=side, value_range=model.spec.value_range)
