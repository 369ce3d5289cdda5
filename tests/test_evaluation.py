"""evaluate() end to end: cached feature classifier, sample sizes, protocol notes, toy metrics."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from genlab import data as gdata
from genlab import models
from genlab.data.spec import Data, DataSpec
from genlab.metrics import evaluate
from genlab.metrics import features as feat
from genlab.models.base import GenerativeModel
from genlab.nn.inception import InceptionV3


def separable_images(n: int = 600, seed: int = 0) -> Data:
    """1x8x8 images whose class is a bright 2x2 block at one of 4 corners, plus noise."""
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(0, 4, (n,), generator=g)
    x = 0.2 * torch.rand(n, 1, 8, 8, generator=g)
    for c, (r, q) in enumerate(((0, 0), (0, 6), (6, 0), (6, 6))):
        x[y == c, :, r : r + 2, q : q + 2] = 1.0
    spec = DataSpec("corners", (1, 8, 8), (0.0, 1.0), 4, None)
    half = n // 2
    return Data(spec, x[:half], y[:half], x[half:], y[half:])


class Replay(GenerativeModel):
    """A 'model' that samples by replaying given points: a test double for the metrics."""

    def __init__(self, points: torch.Tensor, spec: DataSpec) -> None:
        super().__init__(None, spec)
        self.points = points
        self.anchor = torch.nn.Parameter(torch.zeros(()))

    def sample(self, n, *, generator=None, labels=None, sampler=None, **kw):
        return self.points[:n].clone()


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("GENLAB_CACHE_DIR", str(tmp_path / "cache"))
    return tmp_path / "cache"


def test_classifier_is_trained_once_cached_and_reused(cache, monkeypatch) -> None:
    data = separable_images()
    first = feat.classifier_features(data, steps=150)
    files = sorted(p.name for p in (cache / "classifiers").iterdir())
    assert len(files) == 2 and files[0].startswith("corners-")  # weights + accuracy
    assert first.values["classifier_acc"] > 0.95
    assert "test accuracy" in first.note and "300 test images" in first.note

    def no_training(*args, **kwargs):
        raise AssertionError("the cached classifier should have been used")

    monkeypatch.setattr(feat, "train_classifier", no_training)
    second = feat.classifier_features(data, steps=150)
    x = data.x_test[:20]
    torch.testing.assert_close(first.extract(x)[0], second.extract(x)[0], rtol=0, atol=0)
    assert second.values == first.values
    # other data -> another cache entry (here: would train, which the patch forbids)
    with pytest.raises(AssertionError, match="cached"):
        feat.classifier_features(separable_images(seed=1), steps=150)


def test_corrupt_classifier_cache_is_retrained(cache) -> None:
    data = separable_images()
    feat.classifier_features(data, steps=50)
    weights = next((cache / "classifiers").glob("*.safetensors"))
    weights.write_bytes(b"not a safetensors file")
    again = feat.classifier_features(data, steps=50)
    assert again.values["classifier_acc"] > 0.5
    assert weights.stat().st_size > 1000


def test_unlabelled_data_has_no_classifier_features() -> None:
    spec = DataSpec("nolabels", (1, 8, 8), (0.0, 1.0))
    x = torch.rand(10, 1, 8, 8)
    with pytest.raises(NotImplementedError, match="no labels"):
        feat.classifier_features(Data(spec, x, None, x, None))


def test_replaying_the_test_split_scores_perfectly(cache) -> None:
    data = separable_images()
    feat.classifier_features(data, steps=150)  # train once, quickly, into the cache
    model = Replay(data.x_test, data.spec)
    report = evaluate(model, data, ["fid", "kid", "is", "pr"], n=100)
    v = report.values
    # 100 samples of 128-d features: singular covariances, so sqrtm works to ~1e-6, not 1e-12
    assert abs(v["fid"]) < 1e-4 and v["precision"] == 1.0 and v["recall"] == 1.0
    assert abs(v["kid"]) < 3 * v["kid_std"] + 1e-9
    assert v["coverage"] == 1.0
    assert 3.0 < v["is"] <= 4.0  # 4 balanced, confidently classified classes
    for key in ("fid_n", "fid_n_ref", "kid_n", "is_n", "pr_n"):
        assert v[key] == 100
    assert v["classifier_acc"] > 0.95
    assert "100 generated vs 100 test examples" in report.notes["fid"]
    assert "test accuracy" in report.notes["fid"]


def test_default_protocol_uses_the_whole_test_split_and_detects_a_bad_sampler(cache) -> None:
    data = separable_images()
    feat.classifier_features(data, steps=150)
    one_class = data.x_test[data.y_test == 0]
    bad = Replay(one_class.repeat(8, 1, 1, 1), data.spec)
    report = evaluate(bad, data, ["fid", "pr", "is"])
    v = report.values
    assert v["fid_n"] == len(data.x_test) == v["fid_n_ref"]
    assert v["fid"] > 10 and v["recall"] < 0.4 and v["precision"] > 0.9
    assert v["is"] < 1.5  # one class only


def test_toy_metrics_through_evaluate() -> None:
    data = gdata.load("ring8")
    means, std = gdata.toys.MIXTURES["ring8"]
    g = torch.Generator().manual_seed(0)
    k = torch.randint(0, 8, (2500,), generator=g)
    true = torch.as_tensor(means)[k].float() + std * torch.randn(2500, 2, generator=g)
    report = evaluate(Replay(true, data.spec), data, ["modes", "mmd", "w1", "fid"])
    v = report.values
    assert v["modes"] == 8 and v["modes_n"] == 2500
    p = 1 - math.exp(-4.5)
    assert abs(v["hq"] - p) < 3 * math.sqrt(p * (1 - p) / 2500)
    # Two samples of one mixture differ by ~sqrt(n/8) points per mode, moved ~0.77 to a
    # neighbouring mode: W1 ~ 0.77 * 8 * sqrt(250) / 2000 / 2 ~ 0.05 by sampling alone.
    assert v["w1_n"] == 2000 and v["w1"] < 0.15 and v["mmd_n"] == 2000
    assert "not image data" in report.skipped["fid"]
    collapsed = torch.as_tensor(means[:1]).float().repeat(2500, 1)
    bad = evaluate(Replay(collapsed, data.spec), data, ["modes", "w1"]).values
    assert bad["modes"] == 1 and bad["kl_modes"] == pytest.approx(math.log(8))
    assert bad["w1"] > 0.5


def test_modes_skipped_for_data_without_a_known_mixture() -> None:
    data = gdata.load("moons")
    report = evaluate(Replay(data.x_test, data.spec), data, ["modes"])
    assert "known mixture" in report.skipped["modes"]


def test_inception_features_from_a_weights_file(tmp_path: Path) -> None:
    torch.manual_seed(0)
    path = tmp_path / "inception.pth"
    torch.save(InceptionV3().state_dict(), path)
    data = separable_images(n=40)
    report = evaluate(
        Replay(data.x_test, data.spec), data, ["fid", "is"], n=6, inception_weights=str(path)
    )
    assert report.values["fid_n"] == 6 and abs(report.values["fid"]) < 1e-3
    assert "InceptionV3" in report.notes["fid"] and "classifier_acc" not in report.values


def test_evaluate_keeps_the_model_in_its_mode() -> None:
    data = separable_images(n=40)
    vae = models.build("vae", data.spec, latent_dim=2, hidden=(8,), arch="mlp")
    vae.train()
    evaluate(vae, data, ["nll"], k=2, n=4)
    assert vae.training
