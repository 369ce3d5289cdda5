"""Every ready config in configs/ resolves and trains (two steps) as `genlab train --config`."""

from __future__ import annotations

from pathlib import Path

import pytest

from genlab.config import resolve
from genlab.registry import MODELS
from genlab.train import train

CONFIGS = sorted((Path(__file__).parent.parent / "configs").glob("*.yaml"))


def test_configs_exist_for_every_model_and_dataset() -> None:
    names = {p.stem for p in CONFIGS}
    for model in MODELS.names():
        for data in ("digits", "fashion-mnist"):
            assert f"{model}-{data}" in names
        vector_ok = "vector" in MODELS.get(model).data_kinds
        if vector_ok and not MODELS.entry(model).defaults.get("conditional"):
            assert f"{model}-moons" in names


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.stem)
def test_config_trains(path: Path, tmp_path: Path) -> None:
    short = ["train.steps=2", "train.checkpoint_every=1000000", "train.num_samples=4"]
    cfg = resolve(None, None, str(path), short)
    if getattr(cfg.model_cfg, "first_stage", ""):  # a latent model: train its first stage first
        first = CONFIGS[0].parent / f"ae-{cfg.data.name}.yaml"
        train(resolve(None, None, str(first), short), tmp_path / "first", progress=False)
        cfg = resolve(None, None, str(path), [*short, f"model.first_stage={tmp_path / 'first'}"])
    assert f"{cfg.model}-{cfg.data.name}" == path.stem
    run = train(cfg, tmp_path / "run", progress=False)
    assert run.step == 2


def test_demo_gan_uses_the_saved_ring8_config() -> None:
    """The demo's GAN trains with configs/gan-ring8.yaml's settings (they must not drift apart)."""
    from genlab.demo import GAN_TOY, JOBS

    steps = next(job[4] for job in JOBS if job[0] == "gan-ring8")
    demo = resolve("gan", "ring8", None, [*GAN_TOY, f"train.steps={steps}"])
    saved = resolve(None, None, str(Path(__file__).parent.parent / "configs" / "gan-ring8.yaml"))
    assert demo.model_cfg == saved.model_cfg
    for key in ("steps", "batch_size", "lr", "ema"):
        assert getattr(demo.train, key) == getattr(saved.train, key), key
