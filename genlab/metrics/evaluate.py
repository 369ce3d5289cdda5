"""`evaluate(model, data, metrics)`: held-out metrics with their sample sizes and protocol notes.

Each metric is a function of a `Context` registered in METRICS; it returns flat numeric values
(written to eval.json, each with its sample size as `<metric>_n`) and a one-line protocol note,
or raises NotImplementedError with the reason the model or data cannot support it.

Sample-based protocols (fixed, and printed with the values):
- images (fid, kid, is, pr): as many generated samples as the test split has examples, against
  the whole test split (in the model's data space: binarised / dequantised as trained); `--n N`
  sets the generated count to N and uses the first min(N, test size) test examples.
- 2-D toys: modes uses 2,500 generated samples (the VEEGAN / PacGAN protocol); mmd and w1 use
  2,000 generated samples against 2,000 held-out test points. `--n N` replaces these counts.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property

import torch
from torch import Tensor

from genlab.data.spec import Data
from genlab.data.toys import MIXTURES
from genlab.errors import GenlabError
from genlab.math.divergences import rbf_mmd2, wasserstein1
from genlab.metrics.features import FeatureExtractor, classifier_features, inception_features
from genlab.metrics.fid import fid, kid
from genlab.metrics.image_quality import ms_ssim, psnr, ssim
from genlab.metrics.inception_score import inception_score
from genlab.metrics.likelihood import nll_report, test_nll
from genlab.metrics.precision_recall import density_coverage, precision_recall
from genlab.metrics.toy import mode_metrics
from genlab.models.base import (
    Encoder,
    ExactLikelihood,
    GenerativeModel,
    LikelihoodBound,
    Translator,
)
from genlab.registry import METRICS

MODES_N = 2500  # the VEEGAN / PacGAN protocol
TOY_N = 2000  # mmd and w1 (exact W1 is an O(n^3) assignment)
KID_SUBSETS, KID_SUBSET_SIZE = 100, 1000
IS_SPLITS = 10
PR_K, DC_K = 3, 5  # Kynkaanniemi et al. 2019; Naeem et al. 2020


@dataclass
class Report:
    """Metric values (flat, numeric: written to eval.json), notes on protocol, skipped metrics."""

    values: dict[str, float] = field(default_factory=dict)
    notes: dict[str, str] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)


@dataclass
class Context:
    """What metrics share: the model, data, sizes, and lazily computed samples and features."""

    model: GenerativeModel
    data: Data
    n: int | None  # None: each metric's default protocol
    k: int
    seed: int
    inception_weights: str | None = None

    def generator(self) -> torch.Generator:
        """A fresh generator per use, so each metric's numbers do not depend on the others."""
        return torch.Generator(self.model.device).manual_seed(self.seed)

    def test_split(self, n: int | None = None) -> tuple[Tensor, Tensor | None]:
        split = self.data.split("test")
        n = n or self.n or len(split["x"])
        return split["x"][:n], (split["y"][:n] if "y" in split else None)

    def samples(self, n: int) -> Tensor:
        """n samples in data space; conditional models get the test split's labels, cycled.

        Translators are judged on translations of the test split's task sources (cycled).
        """
        cached = self._samples.get(n)
        if cached is not None:
            return cached
        g = self.generator()
        conditional = bool(getattr(self.model.cfg, "conditional", False))
        y_test = self.data.split("test").get("y")
        out = []
        x_test = self.data.split("test")["x"]
        with torch.no_grad():
            for i in range(0, n, 1000):
                rows = torch.arange(i, min(n, i + 1000))
                labels = None
                if conditional and y_test is not None:
                    labels = y_test[rows % len(y_test)].to(self.model.device)
                if isinstance(self.model, Translator):  # translations of the test split's sources
                    x = x_test[rows % len(x_test)].to(self.model.device)
                    out.append(_output_for(self.model, x, labels).float().cpu())
                else:
                    out.append(
                        self.model.sample(len(rows), generator=g, labels=labels).float().cpu()
                    )
        self._samples[n] = torch.cat(out)
        return self._samples[n]

    _samples: dict[int, Tensor] = field(default_factory=dict, repr=False)

    # ------------------------------------------------------------------ image feature metrics
    @cached_property
    def extractor(self) -> FeatureExtractor:
        spec = self.data.spec
        if not spec.is_image:
            raise NotImplementedError(
                f"{spec.name} is not image data; use modes, mmd and w1 for 2-D toys"
            )
        if self.inception_weights:
            return inception_features(self.inception_weights, spec, self.model.device)
        return classifier_features(self.data, device=self.model.device)

    @cached_property
    def image_sizes(self) -> tuple[int, int]:
        n_test = len(self.data.x_test)
        n_gen = self.n or n_test
        return n_gen, min(n_gen, n_test)

    @cached_property
    def real_features(self) -> tuple[Tensor, Tensor]:
        x, _ = self.test_split(self.image_sizes[1])
        return self.extractor.extract(x)

    @cached_property
    def fake_features(self) -> tuple[Tensor, Tensor]:
        extractor = self.extractor  # fails before sampling when features are unavailable
        return extractor.extract(self.samples(self.image_sizes[0]))

    def image_note(self) -> str:
        n_gen, n_ref = self.image_sizes
        return f"{n_gen} generated vs {n_ref} test examples; {self.extractor.note}"

    def extractor_values(self) -> dict[str, float]:
        return dict(self.extractor.values)


