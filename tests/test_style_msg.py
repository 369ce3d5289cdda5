"""Style-based generator (arXiv:1812.04948) and MSG-GAN networks (arXiv:1903.06048): shapes,
determinism, noise, style mixing, the multi-scale critic and its gradients to every level."""

from __future__ import annotations

import pytest
import torch

from genlab.data.spec import DataSpec
from genlab.nn.msg import MSGCritic, MSGGenerator, image_pyramid
from genlab.nn.style import MappingNetwork, StyleGenerator

CH = (8, 16)
LATENT = 6
SPECS = {
    "1x8x8": DataSpec("d8", (1, 8, 8), (0.0, 1.0), 10, 17),
    "1x28x28": DataSpec("f28", (1, 28, 28), (0.0, 1.0), 10),
    "3x32x32": DataSpec("c32", (3, 32, 32), (0.0, 1.0)),
}
# halvings with two widths: 8 -> 4 -> 2, 28 -> 14 -> 7, 32 -> 16 -> 8: two upsamplings each
COARSEST = {"1x8x8": 2, "1x28x28": 7, "3x32x32": 8}


def _style(spec: DataSpec, num_classes: int = 0, seed: int = 0) -> StyleGenerator:
    torch.manual_seed(seed)
    net = StyleGenerator(LATENT, spec, CH, mapping_layers=2, w_dim=12, num_classes=num_classes)
    # the paper initialises the noise scales to zero; make them non-zero so noise is visible
    with torch.no_grad():
        for layer in net.layers:
            layer.noise.scale.normal_(0.0, 1.0)
    return net.eval()


def _z(n: int, seed: int) -> torch.Tensor:
    return torch.randn(n, LATENT, generator=torch.Generator().manual_seed(seed))


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


@pytest.mark.parametrize("name", list(SPECS))
def test_style_generator_shapes(name: str) -> None:
    spec = SPECS[name]
    net = _style(spec)
    assert net.num_style_layers == 3
    assert tuple(net.const.shape[-2:]) == (COARSEST[name],) * 2
    out = net(_z(4, 1), generator=_gen(0))
    assert out.shape == (4, *spec.shape)
    assert bool(torch.isfinite(out).all())


def test_mapping_network_shape_and_pixel_norm() -> None:
    f = MappingNetwork(LATENT, 5, layers=3)
    assert f(_z(4, 0)).shape == (4, 5)
    # pixel norm: w depends on z only through its direction
    torch.testing.assert_close(f(_z(4, 0) * 7.5), f(_z(4, 0)))
    ident = MappingNetwork(LATENT, LATENT, layers=0)
    z = _z(3, 2)
    torch.testing.assert_close(ident(z).pow(2).mean(dim=1), torch.ones(3))
    with pytest.raises(ValueError):
        MappingNetwork(LATENT, 5, layers=0)


def test_style_generator_deterministic_with_fixed_generator() -> None:
    net = _style(SPECS["1x8x8"])
    z = _z(3, 1)
    with torch.no_grad():
        a, b = net(z, generator=_gen(5)), net(z, generator=_gen(5))
        c = net(z, generator=_gen(6))
    torch.testing.assert_close(a, b, rtol=0, atol=0)
    # the noise matters (scales are non-zero): another noise seed gives another image
    assert (a - c).abs().max() > 1e-3


def test_noise_false_is_deterministic_regardless_of_generator() -> None:
    net = _style(SPECS["1x8x8"])
    z = _z(3, 1)
    with torch.no_grad():
        a = net(z, generator=_gen(5), noise=False)
        b = net(z, generator=_gen(6), noise=False)
        c = net(z, noise=False)  # global RNG
        d = net(z, generator=_gen(5))
    torch.testing.assert_close(a, b, rtol=0, atol=0)
    torch.testing.assert_close(a, c, rtol=0, atol=0)
    assert (a - d).abs().max() > 1e-3


def test_zero_noise_scale_at_init() -> None:
    torch.manual_seed(0)
    net = StyleGenerator(LATENT, SPECS["1x8x8"], CH)
    assert net.w_dim == LATENT  # w_dim defaults to latent_dim
    z = _z(2, 1)
    with torch.no_grad():
        torch.testing.assert_close(net(z, generator=_gen(1)), net(z, noise=False))


@pytest.mark.parametrize("num_classes", [0, 10])
def test_style_mixing(num_classes: int) -> None:
    net = _style(SPECS["1x8x8"], num_classes=num_classes)
    z, z2 = _z(4, 1), _z(4, 2)
    labels = torch.tensor([0, 3, 9, 3]) if num_classes else None
    L = net.num_style_layers
    with torch.no_grad():
        plain = net(z, labels, generator=_gen(9))
        other = net(z2, labels, generator=_gen(9))
        none_mixed = net(z, labels, z2=z2, mix_layer=L, generator=_gen(9))
        all_mixed = net(z, labels, z2=z2, mix_layer=0, generator=_gen(9))
        half = net(z, labels, z2=z2, mix_layer=1, generator=_gen(9))
        # per-sample crossover points: sample i mixed from layer m[i]
        m = torch.tensor([L, 0, 1, 1])
        per_sample = net(z, labels, z2=z2, mix_layer=m, generator=_gen(9))
    # the same noise draws and the same per-layer styles: exactly equal
    torch.testing.assert_close(none_mixed, plain, rtol=0, atol=0)
    torch.testing.assert_close(all_mixed, other, rtol=0, atol=0)
    for i in range(4):
        assert (half[i] - plain[i]).abs().max() > 1e-4
        assert (half[i] - other[i]).abs().max() > 1e-4
    torch.testing.assert_close(per_sample[0], plain[0], rtol=0, atol=0)
    torch.testing.assert_close(per_sample[1], other[1], rtol=0, atol=0)
    torch.testing.assert_close(per_sample[2:], half[2:], rtol=0, atol=0)


