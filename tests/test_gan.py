"""GAN checks: losses train, WGAN clipping, gradient penalty, tricks, SN, conditioning, init."""

from __future__ import annotations

import pytest
import torch
from conftest import tiny_data

from genlab import models
from genlab.data.spec import DataSpec
from genlab.errors import GenlabError
from genlab.math.gan_losses import LOSSES
from genlab.models.gan import GAN
from genlab.nn.gan import MinibatchDiscrimination, MinibatchStdDev, pack_samples

SMALL = {"latent_dim": 4, "hidden": (16, 16), "channels": (4, 8)}


def build(name: str = "gan", kind: str = "vector", seed: int = 0, **cfg: object) -> GAN:
    torch.manual_seed(seed)
    return models.build(name, tiny_data(kind).spec, **{**SMALL, **cfg})


def batch(kind: str = "vector", n: int = 16) -> dict[str, torch.Tensor]:
    return tiny_data(kind).batch(torch.arange(n))


def train_steps(model: GAN, data_kind: str, steps: int, lr: float = 1e-3) -> dict:
    """A minimal copy of the Trainer's loop: every phase, `repeat` times, then after_step."""
    phases = model.phases(lr)
    opts = {p.name: p.optimizer(p.params) for p in phases}
    data = tiny_data(data_kind)
    g = torch.Generator().manual_seed(0)
    out = {}
    for _ in range(steps):
        for p in phases:
            for _ in range(p.repeat):
                out = model(data.batch(torch.randint(len(data), (16,), generator=g)), phase=p.name)
                opts[p.name].zero_grad()
                out["loss"].backward()
                opts[p.name].step()
                model.after_step(p.name)
    return out


@pytest.mark.parametrize("loss", LOSSES)
def test_every_loss_trains_a_toy_without_nan(loss: str) -> None:
    model = build(loss=loss, n_critic=2)
    train_steps(model, "vector", 15)
    for phase in ("critic", "generator"):
        out = model(batch(), phase=phase)
        assert all(torch.isfinite(v).all() for v in out.values()), out
    assert all(torch.isfinite(p).all() for p in model.parameters())
    assert torch.isfinite(model.sample(32)).all()


def test_wgan_clipping_keeps_critic_weights_in_range() -> None:
    model = build("wgan")
    c = model.cfg.clip
    # PyTorch's default Linear init (|w| up to 1/sqrt(fan_in)) starts far outside [-c, c].
    assert max(p.abs().max() for p in model.critic.parameters()) > 10 * c
    train_steps(model, "vector", 1)
    for name, p in model.critic.named_parameters():
        assert p.abs().max() <= c, name


def test_wgan_gp_loss_is_adversarial_plus_weighted_penalty() -> None:
    model = build("wgan-gp", gp_weight=7.0)
    out = model(batch(), phase="critic")
    assert "gp" in out and out["gp"] > 0
    assert torch.allclose(out["loss"], out["adv"] + 7.0 * out["gp"])
    # the penalty is differentiated in the critic's update (create_graph=True)
    model.critic.zero_grad()
    out["loss"].backward()
    assert all(p.grad is not None for p in model.critic.parameters())
    # no batch norm in a gradient-penalty critic (it would couple the examples' gradients)
    img = build("wgan-gp", "image")
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in img.critic.modules())
    assert any(isinstance(m, torch.nn.BatchNorm2d) for m in build("gan", "image").critic.modules())


def test_one_sided_label_smoothing_shifts_critic_loss_by_s_times_mean_real_logit() -> None:
    # loss_s - loss_0 = s * E[softplus(r) - softplus(-r)] = s * E[r] for real logits r, since the
    # smoothed real term is (1 - s) softplus(-r) + s softplus(r) and fakes keep target 0.
    s = 0.2
    plain, smooth = build(loss="ns"), build(loss="ns", label_smoothing=s)
    torch.manual_seed(1)
    out0 = plain(batch(), phase="critic")
    torch.manual_seed(1)
    out1 = smooth(batch(), phase="critic")
    assert torch.equal(out0["d_real"], out1["d_real"]) and out0["d_real"].abs() > 1e-3
    assert torch.allclose(out1["loss"] - out0["loss"], s * out0["d_real"], atol=1e-6)
    with pytest.raises(GenlabError, match="label_smoothing"):
        build(loss="wgan", label_smoothing=s)


