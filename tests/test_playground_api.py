"""genlab playground JSON API through Flask's test client: options, the run life cycle, the
picture of every family, independence of concurrent runs, divergence, bad input, shutdown."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest
import torch
from conftest import SUBPROCESS_ENV

from genlab.playground import PlaygroundServer, create_app
from genlab.playground.pictures import ARROWS, GRID, KINDS, LATENT_LINES, LINE_POINTS, PATHS
from genlab.playground.sessions import TOYS, RunManager

TINY = {"model.hidden": [16], "data.limit": 256, "train.batch_size": 32}


def finite(values: Any) -> bool:
    """Every number in a nested list is a finite float (JSON null marks a non-finite one)."""
    t = torch.tensor(values, dtype=torch.float64)
    return bool(torch.isfinite(t).all())


def shape(values: Any) -> tuple[int, ...]:
    return tuple(torch.tensor(values, dtype=torch.float64).shape)


@pytest.fixture(scope="module")
def app():
    app = create_app(chunk_seconds=0.01, snapshot_seconds=0.05)
    yield app
    app.extensions["genlab_playground"].close()


@pytest.fixture
def client(app):
    yield app.test_client()
    manager: RunManager = app.extensions["genlab_playground"]
    for run in manager.list():  # each test leaves no run behind for the next
        manager.delete(run["id"])


def create(
    client, model: str, dataset: str = "ring8", tiny: dict = TINY, **overrides: Any
) -> dict[str, Any]:
    r = client.post(
        "/api/runs", json={"dataset": dataset, "model": model, "overrides": {**tiny, **overrides}}
    )
    assert r.status_code == 201, r.get_json()
    return r.get_json()


def wait_for(client, run_id: str, done, timeout: float = 60.0) -> dict[str, Any]:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        run = client.get(f"/api/runs/{run_id}").get_json()
        if done(run):
            return run
        time.sleep(0.05)
    raise AssertionError(f"run {run_id} never reached the condition; last: {run['state']}")


def weights(app, run_id: str) -> dict[str, torch.Tensor]:
    manager: RunManager = app.extensions["genlab_playground"]
    with manager.torch_lock:
        model = manager.get(run_id).model
        return {k: v.detach().clone() for k, v in model.state_dict().items()}


def same_weights(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


# ------------------------------------------------------------------------------- options
def test_options_list_toys_models_samplers_and_gan_losses(client) -> None:
    r = client.get("/api/options")
    assert r.status_code == 200
    opts = r.get_json()
    assert [d["name"] for d in opts["datasets"]] == list(TOYS)
    models = {m["name"]: m for m in opts["models"]}
    # one model of every family, each with the picture its capabilities give
    expected = {"gan": "critic", "wgan-gp": "critic", "vae": "latent", "ae": "latent"}
    expected.update({"ddpm": "score", "ncsn": "score", "score-sde": "score"})
    expected.update({"realnvp": "density", "made": "density", "gmm": "density"})
    for name, kind in expected.items():
        assert models[name]["kind"] == kind, name
    assert {m["kind"] for m in opts["models"]} <= set(KINDS)
    # models that cannot train on unlabelled 2-D data are not offered
    for name in ("cgan", "cvae", "ddpm-cfg", "dcgan", "pixelcnn", "cyclegan", "rbm"):
        assert name not in models
    assert models["score-sde"]["samplers"] == ["euler-maruyama", "pc", "ode"]
    assert models["ncsn"]["samplers"] == ["langevin"]
    assert models["ddpm"]["samplers"] == ["ancestral", "ddim", "dpm-solver++", "sde-dpm-solver++"]
    assert models["gmm"]["fitted"] and not models["gan"]["fitted"]
    gan = {p["key"]: p for p in models["gan"]["params"]}
    assert gan["model.loss"]["choices"] == ["minimax", "ns", "ls", "wgan", "wgan-gp", "hinge"]
    for trick in ("label_smoothing", "minibatch_stddev", "pack", "unrolled", "replay"):
        assert f"model.{trick}" in gan
    assert gan["model.latent_dim"]["default"] == 2  # the playground's 2-D latent
    assert {p["key"] for p in opts["train"]} >= {"train.lr", "train.batch_size", "train.seed"}
    assert set(opts["samplers"]) >= {"ancestral", "ddim", "langevin", "euler-maruyama", "ode"}


def test_page_and_static_files_are_served(client) -> None:
    page = client.get("/")
    assert page.status_code == 200 and b'<canvas id="picture"' in page.data
    for name in ("app.js", "style.css"):
        r = client.get(f"/static/{name}")
        assert r.status_code == 200 and len(r.data) > 500
    # nothing is fetched from the network: no absolute URL in the page or its script
    for body in (page.data, client.get("/static/app.js").data):
        assert b"http://" not in body and b"https://" not in body


# ---------------------------------------------------------------------------- life cycle
def test_create_step_start_pause_reset(client) -> None:
    run = create(client, "gan")
    assert (run["state"], run["step"], run["losses"]) == ("idle", 0, [])
    first = run["snapshot"]["generated"]
    run_id = run["id"]

    r = client.post(f"/api/runs/{run_id}/step", json={"n": 3})
    run = r.get_json()
    assert (r.status_code, run["state"], run["step"]) == (200, "paused", 3)
    assert [p[0] for p in run["losses"]] == [1, 2, 3]
    assert set(run["losses"][0][1]) >= {"critic/loss", "generator/loss"}
    assert run["snapshot"]["step"] == 3 and run["snapshot"]["generated"] != first

    run = client.post(f"/api/runs/{run_id}/start").get_json()
    assert run["state"] == "running"
    run = wait_for(client, run_id, lambda r: r["step"] >= 8 and r["snapshot"]["step"] > 3)
    run = client.post(f"/api/runs/{run_id}/pause").get_json()
    assert run["state"] == "paused"
    paused_at = run["step"]
    time.sleep(0.3)  # the worker would have run many chunks by now
    assert client.get(f"/api/runs/{run_id}").get_json()["step"] == paused_at

    # reset: the same config from the same initial weights, so the same first snapshot
    run = client.post(f"/api/runs/{run_id}/reset").get_json()
    assert (run["state"], run["step"], run["losses"], run["version"]) == ("idle", 0, [], 1)
    assert run["snapshot"]["generated"] == first

    assert client.delete(f"/api/runs/{run_id}").status_code == 200
    assert client.get(f"/api/runs/{run_id}").status_code == 404


def test_fitted_model_is_done_at_creation(client) -> None:
    run = create(client, "gmm", tiny={"data.limit": 256}, **{"model.components": 8})
    assert (run["state"], run["trainable"]) == ("done", False)
    assert run["snapshot"]["picture"]["kind"] == "density"
    r = client.post(f"/api/runs/{run['id']}/start")
    assert r.status_code == 400 and "fitted" in r.get_json()["error"]


# ------------------------------------------------------------------------------ pictures
def path_ends_are_samples(picture: dict[str, Any], generated: list[list[float]]) -> bool:
    """Each drawn trajectory ends at the sample it produced (the first PATHS samples)."""
    ends = torch.tensor([p[-1] for p in picture["paths"]])
    return torch.allclose(ends, torch.tensor(generated[:PATHS]), atol=2e-3)


@pytest.mark.parametrize(
    "model, overrides, view",
    [
        ("gan", {}, None),
        ("wgan-gp", {"model.n_critic": 1}, None),
        ("vae", {}, None),
        ("realnvp", {}, None),
        ("ddpm", {"model.timesteps": 100}, {"sampler": "ddim", "steps": 10}),
        ("ddpm", {"model.timesteps": 100}, {"sampler": "dpm-solver++", "steps": 5}),
        ("score-sde", {}, {"sampler": "ode", "steps": 6, "noise": 0.5}),
        ("score-sde", {}, {"sampler": "pc", "steps": 5}),
        ("ncsn", {"model.num_scales": 4}, {"sampler": "langevin", "steps": 3}),
    ],
)
def test_snapshot_has_the_family_picture(client, model, overrides, view) -> None:
    run = create(client, model, **overrides)
    run = client.post(f"/api/runs/{run['id']}/step", json={"n": 2}).get_json()
    if view:
        r = client.post(f"/api/runs/{run['id']}/view", json=view)
        assert r.status_code == 200, r.get_json()
        run = r.get_json()
    snap = run["snapshot"]
    pic = snap["picture"]
    assert shape(snap["generated"]) == (300, 2) and finite(snap["generated"])
    assert shape(run["real"]) == (300, 2)
    metrics = snap["metrics"]
    assert metrics["modes_total"] == 8 and 0 <= metrics["modes"] <= 8
    assert 0 <= metrics["hq_percent"] <= 100 and metrics["mmd2"] is not None
    assert pic["equation"] and pic["source"]
    if model in ("gan", "wgan-gp"):
        assert pic["kind"] == "critic"
        assert shape(pic["grid"]["values"]) == (GRID, GRID) and finite(pic["grid"]["values"])
        assert shape(pic["lines"]) == (2 * LATENT_LINES, LINE_POINTS, 2) and finite(pic["lines"])
        values = torch.tensor(pic["grid"]["values"])
        if model == "gan":  # D(x) = sigmoid(logit) is a probability
            assert pic["probability"] and bool(((values > 0) & (values < 1)).all())
        else:  # the WGAN-GP critic is unbounded
            assert not pic["probability"]
    elif model == "vae":
        assert pic["kind"] == "latent" and pic["latent_dim"] == 2
        assert shape(pic["latent"]) == (300, 2) and finite(pic["latent"])
        assert shape(pic["lines"]) == (2 * LATENT_LINES, LINE_POINTS, 2) and finite(pic["lines"])
        lo_x, hi_x, lo_y, hi_y = pic["latent_bounds"]
        z = torch.tensor(pic["latent"])
        assert bool((z[:, 0] >= lo_x).all() and (z[:, 0] <= hi_x).all())
        assert bool((z[:, 1] >= lo_y).all() and (z[:, 1] <= hi_y).all())
    elif model == "realnvp":
        assert pic["kind"] == "density"
        values = torch.tensor(pic["grid"]["values"])
        assert values.shape == (GRID, GRID) and finite(pic["grid"]["values"])
        assert float(values.max()) == 1.0 and bool((values >= 0).all())  # relative to the max
        assert 0 < pic["mass_in_view"] <= 1.05  # a density integrates to at most 1
    else:
        assert pic["kind"] == "score"
        assert shape(pic["arrows"]) == (ARROWS * ARROWS, 4) and finite(pic["arrows"])
        lengths = torch.tensor(pic["arrows"])[:, 2:].norm(dim=1)
        assert bool((lengths <= 1 + 1e-3).all()) and float(lengths.max()) > 0
        paths = pic["paths"]
        assert len(paths) == PATHS and len(paths[0]) >= 3 and finite(paths)
        assert pic["sampler"].startswith(view["sampler"])
        assert path_ends_are_samples(pic, snap["generated"])


# --------------------------------------------------------------------------- independence
def test_stepping_one_run_leaves_another_untouched(app, client) -> None:
    a = create(client, "vae")["id"]
    b = create(client, "gan")["id"]
    client.post(f"/api/runs/{a}/step", json={"n": 2})
    before = weights(app, a)
    client.post(f"/api/runs/{b}/step", json={"n": 5})
    client.post(f"/api/runs/{b}/view", json={})
    assert same_weights(before, weights(app, a))


def test_interleaved_training_gives_the_weights_of_training_alone(app, client) -> None:
    """Run A trained by the worker while run B (another model drawing from torch's RNG) is
    interleaved with it, chunk by chunk, with snapshots in between, ends with exactly the
    weights of the same config stepped alone to the same step."""
    a = create(client, "vae")["id"]
    b = create(client, "gan")["id"]
    client.post(f"/api/runs/{a}/start")
    client.post(f"/api/runs/{b}/start")
    wait_for(client, a, lambda r: r["step"] >= 12)
    wait_for(client, b, lambda r: r["step"] >= 4)
    client.post(f"/api/runs/{a}/pause")
    client.post(f"/api/runs/{b}/pause")
    steps = client.get(f"/api/runs/{a}").get_json()["step"]
    interleaved = weights(app, a)
    client.delete(f"/api/runs/{b}")
    alone = create(client, "vae")["id"]
    while (done := client.get(f"/api/runs/{alone}").get_json()["step"]) < steps:
        client.post(f"/api/runs/{alone}/step", json={"n": min(7, steps - done)})
    assert same_weights(interleaved, weights(app, alone))


# ---------------------------------------------------------------------------------- faults
def test_diverging_run_shows_its_error_and_the_server_keeps_serving(client) -> None:
    run = create(client, "vae", **{"train.lr": 1e10})
    client.post(f"/api/runs/{run['id']}/start")
    run = wait_for(client, run["id"], lambda r: r["state"] == "error")
    assert "diverged" in run["error"] and "\n" not in run["error"]
    assert run["snapshot"] is not None  # the last good picture stays
    r = client.post(f"/api/runs/{run['id']}/step", json={"n": 1})
    assert r.status_code == 400 and "reset" in r.get_json()["error"]
    # the server and the other runs go on
    assert client.get("/api/options").status_code == 200
    other = create(client, "gan")
    r = client.post(f"/api/runs/{other['id']}/step", json={"n": 2})
    assert r.get_json()["state"] == "paused" and r.get_json()["step"] == 2
    # reset brings the diverged run back from its initial weights
    run = client.post(f"/api/runs/{run['id']}/reset").get_json()
    assert (run["state"], run["error"], run["step"]) == ("idle", None, 0)


BAD = [
    ({"dataset": "digits", "model": "vae"}, "not a 2-D toy"),
    ({"dataset": "npz:/etc/passwd", "model": "vae"}, "not a 2-D toy"),
    ({"dataset": "folder:/", "model": "vae"}, "not a 2-D toy"),
    ({"dataset": "moons", "model": "gann"}, "did you mean"),
    ({"dataset": "moons", "model": "dcgan"}, "image"),
    ({"dataset": "moons", "model": "cgan"}, "labels"),
    ({"dataset": "moons", "model": "vae", "overrides": {"train.lr": "fast"}}, "train.lr"),
    ({"dataset": "moons", "model": "vae", "overrides": {"model.bogus": 1}}, "model.bogus"),
    ({"dataset": "moons", "model": "vae", "overrides": {"data.root": "/etc"}}, "not allowed"),
    ({"dataset": "moons", "model": "vae", "overrides": {"data.name": "npz:x"}}, "not allowed"),
    ({"dataset": "moons", "model": "vae", "overrides": {"model.name": "gan"}}, "not allowed"),
    ({"dataset": "moons", "model": "ldm", "overrides": {"model.first_stage": "/"}}, "not allowed"),
    ({"dataset": "moons", "model": "texture", "overrides": {"model.weights": "/x"}}, "not allowed"),
    ({"dataset": "moons", "model": "gan", "overrides": {"model.loss": "wasserstein"}}, "one of"),
    ({"dataset": "moons", "model": "vae", "overrides": {"train.batch_size": -4}}, "positive"),
    ({"dataset": "moons", "model": "vae", "overrides": ["train.lr=1"]}, "object"),
    ({"dataset": "moons", "model": "vae", "overrides": {"train.lr": {"a": 1}}}, "train.lr"),
    ({"dataset": "moons", "model": "vae", "extra": 1}, "unknown field"),
    ({"dataset": 3, "model": "vae"}, "dataset"),
    # sizes that would make the server allocate gigabytes
    ({"dataset": "moons", "model": "vae", "overrides": {"model.hidden": [10**6]}}, "at most"),
    ({"dataset": "moons", "model": "vae", "overrides": {"model.hidden": "[64, 10**6]"}}, "hidden"),
    ({"dataset": "moons", "model": "vae", "overrides": {"model.latent_dim": "999999"}}, "large"),
    ({"dataset": "moons", "model": "ddpm", "overrides": {"model.timesteps": 10**9}}, "too large"),
    ({"dataset": "moons", "model": "vae", "overrides": {"train.batch_size": 10**7}}, "too large"),
]


@pytest.mark.parametrize("body, words", BAD)
def test_bad_run_requests_are_400_with_one_line(app, client, body, words) -> None:
    manager: RunManager = app.extensions["genlab_playground"]
    dirs = set(manager.root.iterdir())
    r = client.post("/api/runs", json=body)
    assert r.status_code == 400
    error = r.get_json()["error"]
    assert words in error and "\n" not in error and "Traceback" not in error
    assert manager.list() == [] and set(manager.root.iterdir()) == dirs  # nothing half-made


def test_bad_actions_are_one_line_errors(client) -> None:
    r = client.post("/api/runs", data="{not json", content_type="application/json")
    assert r.status_code == 400 and "JSON object" in r.get_json()["error"]
    run_id = create(client, "ddpm", **{"model.timesteps": 50})["id"]
    cases = [
        (f"/api/runs/{run_id}/step", {"n": 0}, 400, "1..1000"),
        (f"/api/runs/{run_id}/step", {"n": "many"}, 400, "1..1000"),
        (f"/api/runs/{run_id}/view", {"sampler": "langevin"}, 400, "does not apply"),
        (f"/api/runs/{run_id}/view", {"noise": 2}, 400, "[0, 1]"),
        (f"/api/runs/{run_id}/view", {"colour": "red"}, 400, "unknown view key"),
        (f"/api/runs/{run_id}/jump", {}, 400, "unknown action"),
        ("/api/runs/nope/start", {}, 404, "no run"),
        ("/api/nothing", None, 404, "404"),
    ]
    for url, body, status, words in cases:
        r = client.post(url, json=body) if body is not None else client.get(url)
        error = r.get_json()["error"]
        assert (r.status_code, words in error, "\n" in error) == (status, True, False), error


def test_run_limit_is_a_clear_error() -> None:
    app = create_app(max_runs=2)
    client = app.test_client()
    try:
        for _ in range(2):
            assert (
                client.post(
                    "/api/runs", json={"dataset": "moons", "model": "vae", "overrides": TINY}
                ).status_code
                == 201
            )
        r = client.post("/api/runs", json={"dataset": "moons", "model": "vae", "overrides": TINY})
        assert r.status_code == 429 and "limit is 2" in r.get_json()["error"]
    finally:
        app.extensions["genlab_playground"].close()


def test_idle_runs_are_dropped() -> None:
    manager = RunManager(idle_seconds=0.2)
    try:
        run_id = manager.create("moons", "vae", TINY)["id"]
        time.sleep(0.3)
        assert manager.drop_idle() == [run_id] and manager.list() == []
    finally:
        manager.close()


# -------------------------------------------------------------------------------- shutdown
def playground_threads() -> set[threading.Thread]:
    return {t for t in threading.enumerate() if t.name.startswith("genlab-playground")}


def test_close_stops_the_worker_and_removes_the_runs() -> None:
    before = set(threading.enumerate())
    app = create_app(chunk_seconds=0.01)
    manager: RunManager = app.extensions["genlab_playground"]
    client = app.test_client()
    run_id = create(client, "gan")["id"]
    client.post(f"/api/runs/{run_id}/start")
    wait_for(client, run_id, lambda r: r["step"] >= 2)
    root = manager.root
    assert manager.worker.is_alive() and any(root.iterdir())
    manager.close()
    assert not manager.worker.is_alive()
    assert not root.exists()
    assert set(threading.enumerate()) <= before  # no thread of ours (worker, TensorBoard) left


def test_server_close_stops_http_and_training_threads() -> None:
    before = set(threading.enumerate())
    server = PlaygroundServer("127.0.0.1", 0, chunk_seconds=0.01).start()

    def call(method: str, path: str, body: dict | None = None) -> dict:
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(server.url + path.lstrip("/"), data=data, method=method)
        req.add_header("Content-Type", "application/json")
        with urllib.request.urlopen(req, timeout=60) as resp:
            return json.loads(resp.read())

    run = call("POST", "/api/runs", {"dataset": "moons", "model": "gan", "overrides": TINY})
    call("POST", f"/api/runs/{run['id']}/start", {})
    ours = playground_threads() - before
    assert {t.name for t in ours} == {"genlab-playground-http", "genlab-playground-worker"}
    root = Path(server.manager.root)
    server.close()
    assert not any(t.is_alive() for t in ours) and not root.exists()
    assert set(threading.enumerate()) <= before


def test_a_loopback_server_answers_only_its_own_host_names() -> None:
    """DNS rebinding: a page elsewhere whose name resolves to 127.0.0.1 sends its own Host
    header; the server bound to loopback refuses it (400) and serves 127.0.0.1 / localhost."""
    server = PlaygroundServer("127.0.0.1", 0)
    try:
        client = server.app.test_client()
        for host, status in [
            (f"127.0.0.1:{server.port}", 200),
            (f"localhost:{server.port}", 200),
            (f"[::1]:{server.port}", 200),
            (f"evil.example:{server.port}", 400),
            ("127.0.0.1.evil.example", 400),
        ]:
            assert client.get("/api/options", headers={"Host": host}).status_code == status, host
    finally:
        server.close()


def test_sigterm_stops_the_cli_server_and_removes_its_runs(tmp_path: Path) -> None:
    """`genlab playground` under SIGTERM (docker stop, systemd) ends like Ctrl-C: the training
    thread stops and the temporary runs are removed."""
    env = {**SUBPROCESS_ENV, "TMPDIR": str(tmp_path)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "genlab", "playground", "--port", "0"],
        env=env,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        line = proc.stderr.readline()  # "genlab playground at http://127.0.0.1:PORT/ (...)"
        url = line.split(" at ", 1)[1].split()[0]
        req = urllib.request.Request(
            url + "api/runs",
            data=json.dumps({"dataset": "moons", "model": "vae", "overrides": TINY}).encode(),
            headers={"Content-Type": "application/json"},
            method="POST",
        )
        with urllib.request.urlopen(req, timeout=60) as resp:
            assert resp.status == 201
        assert any(tmp_path.iterdir())  # the run's temporary directory exists
        os.kill(proc.pid, signal.SIGTERM)
        assert proc.wait(timeout=60) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
    assert not any(p.name.startswith("genlab-playground-") for p in tmp_path.iterdir())
