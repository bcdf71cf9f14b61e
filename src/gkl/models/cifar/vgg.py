"""Batch-norm VGGs for CIFAR (vgg8, vgg11, vgg13, vgg16, vgg19) of the distillation zoo.

Five conv stages ``block0`` ... ``block4`` (3x3 conv with bias, BN, ReLU; the last
ReLU of a stage is applied in ``forward``), max-pooling between the first four
stages (between stages 3 and 4 only for 64-pixel inputs), global average pooling
and one linear ``classifier``. Parameter names follow the community teacher files.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from gkl.models._init import init_conv_bn_linear
from gkl.models.registry import register_model

# Output channels of the convolutions of each of the five stages.
VGG_STAGES: dict[str, tuple[tuple[int, ...], ...]] = {
    "vgg8": ((64,), (128,), (256,), (512,), (512,)),
    "vgg11": ((64,), (128,), (256, 256), (512, 512), (512, 512)),
    "vgg13": ((64, 64), (128, 128), (256, 256), (512, 512), (512, 512)),
    "vgg16": ((64, 64), (128, 128), (256, 256, 256), (512, 512, 512), (512, 512, 512)),
    "vgg19": ((64, 64), (128, 128), (256,) * 4, (512,) * 4, (512,) * 4),
}


def _make_stage(in_channels: int, widths: tuple[int, ...]) -> nn.Sequential:
    """conv-BN-ReLU repeated, without the trailing ReLU."""
    layers: list[nn.Module] = []
    for width in widths:
        layers += [nn.Conv2d(in_channels, width, 3, padding=1), nn.BatchNorm2d(width), nn.ReLU(inplace=True)]
        in_channels = width
    return nn.Sequential(*layers[:-1])


class CifarVGG(nn.Module):
    """VGG with batch norm for 32x32 (or 64x64) inputs."""

    def __init__(self, stages: tuple[tuple[int, ...], ...], num_classes: int) -> None:
        super().__init__()
        if len(stages) != 5:
            raise ValueError(f"CifarVGG: expected 5 stages, got {len(stages)}")
        in_channels = 3
        for index, widths in enumerate(stages):
            setattr(self, f"block{index}", _make_stage(in_channels, widths))
            in_channels = widths[-1]
        self.classifier = nn.Linear(in_channels, num_classes)
        init_conv_bn_linear(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        height = x.shape[2]
        out = x
        for index in range(5):
            out = F.relu(getattr(self, f"block{index}")(out))
            if index < 3 or (index == 3 and height == 64):
                out = F.max_pool2d(out, kernel_size=2, stride=2)
        out = torch.flatten(F.adaptive_avg_pool2d(out, 1), 1)
        return self.classifier(out)


def _register(name: str) -> None:
    @register_model(name, input_kind="cifar")
    def build(num_classes: int) -> CifarVGG:
        return CifarVGG(VGG_STAGES[name], num_classes)

    build.__doc__ = f"{name} with batch norm (CIFAR)."


for _name in VGG_STAGES:
    _register(_name)
