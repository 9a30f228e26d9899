"""How the processes `torchrun` starts share the model (`train.strategy`), and activation
checkpointing (`train.activation_checkpointing`).

- `ddp`: every process holds the whole model and Adam's moments; gradients are averaged in the
  backward pass (DistributedDataParallel). Fastest while the training state fits each device.
- `fsdp`: FSDP2 (`torch.distributed.fsdp.fully_shard`, Zhao et al. 2023) per encoder and decoder
  layer, plus the root for the embeddings: each process keeps 1/world_size of every weight,
  gradient and Adam moment, and a layer's weights are gathered whole only for its forward and
  backward. Memory per process falls with the world size, at the cost of that communication.

Whatever the strategy, checkpoints hold whole tensors (`gather_weights`,
`gather_optimizer_state`, collectives that rank 0 receives), so every other command reads them
unchanged and a run saved under one strategy resumes under the other. A run restores into the
whole model before it is sharded (`shard`), so resuming needs no second file format.

Activation checkpointing (Chen et al. 2016, "Training Deep Nets with Sublinear Memory Cost"):
each layer keeps only its input for the backward pass and runs its forward again there, with
the same dropout masks (the RNG state is replayed): the same gradients for about a third more
compute, and the activations of one layer instead of all of them.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch
from torch import Tensor, nn
from torch.distributed.device_mesh import init_device_mesh
from torch.distributed.fsdp import fully_shard
from torch.distributed.tensor import DTensor, distribute_tensor
from torch.nn.parallel import DistributedDataParallel
from torch.utils.checkpoint import checkpoint

from aiayn.train.distributed import DistributedContext


def transformer_layers(model: nn.Module) -> list[nn.Module]:
    """The encoder's and decoder's layers (a language model has only a decoder)."""
    stacks = [getattr(model, "encoder", None), model.decoder]
    return [layer for stack in stacks if stack is not None for layer in stack.layers]


def checkpoint_activations(model: nn.Module) -> None:
    """Make every layer of `model` recompute its activations in the backward pass. The layer's
    own `forward` is wrapped (an instance attribute), so the weights keep their names."""
    for layer in transformer_layers(model):
        layer.forward = functools.partial(checkpoint, layer.forward, use_reentrant=False)


def wrap_ddp(model: nn.Module, ctx: DistributedContext) -> DistributedDataParallel:
    """The whole model on every process, gradients averaged in the backward pass."""
    ids = [ctx.device.index] if ctx.device.type == "cuda" else None
    return DistributedDataParallel(model, device_ids=ids)


def shard(model: nn.Module, ctx: DistributedContext) -> nn.Module:
    """Shard `model` in place over the `ctx.world_size` processes with FSDP2: one group per
    layer (gathered for its forward and backward, then freed), the root holding the rest (the
    shared embedding and output matrix, final norms). Build the optimizer after this: the
    parameters are replaced by their shards (DTensors)."""
    mesh = init_device_mesh(ctx.device.type, (ctx.world_size,))
    for layer in transformer_layers(model):
        fully_shard(layer, mesh=mesh)
    fully_shard(model, mesh=mesh)
    return model


def local_parameters(model: nn.Module) -> int:
    """How many parameter values this process holds (all of them unless sharded)."""
    return sum(p.to_local().numel() if isinstance(p, DTensor) else p.numel()
               for p in model.parameters())  # fmt: skip


def shard_optimizer_state(state: dict[str, Any], optimizer: torch.optim.Optimizer) -> dict:
    """`state` (an optimizer `state_dict` of whole tensors) with each moment cut to this
    process's shard of its parameter, for the optimizer built over the sharded model. Every
    process holds the whole state, so each takes its own part without communicating."""
    params = [p for group in optimizer.param_groups for p in group["params"]]
    sharded: dict[int, dict[str, Any]] = {}
    for index, moments in state["state"].items():
        param = params[index]
        sharded[index] = {
            name: _shard_like(value, param) if name != "step" else value
            for name, value in moments.items()
        }
    return {"state": sharded, "param_groups": state["param_groups"]}


def _shard_like(value: Tensor, param: Tensor) -> Tensor:
    if not isinstance(param, DTensor):
        return value
    return distribute_tensor(
        value.to(param.device), param.device_mesh, param.placements, src_data_rank=None
    )


@contextmanager
def without_gradient_sync(model: nn.Module) -> Iterator[None]:
    """Keep this backward's gradients local (every micro-batch of an update but the last) under
    DDP (`no_sync`). FSDP reduce-scatters every micro-batch's gradients into the shards instead:
    skipping that (`set_requires_gradient_sync(False)`) would keep whole gradients of every
    layer until the update, the memory FSDP is there to save."""
    if isinstance(model, DistributedDataParallel):
        with model.no_sync():
            yield
    else:
        yield


def clip_gradients(model: nn.Module, max_norm: float) -> float:
    """Clip the norm of all gradients to `max_norm`; their norm before clipping (under FSDP the
    norm of the whole gradient, summed over the shards)."""
    norm = torch.nn.utils.clip_grad_norm_(model.parameters(), max_norm)
    return (norm.full_tensor() if isinstance(norm, DTensor) else norm).item()


def gather_weights(model: nn.Module, into: nn.Module | None) -> None:
    """Copy the whole weights of the sharded `model` into `into`, an unsharded model of the
    same shape (rank 0's; None on the others). A collective: every process calls it."""
    targets = into.state_dict(keep_vars=True) if into is not None else {}
    gathered: set[int] = set()
    for name, tensor in model.state_dict(keep_vars=True).items():
        if id(tensor) in gathered:  # tied weights: one tensor under several names
            continue
        gathered.add(id(tensor))
        whole = tensor.full_tensor() if isinstance(tensor, DTensor) else tensor
        if into is not None:
            with torch.no_grad():
                targets[name].copy_(whole)


def gather_optimizer_state(optimizer: torch.optim.Optimizer, is_main: bool) -> dict | None:
    """The optimizer's `state_dict` with whole tensors on the CPU, on rank 0 (None on the
    others), as an unsharded optimizer would have it. A collective."""
    state = optimizer.state_dict()
    whole: dict[int, dict[str, Any]] = {}
    for index, moments in state["state"].items():
        whole[index] = {}
        for name, value in moments.items():
            if isinstance(value, DTensor):
                value = value.full_tensor()
            whole[index][name] = value.cpu() if isinstance(value, Tensor) else value
    return {"state": whole, "param_groups": state["param_groups"]} if is_main else None
