"""Latent diffusion (ldm) and the cascaded DDPM: latent scale, conditioning paths, the first
stage through the run layer and the CLI, the super-resolution stage's condition."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch
from conftest import tiny_data
from safetensors.torch import load_file
from test_cli import genlab, one_line_exit_2

from genlab import models
from genlab.data import load_config
from genlab.data.load import DataConfig
from genlab.train import checkpoint
from genlab.train.run import load_run

SMALL = dict(channels=(4, 8), num_res_blocks=1, timesteps=20, sample_steps=5)


def randomise_(module: torch.nn.Module, seed: int = 0) -> None:
    """Replace every weight (zero-initialised output layers included) by N(0, 0.1^2), so that an
    untrained network's output depends on all of its inputs."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(0.1 * torch.randn(p.shape, generator=g))


# ----- latent diffusion -----


def test_scale_factor_gives_unit_variance_latents() -> None:
    data = load_config(DataConfig(name="digits"))
    torch.manual_seed(0)
    model = models.build("ldm", data.spec, latent_shape=(1, 4, 4), **SMALL)
    model.train()
    x = data.x_train
    model({"x": x[:512]})  # the first training batch estimates scale_factor
    assert bool(model.scale_estimated)
    # held-out examples: their scaled latents' std is 1 up to the estimate's sampling error
    # (relative SE ~ 1 / sqrt(2 * 512) = 0.03 per batch, counting examples, not entries); 0.1
    # is > 3 SE for the difference of two such estimates
    z = model.encode_latent(x[512:1024])
    assert z.shape == (512, 1, 4, 4)
    assert abs(float(z.std()) - 1.0) < 0.1
    unscaled = model.first_stage.encode(x[512:1024])
    assert abs(float(unscaled.std()) - 1.0) > 0.1  # so the scale did something
    # estimated once: later batches leave it alone
    scale = float(model.scale_factor)
    model({"x": 3 * x[:64]})
    assert float(model.scale_factor) == scale


def test_encode_diffuse_decode_shapes() -> None:
    data = tiny_data("image")
    torch.manual_seed(0)
    model = models.build("ldm", data.spec, latent_shape=(1, 4, 4), **SMALL).eval()
    x = data.x_train[:6]
    z0 = model.encode_latent(x)
    assert z0.shape == (6, 1, 4, 4)
    t = torch.full((6,), 10)
    zt = model.diffusion.schedule.q_sample(z0, t, torch.randn_like(z0))
    assert model.diffusion.net(zt, t).shape == zt.shape
    assert model.decode_latent(zt).shape == x.shape
    # the latent view is a reshape of the first stage's code: decode(encode) = reconstruct
    assert torch.allclose(model.decode_latent(z0), model.first_stage.reconstruct(x), atol=1e-6)
    flat = models.build("ldm", data.spec, latent_dim=5, hidden=(16,), timesteps=20).eval()
    assert flat.diffusion.net.arch == "mlp" and flat.encode_latent(x).shape == (6, 5)


@pytest.mark.parametrize("cond", ["concat", "cross-attention"])
def test_class_conditioning_changes_the_output(cond: str) -> None:
    data = tiny_data("image")
    torch.manual_seed(0)
    model = models.build("ldm", data.spec, latent_shape=(1, 4, 4), cond=cond, **SMALL).eval()
    net = model.diffusion.net
    randomise_(net)
    z, t = torch.randn(4, 1, 4, 4), torch.full((4,), 7)
    outs = [net(z, t, torch.full((4,), y)) for y in (0, 1, -1)]  # two classes and the null one
    # outputs are ~0.1; float32 rounding of the same input is ~1e-8, so 1e-5 is a real change
    for a in range(3):
        for b in range(a + 1, 3):
            assert (outs[a] - outs[b]).abs().max() > 1e-5, (cond, a, b)
    assert torch.equal(net(z, t, torch.zeros(4, dtype=torch.long)), outs[0])
    # the classes reach the network through the path they name, not the time embedding
    assert net.net.num_classes == 0
    assert (net.net.cond_channels > 0) == (cond == "concat")
    assert (net.net.context_dim > 0) == (cond == "cross-attention")


