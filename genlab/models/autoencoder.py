"""Deterministic autoencoders: vanilla, denoising, sparse and contractive ([000], [003], [004]).

One model; the variants are config values (registered under their own names with presets):
    loss = R(x, g(f(x~))) + sparsity * ||z||_1 + contractive * ||J_f(x)||_F^2
with x~ = x + noise_std * eps for the denoising autoencoder (Vincent et al. 2008) and R the
squared error (continuous data) or binary cross-entropy (data in [0, 1]). [004] "Autoencoder
variants": sparse (L1 on z), denoising, contractive (Rifai et al. 2011).
An autoencoder has no prior; `sample` draws z from a Gaussian fitted to the training codes
(running mean and covariance), the simplest post-hoc latent sampler (pythae's idea).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor

from genlab.data.spec import DataSpec
from genlab.errors import GenlabError
from genlab.math.jacobian import jacobian_frobenius_sq
from genlab.models.base import GenerativeModel
from genlab.nn import DecoderNet, EncoderNet, sync
from genlab.registry import MODELS


@dataclass
class AutoencoderConfig:
    arch: Literal["auto", "mlp", "conv"] = "auto"  # auto: conv for images, MLP for vectors
    latent_dim: int = 16
    hidden: tuple[int, ...] = (256, 256)  # MLP widths (encoder; the decoder mirrors them)
    channels: tuple[int, ...] = (32, 64)  # conv widths per stride-2 stage
    recon: Literal["auto", "mse", "bce"] = "auto"  # auto: bce for data in [0, 1], else mse
    noise_std: float = 0.0  # denoising: corrupt the input with N(0, noise_std^2)
    sparsity: float = 0.0  # weight of the L1 penalty on z
    contractive: float = 0.0  # weight of the squared Frobenius norm of the encoder Jacobian
    code_momentum: float = 0.99  # running Gaussian fit of the codes, used by sample()


@MODELS.register("ae", "autoencoder (MLP or conv): x -> z -> x_hat, squared error or BCE")
@MODELS.register("dae", "denoising autoencoder: reconstruct x from x + N(0, 0.3^2)", noise_std=0.3)
@MODELS.register("sparse-ae", "sparse autoencoder: L1 penalty on the code z", sparsity=0.01)
@MODELS.register("cae", "contractive autoencoder: penalty ||df/dx||_F^2", contractive=0.01)
class Autoencoder(GenerativeModel):
    """Autoencoder x -> z = f(x) -> x_hat = g(z); variants by config ([004] "variants")."""

    config_class = AutoencoderConfig

    def __init__(self, cfg: AutoencoderConfig, spec: DataSpec) -> None:
        super().__init__(cfg, spec)
        if not 0.0 <= cfg.code_momentum < 1.0:  # 1 would never learn the codes, > 1 diverges
            raise GenlabError(f"model.code_momentum must be in [0, 1); got {cfg.code_momentum}")
        nets = dict(arch=cfg.arch, hidden=cfg.hidden, channels=cfg.channels)
        self.encoder = EncoderNet(spec, cfg.latent_dim, **nets)
        self.decoder = DecoderNet(cfg.latent_dim, spec, **nets)
        bounded = spec.value_range == (0.0, 1.0)
        self.recon_loss = cfg.recon if cfg.recon != "auto" else ("bce" if bounded else "mse")
        d = cfg.latent_dim
        self.register_buffer("code_mean", torch.zeros(d))
        self.register_buffer("code_cov", torch.eye(d))

    def encode(self, x: Tensor, labels: Tensor | None = None) -> Tensor:
        return self.encoder(x)

    def decode(self, z: Tensor, labels: Tensor | None = None) -> Tensor:
        out = self.decoder(z)
        return torch.sigmoid(out) if self.recon_loss == "bce" else out

    def reconstruct(self, x: Tensor, labels: Tensor | None = None) -> Tensor:
        return self.decode(self.encode(x))

    def forward(self, batch: dict[str, Tensor], phase: str = "main") -> dict[str, Tensor]:
        x = batch["x"]
        cfg = self.cfg
        x_in = x + cfg.noise_std * torch.randn_like(x) if cfg.noise_std > 0 else x
        if cfg.contractive > 0:
            x_in = x_in.detach().requires_grad_(True)
        z = self.encoder(x_in)  # (B, d)
        out = self.decoder(z)
        if self.recon_loss == "bce":
            recon = F.binary_cross_entropy_with_logits(out, x, reduction="none")
        else:
            recon = 0.5 * (out - x) ** 2
        parts = {"recon": recon.flatten(1).sum(1).mean()}
        loss = parts["recon"]
        if cfg.sparsity > 0:
            parts["l1"] = z.abs().sum(1).mean()
            loss = loss + cfg.sparsity * parts["l1"]
        if cfg.contractive > 0:
            parts["jacobian"] = jacobian_frobenius_sq(self.encoder, x_in, out=z).mean()
            loss = loss + cfg.contractive * parts["jacobian"]
        if self.training and not sync.later_micro_batch():
            self.track_codes(z.detach())
        return {"loss": loss, **parts}

    @torch.no_grad()
    def track_codes(self, z: Tensor) -> None:
        """Running Gaussian fit N(code_mean, code_cov) of the training codes.

        Like batch norm's running statistics it follows the first micro-batch of each step:
        under DDP rank 0's (its buffers are broadcast), under train.grad_accum micro-batch 0's
        (genlab.nn.sync), so the split of the global batch does not change it.
        """
        m = self.cfg.code_momentum
        mean = z.mean(0)
        centred = z - mean
        cov = centred.T @ centred / max(len(z) - 1, 1)
        self.code_mean.mul_(m).add_(mean.to(self.code_mean.dtype), alpha=1 - m)
        self.code_cov.mul_(m).add_(cov.to(self.code_cov.dtype), alpha=1 - m)

    @torch.no_grad()
    def sample(
        self,
        n: int,
        *,
        generator: torch.Generator | None = None,
        labels: Tensor | None = None,
        sampler: str | None = None,
        **kw: object,
    ) -> Tensor:
        d = self.cfg.latent_dim
        jitter = 1e-5 * torch.eye(d, device=self.code_cov.device)
        chol = torch.linalg.cholesky(self.code_cov.double() + jitter.double()).float()
        eps = torch.randn(n, d, generator=generator, device=self.device)
        return self.decode(self.code_mean + eps @ chol.T)
