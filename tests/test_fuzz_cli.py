"""Property-based fuzzing of the CLI and the config parser (hypothesis, derandomized).

Inputs come from a grammar: commands, real and misspelt model/dataset/metric names, real keys
with wrong-typed values (strings, huge ints, negatives, nan, inf, empty, lists, unicode), unknown
keys, missing values, stray flags and random YAML documents for --config. Every input must end
in success (exit 0) or exit 2 with exactly one stderr line `genlab: error: ...` (the form the CLI
also uses for argparse errors), never a traceback or an uncaught exception; a failed command
leaves none of its outputs behind (no run directory, no sample file, no report).

Anything that would train is kept tiny: base overrides (train.steps=2, data.limit=64, small
widths) come first and generated ones may only replace them with other tiny or invalid values.
Values that are valid but expensive (a million steps, 2**62 critic steps) are not generated.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
import subprocess
import sys
import typing
from pathlib import Path
from typing import Any, Literal

import pytest
import yaml
from conftest import SUBPROCESS_ENV, Outcome, run_cli
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from genlab import config as config_mod
from genlab.errors import GenlabError
from genlab.registry import METRICS, MODELS

FAST_MODELS = ("ae", "vae", "gan", "ddpm", "gmm", "made")
# Base overrides per model: tiny networks, so that a generated input that trains takes < 1 s.
MODEL_BASE = {
    "ae": ["model.hidden=[8]", "model.channels=[4,8]", "model.latent_dim=2"],
    "vae": ["model.hidden=[8]", "model.channels=[4,8]", "model.latent_dim=2"],
    "gan": ["model.hidden=[8]", "model.channels=[4,8]", "model.latent_dim=2"],
    "ddpm": ["model.hidden=[16]", "model.channels=[8]", "model.timesteps=10", "model.emb_dim=8"],
    "gmm": ["model.components=2", "model.max_iter=5", "model.n_init=1"],
    "made": ["model.hidden=[8]", "model.components=2"],
}
TRAIN_BASE = [
    "train.steps=2",
    "train.batch_size=16",
    "train.num_samples=4",
    "train.eval_n=20",
    "data.limit=64",
]
DATASETS = ("moons", "ring8", "8gaussians", "digits")
BAD_DATASETS = (
    "mons",
    "rign8",
    "Moons",
    "digit",
    "folder:",
    "npz:",
    "folder:/nonexistent",
    "npz:/nonexistent.npz",
    "npz:/etc/passwd",
    "folder:/etc/passwd",
    "foo:bar",
    ":",
    "mnist",
    "",
    "ünïcødé",
)
METRIC_NAMES = tuple(METRICS.names())
STRAY_FLAGS = ("--bogus", "-x", "--resumee", "--data-roott=x", "--", "-", "--out=", "--config")

WEIRD = (
    "",
    " ",
    "abc",
    "nan",
    ".nan",
    "inf",
    ".inf",
    "-.inf",
    "1e999",
    "-1",
    "0",
    "-0.0",
    "1.5",
    "[]",
    "[1, 2]",
    "[[1]]",
    "[a",
    "{a: 1}",
    "{",
    "~",
    "null",
    "yes",
    "ünïcødé",
    "🙂",
    "\udcff",  # a non-UTF-8 byte of argv, as Python decodes it
    "!!python/object/apply:os.system ['true']",
    "&a [*a]",
    "*x",
    "!!binary aGk=",
    "2020-01-01",
    "a=b",
    "#comment",
    "- x",
    "? x",
    "%YAML 1.1",
    "---",
    "|",
    "\t",
    "[" * 1000 + "]" * 1000,
)
# Ints beyond int64 must be refused by the config. They are only drawn for keys where the int
# would do no harm if accepted (an accepted n_critic=10**30 would loop for ever), and for any
# key in the parser-only test.
HUGE_INTS = (str(10**30), str(2**63), str(-(2**63) - 1), "0x" + "f" * 40, "9" * 400, "9" * 5000)
# Keys where a valid but enormous int (2**62) must fail fast (allocation) or does no harm.
HUGE_OK = {"train.seed", "data.limit", "model.latent_dim", "model.hidden", "train.num_samples"}
# Keys whose valid values could make a run long: (small valid values, invalid values).
BOUNDED = {
    "train.steps": (("1", "2", "3"), ("0", "-1", "1.5", "abc", "", "[3]", "nan", "true", "~")),
    "train.eval_every": (("0", "2"), ("-1", "x", "1.5")),
    "train.compile": (("false",), ("maybe", "2", "[]", "")),
    "train.grad_accum": (("1", "2"), ("0", "-1", "x")),
    "train.device": (("cpu", "auto"), ("cuda", "tpu", "", "cpu:0", "cuda:x", "CPU", "cudax")),
}


def misspell(draw: st.DrawFn, word: str) -> str:
    """One edit: delete, duplicate or swap a character, or change case."""
    if not word:
        return "x"
    i = draw(st.integers(0, len(word) - 1))
    edit = draw(st.sampled_from(["delete", "double", "swap", "upper"]))
    if edit == "delete":
        return word[:i] + word[i + 1 :]
    if edit == "double":
        return word[:i] + word[i] + word[i:]
    if edit == "swap" and i + 1 < len(word):
        return word[:i] + word[i + 1] + word[i] + word[i + 2 :]
    return word.upper()


def key_types(model: str) -> dict[str, Any]:
    """Every valid key of `model`'s run config and its annotation."""
    cls = MODELS.entry(model).obj.config_class
    out: dict[str, Any] = {"model.name": str}
    for section, klass in (("model", cls), ("data", config_mod.DataConfig)):
        hints = typing.get_type_hints(klass)
        out.update({f"{section}.{f.name}": hints[f.name] for f in dataclasses.fields(klass)})
    hints = typing.get_type_hints(config_mod.TrainConfig)
    out.update(
        {f"train.{f.name}": hints[f.name] for f in dataclasses.fields(config_mod.TrainConfig)}
    )
    return out


