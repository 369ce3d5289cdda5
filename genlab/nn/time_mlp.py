"""Time-conditioned MLP: eps_theta(x_t, t) or s_theta(x, t) for vector data such as 2-D toys."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from genlab.nn.embeddings import TimeEmbedding, broadcast_time
from genlab.nn.mlp import MLP

TIME_MODES = ("add", "concat")


class TimeMLP(nn.Module):
    """x (B, D), t (B,) [, labels (B,)] -> (B, out_dim), out_dim defaulting to D.

    The time (and class) embedding e = TimeEmbedding(t, labels) (genlab.nn.embeddings: sinusoid
    of [001]'s DDPM implementation, then an MLP; labels -1 or None = the null class) enters as
    - "add": every hidden layer computes h <- SiLU(W h + b + U SiLU(e)), the vector version of the
      U-Net's residual blocks (Ho et al. arXiv:2006.11239 appendix B), or
    - "concat": the input is [x, e] and the rest a plain SiLU MLP (genlab.nn.mlp.MLP).
    The output layer is linear. For continuous t in [0, 1] pass time_scale=1000.
    """

    def __init__(
        self,
        in_dim: int,
        hidden: Sequence[int] = (128, 128, 128),
        out_dim: int | None = None,
        *,
        emb_dim: int = 64,
        num_classes: int = 0,
        time_mode: str = "add",
        time_scale: float = 1.0,
    ) -> None:
        super().__init__()
        if time_mode not in TIME_MODES:
            choices = ", ".join(TIME_MODES)
            raise ValueError(f"unknown time_mode {time_mode!r}; choose from {choices}")
        if not hidden:
            raise ValueError("TimeMLP needs at least one hidden layer")
        self.in_dim, self.out_dim = in_dim, out_dim or in_dim
        self.time_mode = time_mode
        self.time_embed = TimeEmbedding(emb_dim, emb_dim, num_classes=num_classes, scale=time_scale)
        if time_mode == "concat":
            self.net: nn.Module = MLP(in_dim + emb_dim, hidden, self.out_dim)
            return
        dims = [in_dim, *hidden]
        self.layers = nn.ModuleList(nn.Linear(a, b) for a, b in zip(dims[:-1], dims[1:]))
        self.emb_proj = nn.ModuleList(nn.Linear(emb_dim, b) for b in hidden)
        self.head = nn.Linear(dims[-1], self.out_dim)

    def forward(self, x: Tensor, t: Tensor | float, labels: Tensor | None = None) -> Tensor:
        if x.dim() != 2 or x.shape[1] != self.in_dim:
            raise ValueError(f"TimeMLP expects x of shape (B, {self.in_dim}), got {tuple(x.shape)}")
        emb = self.time_embed(broadcast_time(t, len(x), x.device), labels)  # (B, emb_dim)
        if self.time_mode == "concat":
            return self.net(torch.cat([x, emb], dim=1))
        e = F.silu(emb)
        h = x
        for layer, proj in zip(self.layers, self.emb_proj):
            h = F.silu(layer(h) + proj(e))  # (B, hidden_k)
        return self.head(h)  # (B, out_dim)
