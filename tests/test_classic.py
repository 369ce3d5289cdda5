"""Classic baselines (GMM, PPCA, FA, KDE): scikit-learn's fit, torch's density, the Trainer."""

from __future__ import annotations

import csv

import numpy as np
import pytest
import torch
from conftest import tiny_data
from sklearn.decomposition import FactorAnalysis
from sklearn.mixture import GaussianMixture
from sklearn.model_selection import GridSearchCV, PredefinedSplit
from sklearn.neighbors import KernelDensity

from genlab import models
from genlab.config import resolve
from genlab.data.spec import DataSpec
from genlab.errors import GenlabError
from genlab.math.gaussian import log_standard_normal
from genlab.models.classic import kde_cv_scores
from genlab.train import load_run, train

SPEC = DataSpec("blobs", (3,))


def blobs(n: int = 300) -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    centres = torch.tensor(
        [[0.0, 0.0, 0.0], [4.0, 0.0, 1.0], [0.0, 5.0, -2.0]], dtype=torch.float64
    )
    k = torch.randint(3, (n,), generator=g)
    return centres[k] + torch.randn(n, 3, generator=g, dtype=torch.float64) * torch.tensor(
        [1.0, 0.5, 0.8], dtype=torch.float64
    )


def fitted(name: str, x: torch.Tensor, **cfg):
    model = models.build(name, SPEC, **cfg).double()
    model.fit_data(x)
    return model


@pytest.mark.parametrize(
    "name,cfg,reference",
    [
        ("gmm", {"components": 3}, GaussianMixture(3, random_state=0)),
        (
            "gmm",
            {"components": 2, "covariance": "diag"},
            GaussianMixture(2, covariance_type="diag", random_state=0),
        ),
        ("fa", {"factors": 1}, FactorAnalysis(1, random_state=0)),
        ("kde", {"bandwidth": 0.4}, KernelDensity(bandwidth=0.4)),
    ],
)
def test_log_prob_equals_scikit_learn(name, cfg, reference) -> None:
    x = blobs()
    model = fitted(name, x, **cfg)
    held_out = blobs(50) + 0.1
    expected = reference.fit(x.numpy()).score_samples(held_out.numpy())
    np.testing.assert_allclose(model.log_prob(held_out).numpy(), expected, rtol=1e-8, atol=1e-8)


def test_kde_cross_validation_scores_equal_scikit_learn() -> None:
    x = blobs(100)
    folds = torch.arange(100) % 4
    bandwidths = (0.1, 0.5, 2.0)
    search = GridSearchCV(
        KernelDensity(), {"bandwidth": list(bandwidths)}, cv=PredefinedSplit(folds.numpy())
    ).fit(x.numpy())
    expected = 4 * search.cv_results_["mean_test_score"]  # mean over 4 folds of each total
    np.testing.assert_allclose(kde_cv_scores(x, bandwidths, folds).numpy(), expected, rtol=1e-10)


def test_kde_bandwidth_chosen_by_cross_validation() -> None:
    x = blobs()
    model = fitted("kde", x, bandwidths=(0.01, 0.3, 50.0))
    assert float(model.bandwidth) == 0.3  # 0.01 and 50 are far off for unit-scale clusters


@pytest.mark.parametrize("name", ["gmm", "ppca", "fa", "kde"])
def test_unfitted_model_is_standard_normal(name: str) -> None:
    model = models.build(name, SPEC, factors=1).double()
    x = blobs(10)
    torch.testing.assert_close(model.log_prob(x), log_standard_normal(x))


def test_factors_must_be_below_the_dimension() -> None:
    with pytest.raises(GenlabError, match="factors=3 must be between 1 and"):
        models.build("ppca", SPEC, factors=3)


def test_samples_follow_the_fit_and_stay_in_range() -> None:
    x = blobs(2000)
    model = fitted("gmm", x, components=3)
    s = model.sample(4000, generator=torch.Generator().manual_seed(0))
    assert (s.mean(0) - x.mean(0)).abs().max() < 0.2  # se of either mean is about 0.05
    image = tiny_data("image")
    img_model = models.build("kde", image.spec)
    img_model.fit_data(image.x_train)
    s = img_model.sample(16, generator=torch.Generator().manual_seed(0))
    assert s.shape == (16, 1, 8, 8) and s.min() >= 0 and s.max() <= 1


def test_trainer_fits_once_logs_and_checkpoints(tmp_path) -> None:
    cfg = resolve("gmm", "moons", None, ["train.steps=1", "model.components=4", "data.limit=300"])
    run = train(cfg, tmp_path / "run", progress=False)
    assert run.step == 1
    rows = list(csv.DictReader(open(tmp_path / "run" / "metrics.csv")))
    assert [r["step"] for r in rows] == ["1"] and float(rows[0]["em_iterations"]) >= 1
    loaded = load_run(tmp_path / "run")
    x = torch.randn(5, 2)
    torch.testing.assert_close(loaded.model.log_prob(x), run.model.log_prob(x))
    assert not torch.equal(loaded.model.log_prob(x), log_standard_normal(x))  # it was fitted
    again = train(cfg, tmp_path / "run", resume=True, progress=False)  # finished: no refit
    assert again.step == 1
    assert len(list(csv.DictReader(open(tmp_path / "run" / "metrics.csv")))) == 1


def test_failing_fit_writes_no_run(tmp_path) -> None:
    """The fit runs before the run's files are written: a fit that fails leaves nothing."""
    over = ["train.steps=1", "model.components=500", "data.limit=100"]
    cfg = resolve("gmm", "moons", None, over)
    with pytest.raises(GenlabError, match="500 components need at least as many"):
        train(cfg, tmp_path / "run", progress=False)
    assert not (tmp_path / "run").exists()