@pytest.mark.parametrize("kind", ["vector", "image"])
def test_packing_groups_consecutive_examples(kind: str) -> None:
    model = build(kind=kind, pack=4)
    seen = []
    model.critic.register_forward_hook(lambda m, inputs, out: seen.append((inputs[0], out)))
    b = batch(kind, n=10)  # 10 = 2 * 4 + 2: the last two examples are dropped
    model(b, phase="critic")
    x_in, out = seen[0]
    assert out.shape == (2,)
    x = model.to_critic_space(b["x"][:8])
    if kind == "vector":
        assert x_in.shape == (2, 4 * 2)
        assert torch.equal(x_in[1], x[4:8].flatten())
    else:  # along channels: (B / 4, 4 * C, H, W)
        assert x_in.shape == (2, 4, 8, 8)
        assert torch.equal(x_in[1], x[4:8, 0])
    with pytest.raises(ValueError):
        pack_samples(torch.zeros(6, 3), 4)


def test_minibatch_layers_shapes_and_batch_dependence() -> None:
    torch.manual_seed(0)
    f = torch.randn(6, 5)
    mbd = MinibatchDiscrimination(5, kernels=3, kernel_dim=4)
    std = MinibatchStdDev()
    assert mbd(f).shape == (6, 8) and std(f).shape == (6, 6)
    maps = torch.randn(6, 2, 3, 3)
    assert std(maps).shape == (6, 3, 3, 3)
    # the appended features of example 0 change when only example 5 changes
    g = f.clone()
    g[5] += 1.0
    for layer in (mbd, std):
        a, b = layer(f), layer(g)
        assert torch.equal(a[0, :5], b[0, :5])
        assert not torch.allclose(a[0, 5:], b[0, 5:])
    # stddev value: mean over features of the (biased) batch standard deviation
    assert torch.allclose(std(f)[:, -1], f.std(dim=0, unbiased=False).mean().expand(6), atol=1e-6)
    # the paper's o(x_i)_b = sum_j exp(-|M_i,b - M_j,b|_1) includes j = i, so o >= 1
    assert (mbd(f)[:, 5:] >= 1).all()


def test_critic_tricks_are_wired_into_both_architectures() -> None:
    for kind in ("vector", "image"):
        model = build(kind=kind, minibatch_stddev=True, minibatch_discrimination=3)
        kinds = [type(m) for m in model.critic.modules()]
        assert MinibatchStdDev in kinds and MinibatchDiscrimination in kinds
        assert model.critic.head.in_features > 3
        out = model(batch(kind), phase="critic")
        assert torch.isfinite(out["loss"])


def test_replay_buffer_fills_mixes_and_is_saved() -> None:
    model = build(replay=0.5, replay_size=20)
    assert int(model.replay_count) == 0
    model(batch(n=16), phase="critic")
    assert int(model.replay_count) == 16
    model(batch(n=16), phase="critic")
    assert int(model.replay_count) == 20  # full: later pushes overwrite random slots
    state = model.state_dict()
    assert {"replay_x", "replay_y", "replay_count"} <= set(state)
    fresh = build(replay=0.5, replay_size=20, seed=3)
    fresh.load_state_dict(state)
    assert torch.equal(fresh.replay_x, model.replay_x)
    # mixing: the first round(0.5 * 8) fakes come from the buffer, then the new fakes are pushed
    model.replay_x.fill_(100.0)
    fake = torch.zeros(8, 2)
    mixed, _ = model.replay_mix(fake, None)
    assert (mixed[:4] == 100).all() and (mixed[4:] == 0).all()
    assert int((model.replay_x == 0).all(dim=1).sum()) == 8


