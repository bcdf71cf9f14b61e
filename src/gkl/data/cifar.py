"""CIFAR-10 / CIFAR-100 from the official python pickle layout.

Layout under ``root`` (as unpacked by torchvision or by hand)::

    cifar-10-batches-py/  data_batch_1 .. data_batch_5, test_batch, batches.meta
    cifar-100-python/     train, test, meta

Each batch file is a pickle of a dict with ``b"data"`` (N x 3072 uint8, channel
planes R, G, B of 32x32) and ``b"labels"`` (CIFAR-10) or ``b"fine_labels"`` (CIFAR-100).

The files are read with a restricted unpickler (:class:`CifarUnpickler`): a pickle can
run arbitrary code when loaded, so only what CIFAR files contain is allowed (dicts,
lists, strings, bytes, numbers and numpy arrays through numpy's own reconstruction
functions); anything else, and a truncated or corrupt file, is an
:class:`~gkl.utils.errors.InputError` naming the file.
"""

from __future__ import annotations

import os
import pickle
from dataclasses import dataclass, replace

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

from gkl.utils.errors import InputError

from .base import Augmentation, InfoDataset, MemorySplit
from .registry import DatasetInfo, register_dataset
from .transforms import CIFAR10_MEAN, CIFAR10_STD, CIFAR100_MEAN, CIFAR100_STD, CIFAR_CROP_PADDING, cifar_transform


@dataclass(frozen=True)
class CifarLayout:
    """File names of one CIFAR variant."""

    folder: str
    train_files: tuple[str, ...]
    test_files: tuple[str, ...]
    meta_file: str
    label_key: str
    names_key: str


CIFAR10_LAYOUT = CifarLayout(
    "cifar-10-batches-py",
    tuple(f"data_batch_{i}" for i in range(1, 6)),
    ("test_batch",),
    "batches.meta",
    "labels",
    "label_names",
)
CIFAR100_LAYOUT = CifarLayout("cifar-100-python", ("train",), ("test",), "meta", "fine_labels", "fine_label_names")


def _layout_text(layout: CifarLayout) -> str:
    files = ", ".join(layout.train_files + layout.test_files + (layout.meta_file,))
    return f"{layout.folder}/ containing {files}"


#: the only globals a CIFAR pickle may name: numpy's array/scalar reconstruction and bytes decoding
ALLOWED_GLOBALS = frozenset(
    {
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy.core.multiarray", "scalar"),
        ("numpy._core.multiarray", "scalar"),
        ("numpy.core.numeric", "_frombuffer"),
        ("numpy._core.numeric", "_frombuffer"),
        ("_codecs", "encode"),
    }
)


class CifarUnpickler(pickle.Unpickler):
    """Unpickler that refuses every global outside :data:`ALLOWED_GLOBALS` (no code runs from a file)."""

    def find_class(self, module: str, name: str):  # noqa: D102
        if (module, name) not in ALLOWED_GLOBALS:
            raise pickle.UnpicklingError(
                f"refused to load {module}.{name} (CIFAR files hold only dicts, lists, "
                "strings, numbers and numpy arrays)"
            )
        if module.startswith("numpy.core."):  # pickles from numpy 1.x name numpy.core; numpy 2 has numpy._core
            try:
                return super().find_class(module.replace("numpy.core.", "numpy._core.", 1), name)
            except (ImportError, AttributeError):
                pass
        return super().find_class(module, name)


def _unpickle(path: str) -> dict:
    try:
        with open(path, "rb") as handle:
            raw = CifarUnpickler(handle, encoding="bytes").load()
    except (
        pickle.UnpicklingError,
        EOFError,
        ValueError,
        TypeError,
        IndexError,
        KeyError,
        AttributeError,
        MemoryError,
        UnicodeDecodeError,
    ) as err:
        raise InputError(
            f"{path}: not a readable CIFAR pickle ({type(err).__name__}: {err}); the file is corrupt, "
            "truncated or not a CIFAR file: download or unpack it again"
        ) from None
    if not isinstance(raw, dict):
        raise InputError(f"{path}: expected a pickled dict, got {type(raw).__name__}")
    return {(k.decode("latin1") if isinstance(k, bytes) else k): v for k, v in raw.items()}


