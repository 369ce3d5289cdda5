"""Training logs: metrics.csv / eval.csv (append-only, trimmed on resume) and TensorBoard events."""

from __future__ import annotations

import csv
from pathlib import Path

from genlab.atomic import atomic_write


class Logger:
    """Rows of {column: value} keyed by step, written to CSV and TensorBoard."""

    def __init__(
        self,
        run_dir: Path,
        start_step: int = 0,
        tensorboard: bool = True,
        name: str = "metrics.csv",
    ) -> None:
        self.path = run_dir / name
        self.columns: list[str] | None = None
        if self.path.exists():
            self.trim(start_step)
        self.tb = None
        if tensorboard:
            from torch.utils.tensorboard import SummaryWriter

            self.tb = SummaryWriter(str(run_dir / "tensorboard"), purge_step=start_step or None)

    def trim(self, start_step: int) -> None:
        """Drop rows logged after the checkpoint we resume from (they will be logged again)."""
        with open(self.path, newline="") as f:
            rows = list(csv.DictReader(f))
            columns = list(rows[0].keys()) if rows else None
        kept = [r for r in rows if int(r["step"]) <= start_step]
        if columns:
            self.columns = columns
            self.write_all(kept)

    def write_all(self, rows: list[dict[str, str]]) -> None:
        with atomic_write(self.path) as tmp, open(tmp, "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=self.columns)
            w.writeheader()
            w.writerows(rows)

    def log(self, step: int, values: dict[str, float]) -> None:
        row = {"step": step, **{k: f"{v:.6g}" for k, v in values.items()}}
        if self.columns is None:
            self.columns = list(row)
            self.write_all([])
        with open(self.path, "a", newline="") as f:
            csv.DictWriter(f, fieldnames=self.columns, extrasaction="ignore").writerow(row)
        self.scalars(step, values)

    def scalars(self, step: int, values: dict[str, float], prefix: str = "") -> None:
        """TensorBoard only (e.g. eval/ values, whose CSV is eval.csv)."""
        if self.tb is not None:
            for k, v in values.items():
                self.tb.add_scalar(prefix + k, v, step)

    def close(self) -> None:
        if self.tb is not None:
            self.tb.close()
