"""ImageNet folder and ImageNet-LT split files, written as tiny JPEGs."""

from __future__ import annotations

import os

import numpy as np
import pytest
from PIL import Image

from gkl.data import build_dataset, build_imagenet_lt_split, build_loader, dataset_info
from gkl.utils.errors import InputError

WNIDS = ["n01440764", "n01443537", "n01484850"]


def _jpeg(path: str, shade: int) -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    Image.fromarray(np.full((40, 56, 3), shade, dtype=np.uint8)).save(path, format="JPEG", quality=95)


def test_imagenet_folder_labels_follow_sorted_train_classes(tmp_path):
    # each class has its own grey level, so the label can be checked from the pixels
    for split, count in (("train", 2), ("val", 1)):
        for c, wnid in enumerate(WNIDS):
            for k in range(count):
                _jpeg(str(tmp_path / split / wnid / f"{wnid}_{k}.JPEG"), 40 + 80 * c)
    train = build_dataset("imagenet", tmp_path, train=True)
    val = build_dataset("imagenet", tmp_path, train=False, normalize=False)
    assert len(train) == 6 and len(val) == 3
    assert train.info.num_classes == 3 and train.info.class_names == tuple(WNIDS)
    assert dataset_info("imagenet").num_classes == 1000
    for i in range(3):
        x, y = val[i]
        assert x.shape == (3, 224, 224)
        assert abs(float(x.mean()) * 255 - (40 + 80 * y)) < 3
    x, y = train[5]
    assert x.shape == (3, 224, 224) and y == 2


def test_imagenet_errors_name_path_and_layout(tmp_path):
    with pytest.raises(InputError, match=r"train.*root/train/<class>"):
        build_dataset("imagenet", tmp_path, train=True)
    (tmp_path / "val").mkdir()
    with pytest.raises(InputError, match="no class subfolders"):
        build_dataset("imagenet", tmp_path, train=False)


def test_imagenet_not_in_memory(tmp_path):
    _jpeg(str(tmp_path / "train" / "a" / "x.JPEG"), 10)
    ds = build_dataset("imagenet", tmp_path, train=True)
    with pytest.raises(ValueError, match="in_memory"):
        build_loader(ds, batch_size=1, train=True, in_memory=True)


def _write_lt(root, counts: list[int], test_per_class: int = 1) -> None:
    lines = {"train": [], "test": [], "val": []}
    for c, n in enumerate(counts):
        wnid = f"n{c:08d}"
        for k in range(n):
            lines["train"].append(f"train/{wnid}/{wnid}_{k}.JPEG {c}")
        for split in ("test", "val"):
            for k in range(test_per_class):
                lines[split].append(f"{split}/{wnid}/{wnid}_{split}{k}.JPEG {c}")
    for split, rows in lines.items():
        (root / f"ImageNet_LT_{split}.txt").write_text("\n".join(rows) + "\n")
        for row in rows:
            rel, label = row.split()
            _jpeg(str(root / rel), 20 * int(label) + 10)


def test_imagenet_lt_labels_and_class_groups(tmp_path):
    # boundaries: > 100 is many, < 20 is few; 100 and 20 are medium
    counts = [101, 100, 20, 19, 2, 150]
    _write_lt(tmp_path, counts)
    train = build_dataset("imagenet_lt", tmp_path, train=True)
    test = build_dataset("imagenet_lt", tmp_path, train=False, normalize=False)
    assert len(train) == sum(counts) and len(test) == len(counts)
    assert test.info.class_groups == {"many": [0, 5], "medium": [1, 2], "few": [3, 4]}
    assert train.info.class_groups == test.info.class_groups and train.info.num_classes == 6
    for i in range(len(test)):
        x, y = test[i]
        assert x.shape == (3, 224, 224) and abs(float(x.mean()) * 255 - (20 * y + 10)) < 3
    assert [y for _, y in train.base.samples][:101] == [0] * 101
    val = build_imagenet_lt_split(str(tmp_path), "val")
    assert len(val) == 6 and val.info.class_groups == test.info.class_groups


def test_imagenet_lt_bad_split_files(tmp_path):
    with pytest.raises(InputError, match="ImageNet_LT_train.txt"):
        build_dataset("imagenet_lt", tmp_path, train=True)
    (tmp_path / "ImageNet_LT_train.txt").write_text("train/a/b.JPEG\n")
    with pytest.raises(ValueError, match=r"ImageNet_LT_train.txt:1"):
        build_dataset("imagenet_lt", tmp_path, train=True)