def read_cifar_split(root: str, layout: CifarLayout, train: bool) -> tuple[np.ndarray, np.ndarray, tuple[str, ...]]:
    """Read one split: images uint8 ``(N, 32, 32, 3)``, labels int64 ``(N,)``, class names."""
    folder = os.path.join(root, layout.folder)
    files = layout.train_files if train else layout.test_files
    needed = [os.path.join(folder, f) for f in files + (layout.meta_file,)]
    missing = [p for p in needed if not os.path.isfile(p)]
    if missing:
        raise InputError(
            f"CIFAR files missing under root {root!r}: {missing}; expected layout {_layout_text(layout)} "
            "(set data.download=true to fetch it on a machine that is online)"
        )
    images, labels = [], []
    for path in needed[:-1]:
        batch = _unpickle(path)
        if "data" not in batch or layout.label_key not in batch:
            raise InputError(
                f"{path}: expected keys b'data' and b'{layout.label_key}', found {sorted(map(str, batch))}"
            )
        try:
            data = np.asarray(batch["data"], dtype=np.uint8)
            batch_labels = np.asarray(batch[layout.label_key], dtype=np.int64)
        except (TypeError, ValueError) as err:
            raise InputError(f"{path}: b'data' must be uint8 pixels and labels integers ({err})") from None
        if data.ndim != 2 or data.shape[1] != 3 * 32 * 32:
            raise InputError(f"{path}: b'data' must be N x 3072 uint8, got shape {data.shape}")
        if batch_labels.ndim != 1 or len(batch_labels) != len(data):
            raise InputError(f"{path}: {len(data)} images but labels of shape {batch_labels.shape}")
        images.append(data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1))
        labels.append(batch_labels)
    meta = _unpickle(needed[-1])
    names = tuple(n.decode() if isinstance(n, bytes) else str(n) for n in meta.get(layout.names_key, []))
    return np.ascontiguousarray(np.concatenate(images)), np.concatenate(labels), names


class CifarImages(Dataset):
    """Map-style CIFAR split: ``transform(PIL image), label``."""

    def __init__(self, images: np.ndarray, labels: np.ndarray, transform) -> None:
        self.images = images
        self.labels = labels
        self.transform = transform

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        return self.transform(Image.fromarray(self.images[index])), int(self.labels[index])


def _download(name: str, root: str, train: bool) -> None:
    from torchvision import datasets

    cls = datasets.CIFAR10 if name == "cifar10" else datasets.CIFAR100
    cls(root, train=train, download=True)  # fetches and md5-checks the official archive


def _build(
    name: str,
    layout: CifarLayout,
    info: DatasetInfo,
    root: str,
    train: bool,
    *,
    download: bool,
    normalize: bool,
    augment: bool,
) -> InfoDataset:
    if download:
        _download(name, root, train)
    images, labels, names = read_cifar_split(root, layout, train)
    if labels.size and (labels.min() < 0 or labels.max() >= info.num_classes):
        raise InputError(
            f"{root}/{layout.folder}: labels must lie in [0, {info.num_classes}), got [{labels.min()}, {labels.max()}]"
        )
    transform = cifar_transform(augment=augment, normalize=normalize, mean=info.mean, std=info.std)
    if names and len(names) == info.num_classes:
        info = replace(info, class_names=names)
    augmentation: Augmentation = "crop_flip" if augment else "none"

    def memory() -> MemorySplit:
        return MemorySplit(
            images=torch.from_numpy(images).permute(0, 3, 1, 2).contiguous(),
            labels=torch.from_numpy(labels),
            mean=info.mean if normalize else None,
            std=info.std if normalize else None,
            augmentation=augmentation,
            padding=CIFAR_CROP_PADDING,
        )

    return InfoDataset(
        CifarImages(images, labels, transform),
        info,
        augmentation=augmentation,
        normalize=normalize,
        image_transform=transform,
        memory=memory,
    )


CIFAR10_INFO = DatasetInfo("cifar10", 10, "cifar", (3, 32, 32), CIFAR10_MEAN, CIFAR10_STD)
CIFAR100_INFO = DatasetInfo("cifar100", 100, "cifar", (3, 32, 32), CIFAR100_MEAN, CIFAR100_STD)


@register_dataset(CIFAR10_INFO)
def build_cifar10(root: str, train: bool, **kwargs) -> InfoDataset:
    """CIFAR-10 under ``root/cifar-10-batches-py``."""
    return _build("cifar10", CIFAR10_LAYOUT, CIFAR10_INFO, root, train, **kwargs)


@register_dataset(CIFAR100_INFO)
def build_cifar100(root: str, train: bool, **kwargs) -> InfoDataset:
    """CIFAR-100 (fine labels) under ``root/cifar-100-python``."""
    return _build("cifar100", CIFAR100_LAYOUT, CIFAR100_INFO, root, train, **kwargs)
