"""Classic density baselines fitted by scikit-learn: GMM, PPCA, factor analysis, KDE ([000]).

They give every deep model's likelihood a classic reference on the same split and the same
dequantisation. Each is fitted once to the whole training split by `fit_data` (genlab.models.base
FitsData: EM or a closed form, no gradient phases); scikit-learn does the fitting, and the fitted
parameters are copied into buffers, so checkpoints are plain safetensors and `log_prob` is torch:
- gmm: p(x) = sum_k w_k N(x; mu_k, Sigma_k), fitted by EM (sklearn GaussianMixture).
- ppca: x = W z + mu + eps, z ~ N(0, I_q), eps ~ N(0, sigma^2 I), so p(x) = N(mu, W W^T + sigma^2 I)
  with Tipping & Bishop's closed-form maximum likelihood (1999, eq. (7)-(8)):
  W = U_q (Lambda_q - sigma^2 I)^(1/2), sigma^2 = mean of the D - q smallest eigenvalues of the
  sample covariance S (sklearn PCA's eigen-decomposition).
- fa: the same model with eps ~ N(0, Psi), Psi diagonal, fitted by sklearn FactorAnalysis.
- kde: p(x) = (1/N) sum_i N(x; x_i, h^2 I), the bandwidth h chosen by 5-fold cross-validated
  held-out likelihood on a log grid (the score of sklearn's GridSearchCV over KernelDensity).
All are densities: on discrete images train with data.dequantize=true so the held-out NLL is a
bound on the discrete NLL (genlab.metrics.likelihood). Before fitting, each is a standard normal.
Samples are drawn from the fitted density and clipped to the data's value range.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
from torch import Tensor

from genlab.data.spec import DataSpec
from genlab.errors import GenlabError
from genlab.math.gaussian import log_gaussian_mixture, log_kde, sample_gaussian_mixture
from genlab.models.base import GenerativeModel, Phase
from genlab.registry import MODELS


def _as_numpy(x: Tensor) -> np.ndarray:
    """(N, *shape) -> (N, D) float64 for scikit-learn."""
    return x.detach().reshape(len(x), -1).double().cpu().numpy()


# A fitted Gaussian mixture as (weights (K,), means (K, D), covariances (K, D, D)), float64.
Mixture = tuple[np.ndarray, np.ndarray, np.ndarray]


@dataclass
class BaselineConfig:
    method: Literal["gmm", "ppca", "fa", "kde"] = "gmm"
    # gmm
    components: int = 10  # K
    covariance: Literal["full", "diag"] = "full"
    reg_covar: float = 1e-6  # added to the covariance diagonals (sklearn's reg_covar)
    max_iter: int = 200  # EM iterations
    n_init: int = 1  # EM restarts; the best likelihood is kept
    # ppca, fa
    factors: int = 16  # q, the latent dimension
    # kde
    bandwidth: float = 0.0  # h; 0: chosen by cross-validated likelihood over `bandwidths`
    bandwidths: tuple[float, ...] = tuple(float(h) for h in np.logspace(-2, 0.5, 16))
    max_points: int = 5000  # kernel centres kept (a random subset of larger training sets)
    seed: int = 0  # k-means init (gmm), randomised SVD (fa), subset and CV folds (kde)


def fit_gmm(data: np.ndarray, cfg: BaselineConfig) -> tuple[Mixture, dict[str, float]]:
    """Maximum likelihood by EM with k-means initialisation (sklearn GaussianMixture)."""
    from sklearn.mixture import GaussianMixture

    if len(data) < cfg.components:
        raise GenlabError(
            f"gmm: {cfg.components} components need at least as many training examples "
            f"(got {len(data)})"
        )
    gm = GaussianMixture(
        cfg.components,
        covariance_type=cfg.covariance,
        reg_covar=cfg.reg_covar,
        max_iter=cfg.max_iter,
        n_init=cfg.n_init,
        random_state=cfg.seed,
    ).fit(data)
    covs = gm.covariances_
    if cfg.covariance == "diag":
        covs = np.stack([np.diag(c) for c in covs])
    return (gm.weights_, gm.means_, covs), {"em_iterations": float(gm.n_iter_)}


def fit_ppca(data: np.ndarray, q: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Tipping & Bishop's closed form from the eigen-decomposition of S: (W, sigma^2 1, mu)."""
    from sklearn.decomposition import PCA

    n = len(data)
    pca = PCA().fit(data)
    eigenvalues = pca.explained_variance_ * (n - 1) / n  # sklearn's S has 1/(N-1); ML has 1/N
    sigma2 = eigenvalues[q:].mean() if len(eigenvalues) > q else 0.0
    if sigma2 <= 0:
        raise GenlabError(
            f"ppca: the {data.shape[1] - q} discarded eigenvalues are zero: use fewer factors "
            "or dequantised data"
        )
    w = pca.components_[:q].T * np.sqrt(np.maximum(eigenvalues[:q] - sigma2, 0.0))
    return w, np.full(data.shape[1], sigma2), pca.mean_


