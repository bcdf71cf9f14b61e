"""torch.distributed set-up from torchrun's environment (single- or multi-node).

torchrun sets ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR`` and
``MASTER_PORT`` for every process; without them the run is a single process.
"""

from __future__ import annotations

import gc
import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class DistInfo:
    """Where this process sits in the job."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")
    is_main: bool = True

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def resolve_device(device: str, local_rank: int = 0) -> torch.device:
    """``auto`` → ``cuda:<local_rank>`` when CUDA is available, else ``cpu``."""
    if device == "auto":
        return torch.device(f"cuda:{local_rank}") if torch.cuda.is_available() else torch.device("cpu")
    if device == "cpu":
        return torch.device("cpu")
    if device == "cuda" or device.startswith("cuda:"):
        if not torch.cuda.is_available():
            raise ValueError(f"device: {device!r} requested but CUDA is not available")
        return torch.device(f"cuda:{local_rank}") if device == "cuda" else torch.device(device)
    raise ValueError(f"device: expected 'auto', 'cpu', 'cuda' or 'cuda:N', got {device!r}")


def _env_int(name: str, default: int) -> int:
    raw = os.environ.get(name)
    if raw is None:
        return default
    try:
        return int(raw)
    except ValueError:
        raise ValueError(f"environment variable {name}: expected an integer, got {raw!r}") from None


def init_distributed(device: str = "auto") -> DistInfo:
    """Initialise the process group from torchrun's environment variables.

    Backend: nccl for CUDA devices, gloo for CPU. With ``WORLD_SIZE`` unset or 1
    no process group is created. With ``device="cuda"`` or ``"auto"`` each process
    uses ``cuda:<LOCAL_RANK>``.
    """
    world_size = _env_int("WORLD_SIZE", 1)
    rank = _env_int("RANK", 0)
    local_rank = _env_int("LOCAL_RANK", 0)
    if world_size < 1 or not 0 <= rank < world_size:
        raise ValueError(f"RANK={rank} / WORLD_SIZE={world_size}: expected 0 <= RANK < WORLD_SIZE")
    resolved = resolve_device(device, local_rank)
    if world_size > 1:
        for name in ("MASTER_ADDR", "MASTER_PORT"):
            if name not in os.environ:
                raise ValueError(f"environment variable {name} is not set; launch with torchrun")
        if resolved.type == "cuda":
            torch.cuda.set_device(resolved)
        if not dist.is_initialized():
            backend = "nccl" if resolved.type == "cuda" else "gloo"
            kwargs: dict[str, Any] = {"device_id": resolved} if resolved.type == "cuda" else {}
            dist.init_process_group(backend=backend, rank=rank, world_size=world_size, **kwargs)
    return DistInfo(rank=rank, world_size=world_size, local_rank=local_rank, device=resolved, is_main=rank == 0)


def cleanup() -> None:
    """Destroy the process group if one exists.

    Objects that still reference the process group (a finished run's DDP reducer, kept
    alive by reference cycles) are collected first, and all ranks meet at a barrier: a
    process group torn down while a peer still talks to it, or freed only at interpreter
    exit, can abort the process ("terminate called without an active exception").
    Call it after the trainer and its model have gone out of scope.
    """
    if dist.is_available() and dist.is_initialized():
        gc.collect()
        dist.barrier()
        dist.destroy_process_group()


def barrier(info: DistInfo | None) -> None:
    if info is not None and info.distributed:
        dist.barrier()


def gather_to_main(obj: Any, info: DistInfo) -> list[Any] | None:
    """``obj`` of every rank, in rank order, on rank 0 (None elsewhere); every rank must call it.
    ``obj`` is pickled: move tensors to the CPU first."""
    out: list[Any] | None = [None] * info.world_size if info.is_main else None
    dist.gather_object(obj, out, dst=0)
    return out


def all_reduce_sum(tensor: torch.Tensor, info: DistInfo | None) -> torch.Tensor:
    """Sum ``tensor`` over ranks in place (no-op for a single process); returns it."""
    if info is not None and info.distributed:
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor
