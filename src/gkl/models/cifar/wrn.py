"""Wide ResNets (Zagoruyko & Komodakis, 2016) with pre-activation blocks.

``WideResNet`` serves both the CIFAR distillation zoo (wrn_16_1, wrn_16_2,
wrn_40_1, wrn_40_2, names as in the community teacher files; wrn_16_4, wrn_28_2,
wrn_28_4 and wrn_40_6 for Kim et al.'s KL-versus-MSE study) and the robust
models of :mod:`gkl.models.robust_wrn` (activation choice, TRADES layout).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from gkl.models._init import init_conv_bn_linear
from gkl.models.registry import register_model

ActivationFactory = Callable[[], nn.Module]


class WideBasicBlock(nn.Module):
    """BN-act-conv-BN-act-conv; a 1x1 ``convShortcut`` when the width changes."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        stride: int,
        drop_rate: float = 0.0,
        activation: ActivationFactory = nn.ReLU,
    ) -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_channels)
        self.act1 = activation()
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.act2 = activation()
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=False)
        self.drop_rate = drop_rate
        self.equal_in_out = in_channels == out_channels
        self.convShortcut: nn.Module | None = None
        if not self.equal_in_out:
            self.convShortcut = nn.Conv2d(in_channels, out_channels, 1, stride=stride, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pre = self.act1(self.bn1(x))
        # Width changes: the shortcut also starts from the pre-activated input.
        shortcut = x if self.convShortcut is None else self.convShortcut(pre)
        out = self.act2(self.bn2(self.conv1(pre)))
        if self.drop_rate > 0:
            out = F.dropout(out, p=self.drop_rate, training=self.training)
        return shortcut + self.conv2(out)


class NetworkBlock(nn.Module):
    """A stage of ``num_blocks`` wide blocks, held in ``self.layer``."""

    def __init__(
        self,
        num_blocks: int,
        in_channels: int,
        out_channels: int,
        stride: int,
        drop_rate: float = 0.0,
        activation: ActivationFactory = nn.ReLU,
    ) -> None:
        super().__init__()
        self.layer = nn.Sequential(
            *(
                WideBasicBlock(
                    in_channels if i == 0 else out_channels,
                    out_channels,
                    stride if i == 0 else 1,
                    drop_rate,
                    activation,
                )
                for i in range(num_blocks)
            )
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layer(x)


class WideResNet(nn.Module):
    """WRN-depth-widen_factor for 32x32 inputs; depth must be 6n+4.

    sub_block1: add the unused ``sub_block1`` stage of the TRADES WRN-34-10 so its
        published state_dicts load strictly (it is never called in ``forward``).
    """

    def __init__(
        self,
        depth: int,
        widen_factor: int,
        num_classes: int,
        drop_rate: float = 0.0,
        activation: ActivationFactory = nn.ReLU,
        sub_block1: bool = False,
    ) -> None:
        super().__init__()
        if depth < 10 or (depth - 4) % 6 != 0:
            raise ValueError(f"WideResNet: depth must be 6n+4 with n >= 1, got {depth}")
        if widen_factor < 1:
            raise ValueError(f"WideResNet: widen_factor must be >= 1, got {widen_factor}")
        n = (depth - 4) // 6
        widths = [16, 16 * widen_factor, 32 * widen_factor, 64 * widen_factor]
        self.conv1 = nn.Conv2d(3, widths[0], 3, padding=1, bias=False)
        self.block1 = NetworkBlock(n, widths[0], widths[1], 1, drop_rate, activation)
        if sub_block1:
            self.sub_block1 = NetworkBlock(n, widths[0], widths[1], 1, drop_rate, activation)
        self.block2 = NetworkBlock(n, widths[1], widths[2], 2, drop_rate, activation)
        self.block3 = NetworkBlock(n, widths[2], widths[3], 2, drop_rate, activation)
        self.bn1 = nn.BatchNorm2d(widths[3])
        self.act = activation()
        self.fc = nn.Linear(widths[3], num_classes)
        init_conv_bn_linear(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.block3(self.block2(self.block1(self.conv1(x))))
        out = self.act(self.bn1(out))
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(out, 1), 1))


def _register(depth: int, widen_factor: int) -> None:
    @register_model(f"wrn_{depth}_{widen_factor}", input_kind="cifar")
    def build(num_classes: int, drop_rate: float = 0.0) -> WideResNet:
        return WideResNet(depth, widen_factor, num_classes, drop_rate=drop_rate)

    build.__doc__ = f"WRN-{depth}-{widen_factor} of the CIFAR distillation zoo."


# WRN-28-2 and WRN-28-8: the classic from-scratch semi-supervised backbones (FixMatch, USB "classic_cv");
# WRN-16-4, WRN-28-4 and WRN-40-6 (with 16-2 and 28-2): Kim et al. 2021's CIFAR-100 students and teacher.
for _depth, _widen in ((16, 1), (16, 2), (16, 4), (40, 1), (40, 2), (40, 6), (28, 2), (28, 4), (28, 8)):
    _register(_depth, _widen)
