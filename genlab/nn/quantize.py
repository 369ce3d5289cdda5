"""Vector quantisation: a codebook of K vectors and nearest-code lookup (VQ-VAE's bottleneck).

van den Oord et al. arXiv:1711.00937; [001] "Learning discrete distributions: VQ-VAE", [003].
A position's encoder output z_e in R^D is replaced by its nearest code
    k = argmin_j ||z_e - e_j||^2,    z_q = e_k,
and, since argmin has no gradient, the decoder's gradient w.r.t. z_q is copied to z_e
(straight-through estimator, [001] "Gradients"):
    z_q = z_e + sg[e_k - z_e]        (value e_k, d z_q / d z_e = I).
The losses that train the codebook and the encoder live with the model (genlab.models.vqvae).

Codebook updates. By gradient (the codebook is a Parameter, trained by the model's codebook loss
||sg[z_e] - e||^2), or by exponential moving averages (ema=True, the paper's appendix A.1; the
codebook is then a buffer): with n_i the number of positions assigned to code i in a batch and
s_i the sum of their z_e,
    N_i <- g N_i + (1 - g) n_i,    m_i <- g m_i + (1 - g) s_i,    e_i = m_i / N_i~,
N_i~ the Laplace-smoothed count (N_i + eps) / (N + K eps) * N, N = sum_i N_i.

Dead-code restart (Dhariwal et al. arXiv:2005.00341, Jukebox's "random restarts"): `usage` is an
exponential moving average of every code's assignments per batch; a code whose usage falls below
`restart_threshold` is re-initialised to a random encoder output of the batch and its usage set
to the threshold. `usage` starts at 0, so the first update initialises the whole codebook from
the data. Updates (EMA and restarts) run in `update(z_e, codes)`, which the model calls from its
`after_step` hook with the encoder outputs of the step's training batch (all its micro-batches).
Under torch.distributed, `update` first gathers every process's z_e and codes (rank order, which
is shard order: genlab.nn.sync), so the statistics and the restart candidates are those of the
global batch, exactly as for one process.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor, nn

from genlab.nn.sync import broadcast_, distributed, gather_rows


class Quantized(NamedTuple):
    """Output of VectorQuantizer: shapes (B, D, *spatial) for z_q and e, (B, *spatial) codes."""

    z_q: Tensor  # straight-through: value e_k, gradient copied to z_e
    e: Tensor  # e_k looked up from the codebook (the gradient reaches the codebook)
    codes: Tensor  # k, long


def perplexity(codes: Tensor, num_codes: int) -> Tensor:
    """exp(H(p)) of the codes' empirical frequencies p_k: 1 (one code) .. K (uniform use)."""
    p = torch.bincount(codes.flatten(), minlength=num_codes).double() / codes.numel()
    return torch.exp(-torch.special.xlogy(p, p).sum()).float()


