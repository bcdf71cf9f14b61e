"""Deterministic epoch orders shared by both loader paths.

`shard_indices` reproduces ``torch.utils.data.DistributedSampler`` (shuffle from
a generator seeded with ``seed + epoch``, pad by repeating the head of the
permutation to a multiple of ``world_size``, rank ``r`` takes every
``world_size``-th index starting at ``r``), so the per-image and in-memory paths
visit the same examples in the same order.

`mixed_batches` defines epochs with generated data: each batch holds
``n_gen = round(batch_size * generated_ratio)`` generated and
``batch_size - n_gen`` real examples; an epoch (``epoch_length``) is one pass over this
rank's real shard (``real_pass``: ``len(shard) // n_real`` full batches, the remainder is
dropped) or as many batches as the real shard alone fills (``real_count``:
``ceil(len(shard) / batch_size)`` batches, at most ``len(shard) // n_real``, of the first
real examples of the epoch's shuffle: DM-AT's ``SemiSupervisedSampler``); the generated examples come from a per-epoch
global shuffle of the generated set (reshuffled and repeated when exhausted), sharded
across ranks the same way.
"""

from __future__ import annotations

import hashlib
import math

import torch

_STREAMS = {"generated": 1, "augment": 2, "workers": 3}
#: epoch lengths of mixed real/generated batches (module docstring)
EPOCH_LENGTHS: tuple[str, ...] = ("real_pass", "real_count")


def derive_seed(seed: int, epoch: int, rank: int, stream: str) -> int:
    """A 63-bit seed that depends on every one of ``(seed, epoch, rank, stream)``."""
    digest = hashlib.blake2b(f"{seed}/{epoch}/{rank}/{_STREAMS[stream]}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") >> 1


def shard_indices(n: int, *, shuffle: bool, seed: int, epoch: int, rank: int, world_size: int) -> torch.Tensor:
    """This rank's indices for ``epoch`` (int64, length ``ceil(n / world_size)``), as DistributedSampler."""
    if n <= 0:
        raise ValueError(f"dataset is empty (n={n})")
    if shuffle:
        g = torch.Generator().manual_seed(seed + epoch)
        order = torch.randperm(n, generator=g)
    else:
        order = torch.arange(n)
    total = math.ceil(n / world_size) * world_size
    if total > n:
        repeats = math.ceil((total - n) / n)
        order = torch.cat([order, order.repeat(repeats)[: total - n]])
    return order[rank:total:world_size]


def generated_counts(batch_size: int, generated_ratio: float) -> tuple[int, int]:
    """``(n_real, n_gen)`` per batch for ``generated_ratio`` in [0, 1)."""
    if not 0.0 <= generated_ratio < 1.0:
        raise ValueError(f"generated_ratio: expected a fraction in [0, 1), got {generated_ratio!r}")
    n_gen = int(round(batch_size * generated_ratio))
    if n_gen >= batch_size:
        raise ValueError(f"generated_ratio={generated_ratio} with batch_size={batch_size} leaves no real examples")
    return batch_size - n_gen, n_gen


def mixed_batch_count(shard_len: int, batch_size: int, generated_ratio: float, epoch_length: str = "real_pass") -> int:
    """Mixed batches in an epoch of a real shard of ``shard_len`` examples (module docstring)."""
    n_real = generated_counts(batch_size, generated_ratio)[0]
    if epoch_length == "real_pass":
        return shard_len // n_real
    if epoch_length == "real_count":  # never more than the shard fills with full batches
        return min(-(-shard_len // batch_size), shard_len // n_real)
    raise ValueError(f"epoch_length: expected one of {list(EPOCH_LENGTHS)}, got {epoch_length!r}")


def generated_indices(
    n_generated: int, count: int, *, seed: int, epoch: int, rank: int, world_size: int
) -> torch.Tensor:
    """This rank's ``count`` generated indices for ``epoch`` (strided slice of a global reshuffled stream)."""
    needed = count * world_size
    pieces, have, k = [], 0, 0
    while have < needed:
        g = torch.Generator().manual_seed(derive_seed(seed, epoch * 1_000_003 + k, 0, "generated"))
        pieces.append(torch.randperm(n_generated, generator=g))
        have += n_generated
        k += 1
    stream = torch.cat(pieces) if pieces else torch.empty(0, dtype=torch.int64)
    return stream[rank:needed:world_size]


def mixed_batches(
    real: torch.Tensor,
    n_generated: int,
    *,
    batch_size: int,
    generated_ratio: float,
    seed: int,
    epoch: int,
    rank: int,
    world_size: int,
    epoch_length: str = "real_pass",
) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Per batch, ``(real indices, generated indices)`` following the module's epoch definition."""
    n_real, n_gen = generated_counts(batch_size, generated_ratio)
    num_batches = mixed_batch_count(len(real), batch_size, generated_ratio, epoch_length)
    if num_batches == 0:
        raise ValueError(
            f"batch_size: the real shard ({len(real)} examples) is smaller than the "
            f"{n_real} real examples one mixed batch needs"
        )
    gen = generated_indices(n_generated, num_batches * n_gen, seed=seed, epoch=epoch, rank=rank, world_size=world_size)
    return [(real[b * n_real : (b + 1) * n_real], gen[b * n_gen : (b + 1) * n_gen]) for b in range(num_batches)]
