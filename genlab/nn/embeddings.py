"""Time and class embeddings for diffusion and score networks ([001] "DDPM implementation").

The time t enters the network as the Transformer's sinusoidal position embedding (Vaswani et al.
arXiv:1706.03762 section 3.5, used for t by Ho et al. arXiv:2006.11239 appendix B and [001]:
"time encoding follows the transformers sinusoidal position embedding"), followed by a small MLP.

Scale of t. The sinusoid's frequencies run from 1 down to 1/max_period, made for integer steps
t in {0, ..., T-1} with T ~ 1000. A continuous time t in [0, 1] (score SDEs) must be stretched
to that range, else every embedding is nearly that of t = 0: pass `scale=1000` (score_sde's
DDPM++ feeds 999 t for the VP-SDE). For noise levels sigma (NCSN, VE-SDE) a common choice is to
embed log(sigma) with a scale of order 250 (Song & Ermon; Karras et al. use c_noise = ln(sigma)/4).

Class labels (classifier-free guidance, Ho & Salimans arXiv:2207.12598). With num_classes = K > 0
the embedding table has K + 1 rows: rows 0..K-1 are the classes and row K is the learned "null"
class of the unconditional model. `labels=None` means every sample is unconditional; inside a
labels tensor the value -1 marks the unconditional samples, so label dropout is
`labels.masked_fill(drop, -1)`. The class embedding is added to the time embedding (Nichol &
Dhariwal arXiv:2102.09672, "improved DDPM", class-conditional models).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

NULL_LABEL = -1  # the label meaning "no class": classifier-free guidance's unconditional path


def sinusoidal_embedding(
    t: Tensor, dim: int, max_period: float = 10000.0, scale: float = 1.0
) -> Tensor:
    """t (B,) -> (B, dim): [sin(s t w_0), ..., sin(s t w_{h-1}), cos(s t w_0), ..., cos(...)].

    w_i = max_period^(-i / h), h = dim // 2, s = scale: the Transformer's PE(pos, 2i) =
    sin(pos / 10000^(2i / dim)) with pos = s t, sines first as in Ho et al. (arXiv:2006.11239,
    appendix B; [001]). Frequencies are geometric from 1 down to max_period^(-(h-1)/h); an odd dim
    gets a final zero column. t may be integer steps or floats; the result is in t's floating
    dtype (the default dtype for integer t). See the module docstring for the scale of t.
    """
    if dim < 2:
        raise ValueError(f"sinusoidal embedding needs dim >= 2, got {dim}")
    if t.dim() != 1:
        raise ValueError(f"sinusoidal_embedding expects t of shape (B,), got {tuple(t.shape)}")
    dtype = t.dtype if t.is_floating_point() else torch.get_default_dtype()
    half = dim // 2
    i = torch.arange(half, device=t.device, dtype=dtype)
    freqs = torch.exp(-math.log(max_period) * i / half)  # (h,) geometric, w_0 = 1
    args = (t.to(dtype) * scale)[:, None] * freqs[None, :]  # (B, h)
    emb = torch.cat([torch.sin(args), torch.cos(args)], dim=1)  # (B, 2h)
    if dim % 2:
        emb = torch.cat([emb, emb.new_zeros(len(t), 1)], dim=1)
    return emb


def broadcast_time(t: Tensor | float, batch: int, device: torch.device) -> Tensor:
    """A time given as a number, a 0-d tensor or a (B,) tensor -> a (B,) tensor on `device`.

    Samplers call networks with one t for the whole batch; training draws one t per sample.
    """
    t = torch.as_tensor(t, device=device)
    if t.dim() == 0:
        return t.expand(batch)
    if t.shape != (batch,):
        raise ValueError(f"t must be a scalar or of shape ({batch},), got {tuple(t.shape)}")
    return t


class TimeEmbedding(nn.Module):
    """t (B,) [, labels (B,)] -> (B, out_dim): sinusoid -> Linear -> SiLU -> Linear [+ class emb].

    Ho et al. arXiv:2006.11239 appendix B (temb = dense(silu(dense(sinusoid(t))))), with the class
    embedding of Nichol & Dhariwal arXiv:2102.09672 added. `dim` is the sinusoid's width and
    `out_dim` (default 4 dim, as in DDPM) the output's. With num_classes = K > 0, labels in
    {0, ..., K-1} pick a class and -1 (or labels=None for the whole batch) the learned null class
    (see the module docstring). No activation at the end: users apply SiLU before their projection.
    """

    def __init__(
        self,
        dim: int,
        out_dim: int | None = None,
        *,
        num_classes: int = 0,
        scale: float = 1.0,
        max_period: float = 10000.0,
    ) -> None:
        super().__init__()
        if num_classes < 0:
            raise ValueError(f"num_classes must be >= 0, got {num_classes}")
        if dim < 2:  # checked here too, so a bad width fails when the model is built
            raise ValueError(f"time embedding needs dim >= 2, got {dim}")
        out_dim = out_dim or 4 * dim
        self.dim, self.out_dim = dim, out_dim
        self.num_classes = num_classes
        self.scale, self.max_period = scale, max_period
        self.mlp = nn.Sequential(nn.Linear(dim, out_dim), nn.SiLU(), nn.Linear(out_dim, out_dim))
        # row num_classes is the null class, trained by label dropout
        self.label_emb = nn.Embedding(num_classes + 1, out_dim) if num_classes > 0 else None

    def class_index(self, labels: Tensor | None, batch: int, device: torch.device) -> Tensor:
        """Labels in {-1, 0, ..., K-1} (or None: all -1) -> embedding rows in {0, ..., K}."""
        if labels is None:
            return torch.full((batch,), self.num_classes, device=device, dtype=torch.long)
        labels = labels.long()
        if labels.shape != (batch,):
            raise ValueError(f"labels must have shape ({batch},), got {tuple(labels.shape)}")
        # checked here: an out-of-range index in nn.Embedding is a device-side assert on a GPU
        if bool(((labels < NULL_LABEL) | (labels >= self.num_classes)).any()):
            raise ValueError(
                f"labels must lie in {{-1, 0, ..., {self.num_classes - 1}}} (-1 = unconditional)"
            )
        return torch.where(labels == NULL_LABEL, self.num_classes, labels)

    def forward(self, t: Tensor, labels: Tensor | None = None) -> Tensor:
        # in the weights' dtype: a float64 network gets a float64 sinusoid whatever t's type
        t_float = t.to(self.mlp[0].weight.dtype)
        emb = sinusoidal_embedding(t_float, self.dim, self.max_period, self.scale)
        emb = self.mlp(emb)  # (B, out_dim)
        if self.label_emb is None:
            if labels is not None:
                raise ValueError("labels given to an unconditional network (num_classes=0)")
            return emb
        return emb + self.label_emb(self.class_index(labels, len(t), t.device))
