"""Loading a run, a checkpoint, a config or a user file never executes code (SPEC section 7).

Every crafted file here carries a payload that would create a marker file if anything unpickled
or constructed it; each test checks that the marker does not exist afterwards and that the user
gets one line: GenlabError in Python, `genlab: error: ...` and exit code 2 at the CLI. Checkpoint
files are covered by a SHA-256 manifest, so most crafted checkpoints get their digest rewritten:
the test must reach the unpickler / safetensors parser, not stop at the checksum.
"""

from __future__ import annotations

import ast
import hashlib
import json
import os
import pickle
import resource
import shutil
import struct
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import SUBPROCESS_ENV, cli, one_line, tiny_data
from safetensors.torch import load_file, save_file

from genlab.errors import GenlabError
from genlab.metrics import features
from genlab.nn.inception import load_inception
from genlab.train import checkpoint, load_run

GENLAB = Path(__file__).resolve().parents[1] / "genlab"

TINY = [
    "--no-progress",
    "train.steps=4",
    "train.checkpoint_every=2",
    "train.batch_size=16",
    "data.limit=64",
    "model.hidden=[8]",
    "model.latent_dim=2",
]


class Shell:
    """Unpickling this runs `touch MARKER` through os.system (the classic __reduce__ payload)."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("safe") / "vae-moons"
    rc, err = cli("train", "vae", "--data", "moons", "--out", out, *TINY)
    assert rc == 0, err
    return out


@pytest.fixture
def run(trained: Path, tmp_path: Path) -> Path:
    """A fresh copy of the trained run, to be tampered with."""
    return Path(shutil.copytree(trained, tmp_path / "run"))


@pytest.fixture
def marker(tmp_path: Path) -> Path:
    return tmp_path / "MARKER"


def ckpt_dir(run: Path) -> Path:
    ckpt = checkpoint.latest(run / "checkpoints")
    assert ckpt is not None
    return ckpt.path


def refresh_manifest(ckpt: Path) -> None:
    """Rewrite every digest so that a crafted file passes the checksum and reaches the parser."""
    manifest = json.loads((ckpt / "manifest.json").read_text())
    for name in manifest["sha256"]:
        manifest["sha256"][name] = hashlib.sha256((ckpt / name).read_bytes()).hexdigest()
    (ckpt / "manifest.json").write_text(json.dumps(manifest))


def resume(run: Path) -> tuple[int, str]:
    return cli("train", "vae", "--data", "moons", "--out", run, "--resume", *TINY, "train.steps=6")


def test_the_payload_is_live(marker: Path) -> None:
    """The payload does run when unpickled unsafely, so its absence below means something."""
    pickle.loads(pickle.dumps(Shell(marker)))  # noqa: S301 - the point of the test
    assert marker.exists()


# --------------------------------------------------------------------------- trainer.pt


def _torch_dict(path: Path, marker: Path) -> None:
    torch.save({"step": 4, "optimizers": {}, "payload": Shell(marker)}, path)


def _raw_pickle(path: Path, marker: Path) -> None:
    path.write_bytes(pickle.dumps({"step": Shell(marker)}, protocol=2))


def _legacy_torch(path: Path, marker: Path) -> None:
    torch.save({"payload": Shell(marker)}, path, _use_new_zipfile_serialization=False)


PAYLOADS = {"torch.save": _torch_dict, "raw pickle": _raw_pickle, "legacy torch": _legacy_torch}


@pytest.mark.parametrize("make", PAYLOADS.values(), ids=PAYLOADS.keys())
def test_trainer_state_with_code_is_refused(run: Path, marker: Path, make) -> None:
    ckpt = ckpt_dir(run)
    make(ckpt / "trainer.pt", marker)
    refresh_manifest(ckpt)
    line = one_line(*resume(run))
    assert "trainer.pt" in line
    with pytest.raises(GenlabError, match="trainer.pt"):
        checkpoint.load_trainer_state(checkpoint.Checkpoint(ckpt, 4))
    # sample and evaluate read only the weights: the crafted trainer state is never unpickled
    assert cli("sample", run, "-n", 4, "--out", run / "s.png")[0] == 0
    assert cli("evaluate", run, "--metrics", "mmd")[0] == 0
    assert not marker.exists()


def test_trainer_state_error_does_not_advise_unsafe_loading(run: Path, marker: Path) -> None:
    """torch's own message suggests weights_only=False; the user must not be told to do that."""
    ckpt = ckpt_dir(run)
    _torch_dict(ckpt / "trainer.pt", marker)
    refresh_manifest(ckpt)
    line = one_line(*resume(run))
    assert "weights_only" not in line and "False" not in line, line
    assert not marker.exists()