def test_cross_attention_needs_a_spatial_latent() -> None:
    from genlab.errors import GenlabError

    with pytest.raises(GenlabError, match="spatial latent"):
        models.build("ldm", tiny_data("image").spec, latent_dim=5, cond="cross-attention")


AE = ["model.channels=[8]", "model.latent_dim=16", "train.batch_size=32", "data.limit=256"]
QUICK = ["train.checkpoint_every=3", "train.sample_every=1000", "--no-progress"]


def test_cli_first_stage_then_ldm_then_sample(tmp_path: Path) -> None:
    ae = tmp_path / "ae"
    genlab("train", "ae", "--data", "digits", "--out", ae, "train.steps=6", *AE, *QUICK)
    ldm = tmp_path / "ldm"
    genlab(
        "train",
        "ldm",
        "--data",
        "digits",
        "--out",
        ldm,
        f"model.first_stage={ae}",
        "model.latent_shape=[1,4,4]",
        "model.cond=concat",
        "model.channels=[8,16]",
        "model.num_res_blocks=1",
        "model.timesteps=50",
        "train.steps=3",
        "train.batch_size=32",
        "data.limit=256",
        *QUICK,
    )
    assert (ldm / "first_stage" / "config.yaml").is_file()
    # the LDM's checkpoint stores the first stage's weights: equal to the AE run's
    run = load_run(ldm)
    saved = load_file(checkpoint.latest(ae / "checkpoints").path / "model.safetensors")
    for name, value in run.model.first_stage.state_dict().items():
        assert torch.equal(value, saved[name]), name
    assert 0 < float(run.model.scale_factor) and bool(run.model.scale_estimated)
    # the run no longer needs the first-stage directory: sampling works after it has moved
    shutil.move(ae, tmp_path / "ae-moved")
    genlab("sample", ldm, "-n", 4, "--steps", 3, "--out", tmp_path / "s.png")
    assert (tmp_path / "s.png").read_bytes()[:4] == b"\x89PNG"
    # resume continues from the checkpoint (first stage from it too)
    genlab("train", "ldm", "--data", "digits", "--out", ldm, "--resume", "train.steps=4", *QUICK,
           f"model.first_stage={ae}", "model.latent_shape=[1,4,4]", "model.cond=concat",
           "model.channels=[8,16]", "model.num_res_blocks=1", "model.timesteps=50",
           "train.batch_size=32", "data.limit=256")  # fmt: skip
    assert load_run(ldm).step == 4


