"""`genlab compare`: runs side by side in one self-contained HTML page.

For each run: a sample grid (fixed seed), its loss curves, and its metrics from RUN/eval.json
(computed first, and saved, when `metrics` are given). One overlay plot puts every run's `loss`
on the same axes. The page embeds its images, so it can be mailed or checked in as one file.
"""

from __future__ import annotations

import json
import math
import tempfile
from collections.abc import Sequence
from pathlib import Path

from genlab.config import write_text_atomic
from genlab.errors import GenlabError
from genlab.metrics import Report, evaluate
from genlab.train import Run, load_run
from genlab.viz.figures import sample_figure
from genlab.viz.plots import loss_curves, overlay_curves
from genlab.viz.report import ReportRun, write_report

EVAL_JSON = "eval.json"  # {metric: value}: the contract of SPEC section 1
EVAL_NOTES = "eval_notes.json"  # {"notes": {metric: protocol}, "skipped": {metric: reason}}


def save_report(run_dir: Path, report: Report) -> None:
    """Write RUN/eval.json (flat values) and RUN/eval_notes.json (protocol and skips).

    Non-finite values (PSNR of an exact reconstruction, the mode KL with no good sample) are
    written as null: strict JSON has no inf or nan.
    """
    values = {k: (v if math.isfinite(v) else None) for k, v in report.values.items()}
    write_text_atomic(run_dir / EVAL_JSON, json.dumps(values, indent=1) + "\n")
    notes = {"notes": report.notes, "skipped": report.skipped}
    write_text_atomic(run_dir / EVAL_NOTES, json.dumps(notes, indent=1) + "\n")


def read_report(run_dir: Path) -> Report:
    """The run's saved evaluation, or an empty Report saying how to make one."""
    path = run_dir / EVAL_JSON
    if not path.is_file():
        return Report(skipped={"all": "no eval.json yet: run genlab evaluate, or pass --metrics"})
    try:
        values = json.loads(path.read_text())
        extra = json.loads((run_dir / EVAL_NOTES).read_text())
    except FileNotFoundError:
        extra = {}
    except ValueError as e:
        raise GenlabError(f"{path} is not valid JSON ({e})") from None
    # Files of a run may be edited or crafted: check the shapes before the page uses them.
    if not isinstance(values, dict) or not all(
        isinstance(v, (int, float)) and not isinstance(v, bool) or v is None
        for v in values.values()
    ):
        raise GenlabError(f"{path} is not a genlab eval.json ({{metric: number or null}})")
    if not isinstance(extra, dict) or not all(
        isinstance(extra.get(part, {}), dict) for part in ("notes", "skipped")
    ):
        raise GenlabError(f"{run_dir / EVAL_NOTES} is not a genlab evaluation notes file")
    return Report(values, extra.get("notes", {}), extra.get("skipped", {}))


def describe(run: Run) -> str:
    return f"{run.config.model} on {run.spec.name}, {run.step} steps"


def compare(
    run_dirs: Sequence[str | Path],
    out: str | Path,
    *,
    metrics: Sequence[str] | None = None,
    n: int | None = None,
    k: int = 100,
    seed: int = 0,
    device: str = "cpu",
    inception_weights: str | None = None,
    title: str = "genlab comparison",
    footer: str = "",
) -> Path:
    """Write the comparison page for `run_dirs` to `out` (.html); returns its path."""
    out = Path(out)
    if out.suffix.lower() not in (".html", ".htm"):
        raise GenlabError(f"--report must end in .html; got {out.name}")
    if not run_dirs:
        raise GenlabError("compare needs at least one run directory")
    runs = [load_run(d, device=device) for d in run_dirs]  # every run loads before any work
    names = [r.dir.name for r in runs]
    if len(set(names)) < len(names):  # same leaf names in different parents: use full paths
        names = [str(r.dir) for r in runs]
    entries = []
    with tempfile.TemporaryDirectory(prefix="genlab-compare-") as tmp_dir:
        tmp = Path(tmp_dir)
        for i, (name, run) in enumerate(zip(names, runs)):
            if metrics:
                report = evaluate(
                    run.model,
                    run.data(),
                    list(metrics),
                    n=n,
                    k=k,
                    seed=seed,
                    inception_weights=inception_weights,
                )
                save_report(run.dir, report)
            else:
                report = read_report(run.dir)
            reference = None if run.spec.is_image else run.data().x_test[:2000]
            samples = sample_figure(
                run.model, tmp / f"{i}-samples.png", reference=reference, seed=seed, title=name
            )
            csv = run.dir / "metrics.csv"
            curves = loss_curves(csv, tmp / f"{i}-curves.png") if csv.is_file() else None
            notes = {**report.notes, **{f"skipped {m}": why for m, why in report.skipped.items()}}
            entries.append(ReportRun(name, describe(run), samples, curves, report.values, notes))
        figures = []
        logged = [(name, r.dir / "metrics.csv") for name, r in zip(names, runs)]
        logged = [(name, csv) for name, csv in logged if csv.is_file()]
        if len(logged) > 1:
            try:
                figures.append(
                    ("loss of every run", overlay_curves(logged, "loss", tmp / "loss.png"))
                )
            except ValueError:  # no run logs a plain `loss` (e.g. only multi-phase models)
                pass
        return write_report(out, entries, title=title, figures=figures, footer=footer)