def test_style_mixing_argument_errors() -> None:
    net = _style(SPECS["1x8x8"])
    z = _z(2, 1)
    with pytest.raises(ValueError, match="both"):
        net(z, z2=z)
    with pytest.raises(ValueError, match="mix_layer"):
        net(z, z2=z, mix_layer=net.num_style_layers + 1)
    with pytest.raises(ValueError, match="labels"):
        _style(SPECS["1x8x8"], num_classes=10)(z)


def test_style_generator_gradients_reach_mapping_and_noise() -> None:
    net = _style(SPECS["1x8x8"], num_classes=10)
    out = net(_z(2, 1), torch.tensor([1, 2]), generator=_gen(0))
    out.square().mean().backward()
    for name, p in net.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name


def test_image_pyramid() -> None:
    x = torch.randn(2, 3, 28, 28, generator=_gen(0))
    pyr = image_pyramid(x, 3)
    assert [tuple(p.shape) for p in pyr] == [(2, 3, 7, 7), (2, 3, 14, 14), (2, 3, 28, 28)]
    assert pyr[-1] is x
    # each level is the 2x2 block mean of the next finer one
    torch.testing.assert_close(pyr[1][0, 1, 3, 5], x[0, 1, 6:8, 10:12].mean())
    torch.testing.assert_close(pyr[0][1, 2, 6, 0], x[1, 2, 24:28, 0:4].mean())
    assert len(image_pyramid(x, 1)) == 1
    with pytest.raises(ValueError, match="halve"):
        image_pyramid(x, 4)  # 7x7 cannot be halved


@pytest.mark.parametrize("name", list(SPECS))
def test_msg_generator_and_critic(name: str) -> None:
    spec = SPECS[name]
    torch.manual_seed(0)
    num_classes = spec.num_classes
    gen = MSGGenerator(LATENT, spec, CH, num_classes=num_classes)
    critic = MSGCritic(spec, CH, num_classes=num_classes)
    assert gen.levels == critic.levels == 3
    labels = torch.arange(4) % num_classes if num_classes else None
    fakes = gen(_z(4, 1), labels)
    c, h, w = spec.shape
    assert [tuple(f.shape) for f in fakes] == [
        (4, c, h >> 2, w >> 2),
        (4, c, h >> 1, w >> 1),
        (4, c, h, w),
    ]
    real = torch.rand(4, *spec.shape, generator=_gen(3))
    pyr = image_pyramid(real, gen.levels)
    assert critic(pyr, labels).shape == (4,)
    score = critic(fakes, labels)
    assert score.shape == (4,)
    # the critic's gradient reaches every generator output level and every generator parameter
    grads = torch.autograd.grad(score.sum(), [*fakes, *gen.parameters()])
    for k, g in enumerate(grads[: gen.levels]):
        assert g.abs().sum() > 0, f"no gradient to level {k}"
    for (pname, _), g in zip(gen.named_parameters(), grads[gen.levels :]):
        assert g.abs().sum() > 0, pname


def test_msg_every_level_changes_the_critic_score() -> None:
    # each level enters the score on its own (not only through the finest image)
    spec = SPECS["1x8x8"]
    torch.manual_seed(0)
    critic = MSGCritic(spec, CH)
    pyr = image_pyramid(torch.rand(2, 1, 8, 8, generator=_gen(1)), critic.levels)
    base = critic(pyr)
    for k in range(critic.levels):
        changed = list(pyr)
        changed[k] = pyr[k] + 1.0
        assert (critic(changed) - base).abs().max() > 1e-6, k


def test_msg_critic_conditional_projection_and_errors() -> None:
    spec = SPECS["1x8x8"]
    torch.manual_seed(0)
    critic = MSGCritic(spec, CH, num_classes=10)
    with torch.no_grad():
        critic.embed.weight.normal_()
    pyr = image_pyramid(torch.rand(2, 1, 8, 8, generator=_gen(1)), critic.levels)
    a = critic(pyr, torch.tensor([0, 0]))
    b = critic(pyr, torch.tensor([5, 5]))
    assert (a - b).abs().min() > 1e-6
    with pytest.raises(ValueError, match="labels"):
        critic(pyr)
    with pytest.raises(ValueError, match="images"):
        critic(pyr[1:], torch.tensor([0, 0]))
    with pytest.raises(ValueError, match="level 0"):
        critic([pyr[1], pyr[1], pyr[2]], torch.tensor([0, 0]))
