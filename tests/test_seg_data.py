"""Segmentation data: readers on files written in the real layouts, paired transforms, bundled scenes."""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch
from PIL import Image

from gkl.data import build_dataset, dataset_info
from gkl.data.segmentation import DigitScenes, build_segmentation_dataset
from gkl.data.segmentation.transforms import (
    IMAGENET_MEAN_255,
    IMAGENET_STD_255,
    PadCrop,
    RandomRotate,
    RandomScale,
    train_transform,
)
from gkl.utils.errors import InputError


def write_rgb(path, array: np.ndarray) -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    Image.fromarray(array.astype(np.uint8), "RGB").save(path)


def write_label(path, array: np.ndarray, palette: bool = False) -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    img = Image.fromarray(array.astype(np.uint8), "L")
    if palette:
        img = img.convert("P")
        img.putpalette([v for i in range(256) for v in (i, 255 - i, (7 * i) % 256)])
    img.save(path)


def random_pair(rng: np.random.Generator, h: int, w: int, high: int) -> tuple[np.ndarray, np.ndarray]:
    return rng.integers(0, 256, (h, w, 3)), rng.integers(0, high, (h, w))


def test_ade20k_layout_shift_and_ignore(tmp_path) -> None:
    rng = np.random.default_rng(0)
    base = tmp_path / "ADEChallengeData2016"
    raws = {}
    for split, names in (
        ("training", ["ADE_train_00000001", "ADE_train_00000002"]),
        ("validation", ["ADE_val_00000001"]),
    ):
        for name in names:
            image, raw = random_pair(rng, 20, 30, 151)
            raw[0, :5] = 0
            raw[1, 0] = 150
            write_rgb(str(base / "images" / split / f"{name}.jpg"), image)
            write_label(str(base / "annotations" / split / f"{name}.png"), raw)
            raws[name] = raw
    train = build_segmentation_dataset("ade20k", str(tmp_path), True, augment=False)
    val = build_dataset("ade20k", str(base), False)  # root may also be the release folder
    assert len(train) == 2 and len(val) == 1
    image, label = train[1]
    expected = raws["ADE_train_00000002"] - 1
    expected[raws["ADE_train_00000002"] == 0] = 255
    assert image.shape == (3, 20, 30) and label.dtype == torch.int64
    assert torch.equal(label, torch.from_numpy(expected))
    assert int(label[1, 0]) == 149 and (label[0, :5] == 255).all()
    # normalised with the ImageNet statistics
    raw_image = np.asarray(Image.open(base / "images" / "training" / "ADE_train_00000002.jpg").convert("RGB"))
    mean, std = torch.tensor(IMAGENET_MEAN_255).view(3, 1, 1), torch.tensor(IMAGENET_STD_255).view(3, 1, 1)
    assert torch.allclose(image * std + mean, torch.from_numpy(raw_image.copy()).permute(2, 0, 1).float(), atol=1e-3)
    # training items are random 473 crops
    aug = build_segmentation_dataset("ade20k", str(tmp_path), True, crop_size=33)
    assert aug[0][0].shape == (3, 33, 33) and aug[0][1].shape == (33, 33)


def test_ade20k_bad_inputs_name_the_file(tmp_path) -> None:
    base = tmp_path / "ADEChallengeData2016"
    write_rgb(str(base / "images" / "training" / "a.jpg"), np.zeros((8, 9, 3)))
    with pytest.raises(InputError, match=r"a\.png"):  # missing label file
        build_segmentation_dataset("ade20k", str(tmp_path), True)
    write_label(str(base / "annotations" / "training" / "a.png"), np.full((8, 9), 151))
    ds = build_segmentation_dataset("ade20k", str(tmp_path), True, augment=False)
    with pytest.raises(InputError, match=r"a\.png: values \[150\]"):
        ds[0]
    write_label(str(base / "annotations" / "training" / "a.png"), np.ones((8, 10)))
    with pytest.raises(InputError, match=r"a\.png: size 10x8 differs from its image .*a\.jpg"):
        ds[0]
    with pytest.raises(InputError, match="not found"):
        build_segmentation_dataset("ade20k", str(tmp_path / "nowhere"), True)


def test_cityscapes_layout(tmp_path) -> None:
    rng = np.random.default_rng(1)
    for split, city, stem in (("train", "aachen", "aachen_000000_000019"), ("val", "lindau", "lindau_000000_000019")):
        image, label = random_pair(rng, 16, 32, 19)
        label[:2] = 255
        write_rgb(str(tmp_path / "leftImg8bit" / split / city / f"{stem}_leftImg8bit.png"), image)
        write_label(str(tmp_path / "gtFine" / split / city / f"{stem}_gtFine_labelTrainIds.png"), label)
        ds = build_segmentation_dataset("cityscapes", str(tmp_path), split == "train", augment=False, normalize=False)
        x, y = ds[0]
        assert torch.equal(y, torch.from_numpy(label))
        assert torch.allclose(x * 255, torch.from_numpy(image).permute(2, 0, 1).float(), atol=1e-3)
    write_label(
        str(tmp_path / "gtFine" / "val" / "lindau" / "lindau_000000_000019_gtFine_labelTrainIds.png"),
        np.full((16, 32), 19),
    )
    with pytest.raises(InputError, match="labelTrainIds.png: values \\[19\\]"):
        build_segmentation_dataset("cityscapes", str(tmp_path), False)[0]


