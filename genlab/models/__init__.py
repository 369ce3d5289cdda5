"""Every generative model of the course notes, behind one protocol (see base.py)."""

from __future__ import annotations

from typing import Any

from genlab.config import build_dataclass
from genlab.data.spec import DataSpec
from genlab.errors import GenlabError

# Importing a model module registers its models.
from genlab.models import (  # noqa: F401
    aae,
    autoencoder,
    autoregressive,
    bigan,
    cascade,
    classic,
    cogan,
    cyclegan,
    ddpm,
    flow,
    gan,
    hvae,
    latent_diffusion,
    pix2pix,
    rbm,
    score,
    texture,
    vae,
    vqvae,
)
from genlab.models.base import (
    Encoder,
    ExactLikelihood,
    FitsData,
    GenerativeModel,
    LikelihoodBound,
    Phase,
    Translator,
)
from genlab.registry import MODELS


def build(name: str, spec: DataSpec, **cfg: Any) -> GenerativeModel:
    """Model `name` for data `spec`; keyword arguments are its config fields (type-checked)."""
    entry = MODELS.entry(name)
    kind = "image" if spec.is_image else "vector"
    if kind not in entry.obj.data_kinds:
        raise GenlabError(
            f"model {name} trains on {' or '.join(entry.obj.data_kinds)} data; "
            f"{spec.name} is {kind} data ({spec.describe()})"
        )
    config = build_dataclass(entry.obj.config_class, {**entry.defaults, **cfg}, "model")
    return entry.obj(config, spec)


__all__ = [
    "build",
    "GenerativeModel",
    "Phase",
    "Encoder",
    "LikelihoodBound",
    "ExactLikelihood",
    "FitsData",
    "Translator",
    "MODELS",
]
