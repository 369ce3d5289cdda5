"""The shared protocol test, run over every registered model (DESIGN "Tests")."""

from __future__ import annotations

import dataclasses

import pytest
import torch
import yaml
from conftest import tiny_data

from genlab import models
from genlab.config import RunConfig, resolve
from genlab.data.load import DataConfig
from genlab.models.base import Encoder, FitsData, GenerativeModel
from genlab.registry import MODELS
from genlab.train import checkpoint

# small nets and short chains (diffusion: T, noise levels, Langevin steps) keep the suite fast
TINY = {
    "latent_dim": 3,
    "hidden": (16,),
    "channels": (4, 8),
    "timesteps": 20,
    "num_scales": 3,
    "langevin_steps": 2,
    "sample_steps": 5,
    "factors": 1,
}


def build(name: str, kind: str) -> tuple[GenerativeModel, dict]:
    data = tiny_data(kind)
    fields = {f.name for f in dataclasses.fields(MODELS.get(name).config_class)}
    cfg = {k: v for k, v in TINY.items() if k in fields}
    torch.manual_seed(0)
    model = models.build(name, data.spec, **cfg)
    if isinstance(model, FitsData):  # as the Trainer does before the first step
        model.fit_data(data.x_train, data.y_train)
    return model, data.batch(torch.arange(8))


CASES = [
    (name, kind)
    for name in MODELS.names()
    for kind in ("vector", "image")
    if not (kind == "vector" and MODELS.entry(name).defaults.get("conditional"))
    and kind in MODELS.get(name).data_kinds
]


@pytest.mark.parametrize("name,kind", CASES)
def test_finite_loss_per_phase(name: str, kind: str) -> None:
    model, batch = build(name, kind)
    for phase in model.phases(1e-3):
        out = model(batch, phase=phase.name)
        assert "loss" in out and out["loss"].ndim == 0
        for part, value in out.items():
            assert torch.isfinite(value).all(), f"{name}/{phase.name}: {part} = {value}"


@pytest.mark.parametrize("name,kind", CASES)
def test_one_step_changes_only_its_phase(name: str, kind: str) -> None:
    model, batch = build(name, kind)
    for phase in model.phases(1e-2):
        before = {n: p.detach().clone() for n, p in model.named_parameters()}
        own = {id(p) for p in phase.params}
        opt = phase.optimizer(phase.params)
        opt.zero_grad()
        model(batch, phase=phase.name)["loss"].backward()
        opt.step()
        changed = {n for n, p in model.named_parameters() if not torch.equal(p, before[n])}
        outside = {n for n, p in model.named_parameters() if id(p) not in own}
        assert changed, f"{name}: step of phase {phase.name} changed nothing"
        assert not (changed & outside), f"{name}: phase {phase.name} changed {changed & outside}"


@pytest.mark.parametrize("name,kind", CASES)
def test_sample_shape_and_range(name: str, kind: str) -> None:
    model, _ = build(name, kind)
    model.eval()
    x = model.sample(5, generator=torch.Generator().manual_seed(1))
    assert x.shape == (5, *model.spec.shape)
    assert torch.isfinite(x).all()
    if model.spec.value_range is not None:
        low, high = model.spec.value_range
        assert x.min() >= low and x.max() <= high
    again = model.sample(5, generator=torch.Generator().manual_seed(1))
    assert torch.equal(x, again), "same generator seed must give the same samples"


@pytest.mark.parametrize("name,kind", CASES)
def test_checkpoint_round_trip_is_exact(name: str, kind: str, tmp_path) -> None:
    model, batch = build(name, kind)
    model.train()
    model(batch)  # move running statistics (e.g. the autoencoder's code fit) off their init
    ckpt = checkpoint.save(tmp_path, 1, model, {"step": 1})
    torch.manual_seed(123)
    fresh, _ = build(name, kind)
    checkpoint.load_weights(fresh, ckpt.path / "model.safetensors")
    for (n, a), (_, b) in zip(model.state_dict().items(), fresh.state_dict().items()):
        assert torch.equal(a, b), n
    model.eval(), fresh.eval()
    g1, g2 = torch.Generator().manual_seed(5), torch.Generator().manual_seed(5)
    assert torch.equal(model.sample(4, generator=g1), fresh.sample(4, generator=g2))


@pytest.mark.parametrize("name", MODELS.names())
def test_config_yaml_round_trip(name: str) -> None:
    fields = {f.name for f in dataclasses.fields(MODELS.get(name).config_class)}
    latent = ["model.latent_dim=5"] if "latent_dim" in fields else []
    cfg = resolve(name, "digits", None, ["train.steps=7", *latent])
    text = yaml.safe_dump(cfg.to_dict())
    again = resolve(base=yaml.safe_load(text))
    assert again == cfg
    assert isinstance(again, RunConfig) and isinstance(again.data, DataConfig)


@pytest.mark.parametrize("name,kind", CASES)
def test_encoder_capability_is_consistent(name: str, kind: str) -> None:
    model, batch = build(name, kind)
    if not isinstance(model, Encoder):
        pytest.skip(f"{name} has no encoder")
    model.eval()
    labels = batch.get("y")
    z = model.encode(batch["x"], labels)
    assert z.shape[0] == len(batch["x"])
    assert torch.allclose(model.reconstruct(batch["x"], labels), model.decode(z, labels))
