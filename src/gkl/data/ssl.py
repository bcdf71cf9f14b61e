"""Semi-supervised data: the labelled split and the weak / strong views of USB's protocol.

* :func:`split_labeled` draws exactly ``k`` labelled examples per class (USB's
  ``include_lb_to_ulb``: the labelled examples stay in the unlabelled set too).
* :class:`SSLLoader` yields, per step, a dict batch ``{"x_lb", "y_lb", "x_ulb_w", "x_ulb_s",
  "y_ulb"}`` with ``batch_size`` labelled and ``uratio · batch_size`` unlabelled examples
  per process. Weak view = random crop with reflect padding (+ horizontal flip when the
  data allow it); strong view = weak view + ``torchvision.transforms.RandAugment``.
  ``y_ulb`` (the hidden true labels) is only used to log pseudo-label accuracy.

Every batch is a pure function of ``(seed, epoch, rank, batch index)``: the sampling order
comes from a generator seeded by ``(seed, epoch)`` (the same on every rank, each rank
takes its own slice) and the augmentations from one seeded by ``(seed, epoch, rank, index)``,
so a run resumed mid-epoch sees exactly the batches an uninterrupted run sees.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from gkl.data.base import MemorySplit
from gkl.data.transforms import normalize_batch, to_unit_float
from gkl.utils.errors import InputError


def split_labeled(
    targets: Sequence[int] | torch.Tensor | np.ndarray,
    num_labels_per_class: int,
    seed: int,
    *,
    include_labeled_in_unlabeled: bool = True,
) -> tuple[np.ndarray, np.ndarray]:
    """Indices of exactly ``num_labels_per_class`` labelled examples per class, and the unlabelled ones.

    Deterministic in ``seed`` (numpy ``RandomState(seed)`` choices per class, classes in
    increasing order). With ``include_labeled_in_unlabeled`` (USB's default) the unlabelled
    indices are all examples; otherwise the complement of the labelled ones. Both arrays
    are sorted int64.
    """
    y = np.asarray(targets.cpu() if isinstance(targets, torch.Tensor) else targets).astype(np.int64).ravel()
    if isinstance(num_labels_per_class, bool) or not isinstance(num_labels_per_class, int) or num_labels_per_class < 1:
        raise InputError(f"num_labels_per_class: expected an integer >= 1, got {num_labels_per_class!r}")
    if y.size == 0:
        raise InputError("targets: the dataset is empty")
    classes, counts = np.unique(y, return_counts=True)
    smallest = int(counts.min())
    if num_labels_per_class > smallest:
        cls = int(classes[counts.argmin()])
        raise InputError(
            f"num_labels_per_class: {num_labels_per_class} is more than class {cls} has ({smallest} examples)"
        )
    rng = np.random.RandomState(seed)
    labelled = [rng.choice(np.flatnonzero(y == c), num_labels_per_class, replace=False) for c in classes]
    lb = np.sort(np.concatenate(labelled)).astype(np.int64)
    ulb = np.arange(y.size, dtype=np.int64) if include_labeled_in_unlabeled else np.setdiff1d(np.arange(y.size), lb)
    return lb, ulb


@dataclass(frozen=True)
class ViewSettings:
    """How the two views are made (USB CIFAR: padding 4, flip, RandAugment(3, 5))."""

    crop_padding: int = 4
    flip: bool = True
    randaugment_ops: int = 3
    randaugment_magnitude: int = 5


def _seed(*parts: object) -> int:
    digest = hashlib.blake2b("/".join(map(str, parts)).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") >> 1


def weak_view(images: torch.Tensor, views: ViewSettings, generator: torch.Generator) -> torch.Tensor:
    """Random crop of the reflect-padded images (same size) and, with ``views.flip``, a flip (p = 1/2).

    ``images``: float (B, C, H, W) in [0, 1]; offsets uniform in [0, 2·padding] per example.
    """
    p = views.crop_padding
    b, _, h, w = images.shape
    padded = F.pad(images, (p, p, p, p), mode="reflect") if p else images
    tops = torch.randint(0, 2 * p + 1, (b,), generator=generator).tolist()
    lefts = torch.randint(0, 2 * p + 1, (b,), generator=generator).tolist()
    flips = (torch.rand(b, generator=generator) < 0.5).tolist() if views.flip else [False] * b
    out = torch.stack([padded[i, :, top : top + h, left : left + w] for i, (top, left) in enumerate(zip(tops, lefts))])
    for i, f in enumerate(flips):
        if f:
            out[i] = out[i].flip(-1)
    return out


def strong_view(weak: torch.Tensor, views: ViewSettings, seed: int) -> torch.Tensor:
    """torchvision ``RandAugment(num_ops, magnitude)`` per example on uint8 versions of ``weak``.

    RandAugment draws from torch's global generator, so it runs inside ``fork_rng`` seeded with
    ``seed``: the result depends on ``seed`` only, and the caller's random state is untouched.
    """
    from torchvision.transforms import RandAugment

    augment = RandAugment(num_ops=views.randaugment_ops, magnitude=views.randaugment_magnitude)
    as_uint8 = weak.mul(255).round().clamp(0, 255).to(torch.uint8)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        out = torch.stack([augment(img) for img in as_uint8])
    return to_unit_float(out)


class SSLLoader:
    """Steps of labelled + unlabelled batches for one process (see the module docstring).

    Args:
        split: the training split in memory (images uint8 or float in [0, 1], labels, mean/std).
        labeled / unlabeled: indices into ``split`` (e.g. from :func:`split_labeled`).
        batch_size: labelled examples per step and process; ``uratio`` times as many unlabelled.
        steps_per_epoch: steps per epoch (the engine's epoch; SSL runs count iterations).
        views: :class:`ViewSettings`. device: where batches are returned.
    """

    def __init__(
        self,
        split: MemorySplit,
        labeled: Sequence[int] | np.ndarray,
        unlabeled: Sequence[int] | np.ndarray,
        *,
        batch_size: int,
        uratio: int,
        steps_per_epoch: int,
        views: ViewSettings = ViewSettings(),
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
        device: torch.device | str = "cpu",
    ) -> None:
        if split.images.dim() != 4:
            raise InputError(f"semi-supervised views need images (N, C, H, W), got shape {tuple(split.images.shape)}")
        for name, value in (("batch_size", batch_size), ("uratio", uratio), ("steps_per_epoch", steps_per_epoch)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise InputError(f"{name}: expected an integer >= 1, got {value!r}")
        if len(labeled) == 0 or len(unlabeled) == 0:
            raise InputError("labeled / unlabeled: both index sets must be non-empty")
        self.images = split.images
        self.labels = split.labels.to(torch.int64)
        self.mean, self.std = split.mean, split.std
        self.labeled = torch.as_tensor(np.asarray(labeled), dtype=torch.int64)
        self.unlabeled = torch.as_tensor(np.asarray(unlabeled), dtype=torch.int64)
        self.batch_size, self.uratio, self.steps = batch_size, uratio, steps_per_epoch
        self.views, self.seed, self.rank, self.world_size = views, seed, rank, world_size
        self.device = torch.device(device)
        self.epoch = 0
        self._orders: tuple[torch.Tensor, torch.Tensor] | None = None

    def __len__(self) -> int:
        return self.steps

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch
        self._orders = None

    def _order(self, indices: torch.Tensor, per_step: int, stream: str) -> torch.Tensor:
        """Concatenated seeded permutations of ``indices`` covering every step of every rank."""
        need = self.steps * per_step * self.world_size
        g = torch.Generator().manual_seed(_seed(self.seed, self.epoch, stream))
        repeats = -(-need // len(indices))
        return torch.cat([indices[torch.randperm(len(indices), generator=g)] for _ in range(repeats)])[:need]

    def _prepare(self, idx: torch.Tensor) -> torch.Tensor:
        return to_unit_float(self.images[idx])

    def _finish(self, images: torch.Tensor) -> torch.Tensor:
        if self.mean is not None and self.std is not None:  # both or neither (MemorySplit)
            images = normalize_batch(images, self.mean, self.std)
        return images.to(self.device)

    def batch(self, index: int) -> dict[str, torch.Tensor]:
        """Batch ``index`` (from 0) of the current epoch for this rank."""
        if self._orders is None:
            self._orders = (
                self._order(self.labeled, self.batch_size, "lb"),
                self._order(self.unlabeled, self.batch_size * self.uratio, "ulb"),
            )
        lb_order, ulb_order = self._orders
        b, u = self.batch_size, self.batch_size * self.uratio
        slot = index * self.world_size + self.rank
        lb_idx = lb_order[slot * b : (slot + 1) * b]
        ulb_idx = ulb_order[slot * u : (slot + 1) * u]
        g = torch.Generator().manual_seed(_seed(self.seed, self.epoch, self.rank, index, "views"))
        x_lb = weak_view(self._prepare(lb_idx), self.views, g)
        x_w = weak_view(self._prepare(ulb_idx), self.views, g)
        x_s = strong_view(x_w, self.views, _seed(self.seed, self.epoch, self.rank, index, "strong"))
        return {
            "x_lb": self._finish(x_lb),
            "y_lb": self.labels[lb_idx].to(self.device),
            "x_ulb_w": self._finish(x_w),
            "x_ulb_s": self._finish(x_s),
            "y_ulb": self.labels[ulb_idx].to(self.device),
        }

    def __iter__(self) -> Iterator[dict[str, torch.Tensor]]:
        for index in range(self.steps):
            yield self.batch(index)