@METRICS.register("nll", "held-out negative log-likelihood (exact, or IWAE bound) and bits/dim")
def nll_metric(ctx: Context) -> tuple[dict[str, float], str]:
    if not isinstance(ctx.model, (ExactLikelihood, LikelihoodBound)):
        raise NotImplementedError(f"{type(ctx.model).__name__} has no likelihood")
    x, y = ctx.test_split()
    per = test_nll(ctx.model, ctx.data, x, y, k=ctx.k, generator=ctx.generator())
    values, note = nll_report(ctx.model, ctx.data, per)
    exact = isinstance(ctx.model, ExactLikelihood)
    method = getattr(ctx.model, "likelihood_method", None)  # a model's own words, when it has them
    iwae = not exact and method is None
    how = method or ("exact" if exact else f"IWAE bound, k={ctx.k}")
    return {**values, "nll_n": float(len(x)), **({"iwae_k": float(ctx.k)} if iwae else {})}, (
        f"{how}; {note}; n={len(x)} test examples"
    )


@METRICS.register("elbo", "held-out evidence lower bound (nats per example), NLL convention")
def elbo_metric(ctx: Context) -> tuple[dict[str, float], str]:
    if not isinstance(ctx.model, LikelihoodBound):
        raise NotImplementedError(f"{type(ctx.model).__name__} has no variational bound")
    x, y = ctx.test_split()
    per = test_nll(ctx.model, ctx.data, x, y, k=1, generator=ctx.generator())
    values, note = nll_report(ctx.model, ctx.data, per)  # same dequantisation offset as nll
    if "nll" in values:
        return {"elbo": -values["nll"], "elbo_n": float(len(x))}, f"k=1; {note}; n={len(x)}"
    return {"elbo_density": -values["nll_density"], "elbo_n": float(len(x))}, f"k=1; {note}"


def _output_for(model: GenerativeModel, x: Tensor, labels: Tensor | None) -> Tensor:
    """What is compared with x: its reconstruction, or the translation of its task source."""
    if isinstance(model, Translator):
        return model.translate(model.source_of(x), labels)
    return model.reconstruct(x, labels)