def good_values(key: str, tp: Any) -> tuple[str, ...]:
    """Small valid values for a key of type `tp` (they may still be refused: 1 component)."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if key in BOUNDED:
        return BOUNDED[key][0]
    if key == "model.name":
        return FAST_MODELS
    if key == "data.name":
        return DATASETS
    if key == "data.root":
        return ("", "/nonexistent")
    if key == "train.eval_metrics":
        return ("mmd", "w1,mmd", "[]")
    if origin is Literal:
        return tuple(str(a) for a in args)
    if origin in (tuple, list):
        return ("[4]", "[4, 4]") if args and args[0] is int else ("[0.5]", "[]")
    if tp is bool:
        return ("true", "false")
    if tp is int:
        return ("1", "2", "3")
    if tp is float:
        return ("0.1", "0.5", "1e-3", "0")
    return ("x",)


def bad_values(tp: Any) -> tuple[str, ...]:
    """Values of the right syntax but the wrong type or range for `tp`."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin in (tuple, list) and args and args[0] is int:
        return ("[]", "[0]", "[-1]", "[4, -4]", "[1.5]", "[a]", "-1", "[[4]]", "[true]")
    if origin in (tuple, list):
        return ("[nan]", "[-1]", "[inf]", "[a]", "[[0.5]]")
    if tp is int:
        return ("0", "-1", "-7", "1.5", "true", "[1]", "1e3")
    if tp is float:
        return ("nan", "inf", "-inf", "-1", "-0.5", "1e308", "true", "[0.1]", "0")
    if tp is bool:
        return ("maybe", "2", "[]", "1.0", "0")
    return ("", "[1]", "{a: 1}", "ünï", "1")


def misspelt(word: str) -> str:
    return word.upper() if word.upper() != word else word + "x"


@st.composite
def value_for(draw: st.DrawFn, key: str, tp: Any, kind: str = "any") -> str:
    """The text of a value for `key`. kind: "good" (small, valid type), "bad" (wrong type, range
    or syntax), "any", or "parse" (any, plus ints beyond int64 for every key: no training)."""
    good = st.sampled_from(good_values(key, tp))
    if key in BOUNDED and kind != "parse":
        bad = st.sampled_from(BOUNDED[key][1])
    else:
        bad = st.sampled_from(bad_values(tp)) | st.sampled_from(WEIRD)
        if typing.get_origin(tp) is Literal:
            bad = bad | good.map(lambda word: misspelt(word))
        if kind == "parse" or key in HUGE_OK:
            ints = st.sampled_from(HUGE_INTS + (str(2**62),))
            bad = bad | ints.map(lambda v: f"[{v}]" if "hidden" in key else v)
    return draw({"good": good, "bad": bad}.get(kind, good | bad))


