"""Atomic checkpoints: weights in safetensors, trainer state loaded with weights_only=True.

Layout: RUN/checkpoints/step_000100/{model.safetensors, [ema.safetensors], trainer.pt,
manifest.json} and RUN/checkpoints/latest naming the newest complete one. A checkpoint is
written into a temporary directory, fsynced, renamed into place, and only then named in
`latest` (itself replaced atomically), so a killed process never leaves a half-written one.
manifest.json holds each file's SHA-256; a truncated or altered file is refused on load, and so
is a file that resolves (through a symlink or a `..` name) outside RUN/checkpoints.
"""

from __future__ import annotations

import hashlib
import json
import os
import pickle
import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from genlab.errors import GenlabError, first_line
from genlab.nn.weights import check_state_dict

STEP_DIR = re.compile(r"^step_(\d{6,})$")


@dataclass
class Checkpoint:
    path: Path
    step: int


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def confined(path: Path, root: Path) -> Path:
    """`path`, refused unless it resolves inside `root`: what a run names (symlinks, `..`) never
    reaches files elsewhere."""
    resolved = path.resolve()
    if not resolved.is_relative_to(root.resolve()):
        raise GenlabError(f"{path} points outside {root} (to {resolved}); refusing to read it")
    return path


def fsync_file(path: Path) -> None:
    with open(path, "rb") as f:
        os.fsync(f.fileno())


def fsync_dir(path: Path) -> None:
    """Make renames inside `path` durable (a power cut, not only a killed process)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def weights_of(model: nn.Module) -> dict[str, torch.Tensor]:
    """State dict as contiguous CPU tensors (safetensors needs no shared storage)."""
    return {k: v.detach().cpu().contiguous().clone() for k, v in model.state_dict().items()}


def save(
    root: Path,
    step: int,
    model: nn.Module,
    trainer_state: dict[str, Any],
    ema: nn.Module | None = None,
    keep: int = 2,
) -> Checkpoint:
    """Write checkpoint `step` under root (= RUN/checkpoints) atomically; prune to `keep`."""
    root.mkdir(parents=True, exist_ok=True)
    name = f"step_{step:06d}"
    tmp = root / f".tmp-{name}-{os.getpid()}"
    if tmp.exists():
        shutil.rmtree(tmp)
    try:
        tmp.mkdir()
        save_file(weights_of(model), str(tmp / "model.safetensors"))
        if ema is not None:
            save_file(weights_of(ema), str(tmp / "ema.safetensors"))
        torch.save(trainer_state, tmp / "trainer.pt")
        files = sorted(p.name for p in tmp.iterdir())
        manifest = {"step": step, "sha256": {f: sha256(tmp / f) for f in files}}
        (tmp / "manifest.json").write_text(json.dumps(manifest, indent=1))
        for f in tmp.iterdir():
            fsync_file(f)
    except BaseException:  # a full disk or no permission: nothing half-written stays behind
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    final = root / name
    if final.exists():  # left by a run killed after the rename but before `latest` moved
        discard(final)
    os.replace(tmp, final)
    pointer = root / ".latest.tmp"
    try:
        pointer.write_text(name + "\n")
        fsync_file(pointer)
        os.replace(pointer, root / "latest")
        fsync_dir(root)
    finally:
        pointer.unlink(missing_ok=True)
    prune(root, keep)
    return Checkpoint(final, step)


def discard(path: Path) -> None:
    """Remove a checkpoint directory without ever leaving a half-removed step_ directory: move
    it out of the step_ names first (atomic), then delete it (prune clears what a kill leaves)."""
    trash = path.with_name(f".tmp-discard-{path.name}-{os.getpid()}")
    if trash.exists():
        shutil.rmtree(trash)
    os.replace(path, trash)
    shutil.rmtree(trash, ignore_errors=True)


def prune(root: Path, keep: int) -> None:
    for old in complete(root)[:-keep] if keep > 0 else []:
        discard(old.path)
    for stale in root.glob(".tmp-*"):  # temporary directories of killed writers
        shutil.rmtree(stale, ignore_errors=True)


def complete(root: Path) -> list[Checkpoint]:
    """Checkpoint directories with a manifest, oldest first."""
    found = []
    if root.is_dir():
        for p in root.iterdir():
            m = STEP_DIR.match(p.name)
            if m and (p / "manifest.json").is_file():
                found.append(Checkpoint(p, int(m.group(1))))
    return sorted(found, key=lambda c: c.step)


def latest(root: Path) -> Checkpoint | None:
    """The checkpoint named by `latest`, else the newest complete one, else None."""
    pointer = root / "latest"
    if pointer.is_file():
        name = pointer.read_text().strip()
        m = STEP_DIR.match(name)
        if m and (root / name / "manifest.json").is_file():
            return Checkpoint(root / name, int(m.group(1)))
    found = complete(root)
    return found[-1] if found else None


def verify(ckpt: Checkpoint) -> dict[str, str]:
    """Check every file against the manifest's SHA-256; GenlabError when anything differs."""
    root = ckpt.path.parent
    try:
        manifest = json.loads(confined(ckpt.path / "manifest.json", root).read_text())
        digests = dict(manifest["sha256"])
    except (OSError, ValueError, KeyError, TypeError):
        raise GenlabError(f"checkpoint {ckpt.path} has an unreadable manifest.json") from None
    for name, digest in digests.items():
        if Path(str(name)).name != name:  # a plain file name, never a path
            raise GenlabError(f"checkpoint {ckpt.path} lists a file outside it: {name!r}")
        f = confined(ckpt.path / name, root)
        if not f.is_file() or sha256(f) != digest:
            raise GenlabError(f"checkpoint file {f} is corrupt or truncated (checksum mismatch)")
    return digests


def load_weights(model: nn.Module, path: Path) -> None:
    """Load safetensors weights into `model`, refusing missing keys or other shapes."""
    try:
        state = load_file(str(path))
    except (SafetensorError, OSError, ValueError) as e:
        raise GenlabError(f"cannot read weights {path}: {first_line(e)}") from None
    expected = model.state_dict()
    check_state_dict(
        expected,
        state,
        f"weights {path}",
        "this model",
        hint="different image size, channels or config?",
    )
    for key, value in state.items():  # genlab writes the model's own dtypes; a cast would hide it
        if value.dtype != expected[key].dtype:
            raise GenlabError(
                f"weights {path}: {key} is {value.dtype} in the file but "
                f"{expected[key].dtype} in this model (not a checkpoint of this model)"
            )
    model.load_state_dict(state)


def load_trainer_state(ckpt: Checkpoint) -> dict[str, Any]:
    path = ckpt.path / "trainer.pt"
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:  # torch's text suggests weights_only=False: never say that
        reason = "it holds objects other than tensors and plain data; none of its code was run"
    except Exception as e:  # any other failure means a bad file; never execute it
        reason = first_line(e)
    raise GenlabError(f"cannot read trainer state {path}: {reason}")
