"""DistributedDataParallel set-up under torchrun: gloo on CPU, nccl on GPU."""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class Dist:
    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world > 1


def launched() -> bool:
    """True when started by torchrun with more than one process."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def resolve_device(name: str, local_rank: int = 0) -> torch.device:
    """train.device: auto = CUDA when present (one GPU per local rank), else CPU."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda":
        name = f"cuda:{local_rank}"
    if name.startswith("cuda") and not torch.cuda.is_available():
        from genlab.errors import GenlabError

        raise GenlabError(f"train.device={name} but CUDA is not available; use auto or cpu")
    return torch.device(name)


def setup(device: torch.device) -> Dist:
    """Join the process group when launched by torchrun; a no-op for one process."""
    if not launched():
        return Dist()
    if not dist.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        dist.init_process_group(backend=backend)
    return Dist(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0")))


def barrier() -> None:
    if dist.is_initialized():
        dist.barrier()


def teardown() -> None:
    # A barrier first: without it gloo processes sometimes exit 1 at teardown.
    if dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


def all_true(flag: bool, device: torch.device) -> bool:
    """Logical AND of a flag over all processes (so every rank stops together)."""
    if not dist.is_initialized():
        return flag
    t = torch.tensor([1.0 if flag else 0.0], device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MIN)
    return bool(t.item() > 0)


def any_true(flag: bool, device: torch.device) -> bool:
    """Logical OR of a flag over all processes."""
    return not all_true(not flag, device)


def mean(t: torch.Tensor) -> torch.Tensor:
    """Mean of a tensor over all processes (itself for one process)."""
    if not dist.is_initialized():
        return t
    t = t.clone()
    dist.all_reduce(t)
    return t / dist.get_world_size()


def gather_objects(obj: object) -> list[object]:
    if not dist.is_initialized():
        return [obj]
    out: list[object] = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out