def test_cli_missing_first_stage_is_one_line(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere"
    proc = genlab(
        "train",
        "ldm",
        "--data",
        "digits",
        "--out",
        tmp_path / "ldm",
        f"model.first_stage={missing}",
        "train.steps=1",
        check=False,
    )
    line = one_line_exit_2(proc)
    assert "first_stage" in line and str(missing) in line
    assert not (tmp_path / "ldm").exists()


def test_empty_first_stage_is_refused_before_writing(tmp_path: Path) -> None:
    """The untrained stand-in is for unit tests only: a run needs a trained first stage."""
    from genlab.config import resolve
    from genlab.errors import GenlabError
    from genlab.train import train

    cfg = resolve("ldm", "digits", None, ["model.first_stage=", "train.steps=1"])
    with pytest.raises(GenlabError, match="first_stage is empty"):
        train(cfg, tmp_path / "ldm", progress=False)
    assert not (tmp_path / "ldm").exists()


# ----- cascade -----


def cascade(**kw: object) -> models.GenerativeModel:
    torch.manual_seed(0)
    return models.build("cascaded-ddpm", tiny_data("image").spec, **SMALL, **kw)


def test_cascade_shapes() -> None:
    model = cascade().eval()
    assert model.low_spec.shape == (1, 4, 4)
    g = torch.Generator().manual_seed(0)
    assert model.base.sample(3, generator=g).shape == (3, 1, 4, 4)
    assert model.sample(3, generator=g).shape == (3, 1, 8, 8)
    low = torch.rand(5, 1, 4, 4)
    assert model.upsample(low, generator=g).shape == (5, 1, 8, 8)
    x = tiny_data("image").x_train[:2]
    assert torch.allclose(model.downsample(x)[:, :, 0, 0], x[:, :, :2, :2].mean((2, 3)))


def test_sr_stage_uses_the_low_resolution_condition() -> None:
    model = cascade().eval()
    randomise_(model.sr.net)
    low_a, low_b = torch.rand(4, 1, 4, 4), torch.rand(4, 1, 4, 4)

    def up(low: torch.Tensor) -> torch.Tensor:
        return model.upsample(low, generator=torch.Generator().manual_seed(3), sampler="ddim")

    a, b = up(low_a), up(low_b)
    assert torch.equal(a, up(low_a))  # same condition and noise: same output
    assert (a - b).abs().max() > 1e-3  # another condition, same noise: another output


def test_conditioning_augmentation_in_training_only() -> None:
    model = cascade(aug_std=0.2)
    seen: list[torch.Tensor] = []
    model.sr.net.register_forward_pre_hook(
        lambda mod, args, kwargs: seen.append(kwargs["cond"]), with_kwargs=True
    )
    x = tiny_data("image", n=256).x_train  # 128 images
    clean = model.condition(model.downsample(2 * x - 1))  # no augmentation
    model.eval()
    model({"x": x})
    assert torch.equal(seen[-1], clean)
    model.train()
    model({"x": x})
    diff = seen[-1] - clean
    # bilinear 2x upsampling (align_corners=False) weighs interior pixels 3/4, 1/4 per axis, so
    # iid noise of std s becomes std s (0.75^2 + 0.25^2) = 0.625 s there; about 128 * 16 noise
    # values give a relative standard error ~ 1 / sqrt(2 * 2048) = 0.016: 10% is > 6 SE
    interior = diff[:, :, 1:-1, 1:-1]
    assert abs(float(interior.std()) / (0.625 * 0.2) - 1) < 0.1


def test_first_stage_from_a_config_file_is_trained_first(tmp_path: Path) -> None:
    """model.first_stage=FILE.yaml: one train call trains the ae into RUN/first_stage_run, then
    the ldm on its codes; --resume continues without retraining the first stage."""
    from genlab.config import resolve
    from genlab.train import train

    ae_yaml = tmp_path / "ae.yaml"
    ae_yaml.write_text(
        "model: {name: ae, latent_dim: 16}\ndata: {name: digits}\n"
        "train: {steps: 3, checkpoint_every: 1000, sample_every: 1000, num_samples: 4}\n"
    )
    keys = [f"model.first_stage={ae_yaml}", "model.latent_shape=[1,4,4]", "model.timesteps=10"]
    short = ["train.checkpoint_every=1000", "train.num_samples=4"]
    run = train(resolve("ldm", "digits", None, [*keys, *short, "train.steps=2"]), tmp_path / "ldm")
    first = tmp_path / "ldm" / "first_stage_run"
    assert run.step == 2 and load_run(first).step == 3
    assert run.config.model_cfg.first_stage == str(first)  # the run records the trained stage
    before = sorted(p.name for p in (first / "checkpoints").iterdir())
    cfg = resolve("ldm", "digits", None, [*keys, *short, "train.steps=4"])
    assert train(cfg, tmp_path / "ldm", resume=True).step == 4
    # the first stage is not trained again: same step, same checkpoints
    assert load_run(first).step == 3
    assert sorted(p.name for p in (first / "checkpoints").iterdir()) == before
