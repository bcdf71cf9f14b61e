"""A bundled offline segmentation task: scikit-learn digits pasted on a noisy 48×48 canvas.

Each scene has a random background colour, 2-4 digits (8×8 scikit-learn digits upscaled 2× or
3×, random colour, random position, later digits on top) and Gaussian pixel noise. Classes:
0 = background, 1 + d for digit d (11 classes). A digit pixel is foreground where its intensity
exceeds 0.3; the one-pixel band around every foreground region (dilation minus erosion of the
mask, 4-neighbourhood) is 255 (ignore), like the object borders of Pascal VOC.

Deterministic: scene i of a split is a function of (seed, split, i) only. The train split
draws its digits from scikit-learn's digits training part and the val split from the test
part (the fixed stratified split of ``gkl.data.bundled``).
"""

from __future__ import annotations

import functools

import numpy as np
import torch
from torch.utils.data import Dataset

from gkl.data.registry import DatasetInfo

SIZE = 48
NUM_CLASSES = 11
THRESHOLD = 0.3
NOISE_STD = 0.08
TRAIN_SCENES = 2000
VAL_SCENES = 500
MEAN = (0.45, 0.45, 0.45)
STD = (0.25, 0.25, 0.25)

DIGIT_SCENES_INFO = DatasetInfo(
    "digit_scenes",
    NUM_CLASSES,
    "segmentation",
    (3, SIZE, SIZE),
    MEAN,
    STD,
    class_names=("background",) + tuple(f"digit {d}" for d in range(10)),
)


def _border(mask: np.ndarray) -> np.ndarray:
    """Pixels whose 4-neighbourhood crosses the mask boundary (dilation XOR erosion)."""
    padded = np.pad(mask, 1, mode="edge")
    neighbours = [padded[1:-1, 1:-1], padded[:-2, 1:-1], padded[2:, 1:-1], padded[1:-1, :-2], padded[1:-1, 2:]]
    dilated = np.logical_or.reduce(neighbours)
    eroded = np.logical_and.reduce(neighbours)
    return dilated & ~eroded


def make_scenes(digits: np.ndarray, digit_labels: np.ndarray, count: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """``count`` scenes as float32 images (count, 3, 48, 48) in [0, 1] and int64 labels (count, 48, 48)."""
    rng = np.random.default_rng(seed)
    images = np.empty((count, 3, SIZE, SIZE), dtype=np.float32)
    labels = np.empty((count, SIZE, SIZE), dtype=np.int64)
    for n in range(count):
        background = rng.uniform(0.0, 0.6, size=3)
        image = np.broadcast_to(background[:, None, None], (3, SIZE, SIZE)).copy()
        label = np.zeros((SIZE, SIZE), dtype=np.int64)
        boundary = np.zeros((SIZE, SIZE), dtype=bool)
        for _ in range(int(rng.integers(2, 5))):
            k = int(rng.integers(len(digits)))
            factor = int(rng.integers(2, 4))
            glyph = np.kron(digits[k], np.ones((factor, factor), dtype=np.float32))
            size = glyph.shape[0]
            top, left = (int(v) for v in rng.integers(0, SIZE - size + 1, size=2))
            colour = rng.uniform(0.4, 1.0, size=3)
            alpha = glyph[None]
            window = image[:, top : top + size, left : left + size]
            image[:, top : top + size, left : left + size] = window * (1 - alpha) + colour[:, None, None] * alpha
            mask = np.zeros((SIZE, SIZE), dtype=bool)
            mask[top : top + size, left : left + size] = glyph > THRESHOLD
            label[mask] = 1 + int(digit_labels[k])
            boundary[mask] = False  # a later digit covers earlier borders
            boundary |= _border(mask)
        image += rng.normal(0.0, NOISE_STD, size=image.shape).astype(np.float32)
        label[boundary] = 255
        images[n] = np.clip(image, 0.0, 1.0)
        labels[n] = label
    return images, labels


@functools.lru_cache(maxsize=4)
def _scenes(train: bool, seed: int, count: int) -> tuple[np.ndarray, np.ndarray]:
    """The split's scenes, generated once per process (read-only: every dataset copies them; the labels,
    0-10 and 255, kept as uint8)."""
    from gkl.data.bundled import digits_split

    inputs, digit_labels = digits_split(train)
    images, labels = make_scenes(inputs[:, 0].numpy(), digit_labels.numpy(), count, seed=seed * 2 + (0 if train else 1))
    scenes = images, labels.astype(np.uint8)
    for array in scenes:
        array.flags.writeable = False
    return scenes


class DigitScenes(Dataset):
    """The bundled scenes as ``(image (3, 48, 48), label (48, 48))`` pairs (normalised unless asked not to)."""

    def __init__(self, train: bool, *, seed: int = 0, normalize: bool = True, size: int | None = None) -> None:
        count = size if size is not None else (TRAIN_SCENES if train else VAL_SCENES)
        images, labels = _scenes(train, seed, count)
        images, labels = images.copy(), labels.astype(np.int64)
        self.images = torch.from_numpy(images)
        if normalize:
            self.images = (self.images - torch.tensor(MEAN).view(1, 3, 1, 1)) / torch.tensor(STD).view(1, 3, 1, 1)
        self.labels = torch.from_numpy(labels)
        self.info = DIGIT_SCENES_INFO

    def __len__(self) -> int:
        return self.images.shape[0]

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.images[index], self.labels[index]
