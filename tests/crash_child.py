"""Fork server for tests/test_crash_safety.py: runs `genlab.cli.main` in children and kills them.

    python tests/crash_child.py          # then one JSON request per line on stdin

The server imports genlab once (seconds of torch/matplotlib imports) and forks one child per
request, so a test can kill and resume a training run dozens of times. A child is an ordinary
`genlab ...` process from `cli.main(argv)` on: argv parsing, config, data, resume, training.
Requests and replies are one JSON object per line (replies on the server's original stdout;
children write their stdout/stderr to request["log"]).

Request: {"argv": [...], "log": PATH, "fault": FAULT | null, "kill": KILL | null}
  FAULT {"point": P, "mode": "before" | "partial" | "after", "k": K}: the child SIGKILLs itself
    at the K-th call of point P (see POINTS) in this process: before the call, after it, or
    after a half-written result (a file truncated to half its bytes, as a writer killed in the
    middle leaves it).
  KILL: the server SIGKILLs the child at a random moment:
    {"after": "fork", "u": U}: U x (the last child's time from fork to its training loop);
    {"after": "checkpoint", "j": J, "u": U}: U x (the time between its (J-1)-th and J-th
    checkpoints) after the child's J-th checkpoint (J = 0: the start of its training loop,
    scaled by the median checkpoint interval of the last child that had some).
  A child still running after request["timeout_s"] (default 300) is killed as "timeout".
Reply: {"code": exit code or null, "signal": 9 when killed, "killed_by": "fault" | "server" |
  "timeout" | "other" | null, "fault": the fired point or null, "events": [[kind, step,
  seconds since fork], ...]}, kind "L": the training loop starts at `step` (0 for a new run,
  else the step resumed from); kind "C": the checkpoint of `step` is written, pruned and named
  `latest`.
"""

from __future__ import annotations

import json
import os
import re
import select
import signal
import sys
import time
import traceback
from pathlib import Path

STEP_DIR = re.compile(r"^step_\d{6,}$")
MODES = ("before", "partial", "after")
# Each point: the modes it supports. The checkpoint write calls them in this order.
POINTS = {
    "model_weights": MODES,  # safetensors save_file of model.safetensors
    "ema_weights": MODES,  # ... of ema.safetensors
    "trainer_state": MODES,  # torch.save of trainer.pt
    "manifest_hash": ("before",),  # sha256 of a file in the temporary directory
    "manifest": MODES,  # manifest.json written
    "fsync": ("before",),  # fsync_file of a written file (directory files, then the pointer)
    "replace_rmtree": ("partial",),  # removal of a step_ dir left by a writer killed after its
    # rename and before `latest` moved: killed after removing one file
    "rename_dir": ("before", "after"),  # os.replace(.tmp-step_N, step_N)
    "pointer": MODES,  # .latest.tmp written
    "rename_latest": ("before", "after"),  # os.replace(.latest.tmp, latest)
    "prune": ("before", "after"),
    "prune_rmtree": ("partial",),  # removal of an old checkpoint: killed after removing one file
    # outside the checkpoint write
    "config": MODES,  # config.yaml replaced at start-up (written to a temporary file first)
    "restore": ("before", "after"),  # Trainer.restore: resuming from the latest checkpoint
    "metrics_rewrite": ("before", "partial"),  # metrics.csv rewritten (header, trim on resume)
    "metrics_row": ("after",),  # a metrics.csv row appended
}


class Fault:
    """Kill this process at the k-th call of one point (counted from the child's start)."""

    def __init__(self, point: str, mode: str, k: int, notify) -> None:
        if mode not in POINTS[point]:
            raise ValueError(f"point {point} has no mode {mode}")
        self.point, self.mode, self.k, self.notify = point, mode, k, notify
        self.calls = 0

    def hit(self, point: str, mode: str) -> bool:
        """Count a call of `point`; True when this is the call (and mode) to die at."""
        if point != self.point:
            return False
        if mode == "before":
            self.calls += 1
        return self.calls == self.k and mode == self.mode

    def die(self) -> None:
        self.notify(f"F {self.point}:{self.mode}:{self.k}")
        os.kill(os.getpid(), signal.SIGKILL)


