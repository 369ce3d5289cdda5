"""Image-to-image translation: U-Net, PatchGAN, pix2pix and CycleGAN beyond the shared protocol.

Loss identities are checked to float32 rounding: the same tensors combined in the same order are
compared with torch.equal, independently recomputed ones with a relative tolerance of 1e-6 (1e-5
for the cGAN critic loss, recomputed through log(1 - sigmoid) instead of softplus).
Models are compared in eval mode so batch norm uses its running statistics and is deterministic.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from conftest import tiny_data
from torch import Tensor

from genlab import models
from genlab.data import tasks
from genlab.data.spec import DataSpec
from genlab.errors import GenlabError
from genlab.models.base import Translator
from genlab.models.pix2pix import BANK
from genlab.nn.patchgan import PatchCritic
from genlab.nn.unet import UNetGenerator

TINY = {"channels": (4, 8)}
IMG8 = DataSpec("tiny8x8", (1, 8, 8), (0.0, 1.0), 10, 17)
IMG28 = DataSpec("tiny28x28", (1, 28, 28), (0.0, 1.0), 10, 256)
VEC = DataSpec("vec2", (2,))


def build(name: str, spec: DataSpec = IMG8, seed: int = 0, **cfg: object):
    torch.manual_seed(seed)
    return models.build(name, spec, **{**TINY, **cfg})


def images(n: int = 8, seed: int = 0) -> Tensor:
    return tiny_data("image", n=2 * n, seed=seed).x_train[:n]  # (n, 1, 8, 8) in [0, 1]


def close(a: Tensor, b: Tensor) -> bool:
    return torch.allclose(a, b, rtol=1e-6, atol=1e-7)


# ------------------------------------------------------------------------------------ networks
@pytest.mark.parametrize("size", [8, 28])
def test_unet_output_has_the_input_shape(size: int) -> None:
    torch.manual_seed(0)
    net = UNetGenerator(1, 1, (size, size), (4, 8))
    x = torch.randn(3, 1, size, size)
    assert net(x).shape == x.shape
    assert net.depth == 2  # 8 -> 4 -> 2 and 28 -> 14 -> 7 (halvings stops at odd sizes)


def test_unet_decoder_concatenates_encoder_features() -> None:
    """With the bottleneck cut, the output still depends on the first encoder level: the skip."""
    torch.manual_seed(0)
    net = UNetGenerator(1, 1, (8, 8), (4, 8))
    kept: dict[str, Tensor] = {}
    net.down[0].register_forward_hook(lambda m, i, out: kept.setdefault("level0", out))
    net.down[-1].register_forward_hook(lambda m, i, out: torch.zeros_like(out))  # cut the path
    out = net(torch.randn(2, 1, 8, 8))
    (grad,) = torch.autograd.grad(out.sum(), kept["level0"])
    assert grad.abs().sum() > 0
    # Structure: the outer decoder level takes 2 x channels[0] ([decoder, skip]).
    assert net.up[-1][0].in_channels == 2 * 4
    assert net.out.in_channels == 4 + 1  # [decoder output, input]: the full-resolution skip


def test_unet_refuses_images_it_cannot_halve() -> None:
    with pytest.raises(ValueError, match="too small or odd"):
        UNetGenerator(1, 1, (7, 7), (4, 8))


def test_patchgan_gives_a_map_of_local_scores() -> None:
    torch.manual_seed(0)
    critic = PatchCritic(2, (28, 28), (4, 8)).eval()  # eval: batch norm is per-example affine
    x = torch.randn(2, 2, 28, 28)
    out = critic(x)
    assert out.shape == (2, 1, 7, 7)
    assert critic.receptive_field == 18
    # A pixel in the top-left corner is seen by the top-left patch only, not the bottom-right one
    # (output (6, 6) sees input rows and columns 17..34).
    x2 = x.clone()
    x2[:, :, 0, 0] += 5.0
    out2 = critic(x2)
    assert (out2[:, :, 0, 0] - out[:, :, 0, 0]).abs().min() > 0
    assert torch.equal(out2[:, :, 6, 6], out[:, :, 6, 6])


# ------------------------------------------------------------------------------------- pix2pix
def test_pix2pix_generator_loss_is_adv_plus_weighted_l1() -> None:
    model = build("pix2pix", l1_weight=7.0).eval()
    x = images()
    out = model({"x": x}, phase="generator")
    assert set(out) == {"loss", "adv", "l1"}
    assert torch.equal(out["loss"], out["adv"] + 7.0 * out["l1"])
    source = tasks.source_of("inpaint", x, IMG8)
    fake = model.translate(source)
    logits = model.critic(torch.cat([2 * source - 1, 2 * fake - 1], dim=1))  # D on [-1, 1] pair
    assert logits.shape == (8, 1, 2, 2)
    assert close(out["adv"], F.softplus(-logits).mean())  # non-saturating: -E log D(s, G(s))
    assert close(out["l1"], (fake - x).abs().mean())


def test_pix2pix_critic_loss_is_the_cgan_loss() -> None:
    model = build("pix2pix").eval()
    x = images()
    source = model.source_of(x)
    fake = model.translate(source)
    real_logit = model.critic_logits(source, x)
    fake_logit = model.critic_logits(source, fake)
    expected = -F.logsigmoid(real_logit).mean() - torch.log1p(-torch.sigmoid(fake_logit)).mean()
    out = model({"x": x}, phase="critic")
    assert torch.allclose(out["loss"], expected, rtol=1e-5)


def test_pix2pix_l1_goes_down_on_a_fixed_batch() -> None:
    model = build("pix2pix", l1_weight=100.0).train()
    x = images()
    phases = model.phases(2e-3)
    opts = [p.optimizer(p.params) for p in phases]
    l1 = []
    for _ in range(60):  # ~0.4 s on one idle core
        for phase, opt in zip(phases, opts):
            opt.zero_grad()
            out = model({"x": x}, phase=phase.name)
            out["loss"].backward()
            opt.step()
        l1.append(out["l1"].item())
    # The fixed batch can be memorised: the error should at least halve. It starts near 0.27
    # (a mid-grey guess of uniform levels); after 60 steps it is 0.31-0.37 of that for seeds
    # 0-4, while with l1_weight=0 it is still 0.76 of it after 150 steps (seed 0).
    assert sum(l1[-10:]) / 10 < 0.5 * l1[0], (l1[0], l1[-10:])


# ------------------------------------------------------------------------------------ CycleGAN
def test_cyclegan_splits_each_batch_into_unpaired_domains() -> None:
    model = build("cyclegan")
    x = images(5)
    a, b = model.split(x)
    assert torch.equal(a, tasks.source_of("invert", x[:2], IMG8))  # first half: sources
    assert torch.equal(b, x[2:])  # second half: targets (the odd example goes to b)
    with pytest.raises(GenlabError, match="batch_size"):
        model.split(x[:1])


def test_cyclegan_critic_loss_uses_the_documented_domains() -> None:
    model = build("cyclegan").eval()
    x = images()
    a, b = 1 - x[:4], x[4:]  # invert task: a = sources of the first half, b = the second half
    fake_b, fake_a = model.translate(a), model.translate_back(b)

    def ls(real: Tensor, fake: Tensor) -> Tensor:  # LSGAN critic, a=0, b=1
        return 0.5 * ((real - 1) ** 2).mean() + 0.5 * (fake**2).mean()

    d_a = lambda img: model.critic_a(2 * img - 1)
    d_b = lambda img: model.critic_b(2 * img - 1)
    out = model({"x": x}, phase="critic")
    assert close(out["critic_a"], ls(d_a(a), d_a(fake_a)))
    assert close(out["critic_b"], ls(d_b(b), d_b(fake_b)))
    assert torch.equal(out["loss"], out["critic_a"] + out["critic_b"])


def test_cyclegan_generator_loss_is_adversarial_plus_cycle() -> None:
    model = build("cyclegan", cycle_weight=3.0).eval()
    x = images()
    a, b = 1 - x[:4], x[4:]
    out = model({"x": x}, phase="generator")
    cycle_a = (model.translate_back(model.translate(a)) - a).abs().mean()
    cycle_b = (model.translate(model.translate_back(b)) - b).abs().mean()
    assert close(out["cycle_a"], cycle_a) and close(out["cycle_b"], cycle_b)
    adv_ab = 0.5 * ((model.critic_b(2 * model.translate(a) - 1) - 1) ** 2).mean()
    assert close(out["adv_ab"], adv_ab)
    total = out["adv_ab"] + out["adv_ba"] + 3.0 * (out["cycle_a"] + out["cycle_b"])
    assert torch.equal(out["loss"], total)
    assert "identity" not in out


def test_cyclegan_identity_term() -> None:
    model = build("cyclegan", identity_weight=0.5).eval()
    x = images()
    a, b = 1 - x[:4], x[4:]
    out = model({"x": x}, phase="generator")
    identity = (model.translate(b) - b).abs().mean() + (model.translate_back(a) - a).abs().mean()
    assert close(out["identity"], identity)
    total = out["adv_ab"] + out["adv_ba"] + 10.0 * (out["cycle_a"] + out["cycle_b"])
    assert close(out["loss"], total + 0.5 * identity)


# ---------------------------------------------------------------------- shared: bank, protocol
@pytest.mark.parametrize("name", ["pix2pix", "cyclegan"])
def test_sample_translates_the_stored_training_sources(name: str) -> None:
    model = build(name)
    assert int(model.bank_filled) == 0
    model.eval()
    empty = model.sample(3)
    assert torch.equal(empty, model.translate(torch.zeros(3, 1, 8, 8)))  # before training
    x = tiny_data("image", n=320).x_train  # 160 training images
    model.train()
    per_batch = 8 if name == "pix2pix" else 4  # CycleGAN keeps the a's: the first half
    model({"x": x[:8]}, phase="critic")
    assert int(model.bank_filled) == per_batch
    model.eval()
    model({"x": x[8:16]}, phase="generator")  # eval mode: not training data, not stored
    assert int(model.bank_filled) == per_batch
    g1, g2 = torch.Generator().manual_seed(1), torch.Generator().manual_seed(2)
    s = model.sample(10, generator=g1)
    rows = torch.arange(10) % per_batch  # cycled over the filled rows only
    assert torch.equal(s, model.translate(model.source_bank[rows]))
    assert torch.equal(s, model.sample(10, generator=g2))  # deterministic, seed unused
    model.train()
    seen = [x[:per_batch]]
    for i in range(16, 160, 8):  # x[8:16] went through in eval mode
        model({"x": x[i : i + 8]}, phase="generator")
        seen.append(x[i : i + per_batch])
    assert int(model.bank_filled) == BANK
    stored = model.source_of(torch.cat(seen)[:BANK])
    assert torch.equal(model.source_bank, stored)
    model.eval()
    s = model.sample(BANK + 1)
    assert torch.allclose(s[BANK], s[0], atol=1e-6)  # the 65th sample translates bank row 0


@pytest.mark.parametrize("name", ["pix2pix", "cyclegan"])
@pytest.mark.parametrize("task", tasks.TASKS)
@pytest.mark.parametrize("spec", [IMG8, IMG28], ids=["8x8", "28x28"])
def test_translate_and_source_shapes_and_ranges(name: str, task: str, spec: DataSpec) -> None:
    model = build(name, spec, task=task).eval()
    assert isinstance(model, Translator)
    x = torch.rand(4, *spec.shape, generator=torch.Generator().manual_seed(0))
    source = model.source_of(x)
    assert torch.equal(source, tasks.source_of(task, x, spec))
    y = model.translate(source)
    assert y.shape == x.shape and torch.isfinite(y).all()
    assert y.min() >= 0.0 and y.max() <= 1.0
    model.train()
    for phase in model.phases(1e-3):
        assert torch.isfinite(model({"x": x}, phase=phase.name)["loss"])


@pytest.mark.parametrize("name", ["pix2pix", "cyclegan"])
@pytest.mark.parametrize("norm", ["instance", "none"])
def test_other_normalisations_train(name: str, norm: str) -> None:
    model = build(name, norm=norm).train()
    for phase in model.phases(1e-3):
        assert torch.isfinite(model({"x": images()}, phase=phase.name)["loss"])


def test_pix2pix_dropout_is_noise_in_training_only() -> None:
    model = build("pix2pix", dropout=0.5).train()
    source = model.source_of(images())
    assert not torch.equal(model.translate(source), model.translate(source))
    model.eval()
    assert torch.equal(model.translate(source), model.translate(source))


@pytest.mark.parametrize("name", ["pix2pix", "cyclegan"])
def test_translation_models_are_image_only_with_two_phases(name: str) -> None:
    with pytest.raises(GenlabError, match="image"):
        build(name, VEC)
    model = build(name)
    assert [p.name for p in model.phases(1e-3)] == ["critic", "generator"]
    with pytest.raises(ValueError, match="unknown phase"):
        model({"x": images()}, phase="main")
