"""genlab playground: train genlab models on the 2-D toys live in the browser.

The same models, Trainer, samplers and metrics as the CLI (genlab.models, genlab.train,
genlab.samplers, genlab.metrics), behind a small Flask JSON API and a page of plain HTML, JS and
canvas served from the package (nothing is fetched from the network). Per family the page draws
the picture that explains it (genlab.playground.pictures): the critic's decision surface (GAN),
the latent space and decoder mapping (VAE / AE), the score field and sampler trajectories
(diffusion and score models, [001]), the density (flows and exact-likelihood models).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from genlab.playground.server import PlaygroundServer, create_app

__all__ = ["create_app", "serve", "PlaygroundServer"]

DEFAULT_PORT = 8765

log = logging.getLogger(__name__)


def serve(
    host: str = "127.0.0.1",
    port: int = DEFAULT_PORT,
    *,
    on_ready: Callable[[str], None] | None = None,
    **manager_options: Any,
) -> None:
    """Serve the playground at http://host:port/ until Ctrl-C, then stop the training thread and
    remove the temporary runs. Binds 127.0.0.1 by default (the page trains on this machine).

    on_ready(url) is called once listening (the CLI prints the address); manager_options go to
    genlab.playground.sessions.RunManager (max_runs, idle_seconds, ...). GenlabError when the
    port cannot be bound."""
    server = PlaygroundServer(host, port, **manager_options)
    log.info("genlab playground at %s", server.url)
    if on_ready is not None:
        on_ready(server.url)
    server.serve_forever()