def fit_fa(data: np.ndarray, q: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Factor analysis by sklearn's SVD-based maximum likelihood: (W, diag Psi, mu)."""
    from sklearn.decomposition import FactorAnalysis

    fa = FactorAnalysis(q, random_state=seed).fit(data)
    return fa.components_.T, fa.noise_variance_, fa.mean_


def kde_cv_scores(x: Tensor, bandwidths: tuple[float, ...], folds: Tensor) -> Tensor:
    """Cross-validated log-likelihood per bandwidth: sum over folds f of the held-out fold's
    total log_kde under the kernels of the other folds, (len(bandwidths),)."""
    scores = torch.zeros(len(bandwidths), dtype=torch.float64)
    for f in folds.unique():
        held, kept = x[folds == f], x[folds != f]
        for i, h in enumerate(bandwidths):
            scores[i] += log_kde(held, kept, h).sum()
    return scores


def fit_kde(data: np.ndarray, cfg: BaselineConfig) -> tuple[np.ndarray, float]:
    """Kernel centres (a seeded subset past max_points) and h by 5-fold cross-validation.

    The held-out fold's mean log_kde under the other folds' kernels, summed over folds (what
    sklearn's GridSearchCV over KernelDensity scores; computed here with one distance matrix per
    fold for every bandwidth, since sklearn's trees are slow in hundreds of dimensions).
    """
    rng = np.random.default_rng(cfg.seed)
    if len(data) > cfg.max_points:
        data = data[rng.choice(len(data), cfg.max_points, replace=False)]
    if cfg.bandwidth > 0:
        return data, cfg.bandwidth
    x = torch.from_numpy(data[rng.permutation(len(data))])
    folds = torch.arange(len(x)) % min(5, len(x))
    scores = kde_cv_scores(x, cfg.bandwidths, folds)
    return data, float(cfg.bandwidths[int(scores.argmax())])


@MODELS.register("gmm", "Gaussian mixture fitted by EM (scikit-learn): classic density baseline")
@MODELS.register(
    "ppca",
    "probabilistic PCA, Tipping-Bishop closed form (scikit-learn PCA): classic baseline",
    method="ppca",
)
@MODELS.register(
    "fa", "factor analysis, diagonal noise (scikit-learn): classic baseline", method="fa"
)
@MODELS.register(
    "kde",
    "Gaussian kernel density estimate, cross-validated bandwidth: classic baseline",
    method="kde",
)
class DensityBaseline(GenerativeModel):
    """Classic density fitted by scikit-learn; `method` picks the model [000].

    gmm: sum_k w_k N(mu_k, Sigma_k); ppca: N(mu, W W^T + sigma^2 I); fa: N(mu, W W^T + Psi);
    kde: (1/N) sum_i N(x_i, h^2 I). The first three are held as one Gaussian mixture (K = 1 for
    ppca and fa), kde as its kernel centres and bandwidth.
    """

    config_class = BaselineConfig
    discrete_likelihood = False

    def __init__(self, cfg: BaselineConfig, spec: DataSpec) -> None:
        super().__init__(cfg, spec)
        d = spec.dim
        if cfg.method in ("ppca", "fa") and not 0 < cfg.factors < d:
            raise GenlabError(
                f"{cfg.method}: model.factors={cfg.factors} must be between 1 and the data "
                f"dimension - 1 ({d - 1})"
            )
        # Buffers of fixed shape (from config and data shape) so a checkpoint loads into a model
        # built from the config alone. Unfitted, every method is the standard normal.
        if cfg.method == "kde":
            self.register_buffer("centres", torch.zeros(cfg.max_points, d))
            self.register_buffer("count", torch.tensor(1))
            self.register_buffer("bandwidth", torch.tensor(1.0))
            return
        k = cfg.components if cfg.method == "gmm" else 1
        self.register_buffer("log_weights", torch.full((k,), -math.log(k)))
        self.register_buffer("means", torch.zeros(k, d))
        self.register_buffer("scale_trils", torch.eye(d).repeat(k, 1, 1))
        if cfg.method != "gmm":
            self.register_buffer("loadings", torch.zeros(d, cfg.factors))  # W
            self.register_buffer("noise_variance", torch.ones(d))  # diag Psi

    def phases(self, lr: float) -> list[Phase]:
        return []  # fitted by fit_data alone

    def fit_data(self, x: Tensor, labels: Tensor | None = None) -> dict[str, float]:
        cfg = self.cfg
        data = _as_numpy(x)
        info: dict[str, float] = {}
        if cfg.method == "kde":
            centres, h = fit_kde(data, cfg)
            self.centres[: len(centres)] = torch.from_numpy(centres).to(self.centres)
            self.count.fill_(len(centres))
            self.bandwidth.fill_(h)
            info["bandwidth"] = h
        elif cfg.method == "gmm":
            mixture, info = fit_gmm(data, cfg)
            self.set_mixture(*mixture)
        else:
            if len(data) <= cfg.factors:
                raise GenlabError(
                    f"{cfg.method}: {cfg.factors} factors need more than {len(data)} examples"
                )
            if cfg.method == "ppca":
                w, psi, mean = fit_ppca(data, cfg.factors)
            else:
                w, psi, mean = fit_fa(data, cfg.factors, cfg.seed)
            self.loadings.copy_(torch.from_numpy(w))
            self.noise_variance.copy_(torch.from_numpy(psi))
            self.set_mixture(np.ones(1), mean[None], (w @ w.T + np.diag(psi))[None])
        return {"train_nll": self.mean_nll(x), **info}

    @torch.no_grad()
    def mean_nll(self, x: Tensor, chunk: int = 4096) -> float:
        """Mean -log p over x, in chunks (KDE's distance matrix is chunk x N)."""
        total = sum(float(-self.log_prob(x[i : i + chunk]).sum()) for i in range(0, len(x), chunk))
        return total / len(x)

    def set_mixture(self, weights: np.ndarray, means: np.ndarray, covariances: np.ndarray) -> None:
        self.log_weights.copy_(torch.from_numpy(np.log(weights)))
        self.means.copy_(torch.from_numpy(means))
        # Cholesky in float64, then stored in the buffer's dtype
        self.scale_trils.copy_(torch.linalg.cholesky(torch.from_numpy(covariances)))

    def forward(self, batch: dict[str, Tensor], phase: str = "main") -> dict[str, Tensor]:
        return {"loss": -self.log_prob(batch["x"]).mean()}

    def log_prob(self, x: Tensor, labels: Tensor | None = None) -> Tensor:
        """Exact log p(x) in nats, (B,)."""
        if self.cfg.method != "kde":
            flat = x.reshape(len(x), -1).to(self.means.dtype)
            return log_gaussian_mixture(flat, self.log_weights, self.means, self.scale_trils)
        flat = x.reshape(len(x), -1).to(self.centres.dtype)
        return log_kde(flat, self.centres[: int(self.count)], self.bandwidth)

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
        """n draws of the fitted density, clipped to the data's value range."""
        if self.cfg.method == "kde":
            device = self.centres.device
            i = torch.randint(int(self.count), (n,), generator=generator, device=device)
            noise = torch.randn(
                n, self.spec.dim, generator=generator, device=device, dtype=self.centres.dtype
            )
            x = self.centres[i] + self.bandwidth * noise
        else:
            x = sample_gaussian_mixture(
                n, self.log_weights, self.means, self.scale_trils, generator=generator
            )
        x = x.reshape(n, *self.spec.shape)
        if self.spec.value_range is not None:
            x = x.clamp(*self.spec.value_range)
        return x
