"""Run configuration: dataclass defaults <- YAML file <- `key=value` overrides, types checked.

A run config has three sections: `model` (the model's own dataclass, plus `name`), `data`
(DataConfig) and `train` (TrainConfig). Unknown keys and badly typed values are GenlabErrors that
name the closest valid keys. The resolved config is saved with the run as config.yaml.
"""

from __future__ import annotations

import dataclasses
import math
import re
import reprlib
import types
import typing
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Literal

import yaml

from genlab.atomic import atomic_write
from genlab.data.load import DataConfig
from genlab.errors import GenlabError, first_line
from genlab.registry import MODELS, unknown


@dataclass
class TrainConfig:
    """train.<field> keys."""

    steps: int = 2000
    batch_size: int = 128  # global batch: split across processes under torchrun
    lr: float = 1e-3
    seed: int = 0
    checkpoint_every: int = 500
    sample_every: int = 500
    log_every: int = 25
    device: str = "auto"  # auto = CUDA when present, else CPU
    ema: float = 0.0  # EMA decay of the weights used for sampling; 0 = off
    grad_clip: float = 0.0  # max global gradient norm per phase; 0 = off
    precision: Literal["fp32", "bf16", "fp16"] = "fp32"
    keep_checkpoints: int = 2
    num_samples: int = 64  # examples in each sample grid
    eval_every: int = 0  # run metrics every N steps into eval.csv (0 = off)
    eval_metrics: tuple[str, ...] = ()  # () = every metric that applies
    eval_n: int = 1000  # samples / test examples per evaluation during training
    # micro-batches per optimiser step: the global batch is cut into processes x grad_accum
    # shards, each with its own RNG stream, so equal products give the same training
    grad_accum: int = 1
    compile: bool = False  # torch.compile the model (inductor; needs a C++ compiler on CPU)
    on_divergence: Literal["stop", "rollback"] = "stop"  # NaN/inf: stop, or reload and lower lr
    rollback_lr_factor: float = 0.5  # lr multiplier at each rollback
    max_rollbacks: int = 3  # then stop as on_divergence=stop does


SECTIONS = ("model", "data", "train")


@dataclass
class RunConfig:
    """The whole run: model name and fields, data, train."""

    model: str
    model_cfg: Any
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    def to_dict(self) -> dict[str, Any]:
        return {
            "model": {"name": self.model, **dataclasses.asdict(self.model_cfg)},
            "data": dataclasses.asdict(self.data),
            "train": dataclasses.asdict(self.train),
        }

    def save(self, path: Path) -> None:
        write_text_atomic(path, yaml.safe_dump(self.to_dict(), sort_keys=False))


INT64 = (-(2**63), 2**63)  # what torch and numpy can hold; beyond it every use would overflow
SEED_MAX = 2**32  # train.seed: numpy's seed range (the Trainer also derives seeds from it)
MAX_SAMPLES = 10_000  # train.num_samples: examples in one sample grid
DEVICE = re.compile(r"^(auto|cpu|cuda(:\d+)?)$")

# Values echoed in messages are shortened: a YAML alias bomb ([*a, *a, ...] nine levels deep)
# is a few hundred bytes that repr() would expand to gigabytes.
_SHORT = reprlib.Repr()
_SHORT.maxlevel, _SHORT.maxlist, _SHORT.maxtuple, _SHORT.maxdict = 2, 4, 4, 4
_SHORT.maxstring, _SHORT.maxlong, _SHORT.maxother = 60, 40, 60


def show(value: Any) -> str:
    """repr(value), bounded in length and depth, for error messages."""
    return _SHORT.repr(value)


def write_text_atomic(path: Path, text: str) -> None:
    with atomic_write(path) as tmp:
        tmp.write_text(text)


def read_yaml(path: str | Path) -> dict[str, Any]:
    """Load a YAML mapping with the safe loader (no python tags, nothing executed)."""
    p = Path(path)
    if not p.is_file():
        raise GenlabError(f"config file not found: {p}")
    try:
        raw = yaml.safe_load(p.read_text())
    except RecursionError:
        raise GenlabError(f"cannot read config {p}: nested too deeply") from None
    except (yaml.YAMLError, ValueError) as e:  # ValueError: bad UTF-8, ints of > 4300 digits
        first = first_line(e)
        raise GenlabError(f"cannot read config {p}: {first}") from None
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise GenlabError(f"config {p} must be a mapping with model/data/train sections")
    return raw


