"""Half-width MobileNetV2 for CIFAR (community name ``MobileNetV2``; Sandler et al., 2018).

Expansion 6, width multiplier 0.5, first stride 2 then the 24-channel stage kept
at stride 1 for 32x32 inputs; every inverted-residual block (also the first, with
expansion 1) has a point-wise expansion conv. Layout of the community teacher files.
"""

from __future__ import annotations

import torch
from torch import nn

from gkl.models._init import init_conv_bn_linear
from gkl.models.registry import register_model

# (expansion, channels at width 1, blocks, first stride); expansion None -> the model's.
_STAGES: tuple[tuple[int | None, int, int, int], ...] = (
    (1, 16, 1, 1),
    (None, 24, 2, 1),
    (None, 32, 3, 2),
    (None, 64, 4, 2),
    (None, 96, 3, 1),
    (None, 160, 3, 2),
    (None, 320, 1, 1),
)


def _conv_bn_relu(in_channels: int, out_channels: int, kernel_size: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, kernel_size, stride, kernel_size // 2, bias=False),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(inplace=True),
    )


class InvertedResidual(nn.Module):
    """1x1 expand, 3x3 depth-wise, 1x1 linear projection; residual when shapes agree."""

    def __init__(self, in_channels: int, out_channels: int, stride: int, expansion: int) -> None:
        super().__init__()
        hidden = in_channels * expansion
        self.use_residual = stride == 1 and in_channels == out_channels
        self.conv = nn.Sequential(
            nn.Conv2d(in_channels, hidden, 1, bias=False),
            nn.BatchNorm2d(hidden),
            nn.ReLU(inplace=True),
            nn.Conv2d(hidden, hidden, 3, stride, 1, groups=hidden, bias=False),
            nn.BatchNorm2d(hidden),
            nn.ReLU(inplace=True),
            nn.Conv2d(hidden, out_channels, 1, bias=False),
            nn.BatchNorm2d(out_channels),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv(x)
        return x + out if self.use_residual else out


class CifarMobileNetV2(nn.Module):
    """MobileNetV2 for 32x32 inputs with ``expansion`` and ``width_mult``."""

    def __init__(self, num_classes: int, expansion: int = 6, width_mult: float = 0.5) -> None:
        super().__init__()
        in_channels = int(32 * width_mult)
        self.conv1 = _conv_bn_relu(3, in_channels, 3, stride=2)
        self.blocks = nn.ModuleList()
        for stage_expansion, channels, num_blocks, stride in _STAGES:
            out_channels = int(channels * width_mult)
            blocks = []
            for i in range(num_blocks):
                blocks.append(
                    InvertedResidual(in_channels, out_channels, stride if i == 0 else 1, stage_expansion or expansion)
                )
                in_channels = out_channels
            self.blocks.append(nn.Sequential(*blocks))
        last_channels = int(1280 * width_mult) if width_mult > 1.0 else 1280
        self.conv2 = _conv_bn_relu(in_channels, last_channels, 1)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Sequential(nn.Linear(last_channels, num_classes))
        init_conv_bn_linear(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv1(x)
        for stage in self.blocks:
            out = stage(out)
        out = self.conv2(out)
        return self.classifier(torch.flatten(self.avgpool(out), 1))


@register_model("MobileNetV2", input_kind="cifar")
def mobilenetv2_half(num_classes: int) -> CifarMobileNetV2:
    """Half-width MobileNetV2 (expansion 6, width 0.5) of the CIFAR distillation zoo."""
    return CifarMobileNetV2(num_classes, expansion=6, width_mult=0.5)