@METRICS.register(
    "recon", "reconstructions (or translations) of the test split: MSE; PSNR, SSIM, MS-SSIM"
)
def recon_metric(ctx: Context) -> tuple[dict[str, float], str]:
    if not isinstance(ctx.model, (Encoder, Translator)):
        raise NotImplementedError(f"{type(ctx.model).__name__} has no encoder or translator")
    x, y = ctx.test_split()
    spec = ctx.data.spec
    image = spec.is_image and spec.value_range is not None
    parts: dict[str, list[Tensor]] = {"recon_mse": [], "psnr": [], "ssim": [], "ms_ssim": []}
    with torch.no_grad():
        for i in range(0, len(x), 256):
            xb = x[i : i + 256].to(ctx.model.device)
            yb = None if y is None else y[i : i + 256].to(ctx.model.device)
            x_hat = _output_for(ctx.model, xb, yb).float()
            parts["recon_mse"].append(((x_hat - xb) ** 2).flatten(1).mean(1).cpu())
            if image:
                low, high = spec.value_range
                x_hat = x_hat.clamp(low, high)  # scores of images as they would be displayed
                for name, fn in (("psnr", psnr), ("ssim", ssim), ("ms_ssim", ms_ssim)):
                    parts[name].append(fn(x_hat, xb, data_range=high - low).cpu())
    values = {k: float(torch.cat(v).double().mean()) for k, v in parts.items() if v}
    what = (
        "translations of the task sources"
        if isinstance(ctx.model, Translator)
        else "reconstructions"
    )
    note = f"{what}: MSE per dimension in data space"
    if image:
        note += "; PSNR (dB), SSIM and MS-SSIM, outputs clamped to the data range"
        note += " (mean over images; PSNR of an exact reconstruction is inf)"
    return {**values, "recon_n": float(len(x))}, f"{note}; n={len(x)} test examples"


@METRICS.register("fid", "Frechet distance of Gaussian fits to features, generated vs test")
def fid_metric(ctx: Context) -> tuple[dict[str, float], str]:
    real, _ = ctx.real_features
    fake, _ = ctx.fake_features
    values = {"fid": fid(real, fake), "fid_n": float(len(fake)), "fid_n_ref": float(len(real))}
    return {**values, **ctx.extractor_values()}, ctx.image_note()


