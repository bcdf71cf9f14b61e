"""CIFAR reading from the real pickle layout, and both loader paths on it."""

from __future__ import annotations

import os
import pickle

import numpy as np
import pytest
import torch

from gkl.data import GeneratedImages, build_dataset, build_loader, dataset_info
from gkl.data.transforms import CIFAR100_MEAN, CIFAR100_STD
from gkl.utils.errors import InputError


def _dump(path: str, obj: dict) -> None:
    with open(path, "wb") as handle:
        pickle.dump(obj, handle, protocol=2)


def _rows(images: np.ndarray) -> np.ndarray:
    """N x 32 x 32 x 3 -> N x 3072 in the official channel-plane order."""
    return images.transpose(0, 3, 1, 2).reshape(len(images), -1)


def write_cifar10(root, train_images, train_labels, test_images, test_labels) -> None:
    folder = os.path.join(root, "cifar-10-batches-py")
    os.makedirs(folder)
    for i, chunk in enumerate(np.array_split(np.arange(len(train_labels)), 5), start=1):
        _dump(
            os.path.join(folder, f"data_batch_{i}"),
            {
                b"batch_label": f"training batch {i} of 5".encode(),
                b"labels": [int(v) for v in train_labels[chunk]],
                b"data": _rows(train_images[chunk]),
                b"filenames": [b"x.png"] * len(chunk),
            },
        )
    _dump(
        os.path.join(folder, "test_batch"),
        {
            b"batch_label": b"testing batch 1 of 1",
            b"labels": [int(v) for v in test_labels],
            b"data": _rows(test_images),
        },
    )
    _dump(
        os.path.join(folder, "batches.meta"),
        {b"label_names": [f"c{i}".encode() for i in range(10)], b"num_cases_per_batch": 10000, b"num_vis": 3072},
    )