@pytest.mark.parametrize(
    "state",
    [[1, 2], {}, {"step": "x", "optimizers": {}, "scaler": {}, "batches": {}, "rng": []}],
    ids=["list", "empty dict", "wrong types"],
)
def test_trainer_state_of_the_wrong_shape_is_one_line(run: Path, state) -> None:
    """Plain data that weights_only accepts but that is no trainer state: refused, not a crash."""
    ckpt = ckpt_dir(run)
    torch.save(state, ckpt / "trainer.pt")
    refresh_manifest(ckpt)
    assert "trainer" in one_line(*resume(run))


def test_stale_manifest_is_refused_as_corrupt(run: Path, marker: Path) -> None:
    """The same payload without a rewritten digest: stopped by the checksum, everywhere."""
    ckpt = ckpt_dir(run)
    _torch_dict(ckpt / "trainer.pt", marker)
    for rc_err in (
        cli("sample", run, "-n", 4, "--out", run / "s.png"),
        cli("evaluate", run),
        resume(run),
    ):
        assert "corrupt" in one_line(*rc_err)
    assert not (run / "s.png").exists()
    assert not marker.exists()


# --------------------------------------------------------------------------- model.safetensors


def st_file(header: dict | bytes, data: bytes = b"", length: int | None = None) -> bytes:
    """A safetensors file: u64 little-endian header length, JSON header, data (any can lie)."""
    raw = header if isinstance(header, bytes) else json.dumps(header).encode()
    return struct.pack("<Q", len(raw) if length is None else length) + raw + data


def f32(shape: list[int], offsets: list[int], dtype: str = "F32") -> dict:
    return {"dtype": dtype, "shape": shape, "data_offsets": offsets}


LYING = {
    "offsets beyond the file": st_file({"w": f32([2], [0, 8000])}, bytes(8)),
    "header longer than the file": st_file({"w": f32([2], [0, 8])}, bytes(8), length=10**6),
    "header length 2**63": st_file({}, length=2**63),
    "negative offsets": st_file({"w": f32([2], [-8, 0])}, bytes(8)),
    "overlapping tensors": st_file({"a": f32([2], [0, 8]), "b": f32([2], [4, 12])}, bytes(12)),
    "unknown dtype": st_file({"w": f32([2], [0, 8], dtype="Q99")}, bytes(8)),
    "shape and offsets disagree": st_file({"w": f32([3], [0, 8])}, bytes(8)),
    "header not UTF-8": st_file(b"\xff\xfe{{{"),
    "header not JSON": st_file(b'{"w": [1, 2'),
    "empty file": b"",
}


@pytest.mark.parametrize("content", LYING.values(), ids=LYING.keys())
def test_safetensors_with_a_lying_header_is_one_line(run: Path, content: bytes) -> None:
    ckpt = ckpt_dir(run)
    (ckpt / "model.safetensors").write_bytes(content)
    refresh_manifest(ckpt)
    for rc_err in (cli("sample", run, "-n", 4, "--out", run / "s.png"), resume(run)):
        assert "model.safetensors" in one_line(*rc_err)
    with pytest.raises(GenlabError, match="model.safetensors"):
        load_run(run)
    assert not (run / "s.png").exists()