@st.composite
def override(draw: st.DrawFn, model: str | None, kind: str = "any") -> str:
    """One `key=value` item: kind "good" gives a real key with a small valid value; "bad" a
    wrong value, or a misspelt, unknown or malformed key; "any" / "parse" either."""
    types = key_types(model if model in FAST_MODELS else "vae")
    key = draw(st.sampled_from(sorted(types)))
    if kind == "good":
        return f"{key}={draw(value_for(key, types[key], 'good'))}"
    shape = draw(st.sampled_from(["value"] * 6 + ["misspelt", "unknown", "malformed"]))
    if kind != "bad" and shape == "value" and draw(st.booleans()):
        return f"{key}={draw(value_for(key, types[key], 'good'))}"
    value = draw(value_for(key, types[key], "parse" if kind == "parse" else "bad"))
    if shape == "misspelt":
        key = misspell(draw, key)
    elif shape == "unknown":
        key = draw(
            st.sampled_from(
                ["model.foo", "foo.bar", "steps", "", ".", "model.", ".steps", "train.steps.x"]
                + ["Train.steps", "train. steps", "data.name.x", "model.name.first"]
            )
        )
    elif shape == "malformed":
        form = draw(st.sampled_from(["{k}", "={v}", "{k}=={v}", " {k} = {v}", "-{k}={v}"]))
        return form.format(k=key, v=value)
    return f"{key}={value}"


# YAML documents for --config: structured (sections with real, wrong or unknown content),
# any YAML value, or raw text that may not even parse.
scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**70), 2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=12),
    st.sampled_from(["vae", "ae", "moons", "digits", "mmd", "cpu"]),
)
yaml_values = st.recursive(
    scalars,
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3)
    ),
    max_leaves=8,
)


def as_yaml(text: str) -> Any:
    """A value's text as YAML reads it (text that is no YAML stays text)."""
    text = text.replace("\udcff", "?")  # a file holds bytes, not lone surrogates
    try:
        return yaml.safe_load(text)
    except (yaml.YAMLError, RecursionError, ValueError):
        return text


@st.composite
def section_body(draw: st.DrawFn, section: str, model: str, kind: str) -> Any:
    """A config section: a mapping of real keys (values of `kind`), unknown keys or odd values."""
    types = key_types(model)
    keys = sorted(k.split(".", 1)[1] for k in types if k.startswith(section + "."))
    shape = "mapping" if kind == "good" else draw(st.sampled_from(["mapping"] * 4 + ["other"]))
    if shape == "other":
        return draw(st.none() | yaml_values)
    body: dict[Any, Any] = {}
    for _ in range(draw(st.integers(0, 3))):
        name = draw(st.sampled_from(keys)) if kind == "good" else draw(
            st.sampled_from(keys) | st.text(max_size=6)
        )  # fmt: skip
        full = f"{section}.{name}"
        if full in types:  # through value_for, which keeps expensive valid values out
            body[name] = as_yaml(draw(value_for(full, types[full], kind)))
        else:
            body[name] = draw(yaml_values)
    return body


RAW_YAML = (
    "model: vae\ndata: moons\ntrain: {steps: !!python/object/apply:os.system ['true']}\n",
    "model: &m {name: vae}\ndata: *m\n",
    "model: vae\n---\nmodel: ae\n",
    "%YAML 1.1\n---\nmodel: vae\n",
    "\ufeffmodel: vae\ndata: moons\n",
    "model:\n\tname: vae\n",
    "model: [unclosed\n",
    "? [a, b]\n: c\n",
    "model: {name: vae, name: ae}\ndata: moons\n",
    "1: 2\n",
    "null\n",
    "- model: vae\n",
    "model: vae\ndata: moons\ntrain: {steps: " + "[" * 1000 + "]" * 1000 + "}\n",
    "\x00\x01",
)


@st.composite
def config_text(draw: st.DrawFn, kind: str = "any") -> str:
    """A --config file: kind "good" gives a well-formed document with small valid values."""
    shape = "structured" if kind == "good" else draw(
        st.sampled_from(["structured"] * 3 + ["value", "raw", "text"])
    )  # fmt: skip
    if shape == "raw":
        return draw(st.sampled_from(RAW_YAML))
    if shape == "text":
        return draw(st.text(max_size=60))
    if shape == "value":
        return yaml.safe_dump(draw(yaml_values), allow_unicode=True)
    model = draw(st.sampled_from(FAST_MODELS))
    doc: dict[Any, Any] = {"model": model}
    for section in ("model", "data", "train"):
        if draw(st.integers(0, 2)) == 0:
            body = draw(section_body(section, model, "good" if kind == "good" else "any"))
            if section == "model" and isinstance(body, dict):
                body.setdefault("name", model)
            doc[section] = body
    if kind != "good" and draw(st.integers(0, 4)) == 0:
        doc[draw(st.sampled_from(["models", "Data", "extra", "", 1]))] = draw(yaml_values)
    return yaml.safe_dump(doc, allow_unicode=True, sort_keys=False)


