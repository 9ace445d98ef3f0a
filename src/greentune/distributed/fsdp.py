"""FSDP (``train.distributed_strategy: fsdp``): train a sharded copy, hand back a whole model.

torch's FSDP2 (``fully_shard``) shards every parameter over the processes; gradients and
optimizer state follow the parameters. It ran on CPUs (gloo) as well as GPUs with torch 2.13.

The recipes evaluate and save the model they passed in, one rank at a time and on shards of the
test windows, which a sharded module cannot do (its forward passes are collectives). So the
loop trains a sharded *copy*: the model's parameters are moved into the shards (the original
is left on the meta device, holding no memory), and at the end they are gathered back into it.

Checkpoints stay "written once by rank 0, resumable with any number of processes": model and
optimizer state are gathered into full, name-keyed dictionaries (a collective on every rank).
"""

from __future__ import annotations

import copy
import warnings
from collections.abc import Callable
from typing import Any, TypeVar

import torch
from torch import nn
from torch.distributed.checkpoint.state_dict import (
    StateDictOptions,
    get_model_state_dict,
    get_optimizer_state_dict,
    set_model_state_dict,
    set_optimizer_state_dict,
)

from greentune.errors import CheckpointError

T = TypeVar("T")

FULL = StateDictOptions(full_state_dict=True, cpu_offload=True)
"""Gather whole tensors to rank 0's CPU memory (the other ranks get empty dictionaries)."""
OPTIMIZER_FORMAT = "fqn"
"""Marks optimizer state keyed by parameter name (torch.distributed.checkpoint.state_dict)."""


def is_sharded(model: nn.Module) -> bool:
    from torch.distributed.fsdp import FSDPModule

    return isinstance(model, FSDPModule)


def shard(model: nn.Module, device: torch.device) -> nn.Module:
    """A copy of ``model`` sharded over all processes; ``model`` keeps no parameter memory.

    Every block of every ``nn.ModuleList`` (the transformer layers) is its own FSDP unit, so
    only one block's parameters are gathered at a time; the rest of the model is the root unit.
    """
    import torch.distributed as dist
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import fully_shard

    params: dict[str, Any] = {name: p.detach() for name, p in model.named_parameters()}
    buffers = {name: b.detach().clone() for name, b in model.named_buffers()}
    model.to("meta")  # ``params`` hold the values until they are in the shards
    sharded = copy.deepcopy(model)
    # FSDP2 warns whenever a module returns a view, in case the caller changes it in place;
    # greentune's losses do not (FSDP's step losses equal DDP's to the last bit, see tests)
    warnings.filterwarnings("ignore", message=r"FSDP2-wrapped module .* returned a view tensor")
    mesh = init_device_mesh(device.type, (dist.get_world_size(),))
    for module in list(sharded.modules()):
        if isinstance(module, nn.ModuleList):
            for block in module:
                fully_shard(block, mesh=mesh)
    fully_shard(sharded, mesh=mesh)
    sharded.to_empty(device=device)  # this rank's shards only
    set_model_state_dict(
        sharded, params, options=StateDictOptions(full_state_dict=True, strict=False)
    )
    _copy_buffers(sharded, buffers)
    return sharded


def unshard_into(sharded: nn.Module, model: nn.Module) -> None:
    """Gather the trained parameters back into the (meta) ``model`` on every rank."""
    state = get_model_state_dict(sharded, options=StateDictOptions(full_state_dict=True))
    buffers = {name: b.detach().clone() for name, b in sharded.named_buffers()}
    # assign: the gathered tensors become the parameters, no second copy of the model
    model.load_state_dict(state, strict=False, assign=True)
    for name, buf in buffers.items():  # those the state dict does not carry are still meta
        owner, _, leaf = name.rpartition(".")
        module = model.get_submodule(owner)
        current = module._buffers[leaf]
        if current is not None and current.is_meta:
            module._buffers[leaf] = buf


def _copy_buffers(model: nn.Module, buffers: dict[str, torch.Tensor]) -> None:
    """``to_empty`` leaves buffers uninitialised, also those a state dict does not carry
    (non-persistent ones such as BERT's position ids)."""
    with torch.no_grad():
        for name, buf in model.named_buffers():
            buf.copy_(buffers[name])


def release(model: nn.Module) -> None:
    """Free the whole model's memory again (its shards hold the values)."""
    model.to("meta")


def with_whole_model(fn: Callable[[], T], sharded: nn.Module, model: nn.Module) -> Callable[[], T]:
    """Run ``fn`` (validation, which works on shards of the windows per rank and so cannot use
    the sharded module) on the whole model, gathered for the call and released after it."""

    def run() -> T:
        unshard_into(sharded, model)
        model.eval()
        try:
            return fn()
        finally:
            release(model)

    return run


def trainable_state(model: nn.Module) -> dict[str, Any]:
    """Whole trainable tensors on rank 0 (empty elsewhere); a collective on every rank."""
    names = {n for n, p in model.named_parameters() if p.requires_grad}
    state = get_model_state_dict(model, options=FULL)
    return {k: v for k, v in state.items() if k in names}


def optimizer_state(model: nn.Module, optimizer: Any) -> dict[str, Any]:
    """Whole optimizer state keyed by parameter name, on rank 0; a collective on every rank."""
    return get_optimizer_state_dict(model, optimizer, options=FULL)


def load_model_state(model: nn.Module, state: dict[str, Any]) -> None:
    """Each rank takes its shards of whole tensors (every rank read the checkpoint)."""
    options = StateDictOptions(full_state_dict=True, strict=False)
    set_model_state_dict(model, state, options=options)


def load_optimizer_state(model: nn.Module, optimizer: Any, state: dict[str, Any]) -> None:
    """Name-keyed optimizer state into a sharded or a plain model's optimizer."""
    if not all(isinstance(k, str) for group in state["param_groups"] for k in group["params"]):
        raise CheckpointError(
            "this checkpoint's optimizer state is keyed by position (written without FSDP by "
            "an older greentune); resume it once with train.distributed_strategy=ddp"
        )
    options = StateDictOptions(full_state_dict=is_sharded(model))
    set_optimizer_state_dict(model, optimizer, state, options=options)