def truncate_half(path: str | os.PathLike) -> None:
    os.truncate(path, os.path.getsize(path) // 2)


def install(fault: Fault | None, notify) -> None:
    """Monkeypatch genlab (in this child only): notifications, and the fault when given."""
    import pathlib
    import shutil

    import torch

    from genlab.train import checkpoint, logger, trainer

    fit, save_checkpoint = trainer.Trainer.fit, trainer.Trainer.save_checkpoint

    def notifying_fit(self):
        notify(f"L {self.step}")
        return fit(self)

    def notifying_save_checkpoint(self):
        save_checkpoint(self)
        notify(f"C {self.step}")

    trainer.Trainer.fit = notifying_fit
    trainer.Trainer.save_checkpoint = notifying_save_checkpoint
    if fault is None:
        return

    def around(point, call, *, written=None):
        """Run `call()` with the fault's before/partial/after at `point`; `written` is the file
        the call writes (truncated to half for "partial")."""
        if fault.hit(point, "before"):
            fault.die()
        result = call()
        if fault.hit(point, "partial"):
            truncate_half(written)
            fault.die()
        if fault.hit(point, "after"):
            fault.die()
        return result

    save_file = checkpoint.save_file

    def faulty_save_file(tensors, filename, *args, **kwargs):
        point = "ema_weights" if Path(filename).name == "ema.safetensors" else "model_weights"
        return around(
            point, lambda: save_file(tensors, filename, *args, **kwargs), written=filename
        )

    checkpoint.save_file = faulty_save_file

    torch_save = torch.save

    def faulty_torch_save(obj, f, *args, **kwargs):
        return around("trainer_state", lambda: torch_save(obj, f, *args, **kwargs), written=f)

    torch.save = faulty_torch_save

    sha256 = checkpoint.sha256

    def faulty_sha256(path):
        if Path(path).parent.name.startswith(".tmp-"):  # the manifest, not verify()
            return around("manifest_hash", lambda: sha256(path))
        return sha256(path)

    checkpoint.sha256 = faulty_sha256

    write_text = pathlib.Path.write_text

    def faulty_write_text(self, data, *args, **kwargs):
        point = {"manifest.json": "manifest", ".latest.tmp": "pointer"}.get(self.name)
        if point is None:
            return write_text(self, data, *args, **kwargs)
        if fault.hit(point, "before"):
            fault.die()
        if fault.hit(point, "partial"):
            write_text(self, data[: len(data) // 2], *args, **kwargs)
            fault.die()
        result = write_text(self, data, *args, **kwargs)
        if fault.hit(point, "after"):
            fault.die()
        return result

    pathlib.Path.write_text = faulty_write_text

    fsync_file = checkpoint.fsync_file
    checkpoint.fsync_file = lambda path: around("fsync", lambda: fsync_file(path))

    replace = os.replace

    def faulty_replace(src, dst, *args, **kwargs):
        name = Path(dst).name
        point = (
            "rename_dir"
            if STEP_DIR.match(name)
            else {
                "latest": "rename_latest",
                "metrics.csv": "metrics_rewrite",
                "config.yaml": "config",
            }.get(name)
        )
        if point is None:
            return replace(src, dst, *args, **kwargs)
        if fault.hit(point, "before"):
            fault.die()
        if fault.hit(point, "partial"):  # the temporary file half-written, not yet renamed
            truncate_half(src)
            fault.die()
        result = replace(src, dst, *args, **kwargs)
        if fault.hit(point, "after"):
            fault.die()
        return result

    os.replace = faulty_replace

    rmtree = shutil.rmtree

    def faulty_rmtree(path, *args, **kwargs):
        p = Path(path)
        callers, frame = set(), sys._getframe(1)
        while frame is not None:
            callers.add(frame.f_code.co_name)
            frame = frame.f_back
        point = "prune_rmtree" if "prune" in callers else "replace_rmtree"
        # a written checkpoint being removed, under its step_ name or any name it was moved to
        if "save" in callers and "step_" in p.name and (p / "manifest.json").is_file():
            fault.hit(point, "before")
            if fault.hit(point, "partial"):
                # rmtree unlinks in os.scandir order, which the file system decides (ext4 here
                # gives model.safetensors before manifest.json); remove one file other than the
                # manifest, the worst order for a reader.
                victim = sorted(f for f in p.iterdir() if f.name != "manifest.json")[0]
                victim.unlink()
                fault.die()
        return rmtree(path, *args, **kwargs)

    shutil.rmtree = faulty_rmtree

    prune = checkpoint.prune
    checkpoint.prune = lambda root, keep: around("prune", lambda: prune(root, keep))

    restore = trainer.Trainer.restore

    def faulty_restore(self, ckpt):
        return around("restore", lambda: restore(self, ckpt))

    trainer.Trainer.restore = faulty_restore

    log = logger.Logger.log

    def faulty_log(self, step, values):
        return around("metrics_row", lambda: log(self, step, values))

    logger.Logger.log = faulty_log


def child(request: dict, notify_fd: int) -> None:
    """In the forked child: redirect output, install the fault, run the CLI, exit."""
    code = 70
    try:
        fd = os.open(request["log"], os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        os.dup2(fd, 1)
        os.dup2(fd, 2)
        os.close(fd)

        def notify(line: str) -> None:
            os.write(notify_fd, (line + "\n").encode())

        spec = request.get("fault")
        fault = Fault(spec["point"], spec["mode"], spec["k"], notify) if spec else None
        install(fault, notify)
        from genlab import cli

        code = cli.main(request["argv"])
    except BaseException:
        traceback.print_exc()
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)


class Server:
    """Forks a child per request; keeps the timing estimates that scale random kill delays."""

    def __init__(self) -> None:
        self.startup_s = 1.0  # fork to training loop, updated from each child that got there
        self.interval_s = 0.05  # between checkpoints, updated from each child

    def run(self, request: dict) -> dict:
        if len(os.listdir("/proc/self/task")) > 1:  # fork copies only this thread
            raise RuntimeError("the server must stay single-threaded (OMP_NUM_THREADS=1)")
        read_fd, notify_fd = os.pipe()
        sys.stdout.flush()
        sys.stderr.flush()
        t0 = time.monotonic()
        pid = os.fork()
        if pid == 0:
            os.close(read_fd)
            child(request, notify_fd)
        os.close(notify_fd)
        kill = request.get("kill")
        deadline = t0 + kill["u"] * self.startup_s if kill and kill["after"] == "fork" else None
        events: list[list] = []
        fired = None
        buffer = b""
        status = None
        killed = None
        give_up = t0 + request.get("timeout_s", 300)
        while status is None:
            wait = 0.02 if deadline is None else min(0.02, deadline - time.monotonic())
            if read_fd >= 0 and select.select([read_fd], [], [], max(0.0, wait))[0]:
                chunk = os.read(read_fd, 4096)
                if not chunk:  # the child exited (or is exiting)
                    os.close(read_fd)
                    read_fd = -1
                buffer += chunk
                *lines, buffer = buffer.split(b"\n")
                for line in lines:
                    kind, value = line.decode().split(" ", 1)
                    if kind == "F":
                        fired = value
                        continue
                    events.append([kind, int(value), time.monotonic() - t0])
                    if deadline is None:
                        deadline = self.schedule(kill, events, t0)
            elif read_fd < 0:
                time.sleep(max(0.0, wait))
            done, raw = os.waitpid(pid, os.WNOHANG)
            if done:
                status = raw
            elif (deadline is not None and time.monotonic() >= deadline) or (
                time.monotonic() >= give_up
            ):
                os.kill(pid, signal.SIGKILL)  # not reaped yet, so the pid is still this child
                killed = "server" if time.monotonic() < give_up else "timeout"
                status = os.waitpid(pid, 0)[1]
        if read_fd >= 0:  # a fault's marker may still be in the pipe
            while chunk := os.read(read_fd, 4096):
                buffer += chunk
            os.close(read_fd)
        for line in buffer.split(b"\n"):
            if line.startswith(b"F "):
                fired = line.decode()[2:]
        self.learn(events)
        sig = os.WTERMSIG(status) if os.WIFSIGNALED(status) else None
        if sig is None:
            killed_by = None
        else:
            killed_by = "fault" if fired else killed or "other"
        return {
            "code": os.WEXITSTATUS(status) if os.WIFEXITED(status) else None,
            "signal": sig,
            "killed_by": killed_by,
            "fault": fired,
            "events": events,
        }

    def schedule(self, kill: dict | None, events: list[list], t0: float) -> float | None:
        """The kill deadline once the child reached the event the request waits for."""
        if not kill or kill["after"] != "checkpoint":
            return None
        times = [t for kind, _, t in events]  # "L" first, then each "C"
        j = kill["j"]
        if len(times) <= j:
            return None
        interval = times[j] - times[j - 1] if j >= 1 else self.interval_s
        return t0 + times[j] + kill["u"] * interval

    def learn(self, events: list[list]) -> None:
        times = [t for _, _, t in events]
        if times:
            self.startup_s = times[0]
        gaps = sorted(b - a for a, b in zip(times[1:], times[2:]))  # between checkpoints
        if gaps:
            self.interval_s = gaps[len(gaps) // 2]


def main() -> None:
    # What every child imports, once: genlab, and what training imports lazily (TensorBoard's
    # writer; torch._dynamo, which the optimisers import on their first step).
    import torch._dynamo  # noqa: F401
    import torch.utils.tensorboard  # noqa: F401

    import genlab.cli  # noqa: F401

    replies = os.fdopen(os.dup(1), "w")
    os.dup2(2, 1)  # anything else printed goes to stderr, never into the replies
    server = Server()
    while line := sys.stdin.readline():
        if line.strip():
            replies.write(json.dumps(server.run(json.loads(line))) + "\n")
            replies.flush()


if __name__ == "__main__":
    main()
