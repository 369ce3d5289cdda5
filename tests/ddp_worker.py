"""Train every registered model a few steps with the one Trainer; run by tests/test_ddp_families.py.

    torchrun --standalone --nproc_per_node=2 tests/ddp_worker.py OUT --grad-accum 1
    python tests/ddp_worker.py OUT --grad-accum 2

One launch trains all cases one after another (torchrun's start-up is paid once): the process
group is joined once and each model goes through genlab.train.trainer.Trainer directly
(genlab.train.run.train would tear the group down after the first model). Models and tiny data
come from tests/test_protocol.py (TINY sizes, `build`) and tests/conftest.py (`tiny_data`).

Rank 0 writes OUT/<case>.pt (the final state dict) and OUT/results.json with, per case: the
error if training raised, `rank_mismatch` (state-dict entries in which some rank differs from
rank 0 after training, leaving out `per_rank_state`).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import sys
import time
import traceback
from pathlib import Path

import torch
import torch.distributed as dist
from conftest import tiny_data
from test_protocol import TINY, build
from torch import nn

from genlab import models
from genlab.config import TrainConfig
from genlab.data.spec import Data
from genlab.models.autoencoder import Autoencoder
from genlab.models.base import FitsData, GenerativeModel
from genlab.registry import MODELS
from genlab.train import distributed
from genlab.train.trainer import Trainer

BATCH = 8  # global batch: 2 shards of 4 examples for 2 processes x 1 or 1 process x 2
STEPS = 2  # every phase runs STEPS x repeat optimiser steps

# models also run on images, where their networks differ (conv ActNorm, conv autoencoder, U-Net,
# DCGAN critic with batch norm or spectral norm)
ALSO_IMAGE = ("ae", "vae", "glow", "realnvp", "ddpm", "gan", "sngan")
# non-default settings with state of their own: case -> (model, kind, config overrides)
VARIANTS = {
    # persistent chains; larger weights than the default init so that a chain depends on its start
    "rbm+pcd": ("rbm", "image", {"persistent": True, "chains": 8, "init_std": 1.0}),
    "vqvae+ema": ("vqvae", "image", {"ema": True}),  # EMA codebook (buffers, after_step)
    "gan+replay": ("gan", "vector", {"replay": 0.5, "replay_size": 16}),  # experience replay
    # batches drawn with noise (dequantisation) and an after_step hook that draws (restarts)
    "vqvae+dequant": ("vqvae", "image", {}),
}
DATA_FLAGS = {"vqvae+dequant": {"dequantize": True}}  # case -> genlab.data.spec.Data fields

# Why state-dict entries may legitimately differ. Some layers update state in every training
# forward from the micro-batch they see. DDP broadcasts rank 0's buffers at the start of a step,
# so under N processes that state follows rank 0's shards and a rank r > 0 ends with its own
# last update (never read again): `per_rank_state` leaves these out of the rank check.
WHY = {
    "batchnorm": "torch BatchNorm running mean/var/count: updated by every training forward from"
    " its micro-batch (training normalises with the batch's own statistics; eval reads these)",
    "code_gaussian": "autoencoder code_mean/code_cov: running Gaussian of the training codes,"
    " updated per forward (sample() reads it)",
    "source_bank": "pix2pix/CycleGAN source_bank: training sources stored per forward for sample()",
    "replay": "GAN experience replay: generated images stored per forward",
    "pcd_chains": "RBM persistent chains: advanced and stored per forward",
    "power_iteration": "spectral norm u, v: one power iteration per training forward",
}
# Between N processes x A=1 and 1 process x A=N. torch's BatchNorm updates its statistics in
# every forward, so A micro-batches update them A times per step where rank 0 of N processes
# updates them once: they differ. The other layers of WHY make the later micro-batches of a step
# start from and leave the state of the first one (genlab.nn.sync, DDP's rank-0 rule), so they
# are compared.
SPLIT_DEPENDENT = ("batchnorm",)


def stateful_entries(model: nn.Module) -> dict[str, str]:
    """State-dict entries of `model` that training forwards update outside the gradient,
    name -> key of WHY."""
    out: dict[str, str] = {}
    for prefix, m in model.named_modules():
        p = f"{prefix}." if prefix else ""
        if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats:
            for b in ("running_mean", "running_var", "num_batches_tracked"):
                out[p + b] = "batchnorm"
        # a frozen autoencoder (latent diffusion's first stage) never updates its statistics
        if isinstance(m, Autoencoder) and any(q.requires_grad for q in m.parameters()):
            out[p + "code_mean"] = out[p + "code_cov"] = "code_gaussian"
        if isinstance(m, GenerativeModel):
            for b in ("source_bank", "bank_filled"):
                if hasattr(m, b):
                    out[p + b] = "source_bank"
            for b in ("replay_x", "replay_y", "replay_count"):
                if hasattr(m, b):
                    out[p + b] = "replay"
            if isinstance(getattr(m, "chains", None), torch.Tensor):
                out[p + "chains"] = "pcd_chains"
        if prefix.endswith("parametrizations.weight.0") and hasattr(m, "_u"):
            out[p + "_u"] = out[p + "_v"] = "power_iteration"
    return out


def per_rank_state(model: nn.Module) -> dict[str, str]:
    """Entries that may differ between the ranks of one run -> why."""
    return {
        k: WHY[w] for k, w in stateful_entries(model).items() if w != "power_iteration"
    }  # power iterations depend on the weights only: equal on every rank


def split_dependent_state(model: nn.Module) -> dict[str, str]:
    """Entries that may differ between N processes x A=1 and 1 process x A=N -> why."""
    return {k: WHY[w] for k, w in stateful_entries(model).items() if w in SPLIT_DEPENDENT}


def cases() -> list[str]:
    """Case names: "model" (2-D vectors) or "model:image" (tiny labelled 8x8 images) for every
    registered model, vectors where the model takes them (fast), images for image-only and
    conditional models, ALSO_IMAGE on images too, and the VARIANTS."""
    out = []
    for name in MODELS.names():
        vector = "vector" in MODELS.get(name).data_kinds
        conditional = MODELS.entry(name).defaults.get("conditional")
        out.append(name if vector and not conditional else f"{name}:image")
        if name in ALSO_IMAGE:
            out.append(f"{name}:image")
    return out + list(VARIANTS)


def parse_case(case: str) -> tuple[str, str, dict]:
    """ "gan:image" -> ("gan", "image", {}); "gan" -> ("gan", "vector", {}); VARIANTS."""
    if case in VARIANTS:
        return VARIANTS[case]
    name, _, kind = case.partition(":")
    return name, kind or "vector", {}


def build_case(case: str) -> tuple[GenerativeModel, str]:
    """The case's model with seeded initial weights (the same in every run) and its data kind."""
    name, kind, overrides = parse_case(case)
    if not overrides:
        return build(name, kind)[0], kind
    # test_protocol.build with config overrides on top of its TINY sizes
    spec = tiny_data(kind).spec
    fields = {f.name for f in dataclasses.fields(MODELS.get(name).config_class)}
    torch.manual_seed(0)
    model = models.build(name, spec, **{k: v for k, v in TINY.items() if k in fields}, **overrides)
    if isinstance(model, FitsData):
        data = tiny_data(kind)
        model.fit_data(data.x_train, data.y_train)
    return model, kind