def test_pickle_named_safetensors_is_not_unpickled(run: Path, marker: Path) -> None:
    ckpt = ckpt_dir(run)
    torch.save({"w": Shell(marker)}, ckpt / "model.safetensors")
    refresh_manifest(ckpt)
    assert "model.safetensors" in one_line(*cli("sample", run, "--out", run / "s.png"))
    assert not marker.exists()


@pytest.mark.parametrize("dtype", [torch.int64, torch.bool, torch.complex64])
def test_weights_of_another_dtype_are_refused(run: Path, dtype: torch.dtype) -> None:
    """Right names and shapes, wrong dtype: not the file genlab wrote; casting it silently would
    load something else than what was trained (complex -> real drops the imaginary part)."""
    ckpt = ckpt_dir(run)
    path = ckpt / "model.safetensors"
    save_file({k: v.to(dtype) for k, v in load_file(path).items()}, path)
    refresh_manifest(ckpt)
    assert "model.safetensors" in one_line(*cli("sample", run, "--out", run / "s.png"))


# --------------------------------------------------------------------------- manifest.json


@pytest.mark.parametrize(
    "text", ["[1, 2]", '{"sha256": [1]}', '{"sha256": {"trainer.pt": 5}}', "{", ""]
)
def test_crafted_manifest_is_one_line(run: Path, text: str) -> None:
    (ckpt_dir(run) / "manifest.json").write_text(text)
    assert "manifest" in one_line(*cli("sample", run, "--out", run / "s.png"))


# --------------------------------------------------------------------------- eval.json

BAD_EVAL = {
    "a list": ("eval.json", "[1]"),
    "a string": ("eval.json", '"fid"'),
    "null": ("eval.json", "null"),
    "nested value": ("eval.json", '{"mmd2": {"a": 1}}'),
    "string value": ("eval.json", '{"mmd2": "0.1"}'),
    "notes a list": ("eval_notes.json", "[1]"),
    "notes of a wrong shape": ("eval_notes.json", '{"notes": [1], "skipped": {}}'),
}


@pytest.mark.parametrize("name,text", BAD_EVAL.values(), ids=BAD_EVAL.keys())
def test_crafted_eval_json_is_one_line(run: Path, name: str, text: str) -> None:
    """compare reads each run's saved metrics: wrong shapes are refused, not a crash mid-page."""
    (run / "eval.json").write_text('{"mmd2": 0.1}')
    (run / name).write_text(text)
    report = run / "report.html"
    assert name in one_line(*cli("compare", run, "--report", report))
    assert not report.exists()


# --------------------------------------------------------------------------- YAML configs

PYTHON_TAGS = {
    "object/apply": "model: !!python/object/apply:os.system ['touch {m}']\n",
    "object/new": "!!python/object/new:os.system ['touch {m}']\n",
    "name": "model: {{name: !!python/name:os.system }}\n",
    "module": "model: !!python/module:os\n",
    "nested apply": "train:\n  steps: !!python/object/apply:os.system\n    args: ['touch {m}']\n",
}


@pytest.mark.parametrize("text", PYTHON_TAGS.values(), ids=PYTHON_TAGS.keys())
def test_python_tags_in_a_run_config_are_refused(run: Path, marker: Path, text: str) -> None:
    (run / "config.yaml").write_text(text.format(m=marker))
    for rc_err in (
        cli("sample", run, "-n", 4, "--out", run / "s.png"),
        cli("evaluate", run),
        resume(run),
    ):
        assert "config" in one_line(*rc_err)
    with pytest.raises(GenlabError, match="config"):
        load_run(run)
    assert not marker.exists()


