"""Every generative model of the course notes, behind one protocol (see base.py)."""

from __future__ import annotations

import logging
from typing import Any

from genlab.config import build_dataclass
from genlab.data.spec import DataSpec
from genlab.errors import GenlabError, first_line

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

log = logging.getLogger(__name__)


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
    try:
        return entry.obj(config, spec)
    except GenlabError:
        raise
    except (ValueError, TypeError, IndexError, ArithmeticError, RuntimeError) as e:
        # Networks raise ValueError for shapes they cannot take, torch refuses negative sizes:
        # here the numbers are the user's model.* values, so this is bad input, not a bug.
        # (`genlab -v` logs the traceback.)
        log.debug("building model %s failed", name, exc_info=True)
        first = first_line(e)
        raise GenlabError(f"model {name} cannot be built with this config: {first}") from None


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
