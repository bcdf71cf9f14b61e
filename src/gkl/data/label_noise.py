"""Synthetic label noise on a training set (Kim et al. 2021, noisy-label experiments).

``symmetric``: exactly ``round(rate · N)`` examples, drawn uniformly without
replacement, get a label drawn uniformly from the C − 1 *other* classes.

``asymmetric``: each class c with a partner ``mapping[c] != c`` has
``round(rate · n_c)`` of its n_c examples relabelled as ``mapping[c]``. The map:

* CIFAR-10 (class names of CIFAR-10, or a dataset named ``cifar10``): the usual pairs
  truck → automobile, bird → airplane, deer → horse, cat ↔ dog; the other five classes
  keep their labels (so the overall noisy fraction is about rate / 2).
* any other dataset: y → (y + 1) mod C for every class (CIFAR-100's superclass
  rotation is not built in; pass ``mapping=`` for it or any other map).

The draw depends only on (labels, rate, kind, seed): it is identical on every DDP rank.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

import torch
from torch.utils.data import Dataset

from gkl.utils.errors import InputError

from .base import InfoDataset, MemorySplit
from .splits import dataset_targets

__all__ = ["LabelNoise", "NOISE_KINDS", "CIFAR10_CLASSES", "asymmetric_map"]

NOISE_KINDS = ("symmetric", "asymmetric")
CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
#: source class -> noisy class (indices of CIFAR10_CLASSES)
CIFAR10_PAIRS = {9: 1, 2: 0, 4: 7, 3: 5, 5: 3}


def asymmetric_map(
    num_classes: int, *, dataset_name: str | None = None, class_names: Sequence[str] | None = None
) -> list[int]:
    """The class map of asymmetric noise (see the module docstring); ``map[c] == c`` = not flipped."""
    is_cifar10 = num_classes == 10 and (
        dataset_name == "cifar10" or (class_names is not None and tuple(class_names) == CIFAR10_CLASSES)
    )
    if is_cifar10:
        return [CIFAR10_PAIRS.get(c, c) for c in range(10)]
    return [(c + 1) % num_classes for c in range(num_classes)]


class LabelNoise(InfoDataset):
    """``dataset`` with noisy labels; ``.clean_targets`` keeps the true ones.

    Attributes: ``targets`` (noisy, int64 (N,)), ``clean_targets``, ``is_noisy`` (bool (N,)),
    ``num_noisy``, ``mapping`` (asymmetric only). Items are ``(input, noisy label)``;
    in-memory loading of the wrapped dataset keeps working with the noisy labels.
    Evaluate on the untouched test split (clean labels).
    """

    def __init__(
        self,
        dataset: Dataset,
        rate: float,
        *,
        kind: str = "symmetric",
        num_classes: int | None = None,
        seed: int = 0,
        mapping: Sequence[int] | None = None,
    ) -> None:
        if isinstance(rate, bool) or not isinstance(rate, (int, float)) or not 0.0 <= float(rate) < 1.0:
            raise InputError(f"label noise rate must be a number in [0, 1), got {rate!r}")
        if kind not in NOISE_KINDS:
            raise InputError(f"label noise kind must be one of {', '.join(NOISE_KINDS)}, got {kind!r}")
        if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
            raise InputError(f"label noise seed must be an integer >= 0, got {seed!r}")
        info = getattr(dataset, "info", None)
        if num_classes is None:
            if info is None:
                raise InputError("label noise: num_classes must be given for a dataset without .info")
            num_classes = info.num_classes
        if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 2:
            raise InputError(f"label noise num_classes must be an integer >= 2, got {num_classes!r}")
        clean = dataset_targets(dataset)
        if clean.numel() and (clean.min() < 0 or clean.max() >= num_classes):
            raise InputError(
                f"label noise: labels must lie in [0, {num_classes - 1}], found {int(clean.min())}..{int(clean.max())}"
            )
        self.rate, self.kind, self.seed, self.num_classes = float(rate), kind, seed, num_classes
        generator = torch.Generator().manual_seed(seed)
        self.mapping: list[int] | None = None
        if kind == "symmetric":
            noisy = _symmetric(clean, self.rate, num_classes, generator)
        else:
            if mapping is None:
                mapping = asymmetric_map(
                    num_classes,
                    dataset_name=getattr(info, "name", None),
                    class_names=getattr(info, "class_names", None),
                )
            self.mapping = _check_mapping(mapping, num_classes)
            noisy = _asymmetric(clean, self.rate, self.mapping, generator)
        self.clean_targets = clean
        self.targets = noisy
        self.is_noisy = noisy != clean
        self.num_noisy = int(self.is_noisy.sum())
        self.source = dataset

        memory = None
        if isinstance(dataset, InfoDataset) and dataset.supports_in_memory:

            def memory() -> MemorySplit:
                return replace(dataset.memory_split(), labels=self.targets.clone())

        super().__init__(
            dataset,
            info,
            augmentation=getattr(dataset, "augmentation", "none"),
            normalize=getattr(dataset, "normalize", True),
            image_transform=getattr(dataset, "image_transform", None),
            memory=memory,
        )

    def __len__(self) -> int:
        return int(self.targets.numel())

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        image, _ = self.source[index]
        return image, int(self.targets[index])

    def __repr__(self) -> str:
        return f"LabelNoise(kind={self.kind!r}, rate={self.rate}, seed={self.seed}, noisy={self.num_noisy}/{len(self)})"


def _symmetric(clean: torch.Tensor, rate: float, num_classes: int, generator: torch.Generator) -> torch.Tensor:
    n = clean.numel()
    k = int(round(rate * n))
    chosen = torch.randperm(n, generator=generator)[:k]
    # an offset in 1..C-1 added mod C: uniform over the other classes, never the true one
    offset = torch.randint(1, num_classes, (k,), generator=generator)
    noisy = clean.clone()
    noisy[chosen] = (clean[chosen] + offset) % num_classes
    return noisy


def _asymmetric(clean: torch.Tensor, rate: float, mapping: list[int], generator: torch.Generator) -> torch.Tensor:
    noisy = clean.clone()
    for c, target in enumerate(mapping):
        if target == c:
            continue
        members = torch.nonzero(clean == c).flatten()
        k = int(round(rate * members.numel()))
        chosen = members[torch.randperm(members.numel(), generator=generator)[:k]]
        noisy[chosen] = target
    return noisy


def _check_mapping(mapping: Sequence[int], num_classes: int) -> list[int]:
    values = [int(m) for m in mapping]
    if len(values) != num_classes or any(not 0 <= m < num_classes for m in values):
        raise InputError(
            f"label noise mapping must list one class in [0, {num_classes - 1}] per class "
            f"({num_classes} entries), got {list(mapping)!r}"
        )
    return values
