"""ShuffleNet V2 1x for CIFAR (Ma et al., 2018), community name ``ShuffleV2``.

1x1 stem without pooling, stages of 116/232/464 channels (a down-sampling unit
plus 3/7/3 basic units), a 1x1 conv to 1024 channels, average pooling, linear.
Layout of the community teacher files.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from gkl.models._init import init_conv_bn_linear
from gkl.models.cifar.shufflenet import channel_shuffle
from gkl.models.registry import register_model


class ShuffleV2BasicUnit(nn.Module):
    """Split channels in half; transform the second half (1x1, dw 3x3, 1x1); concat; shuffle."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        half = channels // 2
        self.conv1 = nn.Conv2d(half, half, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(half)
        self.conv2 = nn.Conv2d(half, half, 3, 1, 1, groups=half, bias=False)
        self.bn2 = nn.BatchNorm2d(half)
        self.conv3 = nn.Conv2d(half, half, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(half)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        half = x.shape[1] // 2
        kept, transformed = x[:, :half], x[:, half:]
        out = F.relu(self.bn1(self.conv1(transformed)))
        out = self.bn2(self.conv2(out))
        out = F.relu(self.bn3(self.conv3(out)))
        return channel_shuffle(torch.cat([kept, out], 1), 2)


class ShuffleV2DownUnit(nn.Module):
    """Two stride-2 branches (dw 3x3 -> 1x1 | 1x1 -> dw 3x3 -> 1x1), concatenated and shuffled."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        mid = out_channels // 2
        self.conv1 = nn.Conv2d(in_channels, in_channels, 3, 2, 1, groups=in_channels, bias=False)
        self.bn1 = nn.BatchNorm2d(in_channels)
        self.conv2 = nn.Conv2d(in_channels, mid, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(mid)
        self.conv3 = nn.Conv2d(in_channels, mid, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(mid)
        self.conv4 = nn.Conv2d(mid, mid, 3, 2, 1, groups=mid, bias=False)
        self.bn4 = nn.BatchNorm2d(mid)
        self.conv5 = nn.Conv2d(mid, mid, 1, bias=False)
        self.bn5 = nn.BatchNorm2d(mid)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        left = F.relu(self.bn2(self.conv2(self.bn1(self.conv1(x)))))
        right = F.relu(self.bn3(self.conv3(x)))
        right = F.relu(self.bn5(self.conv5(self.bn4(self.conv4(right)))))
        return channel_shuffle(torch.cat([left, right], 1), 2)


class CifarShuffleNetV2(nn.Module):
    """ShuffleNet V2 for 32x32 inputs."""

    layer1: nn.Sequential  #: set with setattr in __init__
    layer2: nn.Sequential  #: set with setattr in __init__
    layer3: nn.Sequential  #: set with setattr in __init__

    def __init__(
        self,
        num_classes: int,
        stage_channels: tuple[int, int, int] = (116, 232, 464),
        stage_units: tuple[int, int, int] = (3, 7, 3),
        last_channels: int = 1024,
    ) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 24, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(24)
        in_channels = 24
        for index, (channels, units) in enumerate(zip(stage_channels, stage_units), start=1):
            stage: list[nn.Module] = [ShuffleV2DownUnit(in_channels, channels)]
            stage += [ShuffleV2BasicUnit(channels) for _ in range(units)]
            setattr(self, f"layer{index}", nn.Sequential(*stage))
            in_channels = channels
        self.conv2 = nn.Conv2d(in_channels, last_channels, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(last_channels)
        self.linear = nn.Linear(last_channels, num_classes)
        init_conv_bn_linear(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.layer3(self.layer2(self.layer1(out)))
        out = F.relu(self.bn2(self.conv2(out)))
        return self.linear(torch.flatten(F.adaptive_avg_pool2d(out, 1), 1))


@register_model("ShuffleV2", input_kind="cifar")
def shufflev2(num_classes: int) -> CifarShuffleNetV2:
    """ShuffleNet V2 1x of the CIFAR distillation zoo."""
    return CifarShuffleNetV2(num_classes)