@pytest.mark.parametrize("text", PYTHON_TAGS.values(), ids=PYTHON_TAGS.keys())
def test_python_tags_in_a_config_file_are_refused(tmp_path: Path, marker: Path, text: str) -> None:
    path = tmp_path / "evil.yaml"
    path.write_text(text.format(m=marker))
    out = tmp_path / "out"
    assert "config" in one_line(*cli("train", "--config", path, "--out", out))
    assert not marker.exists() and not out.exists()


def billion_laughs(levels: int = 9) -> str:
    """A flow list whose last element expands to 9**levels strings through aliases."""
    parts = ['&a0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    parts += [f"&a{i} [{', '.join([f'*a{i - 1}'] * 9)}]" for i in range(1, levels)]
    return f"[{', '.join(parts)}]"


BOMBS = {
    "model.name": "model: {{name: {b}}}\ndata: moons\n",
    "train.steps": "model: vae\ndata: moons\ntrain: {{steps: {b}}}\n",
    "data.name": "model: vae\ndata: {{name: {b}}}\n",
    "data.root": "model: vae\ndata: {{name: moons, root: {b}}}\n",
}


def _limit_memory() -> None:  # in the child: a runaway expansion fails instead of swapping
    resource.setrlimit(resource.RLIMIT_AS, (2 << 30, 2 << 30))


@pytest.mark.parametrize("key,text", BOMBS.items(), ids=BOMBS.keys())
def test_yaml_bomb_is_refused_in_one_line(tmp_path: Path, key: str, text: str) -> None:
    """Aliases make a 500-byte file stand for 387M strings; echoing or copying the value must not
    expand it: the line names the key, not a failed allocation. By subprocess, under a memory
    limit, so that a regression cannot take the test session down."""
    path = tmp_path / "bomb.yaml"
    path.write_text(text.format(b=billion_laughs()))
    assert path.stat().st_size < 1000
    out = tmp_path / "out"
    proc = subprocess.run(
        [sys.executable, "-m", "genlab", "train", "--config", str(path), "--out", str(out)],
        capture_output=True,
        text=True,
        env=SUBPROCESS_ENV,
        timeout=600,
        preexec_fn=_limit_memory,
    )
    line = one_line(proc.returncode, proc.stderr)
    assert key in line and len(line) < 1000, line[:300]
    assert not out.exists()


def test_yaml_bomb_in_a_run_config_is_one_line(run: Path) -> None:
    (run / "config.yaml").write_text(BOMBS["model.name"].format(b=billion_laughs()))
    proc = subprocess.run(
        [sys.executable, "-m", "genlab", "sample", str(run), "--out", str(run / "s.png")],
        capture_output=True,
        text=True,
        env=SUBPROCESS_ENV,
        timeout=600,
        preexec_fn=_limit_memory,
    )
    line = one_line(proc.returncode, proc.stderr)
    assert "model.name" in line and len(line) < 1000, line[:300]
    assert not (run / "s.png").exists()


@pytest.mark.parametrize("depth", [1000, 20000])
def test_deeply_nested_yaml_is_one_line(tmp_path: Path, depth: int) -> None:
    """Nesting deeper than the parser's recursion: an error line, not a RecursionError."""
    nested = "[" * depth + "]" * depth
    path = tmp_path / "deep.yaml"
    path.write_text(f"model: vae\ndata: moons\ntrain: {{steps: {nested}}}\n")
    out = tmp_path / "out"
    one_line(*cli("train", "--config", path, "--out", out))
    one_line(*cli("train", "vae", "--data", "moons", "--out", out, f"model.hidden={nested}"))
    assert not out.exists()


# --------------------------------------------------------------------------- spec.json

BAD_SPECS = {
    "not JSON": "{not json",
    "a list": "[1, 2]",
    "no shape": '{"name": "m"}',
    "unknown field": '{"name": "m", "shape": [2], "evil": 1}',
    "shape a string": '{"name": "m", "shape": "ab"}',
    "shape negative": '{"name": "m", "shape": [-2]}',
    "shape zero": '{"name": "m", "shape": [0]}',
    "shape float": '{"name": "m", "shape": [2.5]}',
    "shape 2-D": '{"name": "m", "shape": [2, 1]}',
    "shape nested": '{"name": "m", "shape": [[2]]}',
    "value_range short": '{"name": "m", "shape": [2], "value_range": [1]}',
    "value_range string": '{"name": "m", "shape": [2], "value_range": "ab"}',
    "value_range NaN": '{"name": "m", "shape": [2], "value_range": [NaN, Infinity]}',
    "value_range reversed": '{"name": "m", "shape": [2], "value_range": [1, 0]}',
    "num_classes string": '{"name": "m", "shape": [2], "num_classes": "ten"}',
    "num_classes negative": '{"name": "m", "shape": [2], "num_classes": -3}',
    "levels string": '{"name": "m", "shape": [2], "discrete_levels": "x"}',
    "levels one": '{"name": "m", "shape": [2], "discrete_levels": 1}',
    "name a number": '{"name": 5, "shape": [2]}',
    "5000-digit int": '{"name": "m", "shape": [' + "9" * 5000 + "]}",
}


@pytest.mark.parametrize("text", BAD_SPECS.values(), ids=BAD_SPECS.keys())
def test_bad_spec_json_is_one_line(run: Path, text: str) -> None:
    (run / "spec.json").write_text(text)
    assert "spec.json" in one_line(*cli("sample", run, "-n", 4, "--out", run / "s.png"))
    with pytest.raises(GenlabError, match="spec.json"):
        load_run(run)
    assert not (run / "s.png").exists()


# --------------------------------------------------------------------------- other user files


@pytest.mark.parametrize("suffix", [".pth", ".safetensors"])
def test_inception_weights_with_code_are_refused(tmp_path: Path, marker: Path, suffix) -> None:
    path = tmp_path / f"evil{suffix}"
    torch.save({"fc.weight": torch.zeros(1), "x": Shell(marker)}, path)
    with pytest.raises(GenlabError, match="cannot read Inception weights"):
        load_inception(path)
    assert not marker.exists()


def test_inception_weights_with_code_through_evaluate(tmp_path: Path, marker: Path) -> None:
    out = tmp_path / "ae-digits"
    rc, err = cli(
        "train", "ae", "--data", "digits", "--out", out, "--no-progress", "train.steps=2",
        "data.limit=64", "model.channels=[4,8]",
    )  # fmt: skip
    assert rc == 0, err
    weights = tmp_path / "pt_inception.pth"
    _raw_pickle(weights, marker)
    line = one_line(
        *cli("evaluate", out, "--metrics", "fid", "--n", 50, "--inception-weights", weights)
    )
    assert "Inception" in line and not marker.exists()


def test_feature_classifier_cache_with_code_is_retrained(marker: Path) -> None:
    """A pickle planted at the cache path is not unpickled: the classifier is trained anew."""
    data = tiny_data("image", n=64, seed=3)
    path = features._cache_path(data)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"body.x": Shell(marker)}, path)
    path.with_suffix(".acc").write_text("0.5\n")
    extractor = features.classifier_features(data, steps=2)
    assert not marker.exists()
    assert set(load_file(path)) == set(extractor.net.state_dict())  # replaced by safetensors


