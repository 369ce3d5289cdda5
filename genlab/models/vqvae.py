"""VQ-VAE: a conv autoencoder with a vector-quantised code grid, and a PixelCNN prior over codes.

van den Oord et al. arXiv:1711.00937; [001] "Learning discrete distributions: VQ-VAE", [003].
The encoder maps x to a grid z_e (B, D, h, w); each position is replaced by its nearest codebook
vector e_k (genlab.nn.quantize, straight-through gradient); the decoder maps z_q back to x. The
loss of [001] (sg = stop gradient):
    L = R(x, Dec(z_q(x))) + ||sg[z_e(x)] - e||^2 + beta ||z_e(x) - sg[e]||^2
with R the squared error ||x - x_hat||^2 of [001] (recon=mse) or the Bernoulli cross-entropy
-log p(x | z_q) for data in [0, 1] (recon=auto picks it there, as the autoencoder does), sums
over pixels and code entries, averaged over the batch. The codebook term trains the codebook
only, the commitment term (beta = 0.25 as in the paper) the encoder only. With ema=true the
codebook follows exponential moving averages of its assigned encoder outputs instead of the
codebook term (logged, not optimised). Unused codes are restarted from encoder outputs
(restart_threshold; VectorQuantizer's doc), and the log has the batch's code perplexity
exp(H(p_k)) in [1, K] and `usage`, the fraction of codes the batch used.

Prior. The VQ-VAE is trained with a uniform prior over codes; to sample, an autoregressive prior
p(k) = prod_i p(k_i | k_<i) over the code grid is fitted to the codes of the trained encoder:
genlab.models.autoregressive.CategoricalPixelCNN with a learned embedding per code (codes have no
order). sample(n) draws a code grid from it and decodes e_k.

Two stages through the one Trainer: two phases run every step.
  - "autoencoder" (encoder, decoder, codebook): the loss L for steps < prior_start; from
    prior_start on the encoder and codebook are frozen (codes fixed, no EMA, no restarts) and
    only the decoder keeps training, on R(x, Dec(z_q)) of the frozen codes.
  - "prior" (the PixelCNN): -log p(k(x)) of the codes of the current encoder, k computed without
    gradient. Before prior_start this is a warm start on codes that still move; from prior_start
    on the codes are those of the frozen encoder, the second stage of the paper.
So `genlab train vqvae` trains both stages (train.steps should exceed prior_start enough for the
prior to fit) and `genlab sample` decodes PixelCNN samples.

Capabilities: encode(x) = z_e (B, D, h, w), the continuous pre-quantisation grid; decode(z)
quantises z and decodes (the quantiser is part of the decoder, as in latent diffusion's VQ
regularisation, Rombach et al. arXiv:2112.10752), so reconstruct(x) = decode(encode(x)).
codes(x) and decode_codes(k) work on the integer grid.
"""

from __future__ import annotations

from contextlib import nullcontext
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from genlab.data.spec import DataSpec
from genlab.errors import GenlabError
from genlab.models.autoregressive import CategoricalPixelCNN
from genlab.models.base import GenerativeModel, Phase, adam
from genlab.nn import ConvDecoder, ConvEncoder
from genlab.nn.conv import halvings
from genlab.nn.quantize import VectorQuantizer, perplexity
from genlab.registry import MODELS


def codebook_loss(z_e: Tensor, e: Tensor) -> Tensor:
    """||sg[z_e] - e||^2 per example (sum over code entries): moves the codebook only [001]."""
    return ((z_e.detach() - e) ** 2).flatten(1).sum(1)


def commitment_loss(z_e: Tensor, e: Tensor) -> Tensor:
    """||z_e - sg[e]||^2 per example: keeps the encoder near its codes, moves it only [001]."""
    return ((z_e - e.detach()) ** 2).flatten(1).sum(1)


