"""Matplotlib figures: loss curves from metrics.csv, alone or overlaid across runs."""

from __future__ import annotations

import csv
from collections.abc import Sequence
from pathlib import Path

from genlab.viz.grids import pyplot, save_figure


def loss_curves(metrics_csv: str | Path, out: str | Path) -> Path:
    """One panel per logged quantity against training step."""
    with open(metrics_csv, newline="") as f:
        rows = list(csv.DictReader(f))
    if not rows:
        raise ValueError(f"{metrics_csv} has no rows")
    keys = [k for k in rows[0] if k != "step"]
    steps = [int(r["step"]) for r in rows]
    fig, axes = pyplot().subplots(1, len(keys), figsize=(3.2 * len(keys), 2.8), squeeze=False)
    for ax, key in zip(axes[0], keys):
        ax.plot(steps, [float(r[key]) if r[key] else float("nan") for r in rows])
        ax.set_title(key)
        ax.set_xlabel("step")
    return save_figure(fig, out)


def overlay_curves(csv_paths: Sequence[tuple[str, Path]], key: str, out: Path) -> Path:
    """One panel: the `key` column of each run's metrics.csv against step, one line per run.

    Runs whose CSV lacks `key` are skipped; empty cells (a quantity not logged that step) are gaps.
    """
    fig, ax = pyplot().subplots(figsize=(5, 3.2))
    plotted = 0
    for name, path in csv_paths:
        with open(path, newline="") as f:
            rows = list(csv.DictReader(f))
        if not rows or key not in rows[0]:
            continue
        steps = [int(r["step"]) for r in rows]
        ax.plot(steps, [float(r[key]) if r[key] else float("nan") for r in rows], label=name)
        plotted += 1
    if not plotted:
        pyplot().close(fig)
        raise ValueError(f"no run logged {key!r}: {[str(p) for _, p in csv_paths]}")
    ax.set_title(key)
    ax.set_xlabel("step")
    ax.legend()
    return save_figure(fig, out)
