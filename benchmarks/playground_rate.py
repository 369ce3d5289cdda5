"""How often the playground's picture updates, per family, and how fast it trains meanwhile.

For each model (one per picture kind, with the playground's defaults) a RunManager run on a toy
is started and left running for `--seconds`; the script polls it like the page does (every
0.25 s) and counts the distinct snapshots it saw, the training steps done and the time one
snapshot costs. Repeated `--repeats` times; the table gives medians. The page's claim is
"updating several times a second": snapshots per second should be well above 1.

    python benchmarks/playground_rate.py                    # gan, vae, ddpm, score-sde, realnvp
    python benchmarks/playground_rate.py --models gan --seconds 5 --repeats 1   # smoke check
"""

from __future__ import annotations

import argparse
import statistics
import time

import _bench  # one thread, set before torch is imported

from genlab.playground.sessions import RunManager  # noqa: E402

MODELS = {  # model -> (dataset, the picture it shows)
    "gan": ("ring8", "critic"),
    "vae": ("moons", "latent"),
    "ddpm": ("moons", "score"),
    "score-sde": ("moons", "score"),
    "realnvp": ("moons", "density"),
}


def measure(manager: RunManager, model: str, dataset: str, seconds: float) -> dict[str, float]:
    run = manager.create(dataset, model)
    manager.start(run["id"])
    seen, start = set(), time.monotonic()
    while time.monotonic() - start < seconds:
        snap = manager.describe(run["id"], with_losses=False)["snapshot"]
        seen.add(snap["step"])
        time.sleep(0.25)
    state = manager.describe(run["id"], with_losses=False)
    cost = manager.get(run["id"]).snapshot_cost
    manager.delete(run["id"])
    elapsed = time.monotonic() - start
    return {
        "snapshots_per_s": (len(seen) - 1) / elapsed,  # the first one was there at creation
        "steps_per_s": state["step"] / elapsed,
        "snapshot_ms": 1000 * cost,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default=",".join(MODELS))
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    _bench.one_thread()
    print(f"# {_bench.machine()}")
    print("| model | picture | snapshots/s | training steps/s | one snapshot (ms) |")
    print("|---|---|---|---|---|")
    manager = RunManager()
    try:
        for model in args.models.split(","):
            dataset, kind = MODELS[model]
            rows = [measure(manager, model, dataset, args.seconds) for _ in range(args.repeats)]
            med = {k: statistics.median(r[k] for r in rows) for k in rows[0]}
            print(
                f"| {model} ({dataset}) | {kind} | {med['snapshots_per_s']:.1f} | "
                f"{med['steps_per_s']:.0f} | {med['snapshot_ms']:.0f} |",
                flush=True,
            )
    finally:
        manager.close()


if __name__ == "__main__":
    main()
