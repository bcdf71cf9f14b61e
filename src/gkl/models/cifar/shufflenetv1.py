"""ShuffleNet V1 for CIFAR (Zhang et al., 2018), community name ``ShuffleV1``.

Three groups, stage widths 240/480/960 with 4/8/4 units, 1x1 stem without
pooling; a stride-2 unit concatenates an average-pooled shortcut.
Layout of the community teacher files.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from gkl.models._init import init_conv_bn_linear
from gkl.models.cifar.shufflenet import channel_shuffle
from gkl.models.registry import register_model

_STEM_CHANNELS = 24


class ShuffleV1Unit(nn.Module):
    """Grouped 1x1, shuffle, depth-wise 3x3, grouped 1x1; add (stride 1) or concat (stride 2)."""

    def __init__(self, in_channels: int, out_channels: int, stride: int, groups: int) -> None:
        super().__init__()
        mid_channels = out_channels // 4
        # The first unit after the narrow stem uses an ungrouped 1x1 convolution.
        self.first_groups = 1 if in_channels == _STEM_CHANNELS else groups
        self.stride = stride
        self.conv1 = nn.Conv2d(in_channels, mid_channels, 1, groups=self.first_groups, bias=False)
        self.bn1 = nn.BatchNorm2d(mid_channels)
        self.conv2 = nn.Conv2d(mid_channels, mid_channels, 3, stride, 1, groups=mid_channels, bias=False)
        self.bn2 = nn.BatchNorm2d(mid_channels)
        self.conv3 = nn.Conv2d(mid_channels, out_channels, 1, groups=groups, bias=False)
        self.bn3 = nn.BatchNorm2d(out_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = channel_shuffle(out, self.first_groups)
        out = F.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        if self.stride == 2:
            return F.relu(torch.cat([out, F.avg_pool2d(x, 3, stride=2, padding=1)], 1))
        return F.relu(out + x)


class CifarShuffleNetV1(nn.Module):
    """ShuffleNet V1 for 32x32 inputs."""

    layer1: nn.Sequential  #: set with setattr in __init__
    layer2: nn.Sequential  #: set with setattr in __init__
    layer3: nn.Sequential  #: set with setattr in __init__

    def __init__(
        self,
        num_classes: int,
        stage_channels: tuple[int, int, int] = (240, 480, 960),
        stage_units: tuple[int, int, int] = (4, 8, 4),
        groups: int = 3,
    ) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, _STEM_CHANNELS, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(_STEM_CHANNELS)
        in_channels = _STEM_CHANNELS
        for index, (channels, units) in enumerate(zip(stage_channels, stage_units), start=1):
            stage = []
            for i in range(units):
                # A stride-2 unit's output is concatenated with its input, so it adds the difference.
                unit_out = channels - in_channels if i == 0 else channels
                stage.append(ShuffleV1Unit(in_channels, unit_out, 2 if i == 0 else 1, groups))
                in_channels = channels
            setattr(self, f"layer{index}", nn.Sequential(*stage))
        self.linear = nn.Linear(in_channels, num_classes)
        init_conv_bn_linear(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.layer3(self.layer2(self.layer1(out)))
        return self.linear(torch.flatten(F.adaptive_avg_pool2d(out, 1), 1))


@register_model("ShuffleV1", input_kind="cifar")
def shufflev1(num_classes: int) -> CifarShuffleNetV1:
    """ShuffleNet V1 (g=3) of the CIFAR distillation zoo."""
    return CifarShuffleNetV1(num_classes)
