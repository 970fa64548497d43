"""Process-group helpers: torchrun detection, ranks, reductions.

Under ``torchrun`` the environment carries RANK, LOCAL_RANK and WORLD_SIZE;
``setup`` then joins the process group (NCCL on GPUs, gloo on CPU). Without it
every helper is a no-op for a single process.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class Env:
    rank: int = 0
    local_rank: int = 0
    world: int = 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def from_environment() -> Env:
    if "RANK" not in os.environ or "WORLD_SIZE" not in os.environ:
        return Env()
    return Env(int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", 0)), int(os.environ["WORLD_SIZE"]))


def setup(device: torch.device) -> Env:
    """Join the torchrun process group if there is one."""
    env = from_environment()
    if env.world > 1 and not dist.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        dist.init_process_group(backend=backend, device_id=device if device.type == "cuda" else None,
                                **_restart_store(env))
    return env


def _restart_store(env: Env) -> dict:
    """After torchrun restarts its workers (``--max-restarts``), the store still holds the dead
    workers' addresses, and the new group connects to them and fails (seen with gloo on torch
    2.14; pytorch/pytorch issue 167288 reports it with NCCL). Each restart round gets its own
    key space in the same store."""
    restart = int(os.environ.get("TORCHELASTIC_RESTART_COUNT", "0"))
    if not restart:
        return {}
    agent_store = os.environ.get("TORCHELASTIC_USE_AGENT_STORE", "").lower() == "true"
    store = dist.TCPStore(os.environ["MASTER_ADDR"], int(os.environ["MASTER_PORT"]), env.world,
                          is_master=env.rank == 0 and not agent_store)
    return {"store": dist.PrefixStore(f"alexnet/restart-{restart}/", store), "rank": env.rank,
            "world_size": env.world}


def teardown() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


def is_active() -> bool:
    return dist.is_available() and dist.is_initialized()


def all_reduce_sum(t: torch.Tensor) -> torch.Tensor:
    """Sum over ranks in place (no-op in a single process)."""
    if is_active():
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t


def all_reduce_max(t: torch.Tensor) -> torch.Tensor:
    """Maximum over ranks in place (no-op in a single process)."""
    if is_active():
        dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return t


def broadcast_object(obj):
    if not is_active():
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def gather_lists(items: list) -> list:
    """Every rank's list, concatenated in rank order, on every rank (the list itself alone)."""
    if not is_active():
        return items
    boxes: list = [None] * dist.get_world_size()
    dist.all_gather_object(boxes, items)
    return [x for box in boxes for x in box]


def barrier() -> None:
    if is_active():
        dist.barrier()