def case_data(case: str) -> Data:
    """The case's tiny data (tests/conftest.py), with its DATA_FLAGS."""
    return dataclasses.replace(tiny_data(parse_case(case)[1]), **DATA_FLAGS.get(case, {}))


def rank_mismatches(model: nn.Module) -> list[str]:
    """Entries of this rank's state dict that differ from rank 0's (collective)."""
    skip = per_rank_state(model)
    mine = {k: v.detach().cpu() for k, v in model.state_dict().items() if k not in skip}
    box = [mine if dist.get_rank() == 0 else None]
    dist.broadcast_object_list(box, src=0)
    reference = box[0]
    bad = []
    for k, v in mine.items():
        ref = reference.get(k)
        if ref is None or ref.shape != v.shape or not torch.equal(ref, v):
            diff = (v.double() - ref.double()).abs().max().item() if ref is not None else None
            bad.append(f"{k} (max |diff| {diff})")
    return bad


def train_case(case: str, out: Path, accum: int, steps: int) -> GenerativeModel:
    """Train `case`; returns the trained model."""
    model, _ = build_case(case)
    cfg = TrainConfig(
        steps=steps,
        batch_size=BATCH,
        seed=0,
        device="cpu",
        grad_accum=accum,
        checkpoint_every=steps,
        sample_every=steps,
        log_every=steps,
        num_samples=4,
    )
    trainer = Trainer(model, case_data(case), cfg, out / "runs" / case, progress=False)
    trainer.fit()
    return trainer.model


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--grad-accum", type=int, default=1)
    parser.add_argument("--steps", type=int, default=STEPS)
    parser.add_argument("--cases", default="", help="comma-separated case names (default: all)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    torch.set_num_threads(1)
    ranks = distributed.setup(torch.device("cpu"))
    chosen = set(filter(None, args.cases.split(",")))
    results: dict[str, dict] = {}
    args.out.mkdir(parents=True, exist_ok=True)
    try:
        for case in cases():
            if chosen and case not in chosen:
                continue
            start = time.perf_counter()
            entry: dict = {"error": None, "rank_mismatch": []}
            try:
                model = train_case(case, args.out, args.grad_accum, args.steps)
                if ranks.enabled:
                    found = distributed.gather_objects(rank_mismatches(model))
                    entry["rank_mismatch"] = [
                        f"rank {r}: {k}" for r, bad in enumerate(found) for k in bad
                    ]
                if ranks.main:
                    state = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
                    torch.save(state, args.out / f"{case}.pt")
            except Exception:  # recorded, and the next case still runs
                entry["error"] = traceback.format_exc()[-3000:]
            entry["seconds"] = round(time.perf_counter() - start, 2)
            results[case] = entry
            if ranks.main:
                print(f"{case:20s} {entry['seconds']:6.2f}s", flush=True)
        if ranks.main:
            (args.out / "results.json").write_text(json.dumps(results, indent=1))
    finally:
        distributed.teardown()
    return 0


if __name__ == "__main__":
    code = main()
    # Leave without the interpreter's finalisation: gloo's worker threads can still hold tensors
    # then, and freeing them while Python is torn down aborts the process (SIGABRT, "terminate
    # called without an active exception"; the pytorch#179291 discussion). Everything this
    # worker writes is closed or flushed by now.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
