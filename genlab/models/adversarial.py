"""Pieces every adversarial model shares (functions, not a base class): value ranges, the
optimiser recipe, the critic's objective with its penalty, and WGAN's clipping hook.

Generators end in tanh, so bounded data is handled in [-1, 1]: x_unit = 2 (x - low) / (high -
low) - 1 on the way into a critic, and back with the inverse map. Unbounded data (2-D toys) is
used as it is.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Literal

import torch
from torch import Tensor, nn

from genlab.data.spec import DataSpec
from genlab.math.gan_losses import clip_weights, critic_loss, gradient_penalty
from genlab.models.base import OptimizerFactory, adam

GanLoss = Literal["minimax", "ns", "ls", "wgan", "wgan-gp", "hinge"]


def to_unit_range(x: Tensor, spec: DataSpec) -> Tensor:
    """Data space -> [-1, 1] (bounded data); unbounded data unchanged."""
    if spec.value_range is None:
        return x
    low, high = spec.value_range
    return 2 * (x - low) / (high - low) - 1


def from_unit_range(u: Tensor, spec: DataSpec) -> Tensor:
    """[-1, 1] -> data space, clamped to the range (bounded data); unbounded data unchanged."""
    if spec.value_range is None:
        return u
    low, high = spec.value_range
    return (low + (u + 1) * (high - low) / 2).clamp(low, high)


def to_data_range(out: Tensor, spec: DataSpec) -> Tensor:
    """A generator's raw (pre-tanh) output in data space: tanh, then onto value_range."""
    return out if spec.value_range is None else from_unit_range(torch.tanh(out), spec)


def adversarial_optimizer(
    optimizer: str, loss: str, lr: float, beta1: float, beta2: float = 0.999
) -> OptimizerFactory:
    """Adam(lr, (beta1, beta2)) (DCGAN: (0.5, 0.999)); RMSProp for weight-clipped WGAN
    (Algorithm 1 of Arjovsky et al.). optimizer="auto" picks RMSProp exactly when loss="wgan"."""
    if optimizer == "rmsprop" or (optimizer == "auto" and loss == "wgan"):
        return lambda params: torch.optim.RMSprop(params, lr=lr)
    return adam(lr, (beta1, beta2))


def critic_objective(
    kind: str,
    critic: Callable[[Tensor], Tensor],
    real: Tensor,
    fake: Tensor,
    gp_weight: float,
) -> dict[str, Tensor]:
    """The critic's loss on real and (detached) fake inputs, plus lambda * penalty for wgan-gp.

    Returns {"loss", "d_real", "d_fake"[, "gp"]}; d_* are the critic's mean outputs (logits for
    minimax / ns), logged to watch the game.
    """
    r, f = critic(real), critic(fake)
    parts = {"loss": critic_loss(kind, r, f), "d_real": r.mean(), "d_fake": f.mean()}
    if kind == "wgan-gp":
        parts["gp"] = gradient_penalty(critic, real, fake)
        parts["loss"] = parts["loss"] + gp_weight * parts["gp"]
    return parts


def clip_after_critic_step(
    phase: str, loss: str, critics: nn.Module | Iterable[nn.Module], c: float
) -> None:
    """WGAN's weight clipping to [-c, c] after each critic step (loss=wgan only)."""
    if phase != "critic" or loss != "wgan":
        return
    for critic in [critics] if isinstance(critics, nn.Module) else critics:
        clip_weights(critic.parameters(), c)