def test_texture_weights_with_code_are_refused(tmp_path: Path, marker: Path) -> None:
    evil = tmp_path / "filters.safetensors"
    torch.save({"stage0.weight": Shell(marker)}, evil)
    out = tmp_path / "out"
    args = ["train", "texture", "--data", "digits", "--out", out, f"model.weights={evil}"]
    assert "texture feature weights" in one_line(*cli(*args, "train.steps=1"))
    assert not marker.exists() and not out.exists()


def _npz_with_object_array(path: Path, marker: Path) -> None:
    np.savez(path, x=np.array([Shell(marker), 1], dtype=object))


def _pickle_named_npz(path: Path, marker: Path) -> None:
    path.write_bytes(pickle.dumps(Shell(marker)))


def _npz_with_pickled_member(path: Path, marker: Path) -> None:
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("x.npy", pickle.dumps(Shell(marker)))


NPZ = {
    "object array": _npz_with_object_array,
    "pickle file": _pickle_named_npz,
    "pickle member": _npz_with_pickled_member,
}


@pytest.mark.parametrize("make", NPZ.values(), ids=NPZ.keys())
def test_npz_with_code_is_refused(tmp_path: Path, marker: Path, make) -> None:
    path = tmp_path / "evil.npz"
    make(path, marker)
    out = tmp_path / "out"
    line = one_line(*cli("train", "ae", "--data", f"npz:{path}", "--out", out, "train.steps=1"))
    assert str(path) in line
    assert not marker.exists() and not out.exists()


