"""The CLI by subprocess, as a user's script would call it: commands, outputs, bad input."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import SUBPROCESS_ENV, needs_chromium, render

TRAIN = [
    "train.steps=30",
    "train.checkpoint_every=10",
    "train.sample_every=15",
    "train.batch_size=32",
    "model.hidden=[16]",
    "model.latent_dim=2",
    "data.limit=256",
]


def genlab(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    proc = subprocess.run(
        [sys.executable, "-m", "genlab", *map(str, args)],
        capture_output=True,
        text=True,
        env=SUBPROCESS_ENV,
        timeout=300,
    )
    if check:
        assert proc.returncode == 0, proc.stderr
    return proc


def one_line_exit_2(proc: subprocess.CompletedProcess) -> str:
    assert proc.returncode == 2, (proc.returncode, proc.stderr)
    assert "Traceback" not in proc.stderr + proc.stdout
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, proc.stderr
    return lines[0]


@pytest.fixture(scope="module")
def toy_run(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("cli") / "vae-moons"
    genlab("train", "vae", "--data", "moons", "--out", out, *TRAIN, "--no-progress")
    return out


@pytest.fixture(scope="module")
def digits_run(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("cli") / "cvae-digits"
    genlab(
        "train",
        "cvae",
        "--data",
        "digits",
        "--out",
        out,
        *TRAIN,
        "model.arch=mlp",
        "data.dequantize=true",
        "--no-progress",
    )
    return out


def test_help_everywhere() -> None:
    for cmd in (
        [],
        ["train"],
        ["sample"],
        ["evaluate"],
        ["compare"],
        ["reconstruct"],
        ["interpolate"],
        ["manifold"],
        ["list"],
        ["demo"],
    ):
        proc = genlab(*cmd, "--help")
        assert "usage" in proc.stdout


def test_list_names_every_kind() -> None:
    out = genlab("list").stdout
    for word in ("models:", "datasets:", "metrics:", "vae", "ring8", "fashion-mnist", "npz:PATH"):
        assert word in out


def test_run_directory_layout(toy_run: Path) -> None:
    for name in ("config.yaml", "spec.json", "metrics.csv", "samples", "tensorboard"):
        assert (toy_run / name).exists(), name
    assert (toy_run / "checkpoints" / "latest").read_text().strip() == "step_000030"
    assert sorted(p.name for p in (toy_run / "samples").iterdir()) == [
        "step_000015.png",
        "step_000030.png",
    ]


def test_sample_npz_is_deterministic(toy_run: Path, tmp_path: Path) -> None:
    genlab("sample", toy_run, "-n", 100, "--seed", 3, "--out", tmp_path / "a.npz")
    genlab("sample", toy_run, "-n", 100, "--seed", 3, "--out", tmp_path / "b.npz")
    genlab("sample", toy_run, "-n", 100, "--seed", 4, "--out", tmp_path / "c.npz")
    a, b, c = (np.load(tmp_path / f"{n}.npz")["x"] for n in "abc")
    assert a.shape == (100, 2) and np.array_equal(a, b) and not np.array_equal(a, c)


def test_sample_png_and_conditional_labels(digits_run: Path, tmp_path: Path) -> None:
    genlab("sample", digits_run, "-n", 16, "--out", tmp_path / "g.png")
    assert (tmp_path / "g.png").read_bytes()[:4] == b"\x89PNG"
    genlab("sample", digits_run, "-n", 12, "--class", 3, "--out", tmp_path / "s.npz")
    arrays = np.load(tmp_path / "s.npz")
    assert arrays["x"].shape == (12, 1, 8, 8) and (arrays["y"] == 3).all()
    assert arrays["x"].min() >= 0 and arrays["x"].max() <= 1


def test_evaluate_writes_eval_json(digits_run: Path) -> None:
    proc = genlab("evaluate", digits_run, "--metrics", "nll,recon", "--n", 50, "--k", 5)
    values = json.loads((digits_run / "eval.json").read_text())
    assert {"nll", "bpd", "recon_mse", "nll_n"} <= set(values)
    assert values["nll_n"] == 50 and values["iwae_k"] == 5
    assert all(isinstance(v, float) for v in values.values())
    assert "dequantised" in proc.stdout


def test_reconstruct_interpolate_manifold(digits_run: Path, toy_run: Path, tmp_path: Path) -> None:
    for run in (digits_run, toy_run):
        genlab("reconstruct", run, "-n", 8, "--out", tmp_path / "r.png")
        genlab("interpolate", run, "--pairs", 3, "--steps", 5, "--out", tmp_path / "i.png")
    genlab("manifold", digits_run, "--side", 5, "--out", tmp_path / "m.png")
    assert (tmp_path / "m.png").stat().st_size > 0
    line = one_line_exit_2(genlab("manifold", toy_run, "--out", tmp_path / "m2.png", check=False))
    assert "image data" in line


@pytest.mark.parametrize(
    "args,fragment",
    [
        (["train", "nosuchmodel", "--data", "ring8"], "unknown model"),
        (["train", "vea", "--data", "ring8"], "vae"),
        (["train", "vae", "--data", "rign8"], "ring8"),
        (["train", "vae", "--data", "ring8", "model.latnt_dim=2"], "model.latent_dim"),
        (["train", "vae", "--data", "ring8", "train.steps=many"], "train.steps"),
        (["train", "vae", "--data", "ring8", "--bogus"], "unrecognized"),
        (
            [
                "train",
                "vae",
                "--data",
                "digits",
                "model.likelihood=logistic",
                "data.binarize=maybe",
            ],
            "data.binarize",
        ),
        (
            ["train", "vae", "--data", "fashion-mnist", "--data-root", "/nonexistent"],
            "/nonexistent",
        ),
        (["train", "--config", "/no/such.yaml"], "not found"),
        (["sample", "/no/such/run", "--out", "x.png"], "not a genlab run"),
        (["evaluate", "/no/such/run"], "not a genlab run"),
        (["train", "vae", "--data", "ring8", "train.eval_metrics=w1,fdi"], "unknown metric"),
        (["compare", "/no/such/run", "--report", "r.html"], "not a genlab run"),
        (["frobnicate"], "invalid choice"),
        (["sample", "/no/such/run", "-n", "0", "--out", "x.png"], "error: sample: argument -n"),
        (["train", "vae", "--data", "ring8", "train.lr=inf"], "train.lr must be a finite"),
        (["train", "ae", "--data", "ring8", "model.code_momentum=1.5"], "model.code_momentum"),
        (["train", "ddpm", "--data", "ring8", "model.emb_dim=1"], "dim >= 2"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(args: list[str], fragment: str, tmp_path: Path) -> None:
    out = tmp_path / "run"
    if args[0] == "train":
        args = [*args, "--out", str(out)]
    line = one_line_exit_2(genlab(*args, check=False))
    assert fragment in line
    assert not out.exists(), "bad input must not leave a run directory"


def test_bad_sample_requests(toy_run: Path, tmp_path: Path) -> None:
    cases = [
        (["--out", tmp_path / "x.jpg"], ".png or .npz"),
        (["-n", 0, "--out", tmp_path / "x.png"], "positive"),
        (["--class", 1, "--out", tmp_path / "x.png"], "not class-conditional"),
        (["--sampler", "ddim", "--out", tmp_path / "x.png"], "sampler"),
    ]
    for extra, fragment in cases:
        assert fragment in one_line_exit_2(genlab("sample", toy_run, *extra, check=False))
    assert not list(tmp_path.iterdir()), "a refused request must write nothing"
    line = one_line_exit_2(genlab("evaluate", toy_run, "--metrics", "fdi", check=False))
    assert "unknown metric" in line


def test_existing_run_without_resume_is_refused(toy_run: Path) -> None:
    line = one_line_exit_2(
        genlab("train", "vae", "--data", "moons", "--out", toy_run, *TRAIN, check=False)
    )
    assert "--resume" in line


def test_resume_extends_a_finished_run(tmp_path: Path) -> None:
    out = tmp_path / "r"
    args = [
        "train",
        "ae",
        "--data",
        "moons",
        "--out",
        out,
        "train.checkpoint_every=10",
        "model.hidden=[8]",
        "data.limit=128",
        "--no-progress",
    ]
    genlab(*args, "train.steps=10")
    proc = genlab(*args, "train.steps=20", "--resume")
    assert "step 20" in proc.stdout


def test_evaluate_default_metrics_and_their_protocol(digits_run: Path) -> None:
    proc = genlab("evaluate", digits_run, "--n", 40, "--k", 2)
    values = json.loads((digits_run / "eval.json").read_text())
    for key in ("fid", "kid", "is", "precision", "recall", "ssim", "psnr", "classifier_acc"):
        assert key in values, key
    assert values["fid_n"] == 40 and values["kid_n"] == 40
    assert "test accuracy" in proc.stdout and "40 generated vs 40 test examples" in proc.stdout
    assert "skipped modes" in proc.stdout  # digits is not a known mixture
    notes = json.loads((digits_run / "eval_notes.json").read_text())
    assert "fid" in notes["notes"] and "modes" in notes["skipped"]


def test_evaluate_refuses_a_missing_inception_file(digits_run: Path, tmp_path: Path) -> None:
    proc = genlab("evaluate", digits_run, "--inception-weights", tmp_path / "nope.pth", check=False)
    assert "no such file" in one_line_exit_2(proc)


def test_eval_every_writes_eval_csv(tmp_path: Path) -> None:
    out = tmp_path / "e"
    genlab(
        "train", "vae", "--data", "ring8", "--out", out, *TRAIN,
        "train.eval_every=10", "train.eval_metrics=modes,w1", "train.eval_n=200", "--no-progress",
    )  # fmt: skip
    lines = (out / "eval.csv").read_text().splitlines()
    header = lines[0].split(",")
    assert header[0] == "step" and {"modes", "hq", "w1", "w1_n"} <= set(header)
    assert [row.split(",")[0] for row in lines[1:]] == ["10", "20", "30"]


def test_compare_writes_one_html_page(digits_run: Path, toy_run: Path, tmp_path: Path) -> None:
    report = tmp_path / "report.html"
    bad = genlab("compare", digits_run, "--report", tmp_path / "r.txt", check=False)
    assert ".html" in one_line_exit_2(bad)
    genlab("compare", digits_run, toy_run, "--report", report, "--metrics", "nll,fid,w1", "--n", 30,
           "--k", 2)  # fmt: skip
    html = report.read_text()
    assert list(tmp_path.iterdir()) == [report]  # no other file beside it
    assert html.count("data:image/png;base64,") >= 4 and "http" not in html
    for text in ("cvae-digits", "vae-moons", ">fid<", ">w1<", "&mdash;"):
        assert text in html, text
    assert json.loads((toy_run / "eval.json").read_text())["w1_n"] == 30


@needs_chromium
def test_compare_page_renders_in_chromium(digits_run: Path, toy_run: Path, tmp_path: Path) -> None:
    report = tmp_path / "report.html"
    genlab("compare", digits_run, toy_run, "--report", report, "--metrics", "recon", "--n", 20)
    png, dom = render(report, tmp_path)
    assert 'id="metrics"' in dom and "recon_mse" in dom
    images = re.search(r'data-images="(\d+)"', dom)
    assert images and int(images.group(1)) >= 4
    assert f'data-images-loaded="{images.group(1)}"' in dom
    assert png.stat().st_size > 10_000


def test_demo_quick_ends_with_the_comparison_page(tmp_path: Path) -> None:
    out = tmp_path / "demo"
    proc = genlab("demo", "--quick", "--out", out)
    html = (out / "report.html").read_text()
    for name in ("vae-digits", "vae2d-digits", "vae-moons", "ddpm-moons", ">fid<", ">w1<", ">nll<"):
        assert name in html, name
    for run in ("vae-digits", "vae2d-digits", "vae-moons", "ddpm-moons"):
        assert json.loads((out / run / "eval.json").read_text())
    assert (out / "ddpm-moons-diffusion.png").stat().st_size > 10_000
    assert "comparison page" in proc.stdout
    again = genlab("demo", "--quick", "--out", out, check=False)
    assert "not empty" in one_line_exit_2(again)
