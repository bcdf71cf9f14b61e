"""Device-side loader: the whole split lives on the device; batches are gathered,
augmented and normalised there with vectorised ops (no per-image Python work)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence

import torch
import torch.nn.functional as F

from .base import MemorySplit
from .sharding import derive_seed, generated_counts, mixed_batch_count, mixed_batches, shard_indices
from .transforms import normalize_batch, to_unit_float

#: output bytes assembled per thread switch on the CPU (64 MiB: ~40 CIFAR batches of 128; all of MNIST-1D)
CHUNK_BYTES = 64 * 2**20


@contextlib.contextmanager
def single_thread() -> Iterator[None]:
    """Run the block with one intra-op thread, then restore the caller's setting (no-op if already 1)."""
    threads = torch.get_num_threads()
    if threads == 1:
        yield
        return
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def random_crop_flip(images: torch.Tensor, padding: int, generator: torch.Generator) -> torch.Tensor:
    """Per-example random crop (zero padding ``padding``, output size unchanged) then horizontal flip (p = 1/2).

    Matches torchvision's ``RandomCrop(size, padding)`` + ``RandomHorizontalFlip()``: offsets are
    uniform in ``[0, 2 * padding]`` for rows and columns independently. Works on any dtype.
    """
    b, c, h, w = images.shape
    dev = images.device
    padded = F.pad(images, (padding, padding, padding, padding)) if padding else images
    pw = w + 2 * padding
    top = torch.randint(0, 2 * padding + 1, (b,), generator=generator, device=dev)
    left = torch.randint(0, 2 * padding + 1, (b,), generator=generator, device=dev)
    flip = torch.rand(b, generator=generator, device=dev) < 0.5
    rows = top[:, None] + torch.arange(h, device=dev)  # (B, H)
    cols = torch.arange(w, device=dev).expand(b, w)
    cols = torch.where(flip[:, None], w - 1 - cols, cols) + left[:, None]  # (B, W)
    flat = (rows[:, :, None] * pw + cols[:, None, :]).view(b, 1, h * w).expand(b, c, h * w)
    return padded.reshape(b, c, -1).gather(2, flat).view(b, c, h, w)


class InMemoryLoader:
    """Iterable of ``(images, labels)`` batches on ``device`` from a `MemorySplit`.

    The order per epoch is DistributedSampler's (see `gkl.data.sharding`);
    augmentation draws from a device generator seeded by ``(seed, epoch, rank)``.
    With generated images, batches are ``n_real`` real then ``n_gen`` generated
    examples (epoch definition in `gkl.data.sharding`). Call `set_epoch` before each epoch.
    """

    #: (rank, world_size) on evaluation loaders whose ranks hold disjoint shards (gkl.metrics.classification)
    rank_shard: tuple[int, int] | None = None

    def __init__(
        self,
        split: MemorySplit,
        *,
        batch_size: int,
        train: bool,
        device: torch.device,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
        drop_last: bool = False,
        generated: tuple[torch.Tensor, torch.Tensor] | None = None,
        generated_ratio: float = 0.0,
        generated_epoch: str = "real_pass",
    ) -> None:
        self.device = torch.device(device)
        self.images = split.images.to(self.device)
        self.labels = split.labels.to(self.device, torch.int64)
        self.split = split
        self.batch_size = batch_size
        self.shuffle = train
        self.seed, self.rank, self.world_size = seed, rank, world_size
        self.drop_last = drop_last
        self.epoch = 0
        self.generated_ratio = generated_ratio
        self.generated_epoch = generated_epoch
        self.gen_images: torch.Tensor | None = None
        self.gen_labels: torch.Tensor | None = None
        if generated is not None:
            gen_images, gen_labels = generated
            if gen_images.dtype != self.images.dtype or gen_images.shape[1:] != self.images.shape[1:]:
                raise ValueError(
                    f"generated: images {tuple(gen_images.shape[1:])} {gen_images.dtype} do not match "
                    f"the dataset's {tuple(self.images.shape[1:])} {self.images.dtype}"
                )
            self.gen_images = gen_images.to(self.device)
            self.gen_labels = gen_labels.to(self.device, torch.int64)
            generated_counts(batch_size, generated_ratio)  # validates the ratio

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch whose order and augmentation the next iteration produces."""
        self.epoch = int(epoch)

    def _shard(self) -> torch.Tensor:
        return shard_indices(
            len(self.labels),
            shuffle=self.shuffle,
            seed=self.seed,
            epoch=self.epoch,
            rank=self.rank,
            world_size=self.world_size,
        )

    def _batches(self) -> Sequence[tuple[torch.Tensor, torch.Tensor | None]]:
        shard = self._shard()
        if self.gen_labels is not None:  # set together with gen_images
            return mixed_batches(
                shard,
                len(self.gen_labels),
                batch_size=self.batch_size,
                generated_ratio=self.generated_ratio,
                seed=self.seed,
                epoch=self.epoch,
                rank=self.rank,
                world_size=self.world_size,
                epoch_length=self.generated_epoch,
            )
        n = len(shard)
        stop = n - n % self.batch_size if self.drop_last else n
        return [(shard[i : i + self.batch_size], None) for i in range(0, stop, self.batch_size)]

    def __len__(self) -> int:
        shard_len = -(-len(self.labels) // self.world_size)
        if self.gen_images is not None:
            return mixed_batch_count(shard_len, self.batch_size, self.generated_ratio, self.generated_epoch)
        return shard_len // self.batch_size if self.drop_last else -(-shard_len // self.batch_size)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        gen = torch.Generator(device=self.device)
        gen.manual_seed(derive_seed(self.seed, self.epoch, self.rank, "augment"))
        batches = self._batches()
        if self.device.type != "cpu":
            for real_idx, gen_idx in batches:
                yield self._assemble(real_idx, gen_idx, gen)
            return
        # On the CPU, batch-sized kernels gain little from intra-op threads and stall badly when
        # the CPU is shared: a chunk of batches (about CHUNK_BYTES of output) is assembled on one
        # thread, with the thread count switched once per chunk and restored before the batches
        # are handed out, so the caller's training step keeps its own thread count.
        per_batch = max(1, self.batch_size * self.images[0].numel() * 4)
        chunk = max(1, min(len(batches), CHUNK_BYTES // per_batch))
        for start in range(0, len(batches), chunk):
            with single_thread():
                ready = [self._assemble(real_idx, gen_idx, gen) for real_idx, gen_idx in batches[start : start + chunk]]
            yield from ready
            del ready

    def _assemble(
        self, real_idx: torch.Tensor, gen_idx: torch.Tensor | None, gen: torch.Generator
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Gather, augment, convert and normalise one batch on the device."""
        split = self.split
        real_idx = real_idx.to(self.device)
        images, labels = self.images[real_idx], self.labels[real_idx]
        if gen_idx is not None:
            assert self.gen_images is not None and self.gen_labels is not None  # gen_idx only comes with them
            gen_idx = gen_idx.to(self.device)
            images = torch.cat([images, self.gen_images[gen_idx]])
            labels = torch.cat([labels, self.gen_labels[gen_idx]])
        if split.augmentation == "crop_flip":
            images = random_crop_flip(images, split.padding, gen)
        images = to_unit_float(images)
        if split.mean is not None and split.std is not None:  # both or neither (MemorySplit)
            images = normalize_batch(images, split.mean, split.std)
        return images, labels