def parse_override(item: str) -> tuple[str, Any]:
    """`section.key=value` -> ("section.key", value parsed as YAML scalar)."""
    if "=" not in item:
        raise GenlabError(f"expected key=value, got {show(item)}")
    key, text = item.split("=", 1)
    try:
        value = yaml.safe_load(text) if text != "" else ""
    except (yaml.YAMLError, ValueError, RecursionError):  # not YAML: the text itself
        value = text
    return key.strip(), value


def flatten(raw: dict[str, Any]) -> dict[str, Any]:
    """{"model": {"name": "vae", "beta": 4}, "data": "digits"} -> {"model.name": "vae", ...}."""
    out: dict[str, Any] = {}
    for section, body in raw.items():
        if section not in SECTIONS:
            raise GenlabError(unknown("config section", section, SECTIONS))
        if isinstance(body, str):  # shorthand `model: vae`, `data: digits`
            if section == "train":
                raise GenlabError("config section 'train' must be a mapping")
            body = {"name": body}
        if body is None:
            continue
        if not isinstance(body, dict):
            raise GenlabError(f"config section {section!r} must be a mapping")
        for key, value in body.items():
            out[f"{section}.{key}"] = value
    return out


def resolve(
    model: str | None = None,
    data: str | None = None,
    config_file: str | None = None,
    overrides: list[str] | tuple[str, ...] = (),
    base: dict[str, Any] | None = None,
) -> RunConfig:
    """RunConfig from, lowest priority first: base dict, file, MODEL/--data, key=value."""
    flat: dict[str, Any] = flatten(base or {})
    if config_file:
        flat.update(flatten(read_yaml(config_file)))
    if model:
        flat["model.name"] = model
    if data:
        flat["data.name"] = data
    for item in overrides:
        key, value = parse_override(item)
        flat[key] = value
    model_name = flat.pop("model.name", None)
    if not model_name:
        raise GenlabError(
            "no model given: name one (genlab train MODEL) or set model.name in --config"
        )
    if not isinstance(model_name, str):
        raise GenlabError(f"model.name must be a string; got {show(model_name)}")
    entry = MODELS.entry(model_name)
    model_fields = {**entry.defaults}
    sections: dict[str, dict[str, Any]] = {"model": model_fields, "data": {}, "train": {}}
    for key, value in flat.items():
        section, _, name = key.partition(".")
        if section not in SECTIONS or not name:
            raise GenlabError(unknown("config key", key, all_keys(entry.obj.config_class)))
        sections[section][name] = value
    model_cfg = build_dataclass(entry.obj.config_class, sections["model"], "model")
    data_cfg = build_dataclass(DataConfig, sections["data"], "data")
    if not data_cfg.name:
        raise GenlabError("no dataset given: pass --data DATASET or set data.name in --config")
    train_cfg = build_dataclass(TrainConfig, sections["train"], "train")
    check_train(train_cfg)
    return RunConfig(str(model_name), model_cfg, data_cfg, train_cfg)


def all_keys(model_config_class: type) -> list[str]:
    keys = ["model.name"] + [f"model.{f.name}" for f in fields(model_config_class)]
    keys += [f"data.{f.name}" for f in fields(DataConfig)]
    keys += [f"train.{f.name}" for f in fields(TrainConfig)]
    return keys


def build_dataclass(cls: type, values: dict[str, Any], section: str) -> Any:
    """Instantiate `cls` from `values`, refusing unknown keys and coercing/checking types."""
    hints = typing.get_type_hints(cls)
    names = [f.name for f in fields(cls)]
    kwargs = {}
    for key, value in values.items():
        if key not in hints:
            raise GenlabError(
                unknown("config key", f"{section}.{key}", [f"{section}.{n}" for n in names])
            )
        kwargs[key] = coerce(value, hints[key], f"{section}.{key}")
    return cls(**kwargs)


