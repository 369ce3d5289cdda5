"""Closed forms of diffusion and score models, no networks: DDPM schedules and score SDEs."""

from genlab.diffusion.schedules import (
    NoiseSchedule,
    cosine_betas,
    geometric_sigmas,
    linear_betas,
    make_betas,
    vlb_terms,
)
from genlab.diffusion.sde import SDE, VESDE, VPSDE, SubVPSDE, reverse_drift

__all__ = [
    "NoiseSchedule",
    "cosine_betas",
    "geometric_sigmas",
    "linear_betas",
    "make_betas",
    "vlb_terms",
    "SDE",
    "VESDE",
    "SubVPSDE",
    "VPSDE",
    "reverse_drift",
]
