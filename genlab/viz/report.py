"""One self-contained HTML page comparing runs: metrics table, sample grids, curves, notes.

Everything is inline (PNG as base64 data: URIs, CSS in a <style>), so the file can be mailed or
opened offline. The only script marks on the <body> how many images the browser decoded, which lets
a headless-browser test check that the page really shows its pictures.
"""

from __future__ import annotations

import base64
import datetime
import html
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from genlab.atomic import atomic_write

_CSS = """
body { font-family: sans-serif; margin: 1.5em; color: #222; background: #fff; }
h1 { margin-bottom: 0.2em; }
.meta { color: #666; margin: 0.2em 0; }
table { border-collapse: collapse; margin: 0.5em 0; }
th, td { border: 1px solid #ccc; padding: 0.3em 0.7em; }
td { text-align: right; font-variant-numeric: tabular-nums; }
th { background: #f2f2f2; } th[scope=row] { text-align: left; font-family: monospace, monospace; }
.row { display: flex; flex-wrap: wrap; gap: 1.2em; align-items: flex-start; }
figure { margin: 0; max-width: 520px; }
figure img { display: block; max-width: 520px; border: 1px solid #ddd; }
.samples img { min-width: 256px; max-width: 400px; image-rendering: pixelated; }
figcaption { font-size: 0.9em; margin-top: 0.3em; }
.none { color: #999; font-style: italic; }
"""

# On load, count the <img> elements the browser actually decoded (read by tests via --dump-dom).
_SCRIPT = """
window.addEventListener("load", () => {
  const imgs = Array.from(document.images);
  document.body.dataset.images = imgs.length;
  document.body.dataset.imagesLoaded = imgs.filter(i => i.complete && i.naturalWidth > 0).length;
});
"""


_NONE = '<div class="none">(none)</div>'


@dataclass
class ReportRun:
    """What the report shows for one run (a column of the table, one figure per section)."""

    name: str  # run directory name, used as column header
    details: str  # e.g. "vae on digits, 3000 steps"
    samples: Path | None = None  # PNG sample grid (or scatter plot)
    curves: Path | None = None  # PNG of loss curves
    metrics: dict[str, float] = field(default_factory=dict)  # flat eval.json values
    notes: dict[str, str] = field(default_factory=dict)  # protocol notes per metric


def _esc(text: object) -> str:
    return html.escape(str(text))


def _img(path: Path | None, alt: str) -> str:
    """An <img> with the PNG inlined, or "(none)"; a missing file raises FileNotFoundError."""
    if path is None:
        return _NONE
    data = base64.b64encode(Path(path).read_bytes()).decode("ascii")
    return f'<img src="data:image/png;base64,{data}" alt="{_esc(alt)}">'


def _figure(path: Path | None, caption: str, sub: str = "") -> str:
    text = f"<b>{_esc(caption)}</b>" + (f"<br><small>{_esc(sub)}</small>" if sub else "")
    return f"<figure>{_img(path, caption)}<figcaption>{text}</figcaption></figure>"


def _row(items: list[str], cls: str = "row") -> str:
    return f'<div class="{cls}">' + "".join(items) + "</div>"


def _fmt(value: object) -> str:
    if value is None:  # eval.json writes non-finite values as null
        return "n/a"
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        if float(value).is_integer() and abs(value) < 1e9:  # sample sizes: 10000, not 1e+04
            return str(int(value))
        return f"{value:.4g}"
    return _esc(value)


def _metrics_table(runs: Sequence[ReportRun]) -> str:
    keys = list(dict.fromkeys(k for run in runs for k in run.metrics))  # first-seen order
    head = "".join(f'<th scope="col">{_esc(r.name)}</th>' for r in runs)
    rows = [
        f'<tr><th scope="row">{_esc(k)}</th>'
        + "".join(f"<td>{_fmt(r.metrics[k]) if k in r.metrics else '&mdash;'}</td>" for r in runs)
        + "</tr>"
        for k in keys
    ]
    return (
        f'<table id="metrics"><thead><tr><th>metric</th>{head}</tr></thead>'
        f"<tbody>{''.join(rows)}</tbody></table>"
    )


def _notes(runs: Sequence[ReportRun]) -> str:
    parts = []
    for run in runs:
        items = "".join(f"<li><b>{_esc(k)}</b>: {_esc(v)}</li>" for k, v in run.notes.items())
        parts.append(f"<h3>{_esc(run.name)}</h3>" + (f"<ul>{items}</ul>" if items else _NONE))
    return "".join(parts)


def write_report(
    out: str | Path,
    runs: Sequence[ReportRun],
    *,
    title: str = "genlab comparison",
    figures: Sequence[tuple[str, Path]] = (),
    footer: str = "",
) -> Path:
    """Write the comparison page for `runs` to `out` (atomically) and return its path."""
    out = Path(out)
    date = datetime.datetime.now().strftime("%Y-%m-%d %H:%M")
    body = [
        f"<h1>{_esc(title)}</h1>",
        f'<p class="meta">generated {date}</p>',
        f'<p class="meta">{_esc(footer)}</p>' if footer else "",
        "<h2>Metrics</h2>",
        _metrics_table(runs),
        "<h2>Samples</h2>",
        _row([_figure(r.samples, r.name, r.details) for r in runs], "row samples"),
        "<h2>Training curves</h2>",
        _row([_figure(r.curves, r.name, r.details) for r in runs]),
    ]
    if figures:
        body += ["<h2>Figures</h2>", _row([_figure(path, caption) for caption, path in figures])]
    body += ["<h2>Protocol notes</h2>", _notes(runs)]
    page = (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>{_esc(title)}</title><style>{_CSS}</style><script>{_SCRIPT}</script></head>\n"
        "<body>\n" + "\n".join(b for b in body if b) + "\n</body></html>\n"
    )
    with atomic_write(out) as tmp:
        tmp.write_text(page, encoding="utf-8")
    return out
