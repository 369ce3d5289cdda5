"""Crash safety (issue 7): SIGKILL a training run at random moments and inside every step of a
checkpoint write, resume it each time, and get exactly the run that was never interrupted.

A fork server (tests/crash_child.py) runs `genlab train` in child processes: it kills a child
after a random delay, or the child kills itself at the k-th call of one point of the
checkpoint write (with the file being written half done, for the partial cases). After every
kill: each complete checkpoint verifies against its manifest and equals the uninterrupted
run's checkpoint of the same step (weights byte for byte, trainer state loaded), `latest`
never moves back, and the next start resumes from exactly that checkpoint. At the end the
weights, EMA weights, trainer state, metrics.csv and sample grids equal the uninterrupted
run's, and no temporary file is left.
"""

from __future__ import annotations

import csv
import json
import os
import random
import re
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest
import torch
from conftest import SUBPROCESS_ENV
from safetensors.torch import load_file

from genlab.errors import GenlabError
from genlab.train import checkpoint

ROOT = Path(__file__).resolve().parents[1]
ENV = {
    **SUBPROCESS_ENV,
    "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
}
STEP_DIR = re.compile(r"^step_(\d{6,})$")
# os.fork and /proc/self/task in the fork server
pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="Linux only")
# The checkpoint write in order (crash_child.POINTS), then start-up and the metrics log. Each
# (point, mode, k range): k counts the point's calls in one process (fsync: 4 files, then the
# pointer).
FAULT_POINTS = [
    ("model_weights", "before", (1, 2)),
    ("model_weights", "partial", (1, 2)),
    ("model_weights", "after", (1, 2)),
    ("ema_weights", "before", (1, 2)),
    ("ema_weights", "partial", (1, 2)),
    ("ema_weights", "after", (1, 2)),
    ("trainer_state", "before", (1, 2)),
    ("trainer_state", "partial", (1, 2)),
    ("trainer_state", "after", (1, 2)),
    ("manifest_hash", "before", (1, 3)),
    ("manifest", "before", (1, 2)),
    ("manifest", "partial", (1, 2)),
    ("manifest", "after", (1, 2)),
    ("fsync", "before", (1, 4)),
    ("rename_dir", "before", (1, 2)),
    ("pointer", "before", (1, 2)),
    ("pointer", "partial", (1, 2)),
    ("pointer", "after", (1, 2)),
    ("fsync", "before", (5, 5)),  # the pointer's
    ("rename_latest", "before", (1, 2)),
    ("rename_latest", "after", (1, 2)),
    ("prune", "before", (1, 2)),
    ("prune_rmtree", "partial", (1, 1)),
    ("prune", "after", (1, 2)),
    ("config", "before", (1, 1)),  # start-up
    ("config", "partial", (1, 1)),
    ("config", "after", (1, 1)),
    ("restore", "before", (1, 1)),
    ("restore", "after", (1, 1)),
    ("metrics_rewrite", "before", (1, 1)),  # at start-up: metrics.csv trimmed on resume
    ("metrics_rewrite", "partial", (1, 1)),
    ("metrics_row", "after", (1, 8)),
]
# A step_ dir renamed into place with `latest` not yet moved, then removed by the next writer of
# that step: "rename_dir after" followed at once by "replace_rmtree partial". k = 2: the child's
# first checkpoint is named `latest`, so the next start resumes before the stale directory.
STALE_DIR_PAIR = [("rename_dir", "after", (2, 2)), ("replace_rmtree", "partial", (1, 1))]


def train_argv(out: Path, steps: int, log_every: int, *, resume: bool, keep: int = 2) -> list:
    """A stochastic model (VAE) with EMA, checkpoints every 5 steps, CPU."""
    return [
        "train",
        "vae",
        "--data",
        "moons",
        "--out",
        str(out),
        *(["--resume"] if resume else []),
        f"train.steps={steps}",
        "train.checkpoint_every=5",
        f"train.log_every={log_every}",
        f"train.sample_every={steps // 2}",
        f"train.keep_checkpoints={keep}",
        "train.ema=0.9",
        "train.batch_size=32",
        "train.device=cpu",
        "data.limit=256",
        "model.hidden=[16]",
        "model.latent_dim=2",
        "--no-progress",
    ]


