"""Label noise (gkl.data.LabelNoise) and the stratified validation split (gkl.data.splits)."""

from __future__ import annotations

import pytest
import torch

from gkl.data import LabelNoise, build_dataset, build_loader, split_dataset, stratified_split
from gkl.data.base import TensorPairs
from gkl.data.label_noise import CIFAR10_CLASSES, asymmetric_map
from gkl.data.splits import dataset_targets
from gkl.utils.errors import InputError


@pytest.fixture(scope="module")
def digits():
    return build_dataset("digits", "unused", True, normalize=True)


def _plain(labels):
    labels = torch.as_tensor(labels)
    return TensorPairs(torch.zeros(labels.numel(), 3), labels, None, None)


@pytest.mark.parametrize("rate", [0.0, 0.2, 0.4, 0.8])
def test_symmetric_counts_and_never_the_true_class(digits, rate):
    noisy = LabelNoise(digits, rate, kind="symmetric", num_classes=10, seed=3)
    n = len(digits)
    assert noisy.num_noisy == round(rate * n) == int(noisy.is_noisy.sum())
    assert torch.equal(noisy.clean_targets, dataset_targets(digits))
    assert (noisy.targets[noisy.is_noisy] != noisy.clean_targets[noisy.is_noisy]).all()
    assert torch.equal(noisy.targets[~noisy.is_noisy], noisy.clean_targets[~noisy.is_noisy])
    # items carry the noisy label and the unchanged input
    for i in (0, 5, n - 1):
        x, y = noisy[i]
        assert y == int(noisy.targets[i]) and torch.equal(x, digits[i][0])


def test_symmetric_new_labels_are_spread_over_the_other_classes():
    clean = torch.zeros(20000, dtype=torch.int64)
    noisy = LabelNoise(_plain(clean), 0.5, num_classes=5, seed=0)
    counts = torch.bincount(noisy.targets[noisy.is_noisy], minlength=5)
    assert counts[0] == 0
    assert (counts[1:] - 2500).abs().max() < 200  # uniform over 4 other classes, 10000 draws


def test_deterministic_per_seed(digits):
    a = LabelNoise(digits, 0.4, num_classes=10, seed=7)
    torch.manual_seed(999)  # the global RNG plays no part
    b = LabelNoise(digits, 0.4, num_classes=10, seed=7)
    c = LabelNoise(digits, 0.4, num_classes=10, seed=8)
    assert torch.equal(a.targets, b.targets) and not torch.equal(a.targets, c.targets)


def test_identical_on_every_rank(digits, monkeypatch):
    """The draw ignores the process's rank and global RNG state (nothing rank-specific enters it)."""
    import random

    import numpy as np

    reference = LabelNoise(digits, 0.4, num_classes=10, seed=7).targets
    for rank in ("1", "3"):
        monkeypatch.setenv("RANK", rank)
        monkeypatch.setenv("LOCAL_RANK", rank)
        monkeypatch.setenv("WORLD_SIZE", "4")
        torch.manual_seed(int(rank) * 101)
        np.random.seed(int(rank))
        random.seed(int(rank))
        assert torch.equal(LabelNoise(digits, 0.4, num_classes=10, seed=7).targets, reference)


def test_asymmetric_cifar10_pairs_and_generic_map():
    assert asymmetric_map(10, dataset_name="cifar10") == [0, 1, 0, 5, 7, 3, 6, 7, 8, 1]
    assert asymmetric_map(10, class_names=CIFAR10_CLASSES) == asymmetric_map(10, dataset_name="cifar10")
    assert asymmetric_map(4) == [1, 2, 3, 0]
    clean = torch.arange(10).repeat_interleave(50)
    noisy = LabelNoise(
        _plain(clean),
        0.4,
        kind="asymmetric",
        num_classes=10,
        seed=1,
        mapping=asymmetric_map(10, dataset_name="cifar10"),
    )
    for c in range(10):
        flipped = noisy.is_noisy & (clean == c)
        target = noisy.mapping[c]
        assert int(flipped.sum()) == (20 if target != c else 0)
        assert (noisy.targets[flipped] == target).all()
    generic = LabelNoise(_plain(clean), 0.4, kind="asymmetric", num_classes=10, seed=1)
    assert generic.num_noisy == 200
    assert torch.equal(generic.targets[generic.is_noisy], (clean[generic.is_noisy] + 1) % 10)


def test_in_memory_loader_sees_the_noisy_labels(digits):
    noisy = LabelNoise(digits, 0.8, num_classes=10, seed=0)
    loader = build_loader(noisy, batch_size=len(noisy), train=False, in_memory=True)
    loader.set_epoch(1)
    ((_, labels),) = list(loader)
    assert torch.equal(labels, noisy.targets)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(rate=1.0), "rate"),
        (dict(rate=-0.1), "rate"),
        (dict(rate="0.2"), "rate"),
        (dict(rate=0.2, kind="pairflip"), "kind"),
        (dict(rate=0.2, seed=-1), "seed"),
    ],
)
def test_bad_input_names_the_argument(digits, kwargs, match):
    rate = kwargs.pop("rate")
    with pytest.raises(InputError, match=match):
        LabelNoise(digits, rate, num_classes=10, **kwargs)


# ----------------------------------------------------------------------------- validation split


def test_stratified_split_is_disjoint_complete_and_stratified(digits):
    y = dataset_targets(digits)
    train, val = stratified_split(y, 0.2, seed=0)
    assert set(train.tolist()).isdisjoint(val.tolist())
    assert sorted(train.tolist() + val.tolist()) == list(range(len(y)))
    for c in range(10):
        n_c = int((y == c).sum())
        assert int((y[val] == c).sum()) == round(0.2 * n_c)
        assert int((y[train] == c).sum()) == n_c - round(0.2 * n_c)
    again = stratified_split(y, 0.2, seed=0)
    other = stratified_split(y, 0.2, seed=1)
    assert torch.equal(again[1], val) and not torch.equal(other[1], val)


def test_split_dataset_views_and_in_memory(digits):
    train, val = split_dataset(digits, 0.25, seed=4)
    assert len(train) + len(val) == len(digits)
    x, y = val[3]
    j = int(val.indices[3])
    assert torch.equal(x, digits[j][0]) and y == digits[j][1]
    loader = build_loader(val, batch_size=len(val), train=False, in_memory=True)
    loader.set_epoch(1)
    ((_, labels),) = list(loader)
    assert torch.equal(labels, dataset_targets(digits)[val.indices])


def test_split_errors_name_the_class_or_argument():
    y = torch.tensor([0] * 10 + [1] * 10 + [2])
    with pytest.raises(InputError, match="class 2"):
        stratified_split(y, 0.3, seed=0)
    with pytest.raises(InputError, match="class 3"):
        stratified_split(torch.tensor([0, 0, 1, 1, 2, 2]), 0.5, seed=0, num_classes=4)
    for bad in (0.0, 1.0, -0.5, "0.1"):
        with pytest.raises(InputError, match="val_fraction"):
            stratified_split(y, bad, seed=0)
