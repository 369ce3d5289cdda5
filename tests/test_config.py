"""Config resolution: defaults <- YAML <- key=value, types checked, unknown keys refused."""

from __future__ import annotations

import pytest

from genlab.config import TrainConfig, coerce, resolve
from genlab.errors import GenlabError


def test_overrides_are_typed() -> None:
    cfg = resolve(
        "vae",
        "ring8",
        None,
        [
            "train.steps=12",
            "train.lr=1e-4",
            "model.hidden=[8,4]",
            "model.conditional=false",
            "model.beta=2",
        ],
    )
    assert cfg.train.steps == 12 and cfg.train.lr == 1e-4
    assert cfg.model_cfg.hidden == (8, 4) and cfg.model_cfg.beta == 2.0
    assert isinstance(cfg.model_cfg.beta, float)


def test_presets_apply_and_can_be_overridden() -> None:
    assert resolve("beta-vae", "ring8").model_cfg.beta == 4.0
    assert resolve("beta-vae", "ring8", None, ["model.beta=2"]).model_cfg.beta == 2.0
    assert resolve("dae", "ring8").model_cfg.noise_std > 0


def test_file_then_cli_priority(tmp_path) -> None:
    f = tmp_path / "c.yaml"
    f.write_text("model: {name: vae, latent_dim: 4}\ndata: moons\ntrain: {steps: 5, seed: 3}\n")
    cfg = resolve(None, None, str(f), ["train.steps=9"])
    assert (cfg.model, cfg.data.name, cfg.model_cfg.latent_dim) == ("vae", "moons", 4)
    assert (cfg.train.steps, cfg.train.seed) == (9, 3)
    assert resolve("ae", "digits", str(f)).model == "ae"  # MODEL on the command line wins


@pytest.mark.parametrize(
    "overrides,fragment",
    [
        (["model.latnt_dim=3"], "model.latent_dim"),
        (["train.stpes=3"], "train.steps"),
        (["trian.steps=3"], "train.steps"),
        (["train.steps=abc"], "train.steps must be int"),
        (["train.steps=1.5"], "train.steps must be int"),
        (["model.arch=resnet"], "must be one of"),
        (["train.lr=-1"], "positive"),
        (["model.conditional=maybe"], "must be bool"),
        (["nokey"], "key=value"),
    ],
)
def test_bad_values_name_the_key(overrides: list[str], fragment: str) -> None:
    with pytest.raises(GenlabError) as e:
        resolve("vae", "ring8", None, overrides)
    assert fragment in str(e.value)
    assert "\n" not in str(e.value)


def test_unknown_model_suggests_close_names() -> None:
    with pytest.raises(GenlabError, match="did you mean.*vae"):
        resolve("vea", "ring8")


def test_yaml_python_tags_are_refused(tmp_path) -> None:
    f = tmp_path / "evil.yaml"
    f.write_text("model: !!python/object/apply:os.system ['touch pwned']\n")
    with pytest.raises(GenlabError, match="cannot read config"):
        resolve(None, "ring8", str(f))
    assert not (tmp_path / "pwned").exists()


def test_missing_model_and_data() -> None:
    with pytest.raises(GenlabError, match="no model"):
        resolve(None, "ring8")
    with pytest.raises(GenlabError, match="no dataset"):
        resolve("vae", None)


def test_coerce_optional_and_tuples() -> None:
    assert coerce(None, int | None, "k") is None
    assert coerce(3, int | None, "k") == 3
    assert coerce([1, 2], tuple[int, ...], "k") == (1, 2)
    assert coerce(4, tuple[int, ...], "k") == (4,)
    assert coerce(1, float, "k") == 1.0
    with pytest.raises(GenlabError):
        coerce(True, int, "k")
    assert TrainConfig().device == "auto"