FAULTS = ("model", "data", "override", "config", "flag", "missing")


@st.composite
def train_argv(draw: st.DrawFn, work: Path) -> list[str]:
    """`genlab train ...`: a clean command (it trains), one fault injected, or chaos."""
    mode = draw(st.sampled_from(["clean"] * 2 + ["fault"] * 3 + ["chaos"]))
    fault = draw(st.sampled_from(FAULTS)) if mode == "fault" else None
    chaos = mode == "chaos"
    model: str | None = draw(st.sampled_from(FAST_MODELS))
    data: str | None = draw(st.sampled_from(DATASETS))
    if fault == "model" or (chaos and draw(st.booleans())):
        model = draw(
            st.sampled_from(["vea", "VAE", "", "v ae", "ddmp", "ünï", "gann", None])
            | st.sampled_from(MODELS.names()).map(lambda m: m + "x")
        )
    if fault == "data" or (chaos and draw(st.booleans())):
        data = draw(st.none() | st.sampled_from(BAD_DATASETS))
    argv = ["train"] + ([model] if model is not None else [])
    argv += ["--data", data] if data is not None else []
    argv += TRAIN_BASE + MODEL_BASE.get(model or "", [])
    if fault == "config" or draw(st.integers(0, 3)) == 0:
        path = work / f"config-{next(COUNTER)}.yaml"
        kind = "good" if mode == "clean" or fault not in ("config", None) else "any"
        path.write_text(draw(config_text(kind)), encoding="utf-8")
        argv += ["--config", str(path)]
    argv += draw(st.lists(override(model, "any" if chaos else "good"), max_size=3))
    if fault == "override":
        argv.append(draw(override(model, "bad")))
    if fault == "flag" or (chaos and draw(st.booleans())):
        argv.append(draw(st.sampled_from(STRAY_FLAGS)))
    if fault == "missing":  # a flag without its value, at the end where nothing can fill it
        return argv + [draw(st.sampled_from(["--data", "--config", "--data-root"]))]
    if draw(st.integers(0, 5)) == 0:
        argv.append("--resume")
    return argv


COUNTER = itertools.count()


def check(outcome: Outcome, outputs: list[Path], argv: list[str]) -> None:
    """The contract: 0, or 2 with one `genlab: error:` line; a failure leaves no output."""
    where = f"argv={argv!r:.600}"
    assert "Traceback" not in outcome.stderr + outcome.stdout, where
    if outcome.code == 0:
        return
    lines = [line for line in outcome.stderr.splitlines() if line.strip()]
    assert outcome.code == 2, (where, outcome.code, outcome.stderr[-2000:])
    assert len(lines) == 1, (where, outcome.stderr[-2000:])
    assert lines[0].startswith("genlab: error: "), (where, lines[0])
    if "training diverged" in lines[0]:
        return  # a run that started and diverged is a real run (SPEC 7: the last good checkpoint)
    for path in outputs:
        assert not path.exists(), (where, lines[0], f"{path} left behind")


