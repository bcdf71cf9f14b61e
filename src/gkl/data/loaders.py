"""`build_loader`: one entry point for the per-image (DataLoader) and in-memory paths.

Both paths are deterministic given ``(seed, epoch, rank)`` and visit examples in
the same order (DistributedSampler's, see `gkl.data.sharding`). Call
``loader.set_epoch(epoch)`` before iterating each epoch.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator, Sized
from typing import Any, cast

import torch
from torch.utils.data import ConcatDataset, DataLoader, Dataset, DistributedSampler, Sampler

from .base import InfoDataset
from .generated import GeneratedImages
from .in_memory import InMemoryLoader
from .sharding import EPOCH_LENGTHS, derive_seed, generated_counts, mixed_batch_count, mixed_batches, shard_indices


class MixedBatchSampler(Sampler[list[int]]):
    """Batches of indices into ``ConcatDataset([real, generated])`` (real first, then generated)."""

    def __init__(
        self,
        n_real: int,
        n_generated: int,
        *,
        batch_size: int,
        generated_ratio: float,
        shuffle: bool,
        seed: int,
        rank: int,
        world_size: int,
        epoch_length: str = "real_pass",
    ) -> None:
        self.n_real, self.n_generated = n_real, n_generated
        self.epoch_length = epoch_length
        self.batch_size, self.generated_ratio = batch_size, generated_ratio
        self.shuffle, self.seed, self.rank, self.world_size = shuffle, seed, rank, world_size
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        shard_len = -(-self.n_real // self.world_size)
        return mixed_batch_count(shard_len, self.batch_size, self.generated_ratio, self.epoch_length)

    def __iter__(self) -> Iterator[list[int]]:
        shard = shard_indices(
            self.n_real,
            shuffle=self.shuffle,
            seed=self.seed,
            epoch=self.epoch,
            rank=self.rank,
            world_size=self.world_size,
        )
        for real, gen in mixed_batches(
            shard,
            self.n_generated,
            batch_size=self.batch_size,
            generated_ratio=self.generated_ratio,
            seed=self.seed,
            epoch=self.epoch,
            rank=self.rank,
            world_size=self.world_size,
            epoch_length=self.epoch_length,
        ):
            yield real.tolist() + (gen + self.n_real).tolist()


class StridedSampler(Sampler[int]):
    """Indices ``rank, rank + world_size, ...`` of ``n`` examples in order: an evaluation shard, no padding."""

    def __init__(self, n: int, *, rank: int, world_size: int) -> None:
        self.n, self.rank, self.world_size = n, rank, world_size

    def set_epoch(self, epoch: int) -> None:  # the order never changes
        pass

    def __len__(self) -> int:
        return len(range(self.rank, self.n, self.world_size))

    def __iter__(self) -> Iterator[int]:
        return iter(range(self.rank, self.n, self.world_size))


class PerImageLoader:
    """DataLoader wrapper with `set_epoch`; transforms draw from a private RNG seeded by ``(seed, epoch, rank)``.

    With ``num_workers=0`` the global torch RNG is swapped for the loader's own state
    around each batch, so the caller's random stream is neither used nor disturbed.
    """

    #: (rank, world_size) on evaluation loaders whose ranks hold disjoint shards (gkl.metrics.classification)
    rank_shard: tuple[int, int] | None = None

    def __init__(self, loader: DataLoader, sampler, *, seed: int, rank: int) -> None:
        self.loader, self.sampler = loader, sampler
        self.seed, self.rank = seed, rank
        self.set_epoch(0)

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch whose order and augmentation the next iteration produces."""
        self.epoch = int(epoch)
        self.sampler.set_epoch(self.epoch)
        self.loader.generator.manual_seed(derive_seed(self.seed, self.epoch, self.rank, "workers"))
        self._rng_state = (
            torch.Generator().manual_seed(derive_seed(self.seed, self.epoch, self.rank, "augment")).get_state()
        )

    @property
    def batch_size(self) -> int | None:
        """Examples per batch: the DataLoader's, or its batch sampler's (mixed real/generated batches,
        where the DataLoader has none): what ``optim.reference_batch_size`` scales the LR by."""
        if self.loader.batch_size is not None:
            return self.loader.batch_size
        return getattr(self.sampler, "batch_size", None)

    def __len__(self) -> int:
        return len(self.loader)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        if self.loader.num_workers > 0:
            yield from self.loader
            return
        state = self._rng_state.clone()
        batches = iter(self.loader)
        while True:
            caller_state = torch.get_rng_state()
            torch.set_rng_state(state)
            try:
                batch = next(batches)
            except StopIteration:
                return
            finally:
                state = torch.get_rng_state()
                torch.set_rng_state(caller_state)
            yield batch


def _check_int(name: str, value: object, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name}: expected an integer >= {minimum}, got {value!r}")
    return value


