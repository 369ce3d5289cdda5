"""Bernoulli-Bernoulli restricted Boltzmann machine trained by contrastive divergence ([004]).

[004] introduces the RBM as "a collection of binary random variables" on a bipartite graph whose
distribution is learned, without equations; they are those of genlab.math.energy: E(v, h) = -b.v
- c.h - v W h, free energy F(v) = -b.v - sum_j softplus(c_j + (v W)_j), p(v) = exp(-F(v)) / Z.

Training. The log-likelihood gradient is (Hinton, "Training products of experts by minimizing
contrastive divergence", Neural Computation 2002; "A practical guide to training RBMs", 2010)
    -d log p(v) / d theta = dF(v)/d theta - E_{v' ~ p}[dF(v')/d theta],
    e.g. for W: d log p(v) / dW = v p(h | v)^T - E_p[v' p(h | v')^T] = <v h>_data - <v h>_model.
CD-k replaces the model expectation with v_model, k block Gibbs steps v -> h -> v from the data
batch; PCD (Tieleman, ICML 2008) runs them from `chains` persistent chains that carry over from
step to step. Through the one Trainer this is backpropagation of the surrogate loss
    loss = mean_batch F(v_data) - mean_chains F(v_model.detach()),
whose gradient is exactly the CD-k / PCD update with hidden probabilities p(h | v) in the
statistics (W: -(<v p(h|v)^T>_data - <v p(h|v)^T>_model); b: -(<v>_data - <v>_model); c: likewise
with p(h|v)). Logged parts: "loss", "recon" (mean squared error of p(v | h), h ~ p(h | v_data):
one Gibbs step's mean reconstruction) and "free_energy_gap" = mean F(v_model) - mean F(v_data)
(the loss with the sign that reads "how far below the model's samples the data's free energy
lies"). The PCD chains are a buffer (checkpointed) and advance k steps per forward in training
mode only. `fit_data` (base.FitsData) sets the visible bias and the AIS base rate to the logits of
the training split's pixel marginals (Hinton's guide, section 8).

Data. The model is over binary vectors: train on images with data.binarize=true (the intended
use; each batch is resampled x ~ Bernoulli(x)). Any image data in [0, 1] is accepted and its
values are taken as Bernoulli means in training, but `log_prob` refuses non-binary input
(NotImplementedError, so `genlab evaluate` skips nll with the reason).

Likelihood. log p(v) = -F(v) - log Z, a probability mass on {0, 1}^D (discrete_likelihood). log Z
is exact by enumerating 2^min(V, H) states when min(V, H) <= exact_max, else an AIS estimate
(Salakhutdinov & Murray, ICML 2008) with `ais_runs` chains x `ais_betas` temperatures from a fixed
seed, so evaluation is reproducible; AIS's log Z is biased low, so its NLL is slightly optimistic.
log Z is computed once per parameter state and cached (see `log_partition`).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from genlab.data.spec import DataSpec
from genlab.errors import GenlabError
from genlab.math.energy import (
    EXACT_MAX_UNITS,
    rbm_free_energy,
    rbm_gibbs_step,
    rbm_log_partition_ais,
    rbm_log_partition_exact,
)
from genlab.models.base import GenerativeModel
from genlab.nn import sync
from genlab.registry import MODELS

AIS_SEED = 0  # the fixed seed of the AIS generator: the same parameters give the same log Z


@dataclass
class RBMConfig:
    hidden: tuple[int, ...] = (64,)  # H: one hidden layer (`model.hidden=64` is read as (64,))
    k: int = 1  # Gibbs steps per negative sample (CD-k / PCD-k)
    persistent: bool = False  # PCD: negatives from persistent chains instead of the data
    chains: int = 100  # number of persistent chains (PCD)
    sample_steps: int = 1000  # Gibbs steps of sample() from uniform random v
    init_std: float = 0.01  # W ~ N(0, init_std^2) (Hinton's guide section 8)
    ais_betas: int = 10000  # AIS: temperatures K, beta_k = k / K
    ais_runs: int = 100  # AIS: independent runs R
    exact_max: int = 20  # exact log Z when min(V, H) <= exact_max, else AIS


@MODELS.register("rbm", "Bernoulli RBM: CD-k / PCD, exact or AIS log-likelihood (binary images)")
class RBM(GenerativeModel):
    """Bernoulli-Bernoulli RBM; loss = mean F(v_data) - mean F(v_model) (CD-k / PCD) [004]."""

    config_class = RBMConfig
    data_kinds = ("image",)
    discrete_likelihood = True  # a probability mass on {0, 1}^D

    def __init__(self, cfg: RBMConfig, spec: DataSpec) -> None:
        super().__init__(cfg, spec)
        if spec.value_range is None or tuple(spec.value_range) != (0.0, 1.0):
            raise GenlabError(
                f"rbm needs binary images in [0, 1]; {spec.name} has {spec.describe()}: "
                "set data.binarize=true"
            )
        if len(cfg.hidden) != 1 or cfg.hidden[0] < 1:
            raise GenlabError(f"model.hidden is the one hidden layer's size; got {cfg.hidden}")
        positive = {
            "k": cfg.k,
            "chains": cfg.chains,
            "sample_steps": cfg.sample_steps,
            "ais_betas": cfg.ais_betas,
        }
        for key, value in positive.items():
            if value < 1:
                raise GenlabError(f"model.{key} must be >= 1; got {value}")
        if cfg.ais_runs < 2:
            raise GenlabError(
                f"model.ais_runs must be >= 2 (for the standard error); got {cfg.ais_runs}"
            )
        if not 0 <= cfg.exact_max <= EXACT_MAX_UNITS:
            raise GenlabError(
                f"model.exact_max must lie in 0..{EXACT_MAX_UNITS}; got {cfg.exact_max}"
            )
        V, H = spec.dim, cfg.hidden[0]
        self.W = nn.Parameter(torch.randn(V, H) * cfg.init_std)  # (V, H)
        self.b = nn.Parameter(torch.zeros(V))  # visible bias
        self.c = nn.Parameter(torch.zeros(H))  # hidden bias
        self.register_buffer("base_bias", torch.zeros(V))  # AIS base-rate logits b_A (fit_data)
        if cfg.persistent:
            self.register_buffer("chains", torch.bernoulli(torch.full((cfg.chains, V), 0.5)))
        self.exact = min(V, H) <= cfg.exact_max
        # (copies of W, b, c, b_A; log Z; se): see log_partition
        self._log_z_cache: tuple[list[Tensor], Tensor, Tensor] | None = None

    # ----- the energy model -----

    def flat(self, x: Tensor) -> Tensor:
        """(B, *shape) -> (B, V)."""
        return x.reshape(len(x), -1)

    def free_energy(self, x: Tensor) -> Tensor:
        """F(v) per example, (B,), for x in data shape or flat (B, V)."""
        return rbm_free_energy(self.flat(x), self.W, self.b, self.c)

    @torch.no_grad()
    def gibbs(
        self, v: Tensor, steps: int, generator: torch.Generator | None = None
    ) -> tuple[Tensor, Tensor]:
        """`steps` block Gibbs steps from v (B, V): (last v sample, its mean p(v = 1 | h))."""
        v_prob = v
        for _ in range(steps):
            v, v_prob, _ = rbm_gibbs_step(v, self.W, self.b, self.c, generator)
        return v, v_prob

    # ----- training -----

    @torch.no_grad()
    def negatives(
        self, v: Tensor, generator: torch.Generator | None = None
    ) -> tuple[Tensor, Tensor]:
        """(v_model, recon): k Gibbs steps from the data (CD) or from the persistent chains
        (PCD; written back in training mode only), and p(v | h) of one step from the data.

        PCD under train.grad_accum (genlab.nn.sync): every micro-batch of a step runs its
        chains from where the step's first one started and only the first writes them back, as
        every DDP process starts from rank 0's chains (broadcast buffers) and only rank 0's
        update is kept.
        """
        if not self.cfg.persistent:
            v_recon, recon = self.gibbs(v, 1, generator)
            v_model, _ = self.gibbs(v_recon, self.cfg.k - 1, generator)
            return v_model, recon
        later = self.training and sync.later_micro_batch()
        if self.training and not later and sync.micro_batch_index() is not None:
            self._step_chains = self.chains.clone()  # the step's starting chains
        start = getattr(self, "_step_chains", None) if later else None
        v_model, _ = self.gibbs(self.chains if start is None else start, self.cfg.k, generator)
        if self.training and not later:
            self.chains.copy_(v_model)
        _, recon = self.gibbs(v, 1, generator)
        return v_model, recon

    def losses(self, v: Tensor, v_model: Tensor, recon: Tensor) -> dict[str, Tensor]:
        """The CD surrogate mean F(v) - mean F(v_model) and its logged parts (module doc)."""
        f_data = rbm_free_energy(v, self.W, self.b, self.c).mean()
        f_model = rbm_free_energy(v_model.detach(), self.W, self.b, self.c).mean()
        return {
            "loss": f_data - f_model,
            "recon": ((recon - v) ** 2).mean(),
            "free_energy_gap": (f_model - f_data).detach(),
        }

    def forward(self, batch: dict[str, Tensor], phase: str = "main") -> dict[str, Tensor]:
        v = self.flat(batch["x"])
        v_model, recon = self.negatives(v)
        return self.losses(v, v_model, recon)

    @torch.no_grad()
    def fit_data(self, x: Tensor, labels: Tensor | None = None) -> dict[str, float]:
        """b = b_A = logit of the pixel marginals, add-one smoothed: (sum + 1) / (N + 2)."""
        v = self.flat(x).to(self.b)
        p = (v.sum(0) + 1) / (len(v) + 2)
        logits = torch.log(p) - torch.log1p(-p)
        self.b.copy_(logits)
        self.base_bias.copy_(logits)
        return {"data_mean": float(v.mean())}

    # ----- likelihood -----

    @torch.no_grad()
    def log_partition(self) -> tuple[Tensor, Tensor]:
        """(log Z, standard error) in float64; se = 0 when exact.

        Cached per parameter state: the cache keeps copies of W, b, c and b_A and is reused
        while they are equal (torch.equal, O(V H), far cheaper than one batch's F); this also
        catches load_state_dict, .to() and in-place edits, which version counters can miss.
        """
        state = [t.detach() for t in (self.W, self.b, self.c, self.base_bias)]
        cache = self._log_z_cache
        if cache is not None and all(
            a.device == s.device and a.shape == s.shape and torch.equal(a, s)
            for a, s in zip(cache[0], state)
        ):
            return cache[1], cache[2]
        W, b, c, b_a = (t.double() for t in state)
        if self.exact:
            log_z, se = rbm_log_partition_exact(W, b, c), W.new_zeros(())
        else:
            g = torch.Generator(W.device).manual_seed(AIS_SEED)
            log_z, se = rbm_log_partition_ais(
                W,
                b,
                c,
                betas=self.cfg.ais_betas,
                runs=self.cfg.ais_runs,
                generator=g,
                base_bias=b_a,
            )
        self._log_z_cache = ([s.clone() for s in state], log_z, se)
        return log_z, se

    @property
    def likelihood_method(self) -> str:
        V, H = self.W.shape
        if self.exact:
            return f"exact (enumeration of 2^{min(V, H)} states)"
        se = (
            f"se {float(self._log_z_cache[2]):.3g} nats"
            if self._log_z_cache
            else "se by delta method"
        )
        return (
            f"AIS estimate of log Z ({self.cfg.ais_runs} runs x {self.cfg.ais_betas} "
            f"temperatures; {se}; biased low, so the NLL is slightly optimistic)"
        )

    @torch.no_grad()
    def log_prob(self, x: Tensor, labels: Tensor | None = None) -> Tensor:
        """log p(v) = -F(v) - log Z per example (nats) for binary x; labels are ignored.

        Non-binary x raises NotImplementedError (a mass on {0, 1}^D says nothing about it)."""
        v = self.flat(x)
        if not ((v == 0) | (v == 1)).all():
            # NotImplementedError: evaluate skips the metric with this reason, others still run
            raise NotImplementedError(
                "rbm log_prob is a probability mass on binary images; "
                "train and evaluate with data.binarize=true"
            )
        log_z, _ = self.log_partition()
        W, b, c = (t.double() for t in (self.W, self.b, self.c))
        return (-rbm_free_energy(v.double(), W, b, c) - log_z).to(x.dtype)

    # ----- sampling -----

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
        """Visible MEANS p(v = 1 | h) in [0, 1] after sample_steps Gibbs steps from uniform
        random binary v (means, as the usual picture of an RBM's samples; draws with
        `generator`)."""
        v = torch.bernoulli(
            torch.full((n, self.spec.dim), 0.5, device=self.device), generator=generator
        )
        _, v_prob = self.gibbs(v, self.cfg.sample_steps, generator)
        return v_prob.reshape(n, *self.spec.shape)