@pytest.fixture(scope="module")
def work(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("fuzz")


@pytest.fixture(scope="module")
def runs(work: Path) -> dict[str, Path]:
    """Two trained runs to point the other commands at: a VAE (encoder) and a DDPM (samplers)."""
    made = {}
    for model in ("vae", "ddpm"):
        out = work / f"{model}-moons"
        argv = ["train", model, "--data", "moons", "--out", str(out), "--no-progress"]
        outcome = run_cli(argv + TRAIN_BASE + MODEL_BASE[model] + ["train.steps=3"], work)
        assert outcome.code == 0, outcome.stderr
        made[model] = out
    return made


FUZZ = settings(
    max_examples=150,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)


@FUZZ
@given(data=st.data())
def test_train_command(work: Path, data: st.DataObject) -> None:
    out = work / f"out-{next(COUNTER)}"
    argv = data.draw(train_argv(work)) + ["--out", str(out), "--no-progress"]
    check(run_cli(argv, work), [out], argv)


def run_paths(runs: dict[str, Path], work: Path) -> st.SearchStrategy[str]:
    """Real runs, and things that are not runs."""
    bogus = [
        "/nonexistent/run",
        "",
        str(work),
        str(runs["vae"] / "config.yaml"),
        str(runs["vae"] / "checkpoints"),
    ]
    return st.sampled_from([str(p) for p in runs.values()]) | st.sampled_from(bogus)


INTS = ("1", "4", "0", "-1", "x", "1.5", "", "2147483648", str(10**30), "nan")


@st.composite
def other_argv(draw: st.DrawFn, runs: dict[str, Path], work: Path) -> tuple[list[str], list[Path]]:
    """Any command but train, with its options drawn from valid and invalid values."""
    n = next(COUNTER)
    command = draw(
        st.sampled_from(
            ["sample"] * 4 + ["evaluate"] * 2 + ["reconstruct", "interpolate", "manifold"]
            + ["compare", "list", "demo", "none", "misspelt"]
        )
    )  # fmt: skip
    out_png, out_npz, report = work / f"s-{n}.png", work / f"s-{n}.npz", work / f"r-{n}.html"
    outputs = [out_png, out_npz, report]
    opt = lambda flag, values: [flag, draw(st.sampled_from(values))]  # noqa: E731
    outs = [str(out_png), str(out_npz), "", str(work / f"s-{n}.jpg"), str(work), "/proc/x.png"]
    argv: list[str]
    if command == "sample":
        argv = ["sample", draw(run_paths(runs, work)), "--out", draw(st.sampled_from(outs))]
        for flag, values in (
            ("-n", INTS),
            ("--seed", INTS + ("-5", str(2**64))),
            ("--steps", INTS),
            ("--sampler", ("ddim", "ancestral", "dpm-solver", "euler", "ddmi", "")),
            ("--class", ("0", "1", "-1", "99", "x")),
            ("--guidance", ("1.5", "0", "nan", "inf", "-1", "x")),
            ("--device", ("cpu", "auto", "cuda", "tpu", "", "cuda:x")),
        ):
            if draw(st.integers(0, 2)) == 0:
                argv += opt(flag, values)
    elif command in ("evaluate", "compare"):
        names = st.sampled_from(METRIC_NAMES) | st.sampled_from(["fdi", "", "mmd,", ",", "ünï"])
        metrics = ",".join(draw(st.lists(names, min_size=1, max_size=3)))
        if command == "evaluate":
            argv = ["evaluate", draw(run_paths(runs, work))]
        else:
            paths = draw(st.lists(run_paths(runs, work), min_size=1, max_size=3))
            reports = (str(report), str(work / f"r-{n}.txt"), "")
            argv = ["compare", *paths, "--report", draw(st.sampled_from(reports))]
        argv += ["--n", "20", "--k", "2"]  # small protocol; drawn values below replace them
        if draw(st.booleans()):
            argv += ["--metrics", metrics]
        for flag, values in (
            ("--n", INTS),
            ("--k", INTS),
            ("--seed", INTS),
            ("--inception-weights", ("/nonexistent.pth", str(work), "")),
            ("--device", ("cpu", "tpu", "")),
        ):
            if draw(st.integers(0, 3)) == 0:
                argv += opt(flag, values)
    elif command in ("reconstruct", "interpolate", "manifold"):
        argv = [command, draw(run_paths(runs, work)), "--out", draw(st.sampled_from(outs))]
        flags = {
            "reconstruct": (("-n", INTS),),
            "interpolate": (("--pairs", INTS), ("--steps", INTS), ("--seed", INTS)),
            "manifold": (("--side", INTS),),
        }[command]
        for flag, values in flags:
            if draw(st.booleans()):
                argv += opt(flag, values)
    elif command == "list":
        argv = ["list"] + draw(st.lists(st.sampled_from(["x", "--bogus", "-v"]), max_size=1))
    elif command == "demo":  # never a real demo run (minutes): always with a flag that stops it
        argv = ["demo", draw(st.sampled_from(["--help", "--bogus", "--quick=1", "--out"]))]
    elif command == "none":
        argv = draw(st.sampled_from([[], ["-v"], ["--version"], ["--help"], ["--bogus"]]))
    else:
        argv = [misspell(draw, draw(st.sampled_from(["train", "sample", "evaluate", "list"])))]
    if draw(st.integers(0, 5)) == 0:
        argv.append(draw(st.sampled_from(STRAY_FLAGS + ("k=v",))))
    return argv, outputs


@FUZZ
@given(data=st.data())
def test_other_commands(runs: dict[str, Path], work: Path, data: st.DataObject) -> None:
    argv, outputs = data.draw(other_argv(runs, work))
    check(run_cli(argv, work), outputs, argv)


# --------------------------------------------------------------------------- the config parser


def same(a: Any, b: Any) -> bool:
    """Equality where nan equals nan (a float field may legitimately hold nan)."""
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
        return True
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b))
    return a == b


