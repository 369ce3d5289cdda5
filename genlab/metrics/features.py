"""Feature extractors for FID, KID, precision/recall and the Inception Score.

Two kinds, one interface (`extract(x) -> (features, class probabilities)`):
- `classifier_features(data)`: a classifier trained by genlab on the dataset's labels (a small
  conv net for images that can be halved, an MLP otherwise), trained once and cached under the
  user's cache directory with its test accuracy. Features are its penultimate layer (before the
  ReLU, so they are dense and closer to Gaussian); probabilities are its softmax p(y|x).
- `inception_features(path, spec)`: InceptionV3 pool features (2048-d) and softmax over its 1008
  logits, from a weights file the user supplies (pt_inception-2015-12-05-6726825d.pth). Never
  downloaded.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import Tensor, nn

from genlab.atomic import atomic_write
from genlab.data.load import untransformed
from genlab.data.spec import Data, DataSpec
from genlab.nn.inception import inception_input, load_inception
from genlab.nn.nets import EncoderNet

log = logging.getLogger(__name__)

# Bump when the classifier's architecture or recipe changes: old cache files are then ignored.
CLASSIFIER_VERSION = 1
FEATURE_DIM = 128


def cache_dir() -> Path:
    """$GENLAB_CACHE_DIR, else $XDG_CACHE_HOME/genlab, else ~/.cache/genlab."""
    if os.environ.get("GENLAB_CACHE_DIR"):
        return Path(os.environ["GENLAB_CACHE_DIR"]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base).expanduser() / "genlab"


@dataclass
class FeatureExtractor:
    """x in data space -> (features (N, dim), p(y|x) (N, K)), in batches, without gradients."""

    name: str
    note: str  # what the features are; printed with every metric that uses them
    net: Callable[[Tensor], tuple[Tensor, Tensor]]
    device: torch.device
    values: dict[str, float]  # numbers worth reporting with the metrics (e.g. test accuracy)

    @torch.no_grad()
    def extract(self, x: Tensor, batch_size: int = 500) -> tuple[Tensor, Tensor]:
        feats, probs = [], []
        for i in range(0, len(x), batch_size):
            f, logits = self.net(x[i : i + batch_size].to(self.device).float())
            feats.append(f.double().cpu())
            probs.append(F.softmax(logits.double(), dim=1).cpu())
        return torch.cat(feats), torch.cat(probs)


class Classifier(nn.Module):
    """The feature classifier: EncoderNet -> features (B, 128) -> ReLU -> logits (B, K)."""

    def __init__(self, spec: DataSpec) -> None:
        super().__init__()
        self.body = EncoderNet(spec, FEATURE_DIM, hidden=(256, 256), channels=(32, 64))
        self.head = nn.Linear(FEATURE_DIM, spec.num_classes)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        features = self.body(x)
        return features, self.head(F.relu(features))


def _digest(data: Data) -> str:
    h = hashlib.sha256(f"v{CLASSIFIER_VERSION}:{data.spec.shape}".encode())
    for t in (data.x_train, data.y_train, data.x_test, data.y_test):
        h.update(t.contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


def _cache_path(data: Data) -> Path:
    name = re.sub(r"[^A-Za-z0-9_.-]+", "_", data.spec.name).strip("_") or "data"
    return cache_dir() / "classifiers" / f"{name}-{_digest(data)}.safetensors"


@torch.no_grad()
def _accuracy(net: Classifier, x: Tensor, y: Tensor) -> float:
    correct = sum(
        int((net(x[i : i + 1000])[1].argmax(1) == y[i : i + 1000]).sum())
        for i in range(0, len(x), 1000)
    )
    return correct / len(x)


def train_classifier(data: Data, steps: int, seed: int = 0) -> tuple[Classifier, float]:
    """Adam, batch 128, cosine-free constant lr: a few epochs reach ~90% on Fashion-MNIST."""
    with torch.random.fork_rng(devices=[]):  # its own seed; the caller's RNG is untouched
        torch.manual_seed(seed)
        net = Classifier(data.spec)
    opt = torch.optim.Adam(net.parameters(), lr=1e-3, weight_decay=1e-5)
    g = torch.Generator().manual_seed(seed)
    net.train()
    for _ in range(steps):
        idx = torch.randint(len(data.x_train), (128,), generator=g)
        loss = F.cross_entropy(net(data.x_train[idx])[1], data.y_train[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    net.eval()
    return net, _accuracy(net, data.x_test, data.y_test)


def default_steps(data: Data) -> int:
    """About 3 epochs of a 60k set; at least 1500 steps for small sets such as digits."""
    return max(1500, 3 * len(data.x_train) // 128)


def classifier_features(
    data: Data, *, steps: int | None = None, device: str | torch.device = "cpu"
) -> FeatureExtractor:
    """The dataset's feature classifier, loaded from the cache or trained once and cached."""
    data = untransformed(data)
    spec = data.spec
    if not spec.num_classes or data.y_train is None or data.y_test is None:
        raise NotImplementedError(
            f"{spec.name} has no labels to train a feature classifier on "
            "(give --inception-weights for InceptionV3 features)"
        )
    path = _cache_path(data)
    net = Classifier(spec)
    if path.is_file():
        try:
            net.load_state_dict(load_file(path))
            accuracy = float(path.with_suffix(".acc").read_text())
        except (SafetensorError, OSError, ValueError, RuntimeError) as e:  # corrupt: retrain
            log.warning("ignoring unreadable classifier cache %s (%s)", path, e)
            path.unlink(missing_ok=True)
    if not path.is_file():
        n = steps or default_steps(data)
        log.warning(
            "training the %s feature classifier once (%d steps); cached at %s", spec.name, n, path
        )
        net, accuracy = train_classifier(data, n)
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_write(path.with_suffix(".acc")) as tmp:
            tmp.write_text(f"{accuracy:.6f}\n")
        with atomic_write(path) as tmp:  # weights last: their presence means the pair is whole
            save_file(net.state_dict(), str(tmp))
    net.to(device).eval()
    kind = "conv" if hasattr(net.body.body, "feature_dim") else "MLP"
    note = (
        f"features: genlab {kind} classifier on {spec.name} labels ({FEATURE_DIM}-d penultimate "
        f"layer), test accuracy {100 * accuracy:.1f}% on {len(data.x_test)} test images"
    )
    return FeatureExtractor(
        f"classifier:{spec.name}", note, net, torch.device(device), {"classifier_acc": accuracy}
    )


def inception_features(
    path: str | Path, spec: DataSpec, device: str | torch.device = "cpu"
) -> FeatureExtractor:
    """InceptionV3 (FID weights from the user's file) on images tiled to RGB and resized."""
    if not spec.is_image or spec.shape[0] not in (1, 3):
        raise NotImplementedError(
            f"InceptionV3 features need grey or RGB images; {spec.name} has shape {spec.shape}"
        )
    net = load_inception(path).to(device)
    value_range = spec.value_range or (0.0, 1.0)

    def run(x: Tensor) -> tuple[Tensor, Tensor]:
        return net(inception_input(x, value_range))

    note = (
        f"features: InceptionV3 pool3 (2048-d) from {Path(path).name}; images mapped to [0, 1], "
        "grey tiled to 3 channels, bilinear resize to 299x299, scaled to [-1, 1]"
    )
    return FeatureExtractor("inception", note, run, torch.device(device), {})