@dataclass
class VQVAEConfig:
    channels: tuple[int, ...] = (32, 64)  # conv widths per stride-2 stage (sets the code grid)
    latent_dim: int = 16  # D: dimension of each codebook vector
    num_codes: int = 64  # K: codebook size
    beta: float = 0.25  # weight of the commitment loss
    recon: Literal["auto", "mse", "bce"] = "auto"  # auto: bce for data in [0, 1], else mse
    ema: bool = False  # codebook by exponential moving averages instead of the codebook loss
    ema_decay: float = 0.99  # g of the EMA codebook and of the usage statistics
    restart_threshold: float = 1.0  # restart codes used less than this per batch (0 = never)
    prior_start: int = 1000  # step from which encoder and codebook are frozen (module doc)
    prior_width: int = 32  # PixelCNN prior: h (residual stream 2h)
    prior_blocks: int = 3  # PixelCNN prior: type-B residual blocks
    prior_kernel: int = 5  # PixelCNN prior: size of the type-A convolution
    prior_embedding: int = 16  # PixelCNN prior: learned embedding size per code


@MODELS.register("vqvae", "VQ-VAE: codebook, commitment loss, straight-through; PixelCNN prior")
class VQVAE(GenerativeModel):
    """VQ-VAE, L = R(x, Dec(z_q)) + ||sg[z_e] - e||^2 + beta ||z_e - sg[e]||^2 [001], with a
    PixelCNN prior over the code grid trained in a second phase (module doc)."""

    config_class = VQVAEConfig
    data_kinds = ("image",)  # a spatial code grid

    def __init__(self, cfg: VQVAEConfig, spec: DataSpec) -> None:
        super().__init__(cfg, spec)
        self.check_config(cfg, spec)
        d = cfg.latent_dim
        self.encoder = ConvEncoder(spec.shape, cfg.channels)
        c, h, w = self.encoder.top_shape
        self.code_shape = (h, w)
        self.pre_quant = nn.Conv2d(c, d, 1)  # features -> z_e, D channels per position
        self.quantizer = VectorQuantizer(
            cfg.num_codes,
            d,
            ema=cfg.ema,
            decay=cfg.ema_decay,
            restart_threshold=cfg.restart_threshold,
        )
        self.decoder = ConvDecoder(d * h * w, spec.shape, cfg.channels)
        self.prior = CategoricalPixelCNN(
            cfg.num_codes,
            self.code_shape,
            width=cfg.prior_width,
            num_blocks=cfg.prior_blocks,
            kernel_size=cfg.prior_kernel,
            embedding_dim=cfg.prior_embedding,
        )
        bounded = spec.value_range == (0.0, 1.0)
        self.recon_loss = cfg.recon if cfg.recon != "auto" else ("bce" if bounded else "mse")
        if self.recon_loss == "bce" and not bounded:
            raise GenlabError(f"model.recon=bce needs data in [0, 1]; {spec.name} is not")
        # (z_e, codes) of every training micro-batch since the last autoencoder step:
        # after_step updates the codebook from all of them (the whole global batch)
        self.pending: list[tuple[Tensor, Tensor]] = []

    @staticmethod
    def check_config(cfg: VQVAEConfig, spec: DataSpec) -> None:
        c, h, w = spec.shape
        if not cfg.channels or halvings(h, w, len(cfg.channels)) == 0:
            raise GenlabError(
                f"vqvae needs images with even sides >= 4 and model.channels; {spec.name} is "
                f"{h}x{w}"
            )
        if cfg.num_codes < 2 or cfg.latent_dim < 1:
            raise GenlabError("model.num_codes must be >= 2 and model.latent_dim >= 1")
        if cfg.beta < 0 or cfg.prior_start < 0 or cfg.restart_threshold < 0:
            raise GenlabError("model.beta, model.prior_start and model.restart_threshold >= 0")
        if not 0 < cfg.ema_decay < 1:
            raise GenlabError(f"model.ema_decay must be in (0, 1), got {cfg.ema_decay}")

    # ------------------------------------------------------------------------------- networks
    def encode(self, x: Tensor, labels: Tensor | None = None) -> Tensor:
        """z_e (B, D, h, w), before quantisation."""
        features = self.encoder(x).view(-1, *self.encoder.top_shape)  # (B, C, h, w)
        return self.pre_quant(features)

    def decoder_out(self, z_q: Tensor) -> Tensor:
        """z_q (B, D, h, w) -> decoder output (B, C, H, W), unbounded (logits for bce)."""
        return self.decoder(z_q.flatten(1))

    def to_data_space(self, out: Tensor) -> Tensor:
        if self.recon_loss == "bce":
            return torch.sigmoid(out)
        if self.spec.value_range is not None:
            return out.clamp(*self.spec.value_range)
        return out

    def decode(self, z: Tensor, labels: Tensor | None = None) -> Tensor:
        """Quantise z (B, D, h, w) to its nearest codes and decode, in data space."""
        return self.to_data_space(self.decoder_out(self.quantizer(z).z_q))

    def reconstruct(self, x: Tensor, labels: Tensor | None = None) -> Tensor:
        return self.decode(self.encode(x))

    def codes(self, x: Tensor) -> Tensor:
        """The code grid k(x) (B, h, w), long."""
        return self.quantizer(self.encode(x)).codes

    def decode_codes(self, codes: Tensor) -> Tensor:
        """Code grid (B, h, w) -> images in data space."""
        return self.to_data_space(self.decoder_out(self.quantizer.lookup(codes)))

    # -------------------------------------------------------------------------------- training
    def frozen(self) -> bool:
        """Second stage: encoder and codebook fixed, the prior fits their codes."""
        return self.step >= self.cfg.prior_start

    def phases(self, lr: float) -> list[Phase]:
        prior = set(map(id, self.prior.parameters()))
        autoencoder = [p for p in self.parameters() if id(p) not in prior]
        return [
            Phase("autoencoder", autoencoder, adam(lr)),
            Phase("prior", list(self.prior.parameters()), adam(lr)),
        ]

    def reconstruction_loss(self, x: Tensor, out: Tensor) -> Tensor:
        """R(x, x_hat) per example: ||x - x_hat||^2 ([001]) or Bernoulli cross-entropy."""
        if self.recon_loss == "bce":
            r = F.binary_cross_entropy_with_logits(out, x, reduction="none")
        else:
            r = (out - x) ** 2
        return r.flatten(1).sum(1)

    def forward(self, batch: dict[str, Tensor], phase: str = "autoencoder") -> dict[str, Tensor]:
        x = batch["x"]
        if phase == "prior":
            with torch.no_grad():
                codes = self.codes(x)  # (B, h, w)
            nll = -self.prior.log_prob(codes).mean()
            return {"loss": nll, "nll": nll}
        if phase != "autoencoder":
            raise ValueError(f"vqvae has phases autoencoder and prior, not {phase!r}")
        frozen = self.frozen()
        with torch.no_grad() if frozen else nullcontext():
            z_e = self.encode(x)
            q = self.quantizer(z_e)
        recon = self.reconstruction_loss(x, self.decoder_out(q.z_q)).mean()
        codebook = codebook_loss(z_e, q.e).mean()
        commitment = commitment_loss(z_e, q.e).mean()
        loss = recon
        if not frozen:
            loss = loss + self.cfg.beta * commitment
            if not self.cfg.ema:
                loss = loss + codebook
            if self.training:
                self.pending.append((z_e.detach(), q.codes))
        k = self.cfg.num_codes
        used = torch.bincount(q.codes.flatten(), minlength=k).gt(0).float().mean()
        return {
            "loss": loss,
            "recon": recon,
            "codebook": codebook.detach(),
            "commitment": commitment.detach(),
            "perplexity": perplexity(q.codes, k),
            "usage": used,
        }

    def after_step(self, phase: str) -> None:
        """Codebook EMA, usage statistics and dead-code restarts after the autoencoder step,
        from the encoder outputs of all its micro-batches (train.grad_accum), which the
        quantiser gathers over processes: one update per optimiser step from the global batch,
        for any number of processes and micro-batches."""
        if phase == "autoencoder" and self.pending:
            z_e = torch.cat([z for z, _ in self.pending])
            codes = torch.cat([k for _, k in self.pending])
            self.quantizer.update(z_e, codes)
        self.pending = []

    # -------------------------------------------------------------------------------- sampling
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
        """k ~ PixelCNN prior (position by position), then x = Dec(e_k) in data space."""
        return self.decode_codes(self.prior.sample(n, generator=generator))
