"""The playground's JSON API and page (Flask), and a server that stops its training threads.

GET  /                          the page (static/index.html, app.js, style.css; nothing external)
GET  /api/options               toys, models that build on them with their key hyperparameters,
                                samplers, train keys
GET  /api/runs                  the open runs
POST /api/runs                  {dataset, model, overrides: {key: value}} -> 201, the run
GET  /api/runs/<id>             state, step, error, losses, snapshot (real / generated points,
                                the family picture, toy metrics)
POST /api/runs/<id>/start | pause | reset
POST /api/runs/<id>/step        {n}: n steps now (the run ends paused)
POST /api/runs/<id>/view        {sampler, steps, noise}: the score picture's settings
DELETE /api/runs/<id>
Bad input answers 400 {"error": one line}; an unknown run 404; the run limit 429.
Overrides go through genlab.config (types checked); only the 2-D toys, never folder:/npz: paths.
"""

from __future__ import annotations

import dataclasses
import logging
import signal
import threading
import typing
from pathlib import Path
from typing import Any, Literal

import torch
from flask import Flask, jsonify, request, send_from_directory
from werkzeug.exceptions import HTTPException
from werkzeug.serving import make_server

from genlab.config import TrainConfig
from genlab.errors import GenlabError
from genlab.playground import pictures
from genlab.playground.sessions import (
    DEFAULTS,
    TOYS,
    RunManager,
    TooManyRuns,
    UnknownRun,
    run_config,
)
from genlab.registry import DATASETS, MODELS, SAMPLERS
from genlab.train.run import build_model

log = logging.getLogger(__name__)

STATIC = Path(__file__).parent / "static"
LOOPBACK = ("127.0.0.1", "localhost", "::1")
# Model fields a page offers when a model's config has them (the rest stay at their defaults,
# and any model.* key can still be sent as an override).
KEY_FIELDS = (
    "loss",
    "sampler",
    "hidden",
    "latent_dim",
    "beta",
    "kl_warmup",
    "n_critic",
    "label_smoothing",
    "minibatch_stddev",
    "minibatch_discrimination",
    "pack",
    "unrolled",
    "replay",
    "spectral_norm",
    "gp_weight",
    "schedule",
    "prediction",
    "timesteps",
    "sde",
    "num_scales",
    "sigma_max",
    "steps",
    "components",
    "bandwidth",
    "noise_std",
    "sparsity",
    "contractive",
    "temperature",
)
TRAIN_FIELDS = ("lr", "batch_size", "seed", "steps", "ema", "grad_clip")


def describe_field(section: str, name: str, tp: Any, default: Any) -> dict[str, Any] | None:
    """A form field for a config key: type, choices, default (None for types a form lacks)."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    out: dict[str, Any] = {"key": f"{section}.{name}", "default": default}
    if origin is Literal:
        out.update(type="choice", choices=list(args))
    elif tp is bool:
        out["type"] = "bool"
    elif tp is int:
        out["type"] = "int"
    elif tp is float:
        out["type"] = "float"
    elif origin in (tuple, list) and args and args[0] is int:
        out["type"] = "ints"
        out["default"] = list(default)
    else:
        return None
    return out


def model_options(manager: RunManager) -> list[dict[str, Any]]:
    """Every registered model that builds on a 2-D toy, with its picture and key fields."""
    out = []
    for entry in MODELS:
        if "vector" not in entry.obj.data_kinds:
            continue
        try:
            cfg = run_config("moons", entry.name, {})
            with manager.torch_lock, torch.random.fork_rng(devices=[]):
                spec = DATASETS.get("moons")().spec
                model = build_model(cfg, spec)
        except GenlabError:  # e.g. conditional models: the toys have no classes
            continue
        hints = typing.get_type_hints(type(cfg.model_cfg))
        values = dataclasses.asdict(cfg.model_cfg)
        params = [
            f
            for name in KEY_FIELDS
            if name in hints
            and (f := describe_field("model", name, hints[name], values[name])) is not None
        ]
        samplers = pictures.samplers_of(model)
        out.append(
            {
                "name": entry.name,
                "description": entry.description,
                "kind": pictures.picture_kind(model),
                "samplers": samplers,
                "fitted": not model.phases(cfg.train.lr),
                "params": params,
            }
        )
    return out


def train_options() -> list[dict[str, Any]]:
    """train.* form fields with the playground's defaults (sessions.DEFAULTS over TrainConfig)."""
    hints = typing.get_type_hints(TrainConfig)
    defaults = TrainConfig()
    return [
        f
        for name in TRAIN_FIELDS
        if (
            f := describe_field(
                "train", name, hints[name], DEFAULTS.get(f"train.{name}", getattr(defaults, name))
            )
        )
    ]


