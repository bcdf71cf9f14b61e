"""ADE20K, Cityscapes and Pascal VOC 2012 (+ SBD aug) in their released on-disk layouts.

ADE20K (SceneParsing release)::

    <root>/ADEChallengeData2016/images/{training,validation}/ADE_*.jpg
    <root>/ADEChallengeData2016/annotations/{training,validation}/ADE_*.png   # 0 = other, 1..150

    raw 0 -> 255 (ignore), raw k -> k - 1 (150 classes 0..149).

Cityscapes (after cityscapesScripts ``createTrainIdLabelImgs``)::

    <root>/leftImg8bit/{train,val}/<city>/<name>_leftImg8bit.png
    <root>/gtFine/{train,val}/<city>/<name>_gtFine_labelTrainIds.png         # 0..18, 255

Pascal VOC 2012 (+ the SBD "aug" labels, as distributed for DeepLab/PSPNet)::

    <root>/VOCdevkit/VOC2012/ (or <root> itself) JPEGImages/*.jpg,
    SegmentationClass/*.png (palette PNG, 0..20, 255 border),
    ImageSets/Segmentation/{train,val}.txt (one image id per line)
    with aug: SegmentationClassAug/*.png and ImageSets/Segmentation/train_aug.txt

A list line may also be ``<image path> <label path>`` relative to the VOC root (the
PSPNet list format). ``root`` may point at the directory above the release folder or at it.
"""

from __future__ import annotations

import glob
import os

import numpy as np

from gkl.data.registry import DatasetInfo
from gkl.utils.errors import InputError

from .base import IGNORE_INDEX, SegmentationFiles, make_transform
from .transforms import IMAGENET_MEAN_255, IMAGENET_STD_255

_MEAN = tuple(v / 255 for v in IMAGENET_MEAN_255)
_STD = tuple(v / 255 for v in IMAGENET_STD_255)

ADE20K_INFO = DatasetInfo("ade20k", 150, "segmentation", (3, 473, 473), _MEAN, _STD)
CITYSCAPES_INFO = DatasetInfo(
    "cityscapes",
    19,
    "segmentation",
    (3, 713, 713),
    _MEAN,
    _STD,
    class_names=(
        "road",
        "sidewalk",
        "building",
        "wall",
        "fence",
        "pole",
        "traffic light",
        "traffic sign",
        "vegetation",
        "terrain",
        "sky",
        "person",
        "rider",
        "car",
        "truck",
        "bus",
        "train",
        "motorcycle",
        "bicycle",
    ),
)
VOC_INFO = DatasetInfo(
    "voc2012",
    21,
    "segmentation",
    (3, 473, 473),
    _MEAN,
    _STD,
    class_names=(
        "background",
        "aeroplane",
        "bicycle",
        "bird",
        "boat",
        "bottle",
        "bus",
        "car",
        "cat",
        "chair",
        "cow",
        "diningtable",
        "dog",
        "horse",
        "motorbike",
        "person",
        "pottedplant",
        "sheep",
        "sofa",
        "train",
        "tvmonitor",
    ),
)

DEFAULT_CROP = {"ade20k": 473, "cityscapes": 713, "voc2012": 473}


def _find_dir(root: str, *candidates: str) -> str:
    for candidate in candidates:
        path = os.path.join(root, candidate) if candidate else root
        if os.path.isdir(path):
            return path
    tried = ", ".join(os.path.join(root, c) if c else root for c in candidates)
    raise InputError(f"data.root {root}: dataset folder not found (looked for {tried})")


def ade20k_label_map(raw: np.ndarray) -> np.ndarray:
    """ADE20K: 0 ('other') -> 255, 1..150 -> 0..149; other values are left for the range check."""
    out = raw - 1
    out[raw == 0] = IGNORE_INDEX
    return out


