"""Data-parallel training over torch.distributed: one process per device (or per CPU share), started by torchrun.

    torchrun --nproc_per_node 2 -m s2r.policies.cli train Go1-Velocity-Flat --num-envs 512

Each rank steps its own envs (seeded apart), computes gradients on its own rollout, and the ranks sum
them with `all_reduce` and divide by the world size, so every rank takes the same optimiser step and the
weights stay identical without being sent again; rank 0 broadcasts the initial weights (and a resumed
checkpoint) once. The KL that adapts the learning rate is averaged the same way, and the observation
normaliser is fed every rank's batch, so the ranks also agree on the learning rate and the normaliser. This
is rsl_rl's multi-GPU scheme. Rank 0 alone owns the run folder (config, checkpoints, TensorBoard, export);
it decides each iteration whether the budget allows another and tells the others.

gloo serves CPU ranks (and the tests, with two processes on two cores); nccl serves CUDA ranks.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn


@dataclass(frozen=True)
class DistInfo:
    """Where this process sits in the group."""

    rank: int
    world_size: int
    local_rank: int
    backend: str

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def from_environment() -> DistInfo | None:
    """The group torchrun described in the environment (WORLD_SIZE > 1), joined; None when run alone.

    Raises:
        RuntimeError: WORLD_SIZE is set without the rest of torchrun's variables.
    """
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return None
    missing = [k for k in ("RANK", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT") if k not in os.environ]
    if missing:
        raise RuntimeError(f"WORLD_SIZE={world} but {', '.join(missing)} are not set: start data-parallel runs with "
                           "torchrun (e.g. `torchrun --nproc_per_node 2 -m s2r.policies.cli train ...`)")
    backend = "nccl" if torch.cuda.is_available() and dist.is_nccl_available() else "gloo"
    if not dist.is_initialized():
        dist.init_process_group(backend=backend)
    return DistInfo(rank=dist.get_rank(), world_size=dist.get_world_size(), local_rank=int(os.environ["LOCAL_RANK"]),
                    backend=backend)


def shutdown() -> None:
    """Leave the group (no-op when none was joined)."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def broadcast_module(module: nn.Module, src: int = 0) -> None:
    """Copy rank `src`'s parameters and buffers into every rank's `module`."""
    for t in (*module.parameters(), *module.buffers()):
        dist.broadcast(t.data, src)


def broadcast_object(obj: object, src: int = 0) -> object:
    """Rank `src`'s picklable object, on every rank."""
    box = [obj]
    dist.broadcast_object_list(box, src)
    return box[0]


def average_gradients(params: list[nn.Parameter], world_size: int) -> None:
    """Sum every rank's gradients in one flat buffer (one collective, not one per tensor), divide by world size."""
    grads = [p.grad for p in params if p.grad is not None]
    if not grads:
        return
    flat = torch.cat([g.reshape(-1) for g in grads])
    dist.all_reduce(flat)
    flat /= world_size
    i = 0
    for g in grads:
        n = g.numel()
        g.copy_(flat[i : i + n].view_as(g))
        i += n


def average(x: torch.Tensor, world_size: int) -> torch.Tensor:
    """Mean of a tensor over ranks (a copy)."""
    y = x.detach().clone()
    dist.all_reduce(y)
    return y / world_size


def gather_rows(x: torch.Tensor) -> torch.Tensor:
    """Every rank's (n, d) rows stacked in rank order (ranks must hold the same n)."""
    parts = [torch.empty_like(x) for _ in range(dist.get_world_size())]
    dist.all_gather(parts, x.contiguous())
    return torch.cat(parts)


def agree(go: bool, src: int = 0) -> bool:
    """Rank `src`'s yes/no, on every rank (the budget check: all ranks stop on the same iteration)."""
    t = torch.tensor([1 if go else 0], dtype=torch.int64)
    dist.broadcast(t, src)
    return bool(t.item())
