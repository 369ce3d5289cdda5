"""Training throughput (examples/s) against processes, torch.compile and precision.

Two parts, both the one Trainer on genlab's `vae` (the global batch is split across processes):
  - mlp-toy:     MLP VAE (hidden 256, 256) on `moons`, global batch 256;
  - conv-digits: conv VAE (channels 32, 64) on `digits` (8x8), global batch 128.
Each configuration is a layout (P processes x T threads each; P > 1 runs under torchrun with
DDP, gloo on CPU, nccl on GPU), train.compile off/on and train.precision fp32/bf16. It warms up
(`--warmup` steps: the first step builds DDP buckets and, with compile, the graphs), then times
`--runs` runs of `--steps` optimiser steps (Trainer.train_step, no checkpoints or sample grids),
with a barrier before and after each run; the runs go round the configurations of a layout so
that changes in the machine's load fall on all of them alike. The table gives the median
examples/s of the runs (global batch x steps / seconds) and their range. CUDA configurations
are added when torch.cuda.is_available() (one process per GPU).

On the 2-core benchmark machine 2 processes share the 2 cores: compare "2x1" with "1x2" (the
same cores, one process with 2 threads), not only with "1x1". OMP_WAIT_POLICY=PASSIVE is set
for every process so idle OpenMP threads do not spin on the other process's core.

    python benchmarks/scale_throughput.py                       # everything (CPU, CUDA if present)
    python benchmarks/scale_throughput.py --parts mlp-toy --layouts 1x1,2x1 --compile off
    python benchmarks/scale_throughput.py --quick               # smoke check, < 1 min
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path

import _bench
import torch

PARTS = {
    # part -> (model, dataset, global batch, overrides)
    "mlp-toy": ("vae", "moons", 256, ["model.hidden=[256,256]"]),
    "conv-digits": ("vae", "digits", 128, ["model.arch=conv", "model.channels=[32,64]"]),
}


def csv(text: str) -> list[str]:
    return [t for t in text.split(",") if t]


# ------------------------------------------------------------------------------------- worker
def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    if torch.distributed.is_initialized():
        torch.distributed.barrier()


def prepare(part: str, device: str, compile_: bool, precision: str, args, run_dir: Path):
    """A Trainer for one configuration, warmed up: (trainer, global batch, warm-up seconds)."""
    from genlab.config import resolve
    from genlab.data import load_config
    from genlab.train.run import build_model
    from genlab.train.trainer import Trainer, seed_everything

    model_name, data_name, batch, overrides = PARTS[part]
    cfg = resolve(
        model_name,
        data_name,
        None,
        [
            *overrides,
            f"train.batch_size={batch}",
            f"train.device={device}",
            f"train.compile={str(compile_).lower()}",
            f"train.precision={precision}",
            "train.steps=1000000",
            "train.checkpoint_every=1000000",
            "train.sample_every=1000000",
            "train.log_every=1000000",
        ],
    )
    data = load_config(cfg.data)
    seed_everything(cfg.train.seed)
    trainer = Trainer(build_model(cfg, data.spec), data, cfg.train, run_dir, progress=False)
    trainer.model.train()
    start = time.perf_counter()
    for _ in range(args.warmup):  # DDP buckets, autotuning, and with compile the graphs
        trainer.train_step()
    sync(trainer.device)
    return trainer, batch, time.perf_counter() - start


def timed_run(trainer, batch: int, steps: int) -> float:
    """Examples per second over `steps` optimiser steps (global batch x steps / seconds)."""
    sync(trainer.device)
    t0 = time.perf_counter()
    for _ in range(steps):
        trainer.train_step()
    sync(trainer.device)
    return batch * steps / (time.perf_counter() - t0)


def worker(args) -> int:
    """All selected configurations of one layout: each is built and warmed up, then the timed
    runs go round the configurations (run 1 of each, run 2 of each, ...), so that a change in
    the machine's load falls on all of them alike. Rank 0 writes JSON lines to args.worker."""
    threads = int(os.environ.get("OMP_NUM_THREADS", "1"))
    torch.set_num_threads(threads)
    # The configurations share the model code (VAE.forward) in one process. A training run has
    # one batch shape; here the second shape would make dynamo retrace with a symbolic batch
    # size, which torch.randn(..., generator=...) in the reparameterisation does not support
    # ("SymIntArrayRef expected to contain only concrete integers"): keep shapes static.
    torch._dynamo.config.automatic_dynamic_shapes = False
    from genlab.train import distributed

    ranks = distributed.setup(torch.device(args.device))
    run_root = Path(tempfile.mkdtemp(prefix="genlab-scale-"))
    rows, trainers = [], []
    try:
        for part in csv(args.parts):
            for compile_ in [c == "on" for c in csv(args.compile)]:
                for precision in csv(args.precision):
                    row = {
                        "part": part,
                        "device": args.device,
                        "procs": ranks.world,
                        "threads": threads,
                        "compile": compile_,
                        "precision": precision,
                        "rates": [],
                    }
                    name = f"{part}-{args.device}-{compile_}-{precision}"
                    try:
                        trainer, batch, row["warmup_s"] = prepare(
                            part, args.device, compile_, precision, args, run_root / name
                        )
                        trainers.append((row, trainer, batch))
                    except Exception as e:  # e.g. no C++ compiler for inductor: a table row
                        first = str(e).strip().splitlines()[0] if str(e).strip() else ""
                        row["error"] = f"{type(e).__name__}: {first}"[:200]
                        if args.verbose:
                            traceback.print_exc()
                    rows.append(row)
        for _ in range(args.runs):
            for row, trainer, batch in trainers:
                row["rates"].append(timed_run(trainer, batch, args.steps))
        for _, trainer, _ in trainers:
            trainer.close_loggers()
        if ranks.main:
            with open(args.worker, "a") as f:
                for row in rows:
                    f.write(json.dumps(row) + "\n")
                    if args.verbose:
                        print(json.dumps(row), flush=True)
    finally:
        distributed.teardown()
        shutil.rmtree(run_root, ignore_errors=True)
    return 0