class ForkServer:
    """tests/crash_child.py as a subprocess: one JSON request and reply per line."""

    def __init__(self, log: Path) -> None:
        self.log = log
        self.stderr = open(log, "a")  # closed with the server
        self.proc = subprocess.Popen(
            [sys.executable, str(ROOT / "tests" / "crash_child.py")],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self.stderr,
            text=True,
            env=ENV,
            cwd=ROOT,
        )

    def run(self, argv: list, *, fault: dict | None = None, kill: dict | None = None) -> dict:
        request = {"argv": argv, "log": str(self.log), "fault": fault, "kill": kill}
        self.proc.stdin.write(json.dumps(request) + "\n")
        self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        assert line, f"the fork server died:\n{log_tail(self.log)}"
        return json.loads(line)

    def close(self) -> None:
        self.proc.stdin.close()
        self.proc.wait(timeout=60)
        self.stderr.close()


def log_tail(log: Path, n: int = 30) -> str:
    return "\n".join(log.read_text(errors="replace").splitlines()[-n:]) if log.exists() else ""


def manifest(run: Path, step: int) -> dict[str, str]:
    path = run / "checkpoints" / f"step_{step:06d}" / "manifest.json"
    return json.loads(path.read_text())["sha256"]


def assert_same_state(a, b, where: str = "") -> None:
    """Equal trainer states: same keys, lists, numbers and tensors (torch.equal)."""
    assert type(a) is type(b), where
    if isinstance(a, dict):
        assert a.keys() == b.keys(), where
        for k in a:
            assert_same_state(a[k], b[k], f"{where}.{k}")
    elif isinstance(a, list | tuple):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b)):
            assert_same_state(x, y, f"{where}[{i}]")
    elif isinstance(a, torch.Tensor):
        assert a.dtype == b.dtype and torch.equal(a, b), where
    else:
        assert a == b, where


def assert_same_checkpoint(c: checkpoint.Checkpoint, ref: Path) -> None:
    """`c` holds what the uninterrupted run saved at its step: the same weights and EMA weights
    (safetensors files byte for byte) and the same trainer state (optimisers, data position,
    RNG). trainer.pt is compared loaded: pickle's memo makes the bytes of an equal state differ
    (a resumed optimiser's "step" key is another str object than the top-level "step")."""
    mine, theirs = manifest(c.path.parent.parent, c.step), manifest(ref, c.step)
    assert mine.keys() == theirs.keys(), c.path
    for name in mine:
        if name != "trainer.pt":
            assert mine[name] == theirs[name], f"{c.path / name} differs from the reference's"
    ref_ckpt = checkpoint.Checkpoint(ref / "checkpoints" / c.path.name, c.step)
    assert_same_state(
        checkpoint.load_trainer_state(c), checkpoint.load_trainer_state(ref_ckpt), str(c.path)
    )


def check_checkpoints(run: Path, ref: Path, before: int) -> int:
    """After a kill: every complete checkpoint verifies and equals the reference's of its step;
    `latest` names one of them, never an older one than `before`. Returns latest's step."""
    root = run / "checkpoints"
    found = checkpoint.complete(root)
    for c in found:
        try:
            digests = checkpoint.verify(c)
        except GenlabError as e:
            pytest.fail(f"a complete checkpoint does not verify: {e}; {sorted(os.listdir(root))}")
        assert digests == manifest(run, c.step)
        assert_same_checkpoint(c, ref)
    last = checkpoint.latest(root)
    if last is None:
        assert before == 0, f"checkpoint of step {before} lost"
        return 0
    assert last.path.parent == root and STEP_DIR.match(last.path.name), last.path
    pointer = root / "latest"
    if pointer.exists():  # written atomically: names a complete checkpoint, never half a name
        assert pointer.read_text().strip() == last.path.name, pointer.read_text()
    assert last.step >= before, f"latest went back from step {before} to {last.step}"
    return last.step


