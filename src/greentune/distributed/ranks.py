"""Who am I among the processes, and the few collectives greentune needs.

Everything here degrades to the single-process answer when torch.distributed is not initialised,
so recipes call these helpers unconditionally. Processes are started by torchrun (or
``accelerate launch``), which sets RANK, WORLD_SIZE, LOCAL_RANK and LOCAL_WORLD_SIZE.
"""

from __future__ import annotations

import datetime as dt
import os
from typing import Any

import numpy as np
import torch
import torch.distributed as dist

DEFAULT_TIMEOUT_S = 1800.0


def launched() -> bool:
    """True inside a worker that torchrun (or accelerate launch) started with WORLD_SIZE > 1."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def init(timeout_s: float = DEFAULT_TIMEOUT_S) -> None:
    """Join the process group (gloo on CPU, NCCL on GPUs) through accelerate, once.

    ``timeout_s`` bounds every collective: a rank that hangs makes the others fail after it
    instead of waiting forever (a rank that dies is noticed by torchrun within a second).
    """
    if not launched() or dist.is_initialized():
        return
    from accelerate import PartialState

    timeout = dt.timedelta(seconds=timeout_s)
    if os.environ.get("TORCHELASTIC_USE_AGENT_STORE") == "True":
        _join_agent_store(timeout)  # accelerate then finds the group initialised
    if torch.cuda.is_available():
        PartialState(timeout=timeout)
    else:  # accelerate treats CPU processes as distributed only when told cpu=True
        PartialState(cpu=True, backend="gloo", timeout=timeout)


def shutdown() -> None:
    """Leave the process group. Its gloo threads must end before the interpreter does: left
    alive, one aborted a finished rank at exit ("terminate called without an active
    exception", SIGABRT; seen in 1 of 6 FSDP runs), which turned a complete run into exit 2."""
    if dist.is_initialized():
        dist.destroy_process_group()


def _join_agent_store(timeout: dt.timedelta) -> None:
    """Under torchrun, join the group through the agent's store with a key prefix per attempt:
    after a restart the workers otherwise met the failed attempt's keys and hung in gloo's
    connection set-up (seen with torch 2.13, --max-restarts)."""
    store = dist.TCPStore(
        os.environ["MASTER_ADDR"],
        int(os.environ["MASTER_PORT"]),
        is_master=False,
        timeout=timeout,
    )
    attempt = os.environ.get("TORCHELASTIC_RESTART_COUNT", "0")
    dist.init_process_group(
        "nccl" if torch.cuda.is_available() else "gloo",
        store=dist.PrefixStore(f"greentune/attempt-{attempt}", store),
        rank=int(os.environ["RANK"]),
        world_size=int(os.environ["WORLD_SIZE"]),
        timeout=timeout,
    )


def rank() -> int:
    return dist.get_rank() if dist.is_initialized() else 0


def world_size() -> int:
    return dist.get_world_size() if dist.is_initialized() else 1


def global_rank() -> int:
    """This process's rank, also before ``init`` and after ``shutdown`` (torchrun's RANK)."""
    if dist.is_initialized():
        return dist.get_rank()
    return int(os.environ.get("RANK", "0"))


def local_rank() -> int:
    return int(os.environ.get("LOCAL_RANK", "0"))


def local_world_size() -> int:
    return int(os.environ.get("LOCAL_WORLD_SIZE", "1"))


def is_main() -> bool:
    """Rank 0; before init and after shutdown torchrun's RANK still says which process this is."""
    return global_rank() == 0


def shard(n: int) -> np.ndarray:
    """Positions 0..n-1 this rank handles: every world_size-th one, so shards differ by <= 1."""
    return np.arange(rank(), n, world_size())


def gather_shards(local: np.ndarray, n: int) -> np.ndarray:
    """Reassemble the rows each rank computed for ``shard(n)`` into all n rows, on every rank.

    No padding: each position comes from exactly one rank, so no row is duplicated.
    """
    if world_size() == 1:
        return local
    parts: list[Any] = [None] * world_size()
    dist.all_gather_object(parts, local)
    # a rank left without rows may not know the row shape (e.g. classes); take it from one that has
    full = next((p for p in parts if len(p)), local)
    out = np.empty((n, *full.shape[1:]), dtype=full.dtype)
    for r, part in enumerate(parts):
        out[r :: world_size()] = part
    return out


def all_sum(values: list[float]) -> list[float]:
    """Element-wise sum over ranks (float64)."""
    if world_size() == 1:
        return list(values)
    tensor = torch.tensor(values, dtype=torch.float64)
    dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor.tolist()


def broadcast(obj: Any) -> Any:
    """Rank 0's ``obj`` on every rank."""
    if world_size() == 1:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def gather_objects(obj: Any) -> list[Any]:
    """Every rank's ``obj``, in rank order, on every rank."""
    if world_size() == 1:
        return [obj]
    parts: list[Any] = [None] * world_size()
    dist.all_gather_object(parts, obj)
    return parts


def barrier() -> None:
    if world_size() > 1:
        dist.barrier()