class VectorQuantizer(nn.Module):
    """Codebook e (K, D); z_e (B, D, *spatial) -> nearest codes and straight-through z_q."""

    def __init__(
        self,
        num_codes: int,
        code_dim: int,
        *,
        ema: bool = False,
        decay: float = 0.99,
        restart_threshold: float = 1.0,
        eps: float = 1e-5,
    ) -> None:
        super().__init__()
        if num_codes < 2 or code_dim < 1:
            raise ValueError(f"need >= 2 codes of dimension >= 1; got K={num_codes}, D={code_dim}")
        self.num_codes, self.code_dim, self.ema = num_codes, code_dim, ema
        self.decay, self.restart_threshold, self.eps = decay, restart_threshold, eps
        init = torch.empty(num_codes, code_dim).uniform_(-1 / num_codes, 1 / num_codes)
        if ema:
            self.register_buffer("codebook", init)
            self.register_buffer("ema_count", torch.ones(num_codes))  # N_i
            self.register_buffer("ema_sum", init.clone())  # m_i, so that m_i / N_i = e_i
        else:
            self.codebook = nn.Parameter(init)
        self.register_buffer("usage", torch.zeros(num_codes))  # EMA of assignments per batch

    @staticmethod
    def flatten(z: Tensor) -> Tensor:
        """(B, D, *spatial) -> (B * prod(spatial), D), one row per position."""
        return z.movedim(1, -1).reshape(-1, z.shape[1])

    def nearest(self, z: Tensor) -> Tensor:
        """k = argmin_j ||z - e_j||^2 for rows z (N, D) -> (N,) long."""
        e = self.codebook.to(z.dtype)
        dist2 = (z * z).sum(1, keepdim=True) - 2 * z @ e.T + (e * e).sum(1)  # (N, K)
        return dist2.argmin(1)

    def lookup(self, codes: Tensor) -> Tensor:
        """Codes (B, *spatial) -> e_k (B, D, *spatial)."""
        return self.codebook[codes].movedim(-1, 1)

    def forward(self, z_e: Tensor) -> Quantized:
        """Quantise z_e (B, D, *spatial); pure (no statistics are updated here)."""
        if z_e.shape[1] != self.code_dim:
            raise ValueError(f"expected {self.code_dim} channels, got shape {tuple(z_e.shape)}")
        codes = self.nearest(self.flatten(z_e)).view(z_e.shape[0], *z_e.shape[2:])
        e = self.lookup(codes).to(z_e.dtype)
        z_q = z_e + (e - z_e).detach()  # straight-through estimator
        return Quantized(z_q, e, codes)

    @torch.no_grad()
    def update(self, z_e: Tensor, codes: Tensor) -> None:
        """After an optimiser step: usage statistics, EMA codebook (ema=True) and restarts.

        z_e (B, D, *spatial) and codes (B, *spatial) are this process's rows of the global
        batch; under torch.distributed they are gathered from every process first.
        """
        # the global batch in shard order, identical on every process
        z = self.flatten(gather_rows(z_e.detach().to(self.usage.dtype)))  # (N, D)
        k = gather_rows(codes).flatten()
        counts = torch.bincount(k, minlength=self.num_codes).to(z.dtype)  # n_i
        sums = torch.zeros_like(self.codebook).index_add_(0, k, z) if self.ema else None  # s_i
        g = self.decay
        self.usage.mul_(g).add_(counts, alpha=1 - g)
        if self.ema:
            self.ema_count.mul_(g).add_(counts, alpha=1 - g)
            self.ema_sum.mul_(g).add_(sums, alpha=1 - g)
            n = self.ema_count.sum()
            smoothed = (self.ema_count + self.eps) / (n + self.num_codes * self.eps) * n
            self.codebook.copy_(self.ema_sum / smoothed[:, None])
        if self.restart_threshold > 0:
            self.restart_dead(z)
        if distributed():  # restarts draw on each process: rank 0's choice holds everywhere
            shared = [self.codebook, self.usage]
            if self.ema:
                shared += [self.ema_count, self.ema_sum]
            for t in shared:
                broadcast_(t.data)

    @torch.no_grad()
    def restart_dead(self, z: Tensor) -> int:
        """Codes with usage < restart_threshold -> random rows of z (N, D); returns how many."""
        dead = self.usage < self.restart_threshold
        n_dead = int(dead.sum())
        if n_dead == 0 or len(z) == 0:
            return 0
        rows = z[torch.randint(len(z), (n_dead,), device=z.device)].to(self.codebook.dtype)
        self.codebook.data[dead] = rows
        self.usage[dead] = self.restart_threshold
        if self.ema:  # m_i / N_i = the new code
            self.ema_count[dead] = self.restart_threshold
            self.ema_sum[dead] = self.restart_threshold * rows
        return n_dead

    def extra_repr(self) -> str:
        return f"num_codes={self.num_codes}, code_dim={self.code_dim}, ema={self.ema}"