def create_app(manager: RunManager | None = None, **manager_options: Any) -> Flask:
    """The Flask app; `manager` (or a new RunManager(**manager_options)) holds the runs.

    The manager is app.extensions["genlab_playground"]; call its close() (or use
    PlaygroundServer, which does) to stop the worker thread and remove the temporary runs.
    """
    app = Flask(__name__, static_folder=str(STATIC), static_url_path="/static")
    app.config["MAX_CONTENT_LENGTH"] = 64 * 1024  # requests are small JSON objects
    runs = manager or RunManager(**manager_options)
    app.extensions["genlab_playground"] = runs
    cache: dict[str, Any] = {}
    cache_lock = threading.Lock()

    def body() -> dict[str, Any]:
        if not request.data:
            return {}
        data = request.get_json(silent=True)
        if not isinstance(data, dict):
            raise GenlabError("the request body must be a JSON object")
        return data

    @app.errorhandler(GenlabError)
    def genlab_error(e: GenlabError) -> Any:
        status = 404 if isinstance(e, UnknownRun) else 429 if isinstance(e, TooManyRuns) else 400
        return jsonify(error=str(e)), status

    @app.errorhandler(HTTPException)
    def http_error(e: HTTPException) -> Any:
        return jsonify(error=f"{e.code} {e.name}: {e.description}".splitlines()[0]), e.code

    @app.errorhandler(Exception)
    def internal_error(e: Exception) -> Any:  # a bug: one line to the page, traceback to the log
        log.exception("playground request failed")
        return jsonify(error=f"internal error: {type(e).__name__}: {e}".splitlines()[0]), 500

    @app.get("/")
    def index() -> Any:
        return send_from_directory(STATIC, "index.html")

    @app.get("/api/options")
    def options() -> Any:
        with cache_lock:
            if "options" not in cache:
                cache["options"] = {
                    "datasets": [
                        {"name": n, "description": DATASETS.entry(n).description} for n in TOYS
                    ],
                    "models": model_options(runs),
                    "samplers": {e.name: e.description for e in SAMPLERS},
                    "snapshot_steps": pictures.SNAPSHOT_STEPS,
                    "train": train_options(),
                    "max_runs": runs.max_runs,
                }
        return jsonify(cache["options"])

    @app.get("/api/runs")
    def list_runs() -> Any:
        return jsonify(runs=runs.list())

    @app.post("/api/runs")
    def create_run() -> Any:
        data = body()
        unknown = set(data) - {"dataset", "model", "overrides"}
        if unknown:
            raise GenlabError(
                f"unknown field {sorted(unknown)[0]!r}; send dataset, model, overrides"
            )
        out = runs.create(data.get("dataset"), data.get("model"), data.get("overrides") or {})
        return jsonify(out), 201

    @app.get("/api/runs/<run_id>")
    def get_run(run_id: str) -> Any:
        return jsonify(runs.describe(run_id))

    @app.post("/api/runs/<run_id>/<action>")
    def act(run_id: str, action: str) -> Any:
        data = body()
        if action == "start":
            return jsonify(runs.start(run_id))
        if action == "pause":
            return jsonify(runs.pause(run_id))
        if action == "reset":
            return jsonify(runs.reset(run_id))
        if action == "step":
            return jsonify(runs.step(run_id, data.get("n", 1)))
        if action == "view":
            return jsonify(runs.set_view(run_id, data))
        raise GenlabError(f"unknown action {action!r}; use start, pause, step, reset or view")

    @app.delete("/api/runs/<run_id>")
    def delete_run(run_id: str) -> Any:
        runs.delete(run_id)
        return jsonify(deleted=run_id)

    return app


def _interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt  # SIGTERM (systemd, docker stop, timeout) ends like Ctrl-C


class PlaygroundServer:
    """The app on a threaded WSGI server at host:port (port 0: a free one), in a thread or in
    the foreground; close() stops the server, then the training worker, and removes the runs."""

    def __init__(self, host: str = "127.0.0.1", port: int = 8765, **manager_options: Any) -> None:
        self.app = create_app(**manager_options)
        if host in LOOPBACK:
            # Only this machine's names in the Host header: a web page elsewhere cannot reach the
            # server through a DNS name rebound to 127.0.0.1 (Flask answers 400 otherwise).
            self.app.config["TRUSTED_HOSTS"] = ["127.0.0.1", "localhost", "[::1]"]
        self.manager: RunManager = self.app.extensions["genlab_playground"]
        try:
            self.server = make_server(host, port, self.app, threaded=True)
        except OSError as e:
            self.manager.close()
            raise GenlabError(f"cannot listen on {host}:{port}: {e.strerror or e}") from None
        self.host, self.port = host, self.server.server_port
        self.thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}/"

    def start(self) -> PlaygroundServer:
        """Serve in a daemon thread (tests, scripts); returns self."""
        self.thread = threading.Thread(
            target=self.server.serve_forever, name="genlab-playground-http", daemon=True
        )
        self.thread.start()
        return self

    def serve_forever(self) -> None:
        """Serve in this thread until Ctrl-C or SIGTERM, then close() (threads stopped, the
        temporary runs removed)."""
        previous = None
        if threading.current_thread() is threading.main_thread():
            previous = signal.signal(signal.SIGTERM, _interrupt)
        try:
            self.server.serve_forever()
        except KeyboardInterrupt:
            pass
        finally:
            self.close()
            if previous is not None:
                signal.signal(signal.SIGTERM, previous)

    def close(self) -> None:
        if self.thread is not None:
            self.server.shutdown()
            self.thread.join()
            self.thread = None
        self.server.server_close()
        self.manager.close()

    def __enter__(self) -> PlaygroundServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()
