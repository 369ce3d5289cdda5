"""FID Inception (genlab.nn.inception): architecture, FID quirks, input protocol, weight loading.

The real weights file is never needed: a random-weight model (He-initialised, perturbed BatchNorm
statistics, so activations stay O(1) through all 48 layers) checks shapes, determinism and the
save/load round trip; the file's layout is checked through names, shapes and the parameter count.
"""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import save_file
from torch import nn

from genlab.errors import GenlabError
from genlab.nn.inception import (
    WEIGHTS_FILE,
    InceptionV3,
    Mixed8,
    Mixed35,
    inception_input,
    load_inception,
)


def random_inception() -> InceptionV3:
    torch.manual_seed(0)
    model = InceptionV3()
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                m.weight.uniform_(0.6, 1.0)
                m.bias.uniform_(-0.1, 0.1)
                m.running_mean.uniform_(-0.1, 0.1)
                m.running_var.uniform_(0.5, 1.5)
            elif isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, std=2048**-0.5)
    return model


@pytest.fixture(scope="module")
def model() -> InceptionV3:
    return random_inception()


@pytest.fixture(scope="module")
def images() -> torch.Tensor:
    g = torch.Generator().manual_seed(1)
    return torch.rand(2, 3, 299, 299, generator=g) * 2 - 1


@pytest.fixture(scope="module")
def outputs(model, images) -> tuple[torch.Tensor, torch.Tensor]:
    return model(images)


@pytest.fixture(scope="module")
def pth_file(model, tmp_path_factory):
    path = tmp_path_factory.mktemp("inception") / "weights.pth"
    torch.save(model.state_dict(), path)
    return path


def test_output_shapes(outputs):
    features, logits = outputs
    assert features.shape == (2, 2048) and logits.shape == (2, 1008)
    assert torch.isfinite(features).all() and torch.isfinite(logits).all()
    assert 0.01 < features.std() < 100  # the random weights give informative, O(1) features


def test_deterministic_and_batch_independent(model, images, outputs):
    features, logits = outputs
    again = model(images)
    assert torch.equal(again[0], features) and torch.equal(again[1], logits)
    for i in range(2):
        f_i, l_i = model(images[i : i + 1])
        torch.testing.assert_close(f_i, features[i : i + 1], atol=1e-5, rtol=0)
        torch.testing.assert_close(l_i, logits[i : i + 1], atol=1e-5, rtol=0)
    assert not torch.allclose(features[0], features[1])  # different images, different features


def test_fixed_feature_extractor(model):
    model.train()
    assert not model.training and not any(m.training for m in model.modules())
    assert not any(p.requires_grad for p in model.parameters())


def test_state_dict_layout_matches_pytorch_fid_file(model):
    shapes = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    assert not any(k.startswith("AuxLogits") for k in shapes)
    assert shapes["Conv2d_1a_3x3.conv.weight"] == (32, 3, 3, 3)
    assert "Conv2d_1a_3x3.conv.bias" not in shapes  # convolutions have no bias: BN follows
    assert shapes["Conv2d_4a_3x3.bn.running_var"] == (192,)
    assert shapes["Mixed_5b.branch_pool.conv.weight"] == (32, 192, 1, 1)
    assert shapes["Mixed_5d.branch5x5_2.conv.weight"] == (64, 48, 5, 5)
    assert shapes["Mixed_6a.branch3x3.conv.weight"] == (384, 288, 3, 3)
    assert shapes["Mixed_6b.branch7x7dbl_5.conv.weight"] == (192, 128, 1, 7)
    assert shapes["Mixed_6e.branch7x7_3.conv.weight"] == (192, 192, 7, 1)
    assert shapes["Mixed_7a.branch7x7x3_4.conv.weight"] == (192, 192, 3, 3)
    assert shapes["Mixed_7b.branch3x3_2b.conv.weight"] == (384, 384, 3, 1)
    assert shapes["Mixed_7c.branch3x3dbl_3a.conv.weight"] == (384, 384, 1, 3)
    assert shapes["Mixed_7c.branch_pool.conv.weight"] == (192, 2048, 1, 1)
    assert shapes["fc.weight"] == (1008, 2048) and shapes["fc.bias"] == (1008,)
    bn = model.Mixed_7c.branch1x1.bn
    assert bn.eps == 1e-3


def test_parameter_count(model):
    # torchvision documents 27,161,264 parameters for its Inception-v3 (1000 classes, with the
    # auxiliary classifier). The FID network drops the auxiliary head and has 1008 classes.
    aux = (768 * 128 + 2 * 128) + (128 * 768 * 5 * 5 + 2 * 768) + (768 * 1000 + 1000)
    expected = 27_161_264 - aux + 8 * (2048 + 1)
    assert expected == 23_850_960
    assert sum(p.numel() for p in model.parameters()) == expected


def _identity_pool_branch(block: nn.Module, channels: int) -> None:
    """Make block.branch_pool pass its first `channels` input channels through unchanged."""
    conv, bn = block.branch_pool.conv, block.branch_pool.bn
    with torch.no_grad():
        conv.weight.zero_()
        conv.weight[:channels, :channels, 0, 0] = torch.eye(channels)
        bn.weight.fill_(1.0)
        bn.bias.zero_()
        bn.running_mean.zero_()
        bn.running_var.fill_(1.0 - bn.eps)


def test_average_pool_ignores_padding():
    # TensorFlow's average pool: a constant image stays constant up to the border.
    block = Mixed35(4, pool_c=4).eval()
    _identity_pool_branch(block, 4)
    x = torch.full((1, 4, 6, 6), 0.7)
    pooled = block(x)[:, -4:]
    torch.testing.assert_close(pooled, x, atol=1e-6, rtol=0)


