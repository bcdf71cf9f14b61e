"""Batches on their way into a step: the train loader's interface, device placement and the
per-process batch size."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any, Protocol

import torch

__all__ = ["TrainLoader", "move_to_device", "per_process_batch_size"]


class TrainLoader(Protocol):
    """What the engine needs of a train loader: batches, their number per epoch, and
    ``set_epoch(epoch)`` (called at the start of every epoch, before iterating)."""

    def __iter__(self) -> Iterator[Any]: ...

    def __len__(self) -> int: ...

    def set_epoch(self, epoch: int) -> None: ...


def per_process_batch_size(loader: Any) -> int | None:
    """The loader's batch size per process: ``loader.batch_size``, else that of a wrapped
    ``loader.loader`` (a DataLoader inside a wrapper with ``set_epoch``), else None."""
    for candidate in (loader, getattr(loader, "loader", None)):
        size = getattr(candidate, "batch_size", None)
        if isinstance(size, int) and not isinstance(size, bool) and size > 0:
            return size
    return None


def move_to_device(batch: Any, device: torch.device, *, channels_last: bool = False) -> Any:
    """``batch`` with every tensor moved to ``device`` (recursing into tuples, lists and dicts);
    with ``channels_last`` 4-D floating tensors (images) also get the NHWC memory format."""
    if isinstance(batch, torch.Tensor):
        moved = batch.to(device, non_blocking=True)
        if channels_last and moved.ndim == 4 and moved.is_floating_point():
            moved = moved.contiguous(memory_format=torch.channels_last)
        return moved
    if isinstance(batch, tuple) and hasattr(batch, "_fields"):  # namedtuple
        return type(batch)(*(move_to_device(b, device, channels_last=channels_last) for b in batch))
    if isinstance(batch, (list, tuple)):
        return type(batch)(move_to_device(b, device, channels_last=channels_last) for b in batch)
    if isinstance(batch, Mapping):
        return {k: move_to_device(v, device, channels_last=channels_last) for k, v in batch.items()}
    return batch