def check_same_run(run: Path, ref: Path, steps: int) -> None:
    """The resumed run ends exactly as the uninterrupted one: weights, EMA, state, logs, grids."""
    last = checkpoint.latest(run / "checkpoints")
    assert last is not None and last.step == steps
    checkpoint.verify(last)
    ref_dir = ref / "checkpoints" / f"step_{steps:06d}"
    for name in ("model.safetensors", "ema.safetensors"):
        a, b = load_file(str(last.path / name)), load_file(str(ref_dir / name))
        assert a.keys() == b.keys()
        for k in a:
            assert torch.equal(a[k], b[k]), f"{name} {k}"
    assert_same_checkpoint(last, ref)  # trainer.pt too: optimisers, data position, RNG
    with open(run / "metrics.csv") as f, open(ref / "metrics.csv") as g:
        rows, ref_rows = list(csv.DictReader(f)), list(csv.DictReader(g))
    assert len(ref_rows) > 1 and rows == ref_rows
    # what killed writers left (.tmp-step_* dirs, .latest.tmp, .metrics.csv.tmp, ...) was
    # replaced or pruned by the runs after them
    assert not [p for p in run.rglob(".*") if "tmp" in p.name], sorted(run.rglob(".*"))
    grids = sorted(p.name for p in (ref / "samples").iterdir())
    assert sorted(p.name for p in (run / "samples").iterdir()) == grids
    for name in grids:
        assert (run / "samples" / name).read_bytes() == (ref / "samples" / name).read_bytes()


def kill_fresh_process(argv: list, run: Path, u: float, log: Path) -> tuple[int, bool]:
    """`python -m genlab` in a new process (imports and all), SIGKILLed u x 0.1 s after it
    names its first new checkpoint `latest` (or after 60 s): its return code (-9: killed) and
    whether it got that far."""
    pointer = run / "checkpoints" / "latest"
    before = pointer.read_text() if pointer.exists() else None
    with open(log, "a") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "genlab", *argv], stdout=out, stderr=out, env=ENV, cwd=ROOT
        )
    deadline = time.monotonic() + 60
    while proc.poll() is None and time.monotonic() < deadline:
        if pointer.exists() and pointer.read_text() != before:
            deadline = min(deadline, time.monotonic() + u * 0.1)
        time.sleep(0.002)
    if proc.poll() is None:
        proc.kill()  # SIGKILL
    return proc.wait(), pointer.exists() and pointer.read_text() != before


def crash_loop(
    tmp_path: Path, plan: list[dict], steps: int, log_every: int, target: int
) -> Counter:
    """Run `plan` (one kill per entry) on one run, resuming after each, then let it finish;
    compare with an uninterrupted run. Returns the kills that landed, by kind."""
    ref, run, log = tmp_path / "ref", tmp_path / "run", tmp_path / "children.log"
    server = ForkServer(log)
    try:
        done = server.run(train_argv(ref, steps, log_every, resume=False, keep=0))
        assert done["code"] == 0, log_tail(log)
        landed: Counter = Counter()
        latest = 0
        missed = "none"
        for i, entry in enumerate(plan):
            argv = train_argv(run, steps, log_every, resume=i > 0)
            if entry["kind"] == "fresh":
                code, trained = kill_fresh_process(argv, run, entry["u"], log)
                reply = {"code": max(code, 0), "signal": -code if code < 0 else None, "fault": None}
                reply.update(killed_by="server", events=[])
            else:
                reply = server.run(argv, fault=entry.get("fault"), kill=entry.get("kill"))
                trained = any(kind == "L" for kind, _, _ in reply["events"])
            starts = [step for kind, step, _ in reply["events"] if kind == "L"]
            assert starts in ([], [latest]), f"entry {i}: resumed at {starts}, latest {latest}"
            if reply["signal"] is None:  # finished (or failed) before the kill could land
                assert reply["code"] == 0, f"entry {i} {entry}: {reply}\n{log_tail(log)}"
                missed = f"entry {i} {entry} did not land: the run finished"
                latest = check_checkpoints(run, ref, latest)
                break
            assert reply["signal"] == 9, reply
            if entry["kind"] == "fault":
                f = entry["fault"]
                assert reply["fault"] == f"{f['point']}:{f['mode']}:{f['k']}", reply
                landed[f"fault {f['point']} {f['mode']}"] += 1
            else:
                assert reply["killed_by"] == "server" and reply["fault"] is None, reply
                landed[f"{entry['kind']} kill during {'training' if trained else 'start-up'}"] += 1
            latest = check_checkpoints(run, ref, latest)
            if latest == 0:
                landed["(killed before the first checkpoint)"] += 1
        final = server.run(train_argv(run, steps, log_every, resume=True))
        assert final["code"] == 0, log_tail(log)
        assert [s for k, s, _ in final["events"] if k == "L"] == [latest], missed
    finally:
        server.close()
    check_same_run(run, ref, steps)
    print(f"\nthe final start resumed from step {latest} of {steps}")
    kills = sum(v for k, v in landed.items() if not k.startswith("("))
    assert kills >= target, f"only {kills} kills landed before the run finished: {landed}; {missed}"
    return landed


