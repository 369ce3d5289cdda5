"""genlab playground end to end in headless Debian Chromium driven by Playwright: start a run,
see the plot change, pause it, switch model, and check the screenshot is not blank.

No browser is downloaded: Playwright drives /usr/bin/chromium (`pip install playwright`; never
`playwright install`). Also a script: `python tests/test_playground_browser.py --screenshot
docs/img/playground.png` trains a GAN on ring8 for a while and saves the page (the docs' image).
"""

from __future__ import annotations

import argparse
import io
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

CHROMIUM = Path("/usr/bin/chromium")
ARGS = [
    "--headless",
    "--no-sandbox",  # tests run as root
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
]
VIEWPORT = {"width": 1200, "height": 1100}

try:
    from playwright.sync_api import sync_playwright
except ImportError:  # CI installs it (the test extra); skip with the reason elsewhere
    sync_playwright = None

needs_browser = pytest.mark.skipif(
    sync_playwright is None or not CHROMIUM.exists(),
    reason="needs Python playwright (pip install playwright) and Debian chromium at "
    "/usr/bin/chromium (apt-get install chromium); no browser is downloaded",
)


@contextmanager
def playground_page(**manager_options) -> Iterator[tuple]:
    """The real server on a free port in a thread, and a Chromium page on it."""
    from genlab.playground import PlaygroundServer

    server = PlaygroundServer("127.0.0.1", 0, **manager_options).start()
    profile = tempfile.mkdtemp(prefix="genlab-chromium-")
    try:
        with sync_playwright() as p:
            browser = p.chromium.launch_persistent_context(
                profile, executable_path=str(CHROMIUM), args=ARGS, viewport=VIEWPORT
            )
            try:
                page = browser.new_page()
                # generous: the first /api/options builds every model, slow on a busy machine
                page.set_default_timeout(120_000)
                errors: list[str] = []
                page.on("pageerror", lambda e: errors.append(str(e)))
                page.goto(server.url)
                page.wait_for_function("document.querySelectorAll('#model option').length > 5")
                yield server, page, errors
            finally:
                browser.close()
    finally:
        server.close()


def canvas_data(page, canvas: str) -> str:
    return page.evaluate(f"document.getElementById('{canvas}').toDataURL()")


def step_count(page) -> int:
    return int(page.inner_text("#step-count"))


def wait_until(predicate, timeout: float = 40.0, every: float = 0.1) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if predicate():
            return
        time.sleep(every)
    raise AssertionError("the page never reached the expected state")


def create_run(page, dataset: str, model: str, fields: dict[str, str] | None = None) -> None:
    page.select_option("#dataset", dataset)
    page.select_option("#model", model)
    for key, value in (fields or {}).items():
        page.fill(f"[data-key='{key}']", value)
    page.click("#create")
    page.wait_for_function(
        f"document.getElementById('state').textContent === 'idle'"
        f" && document.getElementById('model').value === '{model}'"
    )


def colours_and_spread(png: bytes) -> tuple[int, float]:
    """Distinct colours and the pixel standard deviation of a PNG."""
    import numpy as np
    from PIL import Image

    img = np.asarray(Image.open(io.BytesIO(png)).convert("RGB"))
    colours = len(np.unique(img.reshape(-1, 3), axis=0))
    return colours, float(img.std())


@needs_browser
def test_playground_in_chromium(tmp_path: Path) -> None:
    with playground_page(chunk_seconds=0.02, snapshot_seconds=0.1) as (server, page, errors):
        tiny = {"model.hidden": "32,32", "train.batch_size": "64"}
        create_run(page, "ring8", "gan", tiny)
        assert page.inner_text("#kind") == "critic"
        before = canvas_data(page, "points"), canvas_data(page, "picture")

        # start: the step counter advances and the plots are redrawn with new snapshots
        page.click("#start")
        wait_until(lambda: step_count(page) >= 20)
        wait_until(lambda: canvas_data(page, "points") != before[0])
        assert canvas_data(page, "picture") != before[1]
        assert page.inner_text("#state") == "running"

        # pause: the counter stops
        page.click("#pause")
        page.wait_for_function("document.getElementById('state').textContent === 'paused'")
        paused = step_count(page)
        time.sleep(1.0)
        assert step_count(page) == paused
        assert page.inner_text("#metrics").count("/ 8") == 1  # modes captured of ring8's 8

        # switch model: a VAE on moons draws its latent picture
        create_run(page, "moons", "vae", tiny)
        assert page.inner_text("#kind") == "latent" and step_count(page) == 0
        page.click("#step")
        wait_until(lambda: step_count(page) == 10)
        assert "latent space" in page.inner_text("#picture-title")
        assert len(server.manager.list()) == 1  # the page deleted its previous run

        shot = page.screenshot(path=str(tmp_path / "playground.png"), full_page=True)
        colours, spread = colours_and_spread(shot)
        assert colours > 50 and spread > 10, (colours, spread)

        # a diverging run shows its one-line error in the page
        create_run(page, "moons", "vae", {**tiny, "train.lr": "1e10"})
        page.click("#start")
        page.wait_for_function("document.getElementById('state').textContent === 'error'")
        assert "diverged" in page.inner_text("#error") and page.is_visible("#error")
        assert errors == []  # no JavaScript error on the page


def take_screenshot(path: Path, seconds: float, dataset: str, model: str) -> None:
    """Train `model` on `dataset` in the page for `seconds`, pause, save the page as `path`."""
    with playground_page() as (server, page, errors):
        create_run(page, dataset, model)
        page.click("#start")
        time.sleep(seconds)
        page.click("#pause")
        page.wait_for_function("document.getElementById('state').textContent === 'paused'")
        time.sleep(0.5)
        path.parent.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(path), full_page=True)
        if errors:
            raise SystemExit(f"page errors: {errors}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--screenshot", type=Path, required=True)
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--dataset", default="ring8")
    parser.add_argument("--model", default="gan")
    a = parser.parse_args()
    if sync_playwright is None or not CHROMIUM.exists():
        sys.exit("needs playwright and /usr/bin/chromium")
    take_screenshot(a.screenshot, a.seconds, a.dataset, a.model)
