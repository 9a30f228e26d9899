"""Data-parallel training across processes started by `torchrun`: the process group (gloo on CPU,
nccl on GPU), the device of each rank, and the few collectives the training loop needs.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist

from aiayn.machine import fit_threads_to_cores, usable_cores


@dataclass(frozen=True)
class DistributedContext:
    """Where this process stands: its rank among `world_size` processes and its device."""

    rank: int = 0
    local_rank: int = 0
    world_size: int = 1
    device: torch.device = torch.device("cpu")

    @property
    def is_main(self) -> bool:
        """Rank 0: the only process that writes files and prints."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def resolve_device(name: str, local_rank: int = 0) -> torch.device:
    """`auto` -> `cuda:<local_rank>` when CUDA is available, else `cpu`; others as given."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(name)
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"device {name!r} (train.device, --device): CUDA is not available")
        if device.index is None:
            device = torch.device("cuda", local_rank)
    return device


def setup_distributed(device: str = "auto") -> DistributedContext:
    """Join the process group `torchrun` describes in RANK/WORLD_SIZE/LOCAL_RANK, if any.

    A single process (no WORLD_SIZE, or 1) gets a context without a process group. On CPU each
    of the local processes gets an equal share of the usable cores (`aiayn.machine`).
    """
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank, local_rank = int(os.environ.get("RANK", "0")), int(os.environ.get("LOCAL_RANK", "0"))
    resolved = resolve_device(device, local_rank)
    if world_size > 1 and not dist.is_initialized():
        if resolved.type == "cuda":
            torch.cuda.set_device(resolved)
        dist.init_process_group("nccl" if resolved.type == "cuda" else "gloo")
        if resolved.type == "cpu":
            local = int(os.environ.get("LOCAL_WORLD_SIZE", str(world_size)))
            torch.set_num_threads(max(1, usable_cores() // local))
    elif resolved.type == "cpu":
        fit_threads_to_cores()
    return DistributedContext(rank, local_rank, world_size, resolved)


def teardown_distributed(*, synchronize: bool = True) -> None:
    """Leave the process group (if one was joined). With `synchronize` (every rank finished
    normally) only once every rank is done with it: a rank that destroys its groups while a
    peer's last collective is still talking to it can abort in gloo's threads at exit
    ("terminate called without an active exception"). After an error, at once: a barrier
    could wait forever on a rank that is inside another collective."""
    if dist.is_initialized():
        if synchronize:
            dist.barrier()
        dist.destroy_process_group()


def all_reduce_sum(values: list[float], ctx: DistributedContext) -> list[float]:
    """Element-wise sums of `values` over all ranks (the values themselves in one process)."""
    if not ctx.distributed:
        return values
    backend_device = ctx.device if dist.get_backend() == "nccl" else torch.device("cpu")
    tensor = torch.tensor(values, dtype=torch.float64, device=backend_device)
    dist.all_reduce(tensor)
    return tensor.tolist()


def all_gather_objects(value: Any, ctx: DistributedContext) -> list[Any]:
    """Every rank's `value`, in rank order (picklable values; only used between live ranks)."""
    if not ctx.distributed:
        return [value]
    gathered: list[Any] = [None] * ctx.world_size
    dist.all_gather_object(gathered, value)
    return gathered


def barrier(ctx: DistributedContext) -> None:
    """Wait until every rank gets here."""
    if ctx.distributed:
        dist.barrier()
