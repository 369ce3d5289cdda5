"""The HTML comparison report: self-contained markup, and a real browser that shows its pictures."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import WINDOW, needs_chromium, render
from PIL import Image

from genlab.viz.grids import save_grid
from genlab.viz.plots import overlay_curves
from genlab.viz.report import ReportRun, write_report


def _csv(path: Path, columns: list[str], rows: list[list[float]]) -> Path:
    path.write_text(",".join(columns) + "\n" + "".join(",".join(map(str, r)) + "\n" for r in rows))
    return path


def _runs(tmp: Path, images: bool = True) -> list[ReportRun]:
    """Two runs with real PNGs (random sample grids, overlaid loss curves), or with none."""
    g = torch.Generator().manual_seed(0)
    csvs = [
        ("a<b", _csv(tmp / "a.csv", ["step", "loss"], [[s, 1 / (s + 1)] for s in range(0, 50, 5)])),
        (
            "run2",
            _csv(tmp / "b.csv", ["step", "loss", "kl"], [[s, 2 / (s + 2), 0.1] for s in range(10)]),
        ),
    ]
    curves = overlay_curves(csvs, "loss", tmp / "loss.png") if images else None
    runs = []
    for i, (name, _) in enumerate(csvs):
        grid = (
            save_grid(torch.rand(16, 1, 8, 8, generator=g), tmp / f"s{i}.png") if images else None
        )
        metrics = {"fid": 12.3456789, "nll_bits": 1.0 / 3} if i == 0 else {"fid": 3.14159e-5}
        notes = {"fid": "10k samples vs test split <digits>"} if i == 0 else {}
        runs.append(
            ReportRun(name, f"vae on digits, {1000 * (i + 1)} steps", grid, curves, metrics, notes)
        )
    return runs


def test_report_is_one_self_contained_file(tmp_path):
    runs = _runs(tmp_path)
    out = write_report(
        tmp_path / "report.html", runs, figures=[("overlay", runs[0].curves)], footer="f&g"
    )
    assert sorted(p.name for p in tmp_path.glob("*.htm*")) == ["report.html"]
    assert not list(tmp_path.glob(".*tmp"))  # atomic write left nothing behind
    text = out.read_text()
    assert "http://" not in text and "https://" not in text
    srcs = re.findall(r'src="([^"]*)"', text)
    assert len(srcs) == 5 and all(s.startswith("data:image/png;base64,") for s in srcs)
    table = re.search(r'<table id="metrics">(.*?)</table>', text, re.S).group(1)
    rows = re.findall(r"<tr>(.*?)</tr>", table.split("<tbody>")[1])
    assert [re.search(r"<th[^>]*>(.*?)</th>", r).group(1) for r in rows] == ["fid", "nll_bits"]
    assert re.findall(r"<td>(.*?)</td>", rows[0]) == ["12.35", "3.142e-05"]
    assert re.findall(r"<td>(.*?)</td>", rows[1]) == ["0.3333", "&mdash;"]
    assert "a&lt;b" in text and "a<b" not in text
    assert "&lt;digits&gt;" in text and "f&amp;g" in text


def test_report_without_images_and_missing_png(tmp_path):
    text = write_report(tmp_path / "r.html", _runs(tmp_path, images=False)).read_text()
    assert "<img" not in text and text.count("(none)") >= 4
    bad = [ReportRun("x", "", tmp_path / "missing.png", None, {}, {})]
    with pytest.raises(FileNotFoundError):
        write_report(tmp_path / "bad.html", bad)
    assert not (tmp_path / "bad.html").exists()


def test_overlay_curves_needs_the_key(tmp_path):
    csvs = [("a", _csv(tmp_path / "a.csv", ["step", "loss"], [[0, 1.0], [1, 0.5]]))]
    with pytest.raises(ValueError, match="kl"):
        overlay_curves(csvs, "kl", tmp_path / "kl.png")
    assert Image.open(overlay_curves(csvs, "loss", tmp_path / "loss.png")).size[0] > 100


def _non_white(png: Path) -> int:
    return int((np.asarray(Image.open(png).convert("L")) < 200).sum())


@needs_chromium
def test_report_renders_in_chromium(tmp_path):
    runs = _runs(tmp_path)
    html = write_report(tmp_path / "with.html", runs, figures=[("overlay", runs[0].curves)])
    png, dom = render(html, tmp_path)
    table = re.search(r'<table id="metrics">(.*?)</table>', dom, re.S)
    assert table and len(re.findall(r"<tr>", table.group(1))) == 1 + 2  # header + fid, nll_bits
    assert 'data-images="5"' in dom and 'data-images-loaded="5"' in dom

    shot = Image.open(png)
    assert shot.size == WINDOW
    assert np.asarray(shot.convert("L")).std() > 10  # not a blank page

    bare = write_report(tmp_path / "without.html", _runs(tmp_path, images=False))
    bare_png, _ = render(bare, tmp_path, dom=False)
    # Random grids and curves put many dark pixels on the page (about 7x the text-only page).
    assert _non_white(png) > 4 * _non_white(bare_png)