def test_eps_disguised_as_png_runs_no_program(tmp_path: Path, marker: Path, monkeypatch) -> None:
    """Pillow picks a decoder by content and its EPS decoder runs Ghostscript (`gs`): a folder:
    dataset must only use the PNG and JPEG decoders. A fake `gs` on PATH records any call."""
    from PIL import EpsImagePlugin

    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    gs = bin_dir / "gs"
    gs.write_text(f"#!/bin/sh\ntouch {marker}\n")
    gs.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}")
    monkeypatch.setattr(EpsImagePlugin, "gs_binary", None)  # look `gs` up again
    images = tmp_path / "images"
    images.mkdir()
    eps = "%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 4 4\nnewpath 0 0 moveto showpage\n%%EOF\n"
    for i in range(3):
        (images / f"{i}.png").write_text(eps)
    out = tmp_path / "out"
    line = one_line(*cli("train", "ae", "--data", f"folder:{images}", "--out", out))
    assert "0.png" in line
    assert not marker.exists() and not out.exists()


# --------------------------------------------------------------------------- source audit

# (module, function) -> the keyword that makes the call safe, with its required value
SAFE_KEYWORD = {
    ("torch", "load"): ("weights_only", True),
    ("np", "load"): ("allow_pickle", False),
    ("numpy", "load"): ("allow_pickle", False),
}
# calls that can execute code from their input whatever the arguments
FORBIDDEN = {
    ("pickle", "load"),
    ("pickle", "loads"),
    ("pickle", "Unpickler"),
    ("marshal", "loads"),
    ("yaml", "load"),
    ("yaml", "unsafe_load"),
    ("yaml", "full_load"),
    ("yaml", "load_all"),
    ("dill", "load"),
    ("joblib", "load"),
    ("pd", "read_pickle"),
    ("pandas", "read_pickle"),
    ("torch", "jit.load"),
}


def _dotted(node: ast.expr) -> str:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        return f"{_dotted(node.value)}.{node.attr}"
    return ""


def test_every_loader_in_genlab_is_safe() -> None:
    """Static audit of genlab/: every torch.load has weights_only=True, every np.load
    allow_pickle=False; no pickle/marshal/yaml.load/eval/exec anywhere."""
    problems = []
    files = sorted(GENLAB.rglob("*.py"))
    assert len(files) > 50
    for path in files:
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if not isinstance(node, ast.Call):
                continue
            name = _dotted(node.func)
            where = f"{path.relative_to(GENLAB.parent)}:{node.lineno}"
            module, _, func = name.partition(".")
            if name in ("eval", "exec", "compile", "__import__"):
                problems.append(f"{where}: {name}()")
            if (module, func) in FORBIDDEN:
                problems.append(f"{where}: {name}()")
            if (module, func) in SAFE_KEYWORD:
                key, value = SAFE_KEYWORD[module, func]
                given = {k.arg: k.value for k in node.keywords}
                if not (isinstance(given.get(key), ast.Constant) and given[key].value is value):
                    problems.append(f"{where}: {name}() without {key}={value}")
    assert not problems, problems
