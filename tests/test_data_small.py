"""Registry, bundled offline datasets (digits, MNIST-1D) and the generated-image npz."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from gkl.data import DatasetInfo, GeneratedImages, build_dataset, build_loader, dataset_info, list_datasets
from gkl.utils.errors import InputError


def test_registry_lists_and_describes_without_data():
    assert list_datasets() == [
        "ade20k",
        "cifar10",
        "cifar100",
        "cityscapes",
        "digit_scenes",
        "digits",
        "imagenet",
        "imagenet_lt",
        "imagenet_r",
        "imagenet_sketch",
        "mnist1d",
        "voc2012",
    ]
    info = dataset_info("cifar100")
    assert isinstance(info, DatasetInfo) and info.num_classes == 100 and info.input_shape == (3, 32, 32)
    assert info.mean == (0.5071, 0.4867, 0.4408) and info.std == (0.2675, 0.2565, 0.2761)
    assert dataset_info("cifar10").mean == (0.4914, 0.4822, 0.4465)
    assert dataset_info("mnist1d").input_shape == (1, 40)
    with pytest.raises(ValueError, match="unknown dataset 'cifar1000'"):
        dataset_info("cifar1000")


def test_digits_split_shapes_classes_and_stats(tmp_path):
    train = build_dataset("digits", tmp_path, train=True, normalize=False)
    test = build_dataset("digits", tmp_path, train=False, normalize=False)
    assert (len(train), len(test)) == (1347, 450)
    xs = torch.stack([train[i][0] for i in range(len(train))])
    ys = torch.tensor([train[i][1] for i in range(len(train))])
    test_ys = torch.tensor([test[i][1] for i in range(len(test))])
    assert xs.shape == (1347, 1, 8, 8) and xs.min() >= 0 and xs.max() <= 1 and xs.max() == 1
    assert set(ys.tolist()) == set(range(10)) and set(test_ys.tolist()) == set(range(10))
    # stratified: each class's share of the test split matches its share of the train split
    share = torch.bincount(test_ys, minlength=10) / 450 - torch.bincount(ys, minlength=10) / 1347
    assert share.abs().max() < 0.01
    info = train.info
    assert abs(xs.mean() - info.mean[0]) < 1e-3 and abs(xs.std() - info.std[0]) < 1e-3
    normed = build_dataset("digits", tmp_path, train=True)
    assert torch.allclose(normed[0][0], (xs[0] - info.mean[0]) / info.std[0], atol=1e-6)
    # a fixed split: rebuilding gives the same data
    again = build_dataset("digits", tmp_path, train=True, normalize=False)
    assert torch.equal(again[17][0], xs[17]) and again[17][1] == int(ys[17])


def test_mnist1d_generated_offline_cached_and_shaped(tmp_path):
    np_state = np.random.get_state()[1].copy()
    train = build_dataset("mnist1d", tmp_path, train=True, normalize=False)
    assert np.array_equal(np.random.get_state()[1], np_state)  # the generator's global seeding is undone
    cache = tmp_path / "mnist1d_default.npz"
    assert cache.is_file()
    test = build_dataset("mnist1d", tmp_path, train=False)
    assert (len(train), len(test)) == (4000, 1000) and train.info.num_classes == 10
    xs = train.base.inputs
    assert xs.shape == (4000, 1, 40) and train[0][0].shape == (1, 40)
    assert xs.min() >= 0 and xs.max() <= 1
    assert abs(xs.mean() - train.info.mean[0]) < 1e-3 and abs(xs.std() - train.info.std[0]) < 1e-3
    assert set(train.base.labels.tolist()) == set(range(10))
    # the cache is what is read next time: alter it and observe the change
    with np.load(cache) as data:
        arrays = {k: data[k] for k in data.files}
    arrays["y"] = np.zeros_like(arrays["y"])
    np.savez(cache, **arrays)
    assert set(build_dataset("mnist1d", tmp_path, train=True).base.labels.tolist()) == {0}


def test_bundled_in_memory_equals_per_image(tmp_path):
    ds = build_dataset("digits", tmp_path, train=False)
    a = build_loader(ds, batch_size=64, train=False)
    b = build_loader(ds, batch_size=64, train=False, in_memory=True)
    assert len(a) == len(b) == 8  # 450 / 64, last batch kept for evaluation
    for (xa, ya), (xb, yb) in zip(a, b, strict=True):
        assert torch.equal(xa, xb) and torch.equal(ya, yb)


def _npz(path, **arrays):
    np.savez(path, **arrays)
    return path


def test_generated_images_load(tmp_path):
    images = np.random.default_rng(0).integers(0, 256, (5, 32, 32, 3), dtype=np.uint8)
    gen = GeneratedImages(_npz(tmp_path / "g.npz", image=images, label=np.array([0, 1, 2, 3, 9])), num_classes=10)
    x, y = gen[4]
    assert len(gen) == 5 and y == 9
    assert torch.equal(x, torch.from_numpy(images[4]).permute(2, 0, 1).float() / 255)


@pytest.mark.parametrize(
    "arrays, message",
    [
        ({"image": np.zeros((2, 32, 32, 3), np.uint8)}, "missing keys \\['label'\\]"),
        ({"image": np.zeros((2, 32, 32, 3), np.float32), "label": np.zeros(2, int)}, "'image' must be uint8"),
        ({"image": np.zeros((2, 3, 32, 32), np.uint8), "label": np.zeros(2, int)}, "shape \\(N, 32, 32, 3\\)"),
        ({"image": np.zeros((2, 32, 32, 3), np.uint8), "label": np.zeros(3, int)}, "'label' must have shape \\(2,\\)"),
        ({"image": np.zeros((2, 32, 32, 3), np.uint8), "label": np.array([0.0, 1.0])}, "'label' must be integer"),
        ({"image": np.zeros((2, 32, 32, 3), np.uint8), "label": np.array([0, 10])}, "labels must be in \\[0, 10\\)"),
        ({"image": np.zeros((2, 32, 32, 3), np.uint8), "label": np.array([-1, 0])}, "labels must be in"),
    ],
)
def test_generated_images_validation(tmp_path, arrays, message):
    with pytest.raises(ValueError, match=message):
        GeneratedImages(_npz(tmp_path / "bad.npz", **arrays), num_classes=10)


def test_generated_missing_file(tmp_path):
    with pytest.raises(InputError, match="nothere.npz"):
        GeneratedImages(tmp_path / "nothere.npz")
