"""Matplotlib figures: loss curves from metrics.csv."""

from __future__ import annotations

import csv
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