# ------------------------------------------------------------------------------------- parent
def launch(layout: str, device: str, args, out: Path) -> None:
    procs, threads = (int(v) for v in layout.split("x"))
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "OMP_WAIT_POLICY": "PASSIVE"}
    script = str(Path(__file__).resolve())
    launcher = (
        ["torchrun", "--standalone", f"--nproc_per_node={procs}", script]
        if procs > 1
        else [sys.executable, script]
    )
    passed = ["--parts", args.parts, "--compile", args.compile, "--precision", args.precision]
    timing = ["--warmup", str(args.warmup), "--steps", str(args.steps), "--runs", str(args.runs)]
    verbose = ["--verbose"] if args.verbose else []
    cmd = [*launcher, "--worker", str(out), "--device", device, *passed, *timing, *verbose]
    print(f"# {device} {layout}: {' '.join(cmd[:4])} ...", file=sys.stderr, flush=True)
    subprocess.run(
        cmd, env=env, check=False, stdout=subprocess.DEVNULL if not args.verbose else None
    )


def table(rows: list[dict]) -> str:
    base: dict[tuple[str, str], float] = {}
    for r in rows:
        if "rates" in r and r["procs"] == 1 and r["threads"] == 1 and not r["compile"]:
            if r["precision"] == "fp32":
                base[(r["part"], r["device"])] = statistics.median(r["rates"])
    lines = [
        "| part | device | procs x threads | compile | precision | examples/s (median) | range "
        "| warm-up s | vs 1x1 fp32 eager |",
        "|---|---|---|---|---|---:|---|---:|---:|",
    ]
    for r in rows:
        head = (
            f"| {r['part']} | {r['device']} | {r['procs']}x{r['threads']} | "
            f"{'on' if r['compile'] else 'off'} | {r['precision']} |"
        )
        if "error" in r:
            lines.append(f"{head} failed: {r['error']} | | | |")
            continue
        med = statistics.median(r["rates"])
        ref = base.get((r["part"], r["device"]))
        rel = f"{med / ref:.2f}x" if ref else ""
        lo, hi = min(r["rates"]), max(r["rates"])
        lines.append(f"{head} {med:,.0f} | {lo:,.0f} to {hi:,.0f} | {r['warmup_s']:.1f} | {rel} |")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--parts", default=",".join(PARTS), help=f"of {', '.join(PARTS)}")
    parser.add_argument("--layouts", help="processes x threads, e.g. 2x1 (default 1x1,1x2,2x1)")
    parser.add_argument("--compile", default="off,on", help="off, on or both")
    parser.add_argument("--precision", default="fp32,bf16", help="fp32, bf16 (, fp16 on CUDA)")
    parser.add_argument("--device", default="auto", help="cpu, cuda, or auto (cpu + cuda if any)")
    parser.add_argument("--steps", type=int, default=100, help="optimiser steps per timed run")
    parser.add_argument("--runs", type=int, default=3, help="timed runs (>= 3), median reported")
    parser.add_argument("--warmup", type=int, default=10, help="untimed steps first")
    parser.add_argument("--quick", action="store_true", help="smoke check: few steps, 1x1 and 2x1")
    parser.add_argument("--json", help="also write the rows here")
    parser.add_argument("--verbose", action="store_true")
    parser.add_argument("--worker", help=argparse.SUPPRESS)  # internal: one layout's runs
    args = parser.parse_args()
    if args.worker:
        return worker(args)
    if args.runs < 3:
        parser.error("--runs must be >= 3 (the median of at least 3 timed runs)")
    for part in csv(args.parts):
        if part not in PARTS:
            parser.error(f"unknown part {part!r}; choose from {', '.join(PARTS)}")
    if args.quick:
        args.steps, args.warmup = 5, 3
    args.layouts = args.layouts or ("1x1,2x1" if args.quick else "1x1,1x2,2x1")
    devices = ["cpu", "cuda"] if args.device == "auto" else csv(args.device)
    if "cuda" in devices and not torch.cuda.is_available():
        if args.device != "auto":
            parser.error("--device cuda but torch.cuda.is_available() is False")
        devices.remove("cuda")
    out = Path(tempfile.mkdtemp(prefix="genlab-scale-")) / "rows.jsonl"
    start, load_before = time.perf_counter(), os.getloadavg()
    for device in devices:
        for layout in csv(args.layouts):
            procs = int(layout.split("x")[0])
            if device == "cuda" and procs > torch.cuda.device_count():
                continue  # one process per GPU
            launch(layout, device, args, out)
    rows = [json.loads(line) for line in out.read_text().splitlines()] if out.exists() else []
    print(f"machine: {_bench.machine()}")
    loads = [f"{v:.1f}" for v in (*load_before, *os.getloadavg())]
    print(f"load average (1, 5, 15 min): before {' '.join(loads[:3])}, after {' '.join(loads[3:])}")
    print(
        f"steps per run {args.steps}, runs {args.runs}, warm-up {args.warmup}, total time "
        f"{_bench.minutes(time.perf_counter() - start)}"
    )
    print(table(rows))
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))
    shutil.rmtree(out.parent, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
