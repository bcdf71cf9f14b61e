"""Offline datasets: scikit-learn's 8x8 digits and procedurally generated MNIST-1D.

Neither is augmented (small signals where crops/flips change the class meaning);
``augment=True`` is accepted and has no effect. Both support in-memory loading.
"""

from __future__ import annotations

import functools
import os
import zipfile

import numpy as np
import torch

from gkl.utils.errors import InputError

from .base import InfoDataset, MemorySplit, TensorPairs
from .registry import DatasetInfo, register_dataset

DIGITS_TEST_SIZE = 450  # 1797 images -> 1347 train / 450 test, stratified
DIGITS_SPLIT_SEED = 0
# Statistics of the digits training split in [0, 1] (checked by the tests).
DIGITS_INFO = DatasetInfo(
    "digits", 10, "digits", (1, 8, 8), (0.3052,), (0.3760,), class_names=tuple(str(d) for d in range(10))
)

# MNIST-1D signals are standardised by the generator (mean 0, std 1, all within
# about +-5.5); we map them to [0, 1] with the fixed affine x -> (x + 6) / 12, so
# normalising with the statistics below recovers the generator's standardisation.
MNIST1D_OFFSET = 6.0
MNIST1D_SCALE = 12.0
MNIST1D_CACHE = "mnist1d_default.npz"
MNIST1D_INFO = DatasetInfo(
    "mnist1d", 10, "mnist1d", (1, 40), (0.5000,), (0.0831,), class_names=tuple(str(d) for d in range(10))
)


def _pairs(info: DatasetInfo, inputs: torch.Tensor, labels: torch.Tensor, normalize: bool) -> InfoDataset:
    mean, std = (info.mean, info.std) if normalize else (None, None)

    def memory() -> MemorySplit:
        return MemorySplit(images=inputs, labels=labels, mean=mean, std=std, augmentation="none")

    return InfoDataset(
        TensorPairs(inputs, labels, mean, std), info, augmentation="none", normalize=normalize, memory=memory
    )


def _require(module: str, dataset: str) -> None:
    """A clear error when the package that provides a bundled dataset is not installed."""
    import importlib.util

    if importlib.util.find_spec(module) is None:
        raise InputError(f"data.name: dataset {dataset!r} needs the package {module!r}: pip install 'gkl[bundled]'")


def digits_split(train: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """Digits split as float inputs ``(N, 1, 8, 8)`` in [0, 1] and int64 labels (fixed stratified split)."""
    _require("sklearn", "digits")
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    x, y = load_digits(return_X_y=True)
    train_idx, test_idx = train_test_split(
        np.arange(len(y)), test_size=DIGITS_TEST_SIZE, stratify=y, random_state=DIGITS_SPLIT_SEED
    )
    idx = train_idx if train else test_idx
    inputs = torch.tensor(x[idx] / 16.0, dtype=torch.float32).view(-1, 1, 8, 8)
    return inputs, torch.tensor(y[idx], dtype=torch.int64)


@register_dataset(DIGITS_INFO)
def build_digits(root: str, train: bool, *, download: bool, normalize: bool, augment: bool) -> InfoDataset:
    """scikit-learn digits (shipped with scikit-learn; ``root`` and ``download`` are unused)."""
    inputs, labels = digits_split(train)
    return _pairs(DIGITS_INFO, inputs, labels, normalize)


def generate_mnist1d() -> dict[str, np.ndarray]:
    """MNIST-1D with the package's default arguments (4000 train / 1000 test), offline.

    The generator seeds numpy's and Python's global RNGs; their states are restored afterwards. It is
    deterministic and takes about a CPU-second, so a process generates it once and hands out copies.
    """
    return {key: value.copy() for key, value in _generated_mnist1d().items()}


@functools.lru_cache(maxsize=1)
def _generated_mnist1d() -> dict[str, np.ndarray]:
    import random

    _require("mnist1d", "mnist1d")
    from mnist1d.data import get_dataset_args, make_dataset

    np_state, py_state = np.random.get_state(), random.getstate()
    try:
        data = make_dataset(get_dataset_args())
    finally:
        np.random.set_state(np_state)
        random.setstate(py_state)
    return {
        "x": data["x"].astype(np.float32),
        "y": data["y"].astype(np.int64),
        "x_test": data["x_test"].astype(np.float32),
        "y_test": data["y_test"].astype(np.int64),
    }


def load_mnist1d(root: str) -> dict[str, np.ndarray]:
    """Arrays cached in ``root/mnist1d_default.npz`` (generated and written on first use)."""
    path = os.path.join(root, MNIST1D_CACHE)
    if os.path.isfile(path):
        try:
            with np.load(path, allow_pickle=False) as cached:
                missing = {"x", "y", "x_test", "y_test"} - set(cached.files)
                if missing:
                    raise InputError(f"{path}: MNIST-1D cache lacks arrays {sorted(missing)}; delete it to regenerate")
                return {k: cached[k] for k in ("x", "y", "x_test", "y_test")}
        except InputError:
            raise
        except (OSError, ValueError, EOFError, KeyError, zipfile.BadZipFile) as err:
            raise InputError(
                f"{path}: the MNIST-1D cache cannot be read ({type(err).__name__}: {err}); delete it to regenerate"
            ) from None
    data = generate_mnist1d()
    os.makedirs(root, exist_ok=True)
    tmp = path + f".tmp{os.getpid()}.npz"
    np.savez(tmp, **data)  # type: ignore[arg-type]  # numpy's stub checks **arrays against allow_pickle: bool
    os.replace(tmp, path)  # atomic: concurrent ranks never read a half-written cache
    return data


@register_dataset(MNIST1D_INFO)
def build_mnist1d(root: str, train: bool, *, download: bool, normalize: bool, augment: bool) -> InfoDataset:
    """MNIST-1D signals ``(1, 40)``; ``normalize=False`` gives values in [0, 1]."""
    data = load_mnist1d(root)
    x, y = (data["x"], data["y"]) if train else (data["x_test"], data["y_test"])
    inputs = torch.from_numpy((x + MNIST1D_OFFSET) / MNIST1D_SCALE).to(torch.float32).clamp_(0, 1).unsqueeze(1)
    return _pairs(MNIST1D_INFO, inputs, torch.from_numpy(y).to(torch.int64), normalize)