def test_replay_keeps_labels_of_conditional_samples() -> None:
    model = build("cgan", "image", replay=0.5, replay_size=8)
    model(batch("image", n=8), phase="critic")
    assert torch.equal(model.replay_y, batch("image", n=8)["y"])


@pytest.mark.parametrize("kind", ["vector", "image"])
def test_unrolled_changes_generator_gradient_not_critic(kind: str) -> None:
    grads = []
    for k in (0, 2):
        model = build(kind=kind, unrolled=k, unrolled_lr=0.5)
        before = {n: t.clone() for n, t in model.critic.state_dict().items()}
        torch.manual_seed(1)
        model(batch(kind), phase="generator")["loss"].backward()
        grads.append(torch.cat([p.grad.flatten() for p in model.generator.parameters()]))
        after = model.critic.state_dict()
        changed = {n for n in before if not torch.equal(before[n], after[n])}
        params = {n for n, _ in model.critic.named_parameters()}
        assert not changed & params
        if k > 0:  # the unrolled copy also leaves the batch-norm statistics alone
            assert not changed
    assert (grads[0] - grads[1]).norm() > 1e-3 * grads[0].norm()


def test_unrolled_with_zero_step_size_is_the_plain_generator_loss() -> None:
    # theta_k = theta_0 when unrolled_lr = 0: the same gradient as unrolled=0 (vector critic,
    # no batch statistics), so the difference above comes from the unrolled steps alone.
    grads = []
    for k in (0, 2):
        model = build(unrolled=k, unrolled_lr=0.0)
        torch.manual_seed(1)
        model(batch(), phase="generator")["loss"].backward()
        grads.append(torch.cat([p.grad.flatten() for p in model.generator.parameters()]))
    assert torch.allclose(grads[0], grads[1], atol=1e-7)


def test_unrolled_works_with_spectral_norm() -> None:
    model = build("sngan", "image", unrolled=1)
    out = model(batch("image"), phase="generator")
    out["loss"].backward()
    assert all(p.grad is not None for p in model.generator.parameters())


def test_spectral_norm_gives_unit_largest_singular_value() -> None:
    model = build("sngan", "image", channels=(8, 16))
    layers = [
        m
        for m in model.critic.modules()
        if isinstance(m, (torch.nn.Linear, torch.nn.Conv2d)) and hasattr(m, "parametrizations")
    ]
    assert len(layers) == 3  # two convs and the head
    x = batch("image")
    for _ in range(30):  # one power iteration per training forward
        model(x, phase="critic")
    model.eval()
    for m in layers:
        sigma = torch.linalg.matrix_norm(m.weight.flatten(1), ord=2)
        # power iteration converges like (sigma_2 / sigma_1)^(2k); 30 steps are plenty here
        assert abs(sigma - 1) < 0.02, sigma
    plain = build("gan", "image", loss="hinge", channels=(8, 16))
    sigma = torch.linalg.matrix_norm(plain.critic.head.weight, ord=2)
    assert abs(sigma - 1) > 0.5  # without SN the DCGAN init gives sigma far from 1


@pytest.mark.parametrize("arch", ["mlp", "dcgan"])
def test_conditional_sampling_uses_the_labels(arch: str) -> None:
    model = build("cgan", "image", arch=arch)
    model.eval()
    g = lambda: torch.Generator().manual_seed(0)  # noqa: E731
    a = model.sample(4, generator=g(), labels=torch.tensor([0, 1, 2, 3]))
    b = model.sample(4, generator=g(), labels=torch.tensor([5, 6, 7, 8]))
    c = model.sample(4, generator=g(), labels=torch.tensor([0, 1, 2, 3]))
    assert torch.equal(a, c)
    # at DCGAN init (weights N(0, 0.02), eval-mode batch norm) outputs are all close to the middle
    # grey, so differences are small but present; the MLP's default init gives O(0.01) ones.
    tol = 1e-3 if arch == "mlp" else 1e-6
    assert ((a - b).flatten(1).abs().amax(dim=1) > tol).all()
    # no labels: classes cycle 0, 1, ..., so the first four match labels 0..3
    assert torch.equal(model.sample(4, generator=g()), a)
    with pytest.raises(GenlabError, match="labels"):
        build("cgan", "vector")


