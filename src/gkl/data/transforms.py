"""Recipe transforms: per-image (torchvision) pipelines and the matching batch normalisation."""

from __future__ import annotations

from typing import Any

import torch

CIFAR10_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR10_STD = (0.2470, 0.2435, 0.2616)
CIFAR100_MEAN = (0.5071, 0.4867, 0.4408)
CIFAR100_STD = (0.2675, 0.2565, 0.2761)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
CIFAR_CROP_PADDING = 4


def cifar_transform(*, augment: bool, normalize: bool, mean: tuple[float, ...], std: tuple[float, ...]) -> Any:
    """PIL 32x32 image -> tensor: [RandomCrop(32, padding=4) + RandomHorizontalFlip] + ToTensor [+ Normalize]."""
    from torchvision import transforms as T  # torchvision is imported where it is used (it is slow to import)

    steps: list = []
    if augment:
        steps += [T.RandomCrop(32, padding=CIFAR_CROP_PADDING), T.RandomHorizontalFlip()]
    steps.append(T.ToTensor())
    if normalize:
        steps.append(T.Normalize(mean, std))
    return T.Compose(steps)


def imagenet_transform(*, train: bool, augment: bool, normalize: bool) -> Any:
    """Train: RandomResizedCrop(224) + flip; test (or augment=False): Resize(256) + CenterCrop(224)."""
    from torchvision import transforms as T

    if train and augment:
        steps: list = [T.RandomResizedCrop(224), T.RandomHorizontalFlip()]
    else:
        steps = [T.Resize(256), T.CenterCrop(224)]
    steps.append(T.ToTensor())
    if normalize:
        steps.append(T.Normalize(IMAGENET_MEAN, IMAGENET_STD))
    return T.Compose(steps)


def to_unit_float(images: torch.Tensor) -> torch.Tensor:
    """uint8 -> float32 in [0, 1] (the same arithmetic as ``ToTensor``); float input is returned as float32."""
    if images.dtype == torch.uint8:
        return images.to(torch.float32).div(255)
    return images.to(torch.float32)


def normalize_batch(images: torch.Tensor, mean: tuple[float, ...], std: tuple[float, ...]) -> torch.Tensor:
    """Per-channel ``(x - mean) / std`` on a batch ``(B, C, ...)`` (same arithmetic as ``Normalize``)."""
    view = (1, -1) + (1,) * (images.dim() - 2)
    m = torch.as_tensor(mean, dtype=images.dtype, device=images.device).view(view)
    s = torch.as_tensor(std, dtype=images.dtype, device=images.device).view(view)
    return images.sub(m).div(s)