@METRICS.register("kid", "kernel (polynomial MMD^2) distance, unbiased, mean and std over subsets")
def kid_metric(ctx: Context) -> tuple[dict[str, float], str]:
    real, _ = ctx.real_features
    fake, _ = ctx.fake_features
    # Subsets of 1000 (Binkowski et al.); small sets use halves, so subsets still differ.
    size = min(KID_SUBSET_SIZE, len(real) // 2, len(fake) // 2)
    g = torch.Generator().manual_seed(ctx.seed)
    mean, std = kid(real, fake, subsets=KID_SUBSETS, subset_size=size, generator=g)
    values = {"kid": mean, "kid_std": std, "kid_n": float(len(fake)), "kid_n_ref": float(len(real))}
    note = f"{KID_SUBSETS} subsets of {size}, cubic kernel; {ctx.image_note()}"
    return {**values, **ctx.extractor_values()}, note


@METRICS.register("is", "Inception Score exp(E KL(p(y|x) || p(y))) with the feature classifier")
def is_metric(ctx: Context) -> tuple[dict[str, float], str]:
    _, probs = ctx.fake_features
    splits = min(IS_SPLITS, len(probs))
    mean, std = inception_score(probs, splits=splits)
    values = {"is": mean, "is_std": std, "is_n": float(len(probs))}
    note = f"{splits} splits of {len(probs)} samples; p(y|x): softmax output; {ctx.extractor.note}"
    return {**values, **ctx.extractor_values()}, note


@METRICS.register("pr", "improved precision/recall (k=3) and density/coverage (k=5) of features")
def pr_metric(ctx: Context) -> tuple[dict[str, float], str]:
    real, _ = ctx.real_features
    fake, _ = ctx.fake_features
    precision, recall = precision_recall(real=real, fake=fake, k=PR_K)
    density, coverage = density_coverage(real=real, fake=fake, k=DC_K)
    values = {
        "precision": precision,
        "recall": recall,
        "density": density,
        "coverage": coverage,
        "pr_n": float(len(fake)),
        "pr_n_ref": float(len(real)),
    }
    note = f"k={PR_K} (precision/recall), k={DC_K} (density/coverage); {ctx.image_note()}"
    return {**values, **ctx.extractor_values()}, note


def _mixture(ctx: Context) -> tuple[Tensor, float]:
    name = ctx.data.spec.name
    if name not in MIXTURES:
        raise NotImplementedError(
            f"mode metrics need a known mixture ({', '.join(sorted(MIXTURES))}); {name} is not one"
        )
    means, std = MIXTURES[name]
    return torch.as_tensor(means, dtype=torch.float64), float(std)


@METRICS.register("modes", "2-D mixtures: modes captured, % high quality (< 3 std), KL of modes")
def modes_metric(ctx: Context) -> tuple[dict[str, float], str]:
    means, std = _mixture(ctx)
    n = ctx.n or MODES_N
    values = mode_metrics(ctx.samples(n).double(), means, std)
    note = (
        f"{n} samples; high quality = within 3 std ({3 * std:g}) of the nearest of {len(means)} "
        "modes; KL of the high-quality mode histogram to uniform"
    )
    return {**values, "modes_n": float(n)}, note


def _toy_pair(ctx: Context) -> tuple[Tensor, Tensor]:
    if ctx.data.spec.is_image:
        raise NotImplementedError("mmd and w1 are for low-dimensional (toy) data; use fid, kid")
    real, _ = ctx.test_split(min(ctx.n or TOY_N, len(ctx.data.x_test)))
    return real.double(), ctx.samples(len(real)).double()


@METRICS.register("mmd", "toys: unbiased Gaussian-kernel MMD^2 to held-out data")
def mmd_metric(ctx: Context) -> tuple[dict[str, float], str]:
    real, fake = _toy_pair(ctx)
    note = f"{len(fake)} samples vs {len(real)} test points; bandwidth = median test distance"
    return {"mmd2": rbf_mmd2(fake, real), "mmd_n": float(len(fake))}, note


@METRICS.register("w1", "toys: exact Wasserstein-1 distance to held-out data (optimal matching)")
def w1_metric(ctx: Context) -> tuple[dict[str, float], str]:
    real, fake = _toy_pair(ctx)
    note = f"{len(fake)} samples vs {len(real)} test points, exact assignment"
    return {"w1": wasserstein1(fake, real), "w1_n": float(len(fake))}, note


DEFAULT = ("nll", "elbo", "recon", "fid", "kid", "is", "pr", "modes", "mmd", "w1")


def evaluate(
    model: GenerativeModel,
    data: Data,
    metrics: list[str] | tuple[str, ...] | None = None,
    *,
    n: int | None = None,
    k: int = 100,
    seed: int = 0,
    inception_weights: str | None = None,
) -> Report:
    """Run `metrics` (default: all that apply) on the test split; n overrides sample sizes."""
    names = list(metrics) if metrics else list(DEFAULT)
    for name in names:
        METRICS.entry(name)  # unknown names fail before any work
    if n is not None and n < 2:  # spreads and kernel bandwidths need two points
        raise GenlabError(f"--n must be at least 2; got {n}")
    if k <= 0:
        raise GenlabError(f"--k must be positive; got {k}")
    ctx = Context(model, data, n, k, seed, inception_weights)
    report = Report()
    was_training = model.training
    model.eval()
    try:
        for name in names:
            try:
                values, note = METRICS.get(name)(ctx)
            except NotImplementedError as e:
                report.skipped[name] = str(e)
                continue
            report.values.update({key: float(v) for key, v in values.items()})
            report.notes[name] = note
    finally:
        model.train(was_training)
    return report
