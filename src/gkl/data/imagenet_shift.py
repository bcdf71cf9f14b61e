"""ImageNet-R and ImageNet-Sketch: test-only image folders whose classes are ImageNet-1k classes.

Layouts, as the data sets are distributed:

- ImageNet-R (``imagenet-r.tar``): ``imagenet-r/<wnid>/<file>.jpg``, the 200 class folders of
  :data:`~gkl.data.imagenet_classes.IMAGENET_R_WNIDS`;
- ImageNet-Sketch: ``sketch/<wnid>/<file>.JPEG``, the 1000 ImageNet-1k class folders.

``root`` is the folder holding the class folders, or its parent holding ``imagenet-r/`` or
``sketch/``. Every expected class folder must be there (a partial copy gives a number that
cannot be compared with published ones) and no other folder.

A label is the index of the image's WordNet id in ``info.class_names``, the sorted WordNet ids
of the data set: 0..199 for ImageNet-R, the ImageNet-1k class index for Sketch. Because both
lists are sorted, ``gkl.data.imagenet_classes.imagenet_class_indices(info.class_names)`` lists
the logit columns of a 1000-class ImageNet model in label order (the standard evaluation of
ImageNet-R keeps only those 200 columns). Test transform: Resize(256) + CenterCrop(224).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, replace

from gkl.utils.errors import InputError

from .base import InfoDataset
from .imagenet import IMAGENET_INFO, ImageList, class_folders
from .imagenet_classes import IMAGENET_R_WNIDS, IMAGENET_WNIDS
from .registry import register_dataset
from .transforms import imagenet_transform


@dataclass(frozen=True)
class ShiftedImageNet:
    """One test-only ImageNet variant: its registry name, folder name, classes and layout text."""

    name: str
    title: str
    folder: str
    wnids: tuple[str, ...]
    layout: str


IMAGENET_R = ShiftedImageNet(
    "imagenet_r", "ImageNet-R", "imagenet-r", IMAGENET_R_WNIDS, "imagenet-r/<wnid>/<file>.jpg, 200 class folders"
)
IMAGENET_SKETCH = ShiftedImageNet(
    "imagenet_sketch", "ImageNet-Sketch", "sketch", IMAGENET_WNIDS, "sketch/<wnid>/<file>.JPEG, 1000 class folders"
)


def _class_root(root: str, variant: ShiftedImageNet) -> str:
    """``root/<folder>`` when it exists, else ``root`` itself."""
    nested = os.path.join(root, variant.folder)
    if os.path.isdir(nested):
        return nested
    if not os.path.isdir(root):
        raise InputError(f"{variant.title} folder not found: {root!r}; expected layout {variant.layout}")
    return root


def read_shifted_imagenet(root: str, variant: ShiftedImageNet) -> list[tuple[str, int]]:
    """``(image path, label)`` pairs of ``variant`` under ``root``; InputError for a missing or extra class folder."""
    folder = _class_root(root, variant)
    found = class_folders(folder)
    expected = set(variant.wnids)
    extra = [name for name in found if name not in expected]
    if extra:
        raise InputError(
            f"{folder}: {len(extra)} folder(s) that are not {variant.title} classes, e.g. {extra[:3]}; "
            f"expected layout {variant.layout}"
        )
    missing = sorted(expected - set(found))
    if missing:
        raise InputError(
            f"{folder}: {len(missing)} of the {len(variant.wnids)} {variant.title} class folders are missing, "
            f"e.g. {missing[:3]}; expected layout {variant.layout}"
        )
    from torchvision.datasets.folder import IMG_EXTENSIONS, make_dataset

    labels = {wnid: index for index, wnid in enumerate(variant.wnids)}
    samples = make_dataset(folder, labels, extensions=IMG_EXTENSIONS, allow_empty=True)
    if not samples:
        raise InputError(f"no images found under {folder!r}; expected layout {variant.layout}")
    return samples


def _register(variant: ShiftedImageNet) -> None:
    info = replace(IMAGENET_INFO, name=variant.name, num_classes=len(variant.wnids), class_names=variant.wnids)

    @register_dataset(info)
    def build(root: str, train: bool, *, download: bool, normalize: bool, augment: bool) -> InfoDataset:
        if download:
            raise InputError(f"data.download: {variant.title} cannot be downloaded automatically")
        if train:
            raise InputError(f"data.name: {variant.title} is a test set only (evaluate with gkl evaluate --dataset)")
        transform = imagenet_transform(train=False, augment=False, normalize=normalize)
        samples = read_shifted_imagenet(root, variant)
        return InfoDataset(
            ImageList(samples, transform), info, augmentation="none", normalize=normalize, image_transform=transform
        )

    build.__doc__ = f"{variant.title} test images ({variant.layout}); labels index ``info.class_names``."


for _variant in (IMAGENET_R, IMAGENET_SKETCH):
    _register(_variant)