def fault(point: str, mode: str, ks: tuple[int, int], rng: random.Random) -> dict:
    return {"kind": "fault", "fault": {"point": point, "mode": mode, "k": rng.randint(*ks)}}


def test_sigkill_resume_fast(tmp_path) -> None:
    """Seven kills: at start-up of a new run, in its first checkpoint write (a half-written
    file), at two random moments, and in three more checkpoint writes (a directory renamed but
    not yet `latest`, then its removal; the removal of an old checkpoint)."""
    rng = random.Random(7)
    plan = [
        fault("config", "after", (1, 1), rng),
        fault("model_weights", "partial", (1, 1), rng),
        {"kind": "timer", "kill": {"after": "fork", "u": rng.uniform(0, 1.2)}},
        {"kind": "timer", "kill": {"after": "checkpoint", "j": 2, "u": rng.random()}},
        *(fault(*p, rng) for p in STALE_DIR_PAIR),
        fault("prune_rmtree", "partial", (1, 1), rng),
    ]
    landed = crash_loop(tmp_path, plan, steps=60, log_every=1, target=len(plan))
    assert landed["(killed before the first checkpoint)"] >= 2, landed


@pytest.mark.slow
def test_sigkill_resume_every_point(tmp_path) -> None:
    """Over 40 kills: every point of the checkpoint write (before, half-written, after) and of
    start-up and the metrics log, random moments at start-up and in training, fresh processes.
    train.log_every=2 with checkpoints every 5 steps: resumes in the middle of a logged mean."""
    rng = random.Random(2026)
    timers = [
        {"kind": "timer", "kill": {"after": "fork", "u": rng.uniform(0, 1.2)}} for _ in range(3)
    ] + [
        {
            "kind": "timer",
            "kill": {"after": "checkpoint", "j": rng.randint(0, 3), "u": rng.random()},
        }
        for _ in range(6)
    ]
    rest = [fault(*p, rng) for p in FAULT_POINTS] + timers
    rest += [{"kind": "fresh", "u": rng.random()} for _ in range(2)]
    rng.shuffle(rest)
    at = rng.randrange(len(rest))
    rest[at:at] = [fault(*p, rng) for p in STALE_DIR_PAIR]  # in this order, one after the other
    plan = [
        fault("config", "after", (1, 1), rng),  # a new run, at start-up
        {"kind": "timer", "kill": {"after": "checkpoint", "j": 0, "u": 0.5}},  # before the first
        fault("model_weights", "after", (2, 2), rng),  # a checkpoint exists from here on
        *rest,
    ]
    landed = crash_loop(tmp_path, plan, steps=600, log_every=2, target=20)
    for point, mode, _ in FAULT_POINTS + STALE_DIR_PAIR:
        assert landed[f"fault {point} {mode}"] >= 1, (point, mode, landed)
    assert landed["(killed before the first checkpoint)"] >= 1, landed
    kills = sum(v for k, v in landed.items() if not k.startswith("("))
    print(f"\n{kills} kills landed, each followed by a resume:", dict(sorted(landed.items())))
