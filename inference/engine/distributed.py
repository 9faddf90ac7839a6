"""The tensor-parallel process group of this process: which rank it is, of how many, and the
three collectives the model and the runner use.

Contract:
- One group per process, set by `init` (rank 0 in `tp_launch`, the other ranks in
  `tp_follower.main`) and cleared by `destroy`. Without `init` this process is rank 0 of 1,
  and every collective returns its input without touching `torch.distributed`: a TP=1 engine
  runs no collective and needs no process group. Layers read the group once, when built.
- Backends: gloo on CPU, NCCL on CUDA (NVLink multicast off: `NCCL_NVLS_ENABLE=0`, set before
  the group starts). Every collective has the group's timeout (`COLLECTIVE_TIMEOUT_S`), so a
  rank that stops answering fails the step instead of hanging it for ever.
- Every rank calls the same collectives in the same order with the same shapes; the runner's
  step plan (tp_runner.py) is what keeps them in step.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import timedelta

import torch
import torch.distributed as dist

# Long enough for the slowest rank to load its shard before the first collective (the pool
# size); a dead rank is noticed sooner by the watchdogs in tp_launch.py and tp_follower.py.
COLLECTIVE_TIMEOUT_S = 600.0


@dataclass(frozen=True)
class TPGroup:
    rank: int = 0
    size: int = 1


_group = TPGroup()


def init(rank: int, size: int, init_file: str, device: torch.device) -> None:
    """Join the group of `size` ranks rendezvousing on `init_file` (a path no run has used)."""
    global _group
    if device.type == "cuda":
        # NVLink multicast (NVLS) off: it fails on some virtualised multi-GPU hosts
        os.environ.setdefault("NCCL_NVLS_ENABLE", "0")
        torch.cuda.set_device(device)
    dist.init_process_group(
        backend="nccl" if device.type == "cuda" else "gloo",
        init_method=f"file://{init_file}",
        rank=rank,
        world_size=size,
        timeout=timedelta(seconds=COLLECTIVE_TIMEOUT_S),
        device_id=device if device.type == "cuda" else None,
    )
    _group = TPGroup(rank, size)


def destroy() -> None:
    """Leave the group (a no-op without one); this process is rank 0 of 1 again."""
    global _group
    if dist.is_initialized():
        dist.destroy_process_group()
    _group = TPGroup()


def group() -> TPGroup:
    return _group


def tp_rank() -> int:
    return _group.rank


def tp_size() -> int:
    return _group.size


def all_reduce(x: torch.Tensor) -> torch.Tensor:
    """Sum `x` over the ranks, in place; `x` itself at TP=1."""
    if _group.size > 1:
        dist.all_reduce(x)
    return x


def all_reduce_min(n: int, device: torch.device) -> int:
    """The smallest `n` of every rank (the KV pool's block count must agree)."""
    if _group.size == 1:
        return n
    t = torch.tensor([n], dtype=torch.int64, device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MIN)
    return int(t.item())


def broadcast(x: torch.Tensor) -> torch.Tensor:
    """Rank 0's `x` on every rank, in place."""
    if _group.size > 1:
        dist.broadcast(x, src=0)
    return x


def gather_last_dim(x: torch.Tensor) -> torch.Tensor | None:
    """Every rank's `x` joined along the last dim, on rank 0; None on the other ranks.
    `x` itself at TP=1."""
    if _group.size == 1:
        return x
    parts = [torch.empty_like(x) for _ in range(_group.size)] if _group.rank == 0 else None
    dist.gather(x.contiguous(), parts, dst=0)
    return torch.cat(parts, dim=-1) if parts is not None else None