def coerce(value: Any, tp: Any, key: str) -> Any:
    """Check `value` against the annotation `tp`; ints widen to float, lists become tuples."""
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return coerce(value, arg, key)
            except GenlabError as e:
                errors.append(str(e))
        raise GenlabError(errors[0] if errors else f"{key}: bad value {show(value)}")
    if origin is Literal:
        if value not in args:
            raise GenlabError(
                f"{key} must be one of {', '.join(map(str, args))}; got {show(value)}"
            )
        return value
    if origin in (tuple, list):
        item_tp = args[0] if args else Any
        if isinstance(value, str) and item_tp is str:  # `train.eval_metrics=fid,kid`
            value = [v.strip() for v in value.split(",") if v.strip()]
        if not isinstance(value, (list, tuple)):
            value = [value]
        items = [coerce(v, item_tp, key) for v in value]
        return tuple(items) if origin is tuple else items
    if tp is Any:
        return value
    if tp is bool:
        if isinstance(value, bool):
            return value
    elif tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            if not INT64[0] <= value < INT64[1]:
                raise GenlabError(f"{key} must fit in 64 bits; got {show(value)}")
            return value
    elif tp is float:
        number = None
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            try:
                number = float(value)
            except OverflowError:  # an int too large for a float
                raise GenlabError(f"{key} is too large; got {show(value)}") from None
        elif isinstance(value, str):  # YAML 1.1 reads "1e-4" (no dot) as a string
            try:
                number = float(value)
            except ValueError:
                pass
        if number is not None:
            if not math.isfinite(number):  # no setting means nan or inf; it would surface later
                raise GenlabError(f"{key} must be a finite number; got {number}")
            return number
    elif tp is str:
        if isinstance(value, (str, int, float)) and not isinstance(value, bool):
            return str(value)
    else:
        raise TypeError(f"unsupported config type {tp} for {key}")
    raise GenlabError(f"{key} must be {tp.__name__}; got {show(value)}")


def check_train(cfg: TrainConfig) -> None:
    positive = (
        "steps",
        "batch_size",
        "checkpoint_every",
        "sample_every",
        "log_every",
        "grad_accum",
    )
    for name in positive:
        if getattr(cfg, name) <= 0:
            raise GenlabError(f"train.{name} must be positive; got {getattr(cfg, name)}")
    if not cfg.lr > 0 or cfg.lr == float("inf"):
        raise GenlabError(f"train.lr must be positive; got {cfg.lr}")
    if not 0.0 < cfg.rollback_lr_factor < 1.0:
        raise GenlabError(
            f"train.rollback_lr_factor must be in (0, 1); got {cfg.rollback_lr_factor}"
        )
    if cfg.max_rollbacks < 0:
        raise GenlabError(f"train.max_rollbacks must be >= 0; got {cfg.max_rollbacks}")
    if not 0.0 <= cfg.ema < 1.0:
        raise GenlabError(f"train.ema must be in [0, 1); got {cfg.ema}")
    if not DEVICE.match(cfg.device):
        raise GenlabError(f"train.device must be auto, cpu, cuda or cuda:N; got {show(cfg.device)}")
    if not 0 <= cfg.seed < SEED_MAX:
        raise GenlabError(f"train.seed must be in 0..{SEED_MAX - 1}; got {cfg.seed}")
    if not 0 <= cfg.num_samples <= MAX_SAMPLES:
        raise GenlabError(f"train.num_samples must be in 0..{MAX_SAMPLES}; got {cfg.num_samples}")
    for name in ("eval_every", "keep_checkpoints"):
        if getattr(cfg, name) < 0:
            raise GenlabError(f"train.{name} must be >= 0; got {getattr(cfg, name)}")
    if cfg.eval_every and cfg.eval_n < 2:
        raise GenlabError(f"train.eval_n must be at least 2; got {cfg.eval_n}")
    if not 0.0 <= cfg.grad_clip < float("inf"):
        raise GenlabError(f"train.grad_clip must be >= 0 and finite; got {cfg.grad_clip}")
