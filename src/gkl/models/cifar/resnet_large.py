"""ImageNet-style ResNet18/ResNet50 adapted to CIFAR (3x3 stem, no max-pool), community names.

Four stages of 64/128/256/512 base channels; projections are named ``shortcut``
and the classifier ``linear``, as in the community teacher files.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from gkl.models._init import init_conv_bn_linear
from gkl.models.registry import register_model


def _projection(in_channels: int, out_channels: int, stride: int) -> nn.Sequential:
    if stride == 1 and in_channels == out_channels:
        return nn.Sequential()
    return nn.Sequential(nn.Conv2d(in_channels, out_channels, 1, stride, bias=False), nn.BatchNorm2d(out_channels))


class BasicBlock(nn.Module):
    """Two 3x3 conv-BN layers plus shortcut (expansion 1)."""

    expansion = 1

    def __init__(self, in_channels: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, planes, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.shortcut = _projection(in_channels, planes, stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class Bottleneck(nn.Module):
    """1x1 reduce, 3x3 (strided), 1x1 expand by 4, plus shortcut."""

    expansion = 4

    def __init__(self, in_channels: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        out_channels = planes * self.expansion
        self.conv1 = nn.Conv2d(in_channels, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, out_channels, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(out_channels)
        self.shortcut = _projection(in_channels, out_channels, stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = F.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return F.relu(out + self.shortcut(x))


class CifarLargeResNet(nn.Module):
    """Four-stage ResNet for 32x32 inputs with ``blocks_per_stage`` blocks of type ``block``."""

    layer1: nn.Sequential  #: set with setattr in __init__
    layer2: nn.Sequential  #: set with setattr in __init__
    layer3: nn.Sequential  #: set with setattr in __init__
    layer4: nn.Sequential  #: set with setattr in __init__

    def __init__(
        self,
        block: type[BasicBlock] | type[Bottleneck],
        blocks_per_stage: tuple[int, int, int, int],
        num_classes: int,
    ) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 64, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        in_channels = 64
        for index, (planes, num_blocks) in enumerate(zip((64, 128, 256, 512), blocks_per_stage), start=1):
            blocks = []
            for i in range(num_blocks):
                stride = 2 if (i == 0 and index > 1) else 1
                blocks.append(block(in_channels, planes, stride))
                in_channels = planes * block.expansion
            setattr(self, f"layer{index}", nn.Sequential(*blocks))
        self.linear = nn.Linear(in_channels, num_classes)
        init_conv_bn_linear(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.layer4(self.layer3(self.layer2(self.layer1(out))))
        return self.linear(torch.flatten(F.adaptive_avg_pool2d(out, 1), 1))


@register_model("ResNet18", input_kind="cifar")
def resnet18_cifar(num_classes: int) -> CifarLargeResNet:
    """ResNet-18 for CIFAR (basic blocks 2-2-2-2)."""
    return CifarLargeResNet(BasicBlock, (2, 2, 2, 2), num_classes)


@register_model("ResNet50", input_kind="cifar")
def resnet50_cifar(num_classes: int) -> CifarLargeResNet:
    """ResNet-50 for CIFAR (bottlenecks 3-4-6-3)."""
    return CifarLargeResNet(Bottleneck, (3, 4, 6, 3), num_classes)