def test_voc_palette_labels_and_aug_list(tmp_path) -> None:
    rng = np.random.default_rng(2)
    base = tmp_path / "VOCdevkit" / "VOC2012"
    labels = {}
    for name in ("2007_000032", "2007_000033"):
        image, label = random_pair(rng, 12, 14, 21)
        label[0, 0] = 255
        write_rgb(str(base / "JPEGImages" / f"{name}.jpg"), image)
        write_label(str(base / "SegmentationClass" / f"{name}.png"), label, palette=True)
        write_label(str(base / "SegmentationClassAug" / f"{name}.png"), (label + 1) % 21)
        labels[name] = label
    sets = base / "ImageSets" / "Segmentation"
    sets.mkdir(parents=True)
    (sets / "train.txt").write_text("2007_000032\n")
    (sets / "val.txt").write_text("2007_000033\n")
    (sets / "train_aug.txt").write_text(
        "/JPEGImages/2007_000032.jpg /SegmentationClassAug/2007_000032.png\n2007_000033\n"
    )
    train = build_segmentation_dataset("voc2012", str(tmp_path), True, augment=False)
    assert torch.equal(train[0][1], torch.from_numpy(labels["2007_000032"]))  # palette indices, 255 kept
    aug = build_segmentation_dataset("voc2012", str(tmp_path), True, augment=False, voc_aug=True)
    assert len(aug) == 2 and torch.equal(aug[1][1], torch.from_numpy((labels["2007_000033"] + 1) % 21))
    assert dataset_info("voc2012").num_classes == 21


def block_scene(seed: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """An image whose colour encodes its label: 24x24 blocks of 6 classes with distinct colours."""
    g = torch.Generator().manual_seed(seed)
    palette = torch.tensor(
        [[250, 10, 10], [10, 250, 10], [10, 10, 250], [240, 240, 20], [20, 230, 230], [200, 30, 220]],
        dtype=torch.float32,
    )
    blocks = torch.randint(0, 6, (6, 8), generator=g)
    label = blocks.repeat_interleave(24, 0).repeat_interleave(24, 1)  # 144 x 192
    image = palette[label].permute(2, 0, 1).contiguous()
    return image, label, palette


@pytest.mark.parametrize("seed", range(6))
def test_paired_transforms_keep_alignment(seed: int) -> None:
    image, label, palette = block_scene(seed)
    torch.manual_seed(seed)
    transform = train_transform(64, scale=(0.5, 2.0), rotate=10.0)
    for _ in range(5):
        x, y = transform(image, label)
        assert x.shape == (3, 64, 64) and y.shape == (64, 64)
        x = x * torch.tensor(IMAGENET_STD_255).view(3, 1, 1) + torch.tensor(IMAGENET_MEAN_255).view(3, 1, 1)
        # interior pixels (constant label in a 9x9 window: blur, rotation and scaling mix at most
        # 4 pixels) carry exactly their class colour
        padded = torch.nn.functional.pad(y[None, None].float(), (4, 4, 4, 4), value=-1)
        windows = padded.unfold(2, 9, 1).unfold(3, 9, 1)[0, 0]
        interior = (windows == y[..., None, None].float()).all(-1).all(-1) & (y != 255)
        assert interior.sum() > 20
        colours = x.permute(1, 2, 0)[interior]
        assert torch.allclose(colours, palette[y[interior]], atol=1.0)
        # every ignore pixel came from padding or rotation (no class outside the scene's)
        assert set(y.unique().tolist()) <= set(label.unique().tolist()) | {255}


def test_geometric_transforms_fill_with_ignore() -> None:
    image, label, _ = block_scene(0)
    torch.manual_seed(0)
    x, y = PadCrop(100)(image, label)
    assert (y == 255).sum() == 0 and x.shape == (3, 100, 100)
    x, y = PadCrop(200)(image, label)
    assert (y == 255).sum() == 200 * 200 - 144 * 192
    assert torch.allclose(x[:, 0, 0], torch.tensor(IMAGENET_MEAN_255))
    x, y = RandomRotate(10.0, p=1.0)(image, label)
    assert (y == 255).any() and y.shape == label.shape
    x, y = RandomScale(2.0, 2.0)(image, label)
    assert y.shape == (288, 384) and torch.equal(y[::2, ::2], label)


def test_digit_scenes_deterministic_and_sane(monkeypatch) -> None:
    from gkl.data.segmentation import digit_scenes

    monkeypatch.setattr(digit_scenes, "TRAIN_SCENES", 40)  # the registry builds the full 2000 otherwise
    a = DigitScenes(True, size=40)
    b = build_dataset("digit_scenes", "unused", True)
    assert torch.equal(a.images, b.images) and torch.equal(a.labels, b.labels)
    val = DigitScenes(False, size=40)
    assert not torch.equal(val.labels, a.labels)
    other_seed = DigitScenes(True, size=40, seed=1)
    assert not torch.equal(other_seed.labels, a.labels)
    x, y = a[3]
    assert x.shape == (3, 48, 48) and y.shape == (48, 48)
    values = set(a.labels.unique().tolist())
    assert values <= set(range(11)) | {255} and len(values) == 12
    # a border band of 255 separates every digit from the background
    lab = a.labels
    horizontal = (lab[:, :, 1:] != lab[:, :, :-1]) & (lab[:, :, 1:] != 255) & (lab[:, :, :-1] != 255)
    assert not horizontal.any() or ((lab[:, :, 1:] > 0) & (lab[:, :, :-1] > 0))[horizontal].all()
