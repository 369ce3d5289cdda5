"""Statistics that layers keep outside the gradient, made identical on every process.

Under DDP (torchrun) each process sees its slice of the global batch, and with train.grad_accum
each slice is cut again into micro-batches run one after another. The Trainer orders the slices
so that rank r holds shards r*A .. r*A+A-1 of the global batch (A = grad_accum): concatenating
the ranks' rows in rank order, each rank's micro-batches in order, gives the global batch in
shard order, whatever the number of processes. Layers that update statistics from training
data use these two rules so that N processes with A micro-batches train as one process with
N*A micro-batches does:

- one-off data-dependent initialisation (ActNorm, the latent-diffusion scale): computed from the
  first micro-batch of rank 0, i.e. shard 0, and broadcast (`broadcast_`);
- per-step statistics (the VQ-VAE codebook): the micro-batches of a step are kept until the
  optimiser step and then concatenated over ranks (`gather_rows`);
- state that every training forward reads or updates (spectral-norm power iterations, the
  autoencoder's code Gaussian, the translation models' source bank, RBM persistent chains):
  DDP hands every process rank 0's buffers at the start of a step and keeps only rank 0's
  updates, so the later micro-batches of a step must start from the state the first one
  started from and leave it as the first one left it. The Trainer runs micro-batch m inside
  `micro_batch(m)`; layers ask `later_micro_batch()` and `first_call(self)`.

The first two are no-ops for one process; outside `micro_batch` (direct calls, tests) every
forward is a first micro-batch.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from contextlib import contextmanager

import torch
import torch.distributed as dist
from torch import Tensor

# (index m of the running micro-batch, a number unique to this entry) or None outside
_micro: tuple[int, int] | None = None
_entries = itertools.count(1)


@contextmanager
def micro_batch(index: int) -> Iterator[None]:
    """Mark the forward and backward of micro-batch `index` (0 .. grad_accum - 1) of a step."""
    global _micro
    outer, _micro = _micro, (index, next(_entries))
    try:
        yield
    finally:
        _micro = outer


def micro_batch_index() -> int | None:
    """The running micro-batch's index, None outside `micro_batch`."""
    return None if _micro is None else _micro[0]


def later_micro_batch() -> bool:
    """True inside micro-batch 1, 2, ... of a step: per-forward state is left alone there."""
    return _micro is not None and _micro[0] > 0


def first_call(owner: object) -> bool:
    """True when `owner` (a module) runs for the first time in the running micro-batch."""
    if _micro is None:
        return False
    seen = getattr(owner, "_sync_micro_entry", None)
    owner._sync_micro_entry = _micro[1]  # a plain attribute, not in the state dict
    return seen != _micro[1]


def distributed() -> bool:
    """True inside an initialised process group with more than one process."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


@torch.no_grad()
def broadcast_(t: Tensor, src: int = 0) -> Tensor:
    """Overwrite `t` in place with process `src`'s value (collective: every rank calls it)."""
    if distributed():
        dist.broadcast(t, src)
    return t


@torch.no_grad()
def gather_rows(t: Tensor) -> Tensor:
    """Rows of `t` from every process concatenated in rank order along dim 0 (collective).

    Ranks may hold different numbers of rows; the other dimensions must agree.
    """
    if not distributed():
        return t
    world = dist.get_world_size()
    sizes = torch.tensor([len(t)], device=t.device)
    all_sizes = [torch.zeros_like(sizes) for _ in range(world)]
    dist.all_gather(all_sizes, sizes)
    counts = [int(s) for s in all_sizes]
    longest = max(counts)
    padded = t.new_zeros(longest, *t.shape[1:])
    padded[: len(t)] = t
    parts = [torch.empty_like(padded) for _ in range(world)]
    dist.all_gather(parts, padded.contiguous())
    return torch.cat([p[:n] for p, n in zip(parts, counts)])