def test_dcgan_initialisation_statistics() -> None:
    model = build("dcgan", "image", channels=(64, 128))
    convs = [
        m
        for m in model.modules()
        if isinstance(m, (torch.nn.Conv2d, torch.nn.ConvTranspose2d)) and m.weight.numel() > 10_000
    ]
    assert len(convs) == 2  # the 64 <-> 128 conv of the critic and of the generator
    for m in convs:
        # the sample std of >= 131k N(0, 0.02^2) draws is 0.02 within ~0.3% (1 / sqrt(2n))
        assert abs(m.weight.std() - 0.02) < 0.001
        assert abs(m.weight.mean()) < 0.001
    bns = [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    scales = torch.cat([m.weight for m in bns])
    assert abs(scales.mean() - 1) < 0.01 and 0.01 < scales.std() < 0.03
    assert all((m.bias == 0).all() for m in bns)


def test_dcgan_is_image_only_and_arch_auto_chooses() -> None:
    with pytest.raises(GenlabError, match="image"):
        build("dcgan", "vector")
    with pytest.raises(GenlabError, match="dcgan"):
        build("gan", "vector", arch="dcgan")
    assert build("gan", "image").arch == "dcgan"
    assert build("gan", "vector").arch == "mlp"
    odd = DataSpec("odd", (1, 7, 7), (0.0, 1.0))
    assert models.build("gan", odd, **SMALL).arch == "mlp"


def test_image_samples_lie_in_value_range() -> None:
    spec = DataSpec("pm1", (1, 8, 8), (-1.0, 2.0))
    torch.manual_seed(0)
    model = models.build("gan", spec, **SMALL)
    model.eval()
    x = model.sample(16)
    assert x.min() >= -1 and x.max() <= 2
    # the critic sees [-1, 1]: data space maps linearly onto G's tanh range
    assert torch.allclose(
        model.to_critic_space(torch.tensor([-1.0, 0.5, 2.0])), torch.tensor([-1.0, 0.0, 1.0])
    )


def test_gan_learns_the_mean_of_a_shifted_gaussian() -> None:
    # A learning check that is fast and reliable: data N((3, -2), 0.25 I). At init the generator
    # puts its samples near the origin, 3.6 away. Over seeds 0-7 this setting ends with the sample
    # mean 0.04-0.5 from the target (GAN training oscillates around it), hence the bound 1.0.
    # Mode coverage on ring8 is not reliable in a few seconds; that is left to the benchmarks.
    torch.manual_seed(0)
    target = torch.tensor([3.0, -2.0])
    model = models.build("gan", DataSpec("shifted", (2,)), latent_dim=4, hidden=(32, 32))
    g = lambda: torch.Generator().manual_seed(0)  # noqa: E731
    assert (model.sample(2000, generator=g()).mean(dim=0) - target).norm() > 3
    phases = model.phases(5e-4)
    opts = {p.name: p.optimizer(p.params) for p in phases}
    for _ in range(600):
        for p in phases:
            x = target + 0.5 * torch.randn(64, 2)
            out = model({"x": x}, phase=p.name)
            opts[p.name].zero_grad()
            out["loss"].backward()
            opts[p.name].step()
    model.eval()
    mean = model.sample(2000, generator=g()).mean(dim=0)
    assert (mean - target).norm() < 1.0, mean
