"""Paired image/label transforms for semantic segmentation (PSPNet/APD training pipeline).

Every transform takes and returns ``(image, label)``: ``image`` a float tensor (3, H, W) with
values in [0, 255], ``label`` an int64 tensor (H, W). Geometric operations are applied to
both with the same parameters: bilinear interpolation for the image, nearest for the label;
areas that enter from outside the image are filled with the mean colour (image) and the
ignore index (label). Random parameters are drawn from torch's global generator (seeded per
worker by the DataLoader), so a seeded run is reproducible.

The training recipe of PSPNet/APD: :class:`RandomScale` (0.5-2.0), :class:`RandomRotate`
(±10°, p = 0.5), :class:`RandomGaussianBlur` (5×5, p = 0.5), :class:`RandomHorizontalFlip`,
:class:`PadCrop` (random crop of 473 / 713 / 512 after padding), :class:`Normalize`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F

IMAGENET_MEAN_255 = (0.485 * 255, 0.456 * 255, 0.406 * 255)
IMAGENET_STD_255 = (0.229 * 255, 0.224 * 255, 0.225 * 255)

Pair = tuple[torch.Tensor, torch.Tensor]
PairTransform = Callable[[torch.Tensor, torch.Tensor], Pair]


def _uniform(low: float, high: float) -> float:
    return low + (high - low) * float(torch.rand(()))


def _coin(p: float) -> bool:
    return p > 0 and float(torch.rand(())) < p


class Compose:
    """Apply paired transforms in order."""

    def __init__(self, transforms: Sequence[PairTransform]) -> None:
        self.transforms = list(transforms)

    def __call__(self, image: torch.Tensor, label: torch.Tensor) -> Pair:
        for t in self.transforms:
            image, label = t(image, label)
        return image, label


def resize_pair(image: torch.Tensor, label: torch.Tensor, size: tuple[int, int]) -> Pair:
    """Resize to ``size`` = (H, W): bilinear image, nearest label."""
    image = F.interpolate(image[None], size=size, mode="bilinear", align_corners=False)[0]
    label = F.interpolate(label[None, None].float(), size=size, mode="nearest")[0, 0].long()
    return image, label


class RandomScale:
    """Resize by a factor drawn uniformly from [low, high] (aspect ratio kept)."""

    def __init__(self, low: float = 0.5, high: float = 2.0) -> None:
        if not 0 < low <= high:
            raise ValueError(f"scale range: expected 0 < low <= high, got ({low}, {high})")
        self.low, self.high = low, high

    def __call__(self, image: torch.Tensor, label: torch.Tensor) -> Pair:
        s = _uniform(self.low, self.high)
        h, w = label.shape
        return resize_pair(image, label, (max(1, round(h * s)), max(1, round(w * s))))


class RandomRotate:
    """Rotate by an angle in [-degrees, degrees] with probability ``p`` (canvas size kept)."""

    def __init__(
        self,
        degrees: float = 10.0,
        *,
        p: float = 0.5,
        fill: Sequence[float] = IMAGENET_MEAN_255,
        ignore_index: int = 255,
    ) -> None:
        self.degrees, self.p, self.fill, self.ignore_index = float(degrees), p, [float(v) for v in fill], ignore_index

    def __call__(self, image: torch.Tensor, label: torch.Tensor) -> Pair:
        if self.degrees == 0 or not _coin(self.p):
            return image, label
        angle = _uniform(-self.degrees, self.degrees)
        from torchvision.transforms import InterpolationMode
        from torchvision.transforms.v2 import functional as TF

        image = TF.rotate(image, angle, interpolation=InterpolationMode.BILINEAR, fill=self.fill)
        label = TF.rotate(label[None], angle, interpolation=InterpolationMode.NEAREST, fill=[float(self.ignore_index)])[
            0
        ]
        return image, label


class RandomGaussianBlur:
    """5×5 Gaussian blur of the image (σ = 1.1, OpenCV's σ for ksize 5) with probability ``p``."""

    def __init__(self, kernel_size: int = 5, *, p: float = 0.5) -> None:
        self.kernel_size, self.p = kernel_size, p
        self.sigma = 0.3 * ((kernel_size - 1) * 0.5 - 1) + 0.8

    def __call__(self, image: torch.Tensor, label: torch.Tensor) -> Pair:
        if _coin(self.p):
            from torchvision.transforms.v2 import functional as TF

            image = TF.gaussian_blur(image, [self.kernel_size, self.kernel_size], [self.sigma, self.sigma])
        return image, label


class RandomHorizontalFlip:
    """Mirror image and label with probability ``p``."""

    def __init__(self, p: float = 0.5) -> None:
        self.p = p

    def __call__(self, image: torch.Tensor, label: torch.Tensor) -> Pair:
        if _coin(self.p):
            return image.flip(-1), label.flip(-1)
        return image, label


class PadCrop:
    """Pad (mean colour / ignore) to at least ``size`` then crop ``size`` at random (or centred)."""

    def __init__(
        self,
        size: int | Sequence[int],
        *,
        random: bool = True,
        fill: Sequence[float] = IMAGENET_MEAN_255,
        ignore_index: int = 255,
    ) -> None:
        self.size = (size, size) if isinstance(size, int) else (int(size[0]), int(size[1]))
        self.random, self.fill, self.ignore_index = random, tuple(float(v) for v in fill), ignore_index

    def __call__(self, image: torch.Tensor, label: torch.Tensor) -> Pair:
        th, tw = self.size
        h, w = label.shape
        ph, pw = max(th - h, 0), max(tw - w, 0)
        if ph or pw:
            top, left = ph // 2, pw // 2
            padded = torch.empty(image.shape[0], h + ph, w + pw, dtype=image.dtype)
            padded.copy_(torch.tensor(self.fill, dtype=image.dtype).view(-1, 1, 1).expand_as(padded))
            padded[:, top : top + h, left : left + w] = image
            plabel = torch.full((h + ph, w + pw), self.ignore_index, dtype=label.dtype)
            plabel[top : top + h, left : left + w] = label
            image, label, h, w = padded, plabel, h + ph, w + pw
        if self.random:
            i = int(torch.randint(0, h - th + 1, ()))
            j = int(torch.randint(0, w - tw + 1, ()))
        else:
            i, j = (h - th) // 2, (w - tw) // 2
        return image[:, i : i + th, j : j + tw], label[i : i + th, j : j + tw]


class Normalize:
    """(image − mean) / std per channel, both given on the [0, 255] scale."""

    def __init__(self, mean: Sequence[float] = IMAGENET_MEAN_255, std: Sequence[float] = IMAGENET_STD_255) -> None:
        self.mean = torch.tensor([float(v) for v in mean]).view(-1, 1, 1)
        self.std = torch.tensor([float(v) for v in std]).view(-1, 1, 1)

    def __call__(self, image: torch.Tensor, label: torch.Tensor) -> Pair:
        return (image - self.mean) / self.std, label


def train_transform(
    crop_size: int | Sequence[int],
    *,
    scale: tuple[float, float] = (0.5, 2.0),
    rotate: float = 10.0,
    blur: bool = True,
    flip: bool = True,
    mean: Sequence[float] = IMAGENET_MEAN_255,
    std: Sequence[float] = IMAGENET_STD_255,
    normalize: bool = True,
    ignore_index: int = 255,
) -> Compose:
    """The PSPNet/APD training pipeline (scale, rotate, blur, flip, pad-and-crop, normalise)."""
    steps: list[PairTransform] = []
    if scale != (1.0, 1.0):
        steps.append(RandomScale(*scale))
    if rotate:
        steps.append(RandomRotate(rotate, fill=mean, ignore_index=ignore_index))
    if blur:
        steps.append(RandomGaussianBlur())
    if flip:
        steps.append(RandomHorizontalFlip())
    steps.append(PadCrop(crop_size, fill=mean, ignore_index=ignore_index))
    if normalize:
        steps.append(Normalize(mean, std))
    return Compose(steps)


def eval_transform(
    *, mean: Sequence[float] = IMAGENET_MEAN_255, std: Sequence[float] = IMAGENET_STD_255, normalize: bool = True
) -> Compose:
    """Evaluation: the whole image, normalised (inference crops/slides in the evaluator)."""
    return Compose([Normalize(mean, std)] if normalize else [])


__all__ = [
    "Compose",
    "Normalize",
    "PadCrop",
    "RandomGaussianBlur",
    "RandomHorizontalFlip",
    "RandomRotate",
    "RandomScale",
    "eval_transform",
    "resize_pair",
    "train_transform",
    "IMAGENET_MEAN_255",
    "IMAGENET_STD_255",
]