def test_last_block_max_pools():
    # Mixed_7c's pool branch is a 3x3 max pool: one bright pixel lights its whole 3x3 neighbourhood.
    x = torch.zeros(1, 4, 5, 5)
    x[:, :, 2, 2] = 9.0
    for pool, centre_ring in (("max", 9.0), ("avg", 1.0)):
        block = Mixed8(4, pool=pool).eval()
        _identity_pool_branch(block, 4)
        branch = block(x)[0, -192:-188]  # (4, 5, 5): the pool branch comes last
        torch.testing.assert_close(branch[:, 1:4, 1:4], torch.full((4, 3, 3), centre_ring))
        assert branch[:, 0].abs().max() < 1e-6  # outside the window nothing leaks in


def test_inception_input_grey_and_rgb():
    g = torch.Generator().manual_seed(2)
    grey = torch.rand(3, 1, 28, 28, generator=g)
    out = inception_input(grey)
    assert out.shape == (3, 3, 299, 299)
    assert out.min() >= -1 and out.max() <= 1
    assert torch.equal(out[:, 0], out[:, 1]) and torch.equal(out[:, 1], out[:, 2])
    rgb = torch.rand(2, 3, 32, 32, generator=g) * 2 - 1
    rgb[0, 0, 0, 0], rgb[0, 0, 0, 1] = -1.0, 1.0
    out = inception_input(rgb, value_range=(-1.0, 1.0))
    assert out.shape == (2, 3, 299, 299)
    assert out.min() >= -1 and out.max() <= 1 and out.min() < -0.9 and out.max() > 0.9


def test_inception_input_constant_and_range():
    const = torch.full((1, 3, 17, 23), 63.75)  # 0.25 of the way through [0, 255]
    out = inception_input(const, value_range=(0.0, 255.0))
    torch.testing.assert_close(out, torch.full((1, 3, 299, 299), -0.5), atol=1e-6, rtol=0)
    with pytest.raises(ValueError, match="1 or 3"):
        inception_input(torch.zeros(1, 2, 8, 8))
    with pytest.raises(ValueError, match="1 or 3"):
        inception_input(torch.zeros(1, 4, 8, 8))


def test_round_trip_pth_and_safetensors(model, images, outputs, pth_file, tmp_path):
    st_file = tmp_path / "weights.safetensors"
    save_file(model.state_dict(), str(st_file))
    for path in (pth_file, str(st_file)):
        loaded = load_inception(path)
        assert not loaded.training and not any(p.requires_grad for p in loaded.parameters())
        features, logits = loaded(images)
        assert torch.equal(features, outputs[0]) and torch.equal(logits, outputs[1])


def test_file_without_batch_counters_loads(model, tmp_path):
    # BatchNorm's num_batches_tracked is unused in eval mode; files without it load.
    state = {k: v for k, v in model.state_dict().items() if "num_batches_tracked" not in k}
    path = tmp_path / "no_counters.safetensors"
    save_file(state, str(path))
    loaded = load_inception(path).state_dict()
    assert all(torch.equal(loaded[k], v) for k, v in state.items())


def test_missing_file(tmp_path):
    with pytest.raises(GenlabError, match="not found") as e:
        load_inception(tmp_path / "nope.pth")
    assert WEIGHTS_FILE in str(e.value)


def test_wrong_keys(model, tmp_path):
    state = dict(model.state_dict())
    del state["Mixed_6c.branch7x7_2.conv.weight"]
    state["AuxLogits.fc.weight"] = torch.zeros(1008, 768)
    path = tmp_path / "keys.pth"
    torch.save(state, path)
    with pytest.raises(GenlabError) as e:
        load_inception(path)
    msg = str(e.value)
    assert "Mixed_6c.branch7x7_2.conv.weight" in msg and "AuxLogits.fc.weight" in msg
    assert WEIGHTS_FILE in msg and "pytorch-fid" in msg and "\n" not in msg


def test_wrong_shape(model, tmp_path):
    state = dict(model.state_dict())
    state["fc.weight"] = torch.zeros(1000, 2048)
    path = tmp_path / "shape.safetensors"
    save_file(state, str(path))
    with pytest.raises(GenlabError) as e:
        load_inception(path)
    msg = str(e.value)
    assert "fc.weight" in msg and "(1000, 2048)" in msg and "(1008, 2048)" in msg


@pytest.mark.parametrize("name", ["garbage.pth", "garbage.safetensors"])
def test_garbage_file(tmp_path, name):
    path = tmp_path / name
    path.write_bytes(b"this is not a weights file\x00\x01\x02" * 10)
    with pytest.raises(GenlabError, match="cannot read"):
        load_inception(path)


def test_not_a_state_dict(tmp_path):
    path = tmp_path / "list.pth"
    torch.save([torch.zeros(3)], path)
    with pytest.raises(GenlabError, match="not a state dict"):
        load_inception(path)


EXECUTED: list[str] = []


def _side_effect() -> str:
    EXECUTED.append("ran")
    return "payload"


class Payload:
    """Unpickling this would call _side_effect: weights_only must refuse it."""

    def __reduce__(self):
        return (_side_effect, ())


def test_pickled_code_is_refused(tmp_path):
    path = tmp_path / "evil.pth"
    torch.save({"fc.weight": torch.zeros(1), "x": Payload()}, path)
    with pytest.raises(GenlabError, match="cannot read.*objects other than tensors"):
        load_inception(path)
    assert EXECUTED == []
