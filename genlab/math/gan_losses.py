"""Adversarial losses, written once: critic and generator objectives, gradient penalty, clipping.

Critic outputs are logits for `minimax` / `ns` (D(x) = sigmoid(logit)) and raw scores for the
others. Every function takes outputs of any shape (a PatchGAN gives one per patch) and averages.

  minimax  critic:  -E log D(x) - E log(1 - D(G(z)))         generator:  E log(1 - D(G(z)))
  ns       critic:  as minimax                               generator: -E log D(G(z))
  ls       critic: 1/2 E (D(x) - b)^2 + 1/2 E (D(G(z)) - a)^2  generator: 1/2 E (D(G(z)) - c)^2
  wgan     critic:  E D(G(z)) - E D(x)                       generator: -E D(G(z))
  wgan-gp  critic:  wgan + lambda E (|grad D(x_hat)|_2 - 1)^2 (the penalty is added by the model)
  hinge    critic:  E relu(1 - D(x)) + E relu(1 + D(G(z)))   generator: -E D(G(z))

Sources: Goodfellow et al. arXiv:1406.2661 (minimax, non-saturating) [000, 001, 002, 004];
Mao et al. arXiv:1611.04076 (least squares, a, b, c) [000, 001]; Arjovsky et al. arXiv:1701.07875
(Wasserstein, clipping, Algorithm 1) [001]; Gulrajani et al. arXiv:1704.00028 (gradient penalty);
Lim & Ye arXiv:1705.02894 / Miyato et al. arXiv:1802.05957 (hinge); Salimans et al.
arXiv:1606.03498 (one-sided label smoothing) [002].
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import torch
import torch.nn.functional as F
from torch import Tensor

LOSSES = ("minimax", "ns", "ls", "wgan", "wgan-gp", "hinge")


def check_loss(kind: str) -> None:
    if kind not in LOSSES:
        raise ValueError(f"unknown GAN loss {kind!r}; choose from {', '.join(LOSSES)}")


def critic_loss(
    kind: str,
    real: Tensor,
    fake: Tensor,
    *,
    ls: tuple[float, float, float] = (0.0, 1.0, 1.0),
    real_target: float = 1.0,
) -> Tensor:
    """The critic's (discriminator's) loss on its outputs for real and generated examples.

    real_target < 1 is one-sided label smoothing (minimax / ns only): real examples are pushed
    towards D = real_target, generated ones still towards 0.
    """
    check_loss(kind)
    if kind in ("minimax", "ns"):
        # -t log s(r) - (1 - t) log(1 - s(r)) - log(1 - s(f)), s = sigmoid, -log s(v) = softplus(-v)
        real_term = real_target * F.softplus(-real) + (1 - real_target) * F.softplus(real)
        return real_term.mean() + F.softplus(fake).mean()
    if kind == "ls":
        a, b, _ = ls
        return 0.5 * ((real - b) ** 2).mean() + 0.5 * ((fake - a) ** 2).mean()
    if kind in ("wgan", "wgan-gp"):
        return fake.mean() - real.mean()
    return F.relu(1 - real).mean() + F.relu(1 + fake).mean()  # hinge


def generator_loss(
    kind: str, fake: Tensor, *, ls: tuple[float, float, float] = (0.0, 1.0, 1.0)
) -> Tensor:
    """The generator's loss on the critic's outputs for generated examples."""
    check_loss(kind)
    if kind == "minimax":
        return -F.softplus(fake).mean()  # log(1 - sigmoid(f)) = -softplus(f): saturates
    if kind == "ns":
        return F.softplus(-fake).mean()  # -log sigmoid(f)
    if kind == "ls":
        return 0.5 * ((fake - ls[2]) ** 2).mean()
    return -fake.mean()  # wgan, wgan-gp, hinge


def gradient_penalty(
    critic: Callable[[Tensor], Tensor],
    real: Tensor,
    fake: Tensor,
    *,
    generator: torch.Generator | None = None,
) -> Tensor:
    """E (||grad_x D(x_hat)||_2 - 1)^2 with x_hat = e x + (1 - e) G(z), e ~ U[0, 1] per example.

    The norm is per example over all of x's dimensions (Gulrajani et al. arXiv:1704.00028, Alg. 1).
    create_graph=True so the penalty itself is differentiated in the critic's update.
    """
    shape = (real.shape[0],) + (1,) * (real.dim() - 1)
    e = torch.rand(shape, generator=generator, device=real.device, dtype=real.dtype)
    x_hat = (e * real.detach() + (1 - e) * fake.detach()).requires_grad_(True)
    out = critic(x_hat)
    (grad,) = torch.autograd.grad(out.sum(), x_hat, create_graph=True)
    return ((grad.flatten(1).norm(dim=1) - 1) ** 2).mean()


@torch.no_grad()
def clip_weights(params: Iterable[Tensor], c: float) -> None:
    """WGAN's weight clipping to [-c, c] after every critic update (Algorithm 1)."""
    for p in params:
        p.clamp_(-c, c)