def ade20k_pairs(root: str, train: bool) -> list[tuple[str, str]]:
    base = _find_dir(root, "ADEChallengeData2016", "")
    split = "training" if train else "validation"
    image_dir = os.path.join(base, "images", split)
    label_dir = os.path.join(base, "annotations", split)
    if not os.path.isdir(image_dir):
        raise InputError(f"ADE20K: folder not found: {image_dir}")
    images = sorted(glob.glob(os.path.join(image_dir, "*.jpg")))
    return [(p, os.path.join(label_dir, os.path.splitext(os.path.basename(p))[0] + ".png")) for p in images]


def cityscapes_pairs(root: str, train: bool) -> list[tuple[str, str]]:
    split = "train" if train else "val"
    image_dir = os.path.join(_find_dir(root, "leftImg8bit", "cityscapes/leftImg8bit"), split)
    label_dir = os.path.join(os.path.dirname(image_dir.rstrip(os.sep)), "..", "gtFine", split)
    label_dir = os.path.normpath(label_dir)
    if not os.path.isdir(image_dir):
        raise InputError(f"Cityscapes: folder not found: {image_dir}")
    pairs = []
    for image in sorted(glob.glob(os.path.join(image_dir, "*", "*_leftImg8bit.png"))):
        city = os.path.basename(os.path.dirname(image))
        stem = os.path.basename(image)[: -len("_leftImg8bit.png")]
        pairs.append((image, os.path.join(label_dir, city, f"{stem}_gtFine_labelTrainIds.png")))
    return pairs


def voc_pairs(root: str, train: bool, *, aug: bool = False) -> list[tuple[str, str]]:
    base = _find_dir(root, "VOCdevkit/VOC2012", "VOC2012", "")
    list_name = ("train_aug.txt" if aug else "train.txt") if train else "val.txt"
    list_file = os.path.join(base, "ImageSets", "Segmentation", list_name)
    if not os.path.isfile(list_file):
        raise InputError(f"Pascal VOC: list file not found: {list_file}")
    label_dir = "SegmentationClassAug" if aug and train else "SegmentationClass"
    pairs = []
    with open(list_file, encoding="utf-8") as handle:
        for number, line in enumerate(handle, 1):
            fields = line.split()
            if not fields:
                continue
            if len(fields) == 1:
                pairs.append(
                    (
                        os.path.join(base, "JPEGImages", fields[0] + ".jpg"),
                        os.path.join(base, label_dir, fields[0] + ".png"),
                    )
                )
            elif len(fields) == 2:
                pairs.append(tuple(os.path.join(base, f.lstrip("/")) for f in fields))  # type: ignore[arg-type]
            else:
                raise InputError(f"{list_file}:{number}: expected '<id>' or '<image> <label>', got {line.strip()!r}")
    return pairs


def build_folder_dataset(
    name: str,
    root: str,
    train: bool,
    *,
    normalize: bool = True,
    augment: bool = False,
    crop_size: int | None = None,
    scale: tuple[float, float] = (0.5, 2.0),
    rotate: float = 10.0,
    blur: bool = True,
    flip: bool = True,
    voc_aug: bool = False,
) -> SegmentationFiles:
    """One split of ``ade20k`` | ``cityscapes`` | ``voc2012`` with the recipe transforms."""
    crop = crop_size or DEFAULT_CROP[name]
    transform = make_transform(train, augment, normalize, crop, scale=scale, rotate=rotate, blur=blur, flip=flip)
    if name == "ade20k":
        return SegmentationFiles(
            ade20k_pairs(root, train), ADE20K_INFO, transform=transform, label_map=ade20k_label_map
        )
    if name == "cityscapes":
        return SegmentationFiles(cityscapes_pairs(root, train), CITYSCAPES_INFO, transform=transform)
    if name == "voc2012":
        return SegmentationFiles(voc_pairs(root, train, aug=voc_aug), VOC_INFO, transform=transform)
    raise ValueError(f"unknown segmentation folder dataset {name!r}")