def build_loader(
    dataset: Dataset,
    *,
    batch_size: int,
    train: bool,
    device: torch.device | str = "cpu",
    in_memory: bool = False,
    num_workers: int = 0,
    seed: int = 0,
    rank: int = 0,
    world_size: int = 1,
    drop_last: bool | None = None,
    generated: GeneratedImages | None = None,
    generated_ratio: float = 0.0,
    generated_epoch: str = "real_pass",
):
    """Batches of ``(images, labels)`` for this rank; the result has ``__len__`` and ``set_epoch(epoch)``.

    ``train`` shuffles (per epoch) and, by default, drops the last incomplete batch
    (``drop_last=None`` means ``drop_last=train``). Training ranks get disjoint
    DistributedSampler shards padded to equal length. Evaluation (``train=False``) ranks get
    the strided shard ``rank, rank + world_size, ...`` in order, without padding, so each
    example is evaluated once; such loaders carry ``rank_shard = (rank, world_size)`` for
    the evaluators in `gkl.metrics`. ``in_memory=True`` keeps
    the split on ``device`` and augments whole batches there (datasets built by
    `build_dataset` that support it: CIFAR, digits, MNIST-1D); otherwise a
    DataLoader yields CPU tensors (pinned when ``device`` is CUDA).
    ``generated`` mixes generated images into training batches at
    ``generated_ratio`` (fraction per batch, rounded to whole examples); an epoch
    is one pass over the real shard (``generated_epoch="real_pass"``) or as many batches
    as the real shard fills alone (``"real_count"``, DM-AT), see `gkl.data.sharding`.
    """
    _check_int("batch_size", batch_size, 1)
    _check_int("num_workers", num_workers, 0)
    _check_int("world_size", world_size, 1)
    _check_int("rank", rank, 0)
    _check_int("seed", seed, 0)
    if rank >= world_size:
        raise ValueError(f"rank: expected 0 <= rank < world_size={world_size}, got {rank}")
    device = torch.device(device)
    drop_last = bool(train) if drop_last is None else bool(drop_last)
    if generated is None and generated_ratio:
        raise ValueError("generated_ratio: a non-zero ratio needs generated=GeneratedImages(...)")
    if generated is not None:
        if not train:
            raise ValueError("generated: mixing generated images is only for training loaders (train=True)")
        if not drop_last:
            raise ValueError("drop_last: mixed real/generated batches are always full; drop_last=False is not possible")
        generated_counts(batch_size, generated_ratio)
        if generated_epoch not in EPOCH_LENGTHS:
            raise ValueError(f"generated_epoch: expected one of {list(EPOCH_LENGTHS)}, got {generated_epoch!r}")

    if in_memory:
        if not isinstance(dataset, InfoDataset):
            raise ValueError(f"in_memory: needs a dataset from gkl.data.build_dataset, got {type(dataset).__name__}")
        split = dataset.memory_split()
        if not train:
            split = dataclasses.replace(
                split, images=split.images[rank::world_size], labels=split.labels[rank::world_size]
            )
            eval_loader = InMemoryLoader(
                split,
                batch_size=batch_size,
                train=False,
                device=device,
                seed=seed,
                rank=0,
                world_size=1,
                drop_last=drop_last,
            )
            eval_loader.rank_shard = (rank, world_size)
            return eval_loader
        gen_arrays = None
        if generated is not None:
            gen_arrays = (generated.uint8_nchw(), torch.from_numpy(generated.labels))
        return InMemoryLoader(
            split,
            batch_size=batch_size,
            train=train,
            device=device,
            seed=seed,
            rank=rank,
            world_size=world_size,
            drop_last=drop_last,
            generated=gen_arrays,
            generated_ratio=generated_ratio,
            generated_epoch=generated_epoch,
        )

    pin = device.type == "cuda"
    g = torch.Generator()
    common: dict[str, Any] = dict(num_workers=num_workers, pin_memory=pin, generator=g, persistent_workers=False)
    size = len(cast(Sized, dataset))  # the map-style datasets gkl builds have a length
    if generated is not None:
        transform = getattr(dataset, "image_transform", None)
        info = getattr(dataset, "info", None)
        if transform is None or info is None or info.input_kind != "cifar":
            raise ValueError(
                "generated: generated 32x32 images can only be mixed into a CIFAR dataset "
                "built by gkl.data.build_dataset"
            )
        combined: ConcatDataset = ConcatDataset([dataset, generated.with_transform(transform)])
        mixed = MixedBatchSampler(
            size,
            len(generated),
            batch_size=batch_size,
            generated_ratio=generated_ratio,
            epoch_length=generated_epoch,
            shuffle=train,
            seed=seed,
            rank=rank,
            world_size=world_size,
        )
        return PerImageLoader(DataLoader(combined, batch_sampler=mixed, **common), mixed, seed=seed, rank=rank)
    if not train:
        strided = StridedSampler(size, rank=rank, world_size=world_size)
        loader = DataLoader(dataset, batch_size=batch_size, sampler=strided, drop_last=drop_last, **common)
        result = PerImageLoader(loader, strided, seed=seed, rank=rank)
        result.rank_shard = (rank, world_size)
        return result
    sampler: DistributedSampler = DistributedSampler(
        dataset, num_replicas=world_size, rank=rank, shuffle=True, seed=seed, drop_last=False
    )
    loader = DataLoader(dataset, batch_size=batch_size, sampler=sampler, drop_last=drop_last, **common)
    return PerImageLoader(loader, sampler, seed=seed, rank=rank)
