"""Shared fixtures: tiny in-memory datasets and one thread per test process."""

from __future__ import annotations

import contextlib
import dataclasses
import io
import os
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
# One fresh feature-classifier cache per test session (xdist workers inherit it): tests never
# read or write the user's ~/.cache/genlab.
if "GENLAB_TEST_CACHE" not in os.environ:
    os.environ["GENLAB_TEST_CACHE"] = tempfile.mkdtemp(prefix="genlab-test-cache-")
os.environ["GENLAB_CACHE_DIR"] = os.environ["GENLAB_TEST_CACHE"]
torch.set_num_threads(1)

from genlab.data.spec import Data, DataSpec  # noqa: E402

# Child processes (CLI, torchrun) get one thread each: tests run two workers on two cores.
SUBPROCESS_ENV = {**os.environ, "OMP_NUM_THREADS": "1", "OMP_WAIT_POLICY": "PASSIVE"}


@dataclasses.dataclass
class Outcome:
    code: int
    stdout: str
    stderr: str


@contextlib.contextmanager
def working_directory(path: Path | None) -> Iterator[None]:
    """chdir for the block (contextlib.chdir needs Python 3.11)."""
    before = os.getcwd()
    if path is not None:
        os.chdir(path)
    try:
        yield
    finally:
        os.chdir(before)


def run_cli(argv: list[object], cwd: Path | None = None) -> Outcome:
    """genlab.cli.main in-process; SystemExit (argparse --help) gives its code. `cwd`: a scratch
    directory, so a default `runs/...` output never lands in the checkout."""
    from genlab.cli import main

    out, err = io.StringIO(), io.StringIO()
    with working_directory(cwd), contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = main([str(a) for a in argv])
        except SystemExit as e:
            code = e.code if isinstance(e.code, int) else 1
    return Outcome(code, out.getvalue(), err.getvalue())


def cli(*argv: object) -> tuple[int, str]:
    """genlab.cli.main in-process: (exit code, stderr)."""
    outcome = run_cli(list(argv))
    return outcome.code, outcome.stderr


def one_line(rc: int, stderr: str) -> str:
    """The CLI contract for bad input: exit 2 and exactly one `genlab: error:` line; returns it."""
    assert "Traceback" not in stderr
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert rc == 2 and len(lines) == 1, (rc, stderr[:2000])
    assert lines[0].startswith("genlab: error: "), lines[0]
    return lines[0]


def tiny_data(kind: str, n: int = 64, seed: int = 0) -> Data:
    """Random data of the given kind: "vector" (2-D, unlabelled) or "image" (1x8x8, 17 levels)."""
    g = torch.Generator().manual_seed(seed)
    if kind == "vector":
        spec = DataSpec("tiny2d", (2,))
        x = torch.randn(n, 2, generator=g)
        return Data(spec, x[: n // 2], None, x[n // 2 :], None)
    spec = DataSpec("tiny8x8", (1, 8, 8), (0.0, 1.0), 10, 17)
    x = torch.randint(0, 17, (n, 1, 8, 8), generator=g).float() / 16
    y = torch.randint(0, 10, (n,), generator=g)
    half = n // 2
    return Data(spec, x[:half], y[:half], x[half:], y[half:])


@pytest.fixture
def vector_data() -> Data:
    return tiny_data("vector")


@pytest.fixture
def image_data() -> Data:
    return tiny_data("image")


@pytest.fixture
def float64_default():
    """torch's default dtype float64 for one test (math checks), restored afterwards."""
    before = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(before)


CHROMIUM = Path("/usr/bin/chromium")
WINDOW = (1280, 2000)
needs_chromium = pytest.mark.skipif(
    not CHROMIUM.exists(), reason="Debian chromium not installed: apt-get install -y chromium"
)


def render(html: Path, tmp: Path, dom: bool = True) -> tuple[Path, str]:
    """Screenshot `html` with headless Debian chromium, and (if `dom`) dump its DOM after load."""
    png = tmp / f"{html.stem}.png"
    profile = tempfile.mkdtemp(dir=tmp, prefix="chromium-profile-")
    base = [
        str(CHROMIUM),
        "--headless",
        "--no-sandbox",  # tests run as root
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        f"--user-data-dir={profile}",
        f"--window-size={WINDOW[0]},{WINDOW[1]}",
        "--hide-scrollbars",
        "--virtual-time-budget=3000",
    ]
    url = html.resolve().as_uri()
    subprocess.run([*base, f"--screenshot={png}", url], check=True, capture_output=True, timeout=60)
    out = ""
    if dom:
        done = subprocess.run(
            [*base, "--dump-dom", url], check=True, capture_output=True, text=True, timeout=60
        )
        out = done.stdout
    return png, out
