"""Stratified, seeded train/validation splits and views of a dataset by index.

Model selection (best epoch, hyper-parameters) belongs on a validation split held out of
the training set, never on the test set. :func:`stratified_split` draws it per class, so
every class is on both sides; :func:`split_dataset` applies it to a dataset and keeps
in-memory loading working.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

import torch
from torch.utils.data import Dataset

from gkl.utils.errors import InputError

from .base import InfoDataset, MemorySplit

__all__ = ["stratified_split", "split_dataset", "dataset_targets", "IndexedDataset"]


def dataset_targets(dataset: Dataset) -> torch.Tensor:
    """The class labels of a map-style ``(input, label)`` dataset as an int64 tensor (N,).

    Read from a ``targets``/``labels`` attribute of the dataset or of the dataset it
    wraps (``.base``, ``.dataset`` of a Subset) when one has the right length;
    otherwise from iterating the dataset (which decodes every input).
    """
    n = len(dataset)  # type: ignore[arg-type]
    explicit = getattr(dataset, "targets", None)
    if explicit is not None and not callable(explicit) and len(explicit) == n:
        return torch.as_tensor(explicit, dtype=torch.int64).clone()
    labels = getattr(dataset, "labels", None)
    if labels is not None and not callable(labels) and len(labels) == n:
        return torch.as_tensor(labels, dtype=torch.int64).clone()
    inner = getattr(dataset, "base", None)
    if inner is not None and len(inner) == n:
        return dataset_targets(inner)
    indices = getattr(dataset, "indices", None)
    inner = getattr(dataset, "dataset", None)
    if inner is not None and indices is not None and len(indices) == n:
        return dataset_targets(inner)[torch.as_tensor(list(indices), dtype=torch.int64)]
    return torch.tensor([int(dataset[i][1]) for i in range(n)], dtype=torch.int64)


def stratified_split(
    targets: Sequence[int] | torch.Tensor, val_fraction: float, seed: int, *, num_classes: int | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Indices ``(train_idx, val_idx)`` (sorted int64) holding out ``val_fraction`` of each class.

    Class c with n_c examples puts ``round(val_fraction · n_c)`` of them, drawn with
    a generator seeded by ``seed``, into validation. The two sides are disjoint and
    cover all examples; the result depends only on (targets, val_fraction, seed), so
    it is identical on every DDP rank. A class that would be empty on either side (or,
    with ``num_classes``, a class with no example at all) is an InputError naming it.
    """
    if (
        isinstance(val_fraction, bool)
        or not isinstance(val_fraction, (int, float))
        or not 0.0 < float(val_fraction) < 1.0
    ):
        raise InputError(f"val_fraction must be a number in (0, 1), got {val_fraction!r}")
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise InputError(f"seed must be an integer >= 0, got {seed!r}")
    y = torch.as_tensor(targets, dtype=torch.int64).flatten()
    if y.numel() == 0:
        raise InputError("targets: the dataset to split is empty")
    classes = range(num_classes) if num_classes is not None else torch.unique(y).tolist()
    generator = torch.Generator().manual_seed(seed)
    train_parts, val_parts = [], []
    for c in classes:
        members = torch.nonzero(y == c).flatten()
        n_val = int(round(float(val_fraction) * members.numel()))
        if n_val == 0 or n_val == members.numel():
            raise InputError(
                f"val_fraction={val_fraction}: class {c} has {members.numel()} training example(s), "
                f"leaving {'no validation' if n_val == 0 else 'no training'} example of it; "
                "choose another val_fraction"
            )
        order = members[torch.randperm(members.numel(), generator=generator)]
        val_parts.append(order[:n_val])
        train_parts.append(order[n_val:])
    return torch.sort(torch.cat(train_parts)).values, torch.sort(torch.cat(val_parts)).values


class IndexedDataset(InfoDataset):
    """The examples ``indices`` of ``dataset``, keeping its info and in-memory support."""

    def __init__(self, dataset: Dataset, indices: torch.Tensor) -> None:
        self.indices = torch.as_tensor(indices, dtype=torch.int64)
        self.source = dataset
        memory = None
        if isinstance(dataset, InfoDataset) and dataset.supports_in_memory:

            def memory() -> MemorySplit:
                split = dataset.memory_split()
                return replace(split, images=split.images[self.indices], labels=split.labels[self.indices])

        super().__init__(
            dataset,
            getattr(dataset, "info", None),
            augmentation=getattr(dataset, "augmentation", "none"),
            normalize=getattr(dataset, "normalize", True),
            image_transform=getattr(dataset, "image_transform", None),
            memory=memory,
        )
        self.targets = dataset_targets(dataset)[self.indices]

    def __len__(self) -> int:
        return int(self.indices.numel())

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        image, _ = self.source[int(self.indices[index])]
        return image, int(self.targets[index])


def split_dataset(dataset: Dataset, val_fraction: float, seed: int) -> tuple[IndexedDataset, IndexedDataset]:
    """``(train, val)`` views of ``dataset`` from :func:`stratified_split` on its labels."""
    info = getattr(dataset, "info", None)
    train_idx, val_idx = stratified_split(
        dataset_targets(dataset), val_fraction, seed, num_classes=getattr(info, "num_classes", None)
    )
    return IndexedDataset(dataset, train_idx), IndexedDataset(dataset, val_idx)