def write_cifar100(root, train_images, train_labels, test_images, test_labels) -> None:
    folder = os.path.join(root, "cifar-100-python")
    os.makedirs(folder)
    for name, images, labels in (("train", train_images, train_labels), ("test", test_images, test_labels)):
        _dump(
            os.path.join(folder, name),
            {
                b"filenames": [b"x.png"] * len(labels),
                b"batch_label": name.encode(),
                b"fine_labels": [int(v) for v in labels],
                b"coarse_labels": [int(v) // 5 for v in labels],
                b"data": _rows(images),
            },
        )
    _dump(
        os.path.join(folder, "meta"),
        {
            b"fine_label_names": [f"f{i}".encode() for i in range(100)],
            b"coarse_label_names": [f"k{i}".encode() for i in range(20)],
        },
    )


def _chi2_pvalue(statistic: float, dof: int) -> float:
    """Upper tail of the chi-square distribution (regularised upper incomplete gamma)."""
    return float(
        torch.special.gammaincc(
            torch.tensor(dof / 2, dtype=torch.float64), torch.tensor(statistic / 2, dtype=torch.float64)
        )
    )


def uniform_pvalue(counts: np.ndarray) -> float:
    """Pearson goodness-of-fit p-value of ``counts`` against the uniform distribution."""
    expected = counts.sum() / len(counts)
    return _chi2_pvalue(float(((counts - expected) ** 2 / expected).sum()), len(counts) - 1)


def homogeneity_pvalue(table: np.ndarray) -> float:
    """Pearson p-value that the rows of a contingency ``table`` share one distribution (empty columns dropped)."""
    table = table[:, table.sum(0) > 0].astype(np.float64)
    expected = table.sum(1, keepdims=True) * table.sum(0, keepdims=True) / table.sum()
    dof = (table.shape[0] - 1) * (table.shape[1] - 1)
    return _chi2_pvalue(float(((table - expected) ** 2 / expected).sum()), dof)


def _random_images(n: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, size=(n, 32, 32, 3), dtype=np.uint8)


@pytest.fixture(scope="module")
def cifar100_root(tmp_path_factory):
    root = str(tmp_path_factory.mktemp("c100"))
    rng = np.random.default_rng(1)
    train, test = _random_images(50, 2), _random_images(20, 3)
    write_cifar100(root, train, rng.integers(0, 100, 50), test, rng.integers(0, 100, 20))
    return root, train, test


def test_chi_square_helpers_against_known_values():
    # chi-square(1) upper tail at 3.841 is 0.05; chi-square(8) at 15.507 is 0.05
    assert abs(_chi2_pvalue(3.841459, 1) - 0.05) < 1e-5 and abs(_chi2_pvalue(15.50731, 8) - 0.05) < 1e-5
    assert uniform_pvalue(np.array([50, 50, 50])) == 1.0
    assert uniform_pvalue(np.array([100, 0, 0])) < 1e-10
    assert homogeneity_pvalue(np.array([[30, 70], [70, 30]])) < 1e-6


def test_cifar10_exact_pixels_and_labels(tmp_path):
    train, test = _random_images(23, 4), _random_images(7, 5)
    train_labels, test_labels = np.arange(23) % 10, (np.arange(7) * 3) % 10
    write_cifar10(str(tmp_path), train, train_labels, test, test_labels)
    ds = build_dataset("cifar10", tmp_path, train=True, normalize=False, augment=False)
    assert len(ds) == 23 and ds.info.num_classes == 10 and ds.info.class_names[3] == "c3"
    for i in (0, 5, 22):  # batches are concatenated in file order 1..5
        x, y = ds[i]
        assert x.dtype == torch.float32 and x.shape == (3, 32, 32)
        assert torch.equal(x, torch.from_numpy(train[i]).permute(2, 0, 1).float() / 255)
        assert y == train_labels[i]
    test_ds = build_dataset("cifar10", tmp_path, train=False)
    x, y = test_ds[6]
    mean, std = torch.tensor(dataset_info("cifar10").mean), torch.tensor(dataset_info("cifar10").std)
    expected = (torch.from_numpy(test[6]).permute(2, 0, 1).float() / 255 - mean[:, None, None]) / std[:, None, None]
    assert torch.allclose(x, expected, atol=1e-6) and y == test_labels[6]


def test_cifar100_fine_labels_and_normalisation(cifar100_root):
    root, train, _ = cifar100_root
    ds = build_dataset("cifar100", root, train=True, augment=False)
    assert len(ds) == 50 and ds.info.num_classes == 100 and len(ds.info.class_names) == 100
    x, _ = ds[3]
    raw = torch.from_numpy(train[3]).permute(2, 0, 1).float() / 255
    assert torch.allclose(
        x * torch.tensor(CIFAR100_STD)[:, None, None] + torch.tensor(CIFAR100_MEAN)[:, None, None], raw, atol=1e-6
    )


def test_missing_cifar_names_path_and_layout(tmp_path):
    with pytest.raises(InputError, match=r"cifar-10-batches-py/.*data_batch_1"):
        build_dataset("cifar10", tmp_path, train=True)
    with pytest.raises(InputError, match=str(tmp_path)):
        build_dataset("cifar100", tmp_path, train=False)


def test_without_augmentation_both_paths_give_identical_batches(cifar100_root):
    root, _, _ = cifar100_root
    ds = build_dataset("cifar100", root, train=True, augment=False)
    for world_size, rank in ((1, 0), (3, 2)):
        kw = dict(batch_size=8, train=True, seed=7, rank=rank, world_size=world_size)
        per_image, in_mem = build_loader(ds, **kw), build_loader(ds, in_memory=True, **kw)
        assert len(per_image) == len(in_mem)
        for epoch in (0, 1):
            per_image.set_epoch(epoch)
            in_mem.set_epoch(epoch)
            pairs = list(zip(per_image, in_mem, strict=True))
            assert len(pairs) == len(in_mem)
            for (xa, ya), (xb, yb) in pairs:
                assert torch.equal(xa, xb) and torch.equal(ya, yb)


def _coded_image() -> np.ndarray:
    """Channel 0 = row + 1, channel 1 = column + 1, so crops/flips can be read back."""
    img = np.zeros((32, 32, 3), dtype=np.uint8)
    img[:, :, 0] = np.arange(1, 33)[:, None]
    img[:, :, 1] = np.arange(1, 33)[None, :]
    img[:, :, 2] = 200
    return img


def _decode(batch: torch.Tensor) -> np.ndarray:
    """(top, left, flipped) per augmented coded image (un-normalised, in [0, 1]), shape (B, 3).

    Output pixel (16, 16) always comes from the image (offsets are at most 2 * 4):
    unflipped it is source (top + 12, left + 12), flipped source column left + 11.
    """
    vals = torch.round(batch * 255).to(torch.int64)
    row_code, col_code, col_next = vals[:, 0, 16, 16], vals[:, 1, 16, 16], vals[:, 1, 16, 17]
    flipped = (col_next < col_code).to(torch.int64)
    top = row_code - 13
    left = col_code - 13 + flipped
    return torch.stack([top, left, flipped], 1).numpy()


def test_augmentation_distribution_matches_between_paths(tmp_path):
    n = 64
    images = np.repeat(_coded_image()[None], n, axis=0)
    write_cifar10(str(tmp_path), images, np.zeros(n, dtype=int), images[:8], np.zeros(8, dtype=int))
    ds = build_dataset("cifar10", tmp_path, train=True, normalize=False)  # augment defaults to train
    padded = np.pad(_coded_image(), ((4, 4), (4, 4), (0, 0)))
    templates = torch.zeros(9, 9, 2, 3, 32, 32)  # every possible crop/flip, built by slicing
    for top in range(9):
        for left in range(9):
            crop = torch.from_numpy(padded[top : top + 32, left : left + 32].copy()).permute(2, 0, 1).float() / 255
            templates[top, left, 0], templates[top, left, 1] = crop, crop.flip(-1)
    draws = {}
    for in_memory in (False, True):
        loader = build_loader(ds, batch_size=32, train=True, in_memory=in_memory, seed=3)
        params = []
        for epoch in range(40):
            loader.set_epoch(epoch)
            for x, _ in loader:
                decoded = _decode(x)
                assert decoded.min() >= 0 and decoded[:, :2].max() <= 8
                t = torch.from_numpy(decoded)
                assert torch.equal(x, templates[t[:, 0], t[:, 1], t[:, 2]])  # each output is an exact crop(+flip)
                params.append(decoded)
        draws[in_memory] = np.concatenate(params)
    for arr in draws.values():
        assert len(arr) == 40 * n
        assert set(arr[:, 0]) <= set(range(9)) and set(arr[:, 1]) <= set(range(9))
        # each marginal is uniform: offsets over 0..8, flip over {0, 1}
        assert uniform_pvalue(np.bincount(arr[:, 0], minlength=9)) > 1e-3
        assert uniform_pvalue(np.bincount(arr[:, 1], minlength=9)) > 1e-3
        assert uniform_pvalue(np.bincount(arr[:, 2], minlength=2)) > 1e-3
    # the joint (top, left, flip) distributions of the two paths agree
    cells = [np.bincount(a[:, 0] * 18 + a[:, 1] * 2 + a[:, 2], minlength=162) for a in draws.values()]
    assert homogeneity_pvalue(np.stack(cells)) > 1e-3
    # and the two paths are not the same draws (independent RNG streams)
    assert not np.array_equal(draws[False], draws[True])


def test_augmentation_is_deterministic_and_varies_by_epoch(cifar100_root):
    root, _, _ = cifar100_root
    ds = build_dataset("cifar100", root, train=True)
    for in_memory in (False, True):
        loader = build_loader(ds, batch_size=16, train=True, in_memory=in_memory, seed=5)
        runs = []
        for epoch in (0, 0, 1):
            loader.set_epoch(epoch)
            runs.append(torch.cat([x for x, _ in loader]))
        assert torch.equal(runs[0], runs[1]) and not torch.equal(runs[0], runs[2])


def test_per_image_loader_does_not_touch_global_rng(cifar100_root):
    root, _, _ = cifar100_root
    loader = build_loader(build_dataset("cifar100", root, train=True), batch_size=16, train=True)
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    for _ in loader:
        pass
    assert torch.equal(torch.rand(3), expected)


def test_rank_shards_are_disjoint_cover_and_match_distributed_sampler(cifar100_root):
    root, _, _ = cifar100_root
    ds = build_dataset("cifar100", root, train=True, augment=False, normalize=False)
    flat = torch.from_numpy(ds.memory_split().images.numpy().reshape(50, -1)[:, :8].copy())
    key = {tuple(v.tolist()): i for i, v in enumerate(flat)}
    assert len(key) == 50
    for world_size in (2, 5, 3):  # 3 does not divide 50: shards are padded
        seen = []
        for rank in range(world_size):
            loader = build_loader(
                ds, batch_size=4, train=True, in_memory=True, seed=1, rank=rank, world_size=world_size, drop_last=False
            )
            loader.set_epoch(2)
            idx = [
                key[tuple(row.tolist())] for x, _ in loader for row in (x[:, 0, 0, :8] * 255).round().to(torch.uint8)
            ]
            sampler = torch.utils.data.DistributedSampler(range(50), num_replicas=world_size, rank=rank, seed=1)
            sampler.set_epoch(2)
            assert idx == list(sampler)
            assert len(idx) == -(-50 // world_size)
            seen.append(idx)
        union = [i for s in seen for i in s]
        assert set(union) == set(range(50))
        assert len(union) - len(set(union)) == (-50) % world_size  # only the padding repeats
        if 50 % world_size == 0:
            assert all(not set(a) & set(b) for j, a in enumerate(seen) for b in seen[j + 1 :])


def _write_generated(path, n: int, value: int, label: int) -> GeneratedImages:
    np.savez(path, image=np.full((n, 32, 32, 3), value, dtype=np.uint8), label=np.full(n, label))
    return GeneratedImages(path, num_classes=10)


def test_generated_mixing_ratio_is_exact_per_batch(tmp_path):
    n_real = 60
    write_cifar10(
        str(tmp_path),
        np.zeros((n_real, 32, 32, 3), np.uint8),
        np.zeros(n_real, int),
        np.zeros((4, 32, 32, 3), np.uint8),
        np.zeros(4, int),
    )
    ds = build_dataset("cifar10", tmp_path, train=True, augment=False, normalize=False)
    gen = _write_generated(tmp_path / "gen.npz", 25, 255, 9)
    for in_memory in (False, True):
        for world_size in (1, 2):
            loader = build_loader(
                ds,
                batch_size=10,
                train=True,
                in_memory=in_memory,
                generated=gen,
                generated_ratio=0.7,
                world_size=world_size,
                rank=world_size - 1,
                seed=4,
            )
            loader.set_epoch(1)
            batches = list(loader)
            # one pass over the real shard with 3 real examples per batch
            assert len(batches) == len(loader) == (n_real // world_size) // 3
            for x, y in batches:
                is_gen = x.flatten(1).mean(1) == 1.0
                assert x.shape == (10, 3, 32, 32) and int(is_gen.sum()) == 7
                assert torch.equal(y[is_gen], torch.full((7,), 9)) and torch.equal(
                    y[~is_gen], torch.zeros(3, dtype=torch.long)
                )


def test_generated_mixing_same_examples_in_both_paths(tmp_path):
    rng = np.random.default_rng(0)
    write_cifar10(str(tmp_path), _random_images(40, 1), rng.integers(0, 10, 40), _random_images(4, 2), np.zeros(4, int))
    ds = build_dataset("cifar10", tmp_path, train=True, augment=False)
    np.savez(tmp_path / "g.npz", image=_random_images(30, 3), label=rng.integers(0, 10, 30))
    gen = GeneratedImages(tmp_path / "g.npz", num_classes=10)
    a = build_loader(ds, batch_size=8, train=True, generated=gen, generated_ratio=0.5, seed=2)
    b = build_loader(ds, batch_size=8, train=True, generated=gen, generated_ratio=0.5, seed=2, in_memory=True)
    for (xa, ya), (xb, yb) in zip(a, b, strict=True):
        assert torch.equal(xa, xb) and torch.equal(ya, yb)


def test_loader_argument_errors(cifar100_root):
    root, _, _ = cifar100_root
    ds = build_dataset("cifar100", root, train=True)
    with pytest.raises(ValueError, match="rank"):
        build_loader(ds, batch_size=4, train=True, rank=2, world_size=2)
    with pytest.raises(ValueError, match="batch_size"):
        build_loader(ds, batch_size=0, train=True)
    with pytest.raises(ValueError, match="generated_ratio"):
        build_loader(ds, batch_size=4, train=True, generated_ratio=0.5)


def test_worker_processes_are_deterministic(cifar100_root):
    root, _, _ = cifar100_root
    ds = build_dataset("cifar100", root, train=True)
    runs = []
    for _ in range(2):
        loader = build_loader(ds, batch_size=16, train=True, num_workers=2, seed=9)
        loader.set_epoch(3)
        runs.append(torch.cat([x for x, _ in loader]))
    assert torch.equal(runs[0], runs[1])
    serial = build_loader(ds, batch_size=16, train=True, num_workers=0, seed=9)
    serial.set_epoch(3)
    assert torch.cat([x for x, _ in serial]).shape == runs[0].shape