@settings(
    max_examples=200,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(
    model=st.none() | st.sampled_from(FAST_MODELS + ("vea", "")),
    data=st.none() | st.sampled_from(DATASETS + BAD_DATASETS),
    text=st.none() | config_text(),
    items=st.lists(override("vae", "parse"), max_size=5),
)
def test_config_resolve(work: Path, model, data, text, items) -> None:
    """resolve() returns a config or raises a one-line GenlabError, nothing else; a resolved
    config survives its own YAML round trip (what the run saves is what loads back)."""
    path = None
    if text is not None:
        path = work / f"resolve-{next(COUNTER)}.yaml"
        path.write_text(text, encoding="utf-8", errors="surrogateescape")
    try:
        cfg = config_mod.resolve(model, data, str(path) if path else None, items)
    except GenlabError as e:
        assert "\n" not in str(e) and str(e).strip()
        assert len(str(e)) < 10_000, f"message of {len(str(e))} characters"
        return
    saved = yaml.safe_load(yaml.safe_dump(cfg.to_dict(), sort_keys=False))
    again = config_mod.resolve(base=saved)
    assert same(again.to_dict(), cfg.to_dict())


@settings(max_examples=200, deadline=None, derandomize=True)
@given(
    model=st.sampled_from(FAST_MODELS),
    data=st.sampled_from(DATASETS),
    items=st.data(),
)
def test_config_to_model(model: str, data: str, items: st.DataObject) -> None:
    """Every model.* value that the config accepts builds a model or is refused in one line:
    a negative width or a nan rate must not reach a torch constructor (no training here, so many
    more values than test_train_command can afford)."""
    from genlab.data import load_config
    from genlab.models import build

    types = {
        k: v for k, v in key_types(model).items() if k.startswith("model.") and k != "model.name"
    }
    keys = items.draw(st.lists(st.sampled_from(sorted(types)), min_size=1, max_size=3))
    overrides = [f"{k}={items.draw(value_for(k, types[k], 'bad'))}" for k in keys]
    try:
        cfg = config_mod.resolve(model, data, None, MODEL_BASE[model] + overrides)
        spec = load_config(cfg.data).spec
        build(cfg.model, spec, **dataclasses.asdict(cfg.model_cfg))
    except GenlabError as e:
        assert "\n" not in str(e) and str(e).strip()


@settings(max_examples=100, deadline=None, derandomize=True)
@given(st.text(max_size=40) | st.builds(lambda k, v: f"{k}={v}", st.text(max_size=10), st.text()))
def test_parse_override_never_crashes(item: str) -> None:
    try:
        key, _ = config_mod.parse_override(item)
    except GenlabError as e:
        assert "\n" not in str(e)
        return
    assert key == item.split("=", 1)[0].strip()


# --------------------------------------------------------------------------- the real entry point


@settings(max_examples=10, deadline=None, derandomize=True)
@given(data=st.data())
def test_entry_point_behaves_the_same(work: Path, data: st.DataObject) -> None:
    """`python -m genlab` gives what main() gives: same code, same single stderr line."""
    argv = data.draw(train_argv(work)) + ["--out", str(work / "never"), "--no-progress"]
    # one bad piece at least, so that it fails fast instead of training
    argv += [data.draw(st.sampled_from(["model.latnt_dim=2", "train.steps=many", "--bogus"]))]
    inproc = run_cli(argv, work)
    proc = subprocess.run(
        [sys.executable, "-m", "genlab", *argv],
        capture_output=True,
        text=True,
        errors="backslashreplace",
        env=SUBPROCESS_ENV,
        timeout=300,
        cwd=work,
    )
    check(Outcome(proc.returncode, proc.stdout, proc.stderr), [work / "never"], argv)
    assert proc.returncode == inproc.code == 2
    strip = lambda s: [line for line in s.splitlines() if line.strip()]  # noqa: E731
    # the child's stderr writes a lone surrogate (a non-UTF-8 argv byte) as \udcff
    expected = inproc.stderr.encode("utf-8", "backslashreplace").decode("utf-8")
    assert strip(proc.stderr) == strip(expected), (proc.stderr, inproc.stderr)
