"""split_labeled and the two-view SSL loader."""

import numpy as np
import pytest
import torch

from gkl.data.base import MemorySplit
from gkl.data.ssl import SSLLoader, ViewSettings, split_labeled, strong_view, weak_view
from gkl.utils.errors import InputError


def test_split_labeled_exact_counts_deterministic_and_overlapping() -> None:
    y = np.repeat(np.arange(5), [7, 9, 4, 12, 6])
    lb, ulb = split_labeled(y, 3, seed=11)
    assert np.array_equal(np.bincount(y[lb], minlength=5), [3] * 5)
    assert len(set(lb.tolist())) == 15
    assert np.array_equal(ulb, np.arange(len(y)))  # USB include_lb_to_ulb: labelled stay unlabelled too
    lb2, _ = split_labeled(torch.as_tensor(y), 3, seed=11)
    assert np.array_equal(lb, lb2)
    lb3, _ = split_labeled(y, 3, seed=12)
    assert not np.array_equal(lb, lb3)
    _, rest = split_labeled(y, 3, seed=11, include_labeled_in_unlabeled=False)
    assert set(rest.tolist()).isdisjoint(lb.tolist()) and len(rest) + len(lb) == len(y)


def test_split_labeled_refuses_more_labels_than_the_smallest_class() -> None:
    y = np.repeat(np.arange(3), [5, 2, 5])
    with pytest.raises(InputError, match="num_labels_per_class.*class 1"):
        split_labeled(y, 3, seed=0)
    with pytest.raises(InputError, match="num_labels_per_class"):
        split_labeled(y, 0, seed=0)


def _split(n: int = 40) -> MemorySplit:
    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (n, 3, 8, 8), generator=g, dtype=torch.uint8)
    return MemorySplit(
        images=images, labels=torch.arange(n) % 4, mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25), augmentation="none"
    )


def test_loader_batches_are_a_pure_function_of_seed_epoch_rank_index() -> None:
    split = _split()
    lb, ulb = split_labeled(split.labels, 2, seed=0)
    views = ViewSettings(crop_padding=2, flip=True, randaugment_ops=2, randaugment_magnitude=9)
    loader = SSLLoader(split, lb, ulb, batch_size=4, uratio=2, steps_per_epoch=3, views=views, seed=5)
    loader.set_epoch(2)
    first = list(loader)
    torch.manual_seed(123)  # the global generator must not matter
    again = SSLLoader(split, lb, ulb, batch_size=4, uratio=2, steps_per_epoch=3, views=views, seed=5)
    again.set_epoch(2)
    assert all(torch.equal(a[k], b[k]) for a, b in zip(first, [again.batch(i) for i in range(3)]) for k in a)
    assert first[0]["x_lb"].shape == (4, 3, 8, 8) and first[0]["x_ulb_s"].shape == (8, 3, 8, 8)
    assert set(first[0]["y_lb"].tolist()) <= set(split.labels[lb].tolist())
    loader.set_epoch(3)
    assert not torch.equal(loader.batch(0)["x_ulb_w"], first[0]["x_ulb_w"])


def test_ranks_take_disjoint_slices_of_one_global_order() -> None:
    split = _split(64)
    lb, ulb = split_labeled(split.labels, 4, seed=0)
    kw = dict(
        batch_size=2,
        uratio=2,
        steps_per_epoch=2,
        seed=1,
        views=ViewSettings(crop_padding=0, flip=False, randaugment_ops=0),
    )
    single = SSLLoader(split, lb, ulb, world_size=1, **kw)
    ranks = [SSLLoader(split, lb, ulb, rank=r, world_size=2, **kw) for r in range(2)]
    for loader in [single, *ranks]:
        loader.set_epoch(1)
    # with identity views, rank r's batch i holds the global order's slot i*2+r: the union of the two ranks'
    # first batches equals the single process's first two batches
    union = torch.cat([ranks[0].batch(0)["y_ulb"], ranks[1].batch(0)["y_ulb"]])
    assert torch.equal(union, torch.cat([single.batch(0)["y_ulb"], single.batch(1)["y_ulb"]]))


def test_weak_view_is_a_shifted_crop_and_strong_view_changes_pixels() -> None:
    x = torch.arange(2 * 1 * 6 * 6, dtype=torch.float32).view(2, 1, 6, 6) / 100
    out = weak_view(x, ViewSettings(crop_padding=0, flip=False), torch.Generator().manual_seed(0))
    assert torch.equal(out, x)
    flipped = weak_view(x, ViewSettings(crop_padding=0, flip=True), torch.Generator().manual_seed(3))
    assert all(torch.equal(f, o) or torch.equal(f, o.flip(-1)) for f, o in zip(flipped, x))
    strong = strong_view(torch.rand(4, 3, 8, 8), ViewSettings(randaugment_ops=3, randaugment_magnitude=9), seed=0)
    assert strong.shape == (4, 3, 8, 8) and strong.dtype == torch.float32 and 0 <= strong.min() <= strong.max() <= 1
