"""ImageNet models: torchvision ResNets / MobileNetV2 / ResNeXt and the KD-literature MobileNetV1.

Registry names carry an ``imagenet_`` prefix so they never collide with the CIFAR
``ResNet18`` / ``ResNet50``: ``imagenet_resnet18``, ``imagenet_resnet34``,
``imagenet_resnet50``, ``imagenet_resnet152`` (Kim et al.'s ImageNet teacher),
``imagenet_resnext101_32x8d``, ``imagenet_resnext101_32x4d`` (the GKL authors'
ImageNet-LT teacher), ``imagenet_mobilenet_v2`` and ``imagenet_mobilenet_v1``. torchvision
models are built with ``weights=None`` and keep torchvision's parameter names, so their
published state_dicts load with :func:`gkl.models.load_weights`; ResNeXt-101 32x4d, which
torchvision does not list, is torchvision's ``ResNet`` with ``groups=32, width_per_group=4``
and Bottleneck blocks ``[3, 4, 23, 3]`` (the same parameter names).
"""

from __future__ import annotations

import torch
from torch import nn

from gkl.models._init import init_conv_bn_linear
from gkl.models.registry import register_model


def _conv_bn_relu(in_channels: int, out_channels: int, stride: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, 3, stride, 1, bias=False),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(inplace=True),
    )


def _depthwise_separable(in_channels: int, out_channels: int, stride: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(in_channels, in_channels, 3, stride, 1, groups=in_channels, bias=False),
        nn.BatchNorm2d(in_channels),
        nn.ReLU(inplace=True),
        nn.Conv2d(in_channels, out_channels, 1, bias=False),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(inplace=True),
    )


# (output channels, stride) of the 13 depth-wise separable blocks.
_MOBILENET_V1_BLOCKS: tuple[tuple[int, int], ...] = (
    (64, 1),
    (128, 2),
    (128, 1),
    (256, 2),
    (256, 1),
    (512, 2),
    (512, 1),
    (512, 1),
    (512, 1),
    (512, 1),
    (512, 1),
    (1024, 2),
    (1024, 1),
)


class MobileNetV1(nn.Module):
    """MobileNetV1 (Howard et al., 2017) as used in ImageNet KD benchmarks.

    Stem conv-BN-ReLU (32 channels, stride 2), 13 depth-wise separable blocks up to
    1024 channels, global average pooling and ``fc``; the feature layers live in
    ``self.model`` (keys ``model.<i>.<j>``), matching the widely shared weights.
    """

    def __init__(self, num_classes: int) -> None:
        super().__init__()
        layers: list[nn.Module] = [_conv_bn_relu(3, 32, 2)]
        in_channels = 32
        for out_channels, stride in _MOBILENET_V1_BLOCKS:
            layers.append(_depthwise_separable(in_channels, out_channels, stride))
            in_channels = out_channels
        layers.append(nn.AdaptiveAvgPool2d(1))
        self.model = nn.Sequential(*layers)
        self.fc = nn.Linear(in_channels, num_classes)
        init_conv_bn_linear(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.flatten(self.model(x), 1))


@register_model("imagenet_mobilenet_v1", input_kind="imagenet")
def imagenet_mobilenet_v1(num_classes: int) -> MobileNetV1:
    """MobileNetV1 for 224x224 ImageNet inputs."""
    return MobileNetV1(num_classes)


def _register_torchvision(name: str) -> None:
    @register_model(f"imagenet_{name}", input_kind="imagenet")
    def build(num_classes: int, **kwargs: object) -> nn.Module:
        from torchvision import models as tv_models  # imported on use: torchvision is slow to import

        return getattr(tv_models, name)(weights=None, num_classes=num_classes, **kwargs)

    build.__doc__ = f"torchvision.models.{name}(weights=None); extra kwargs go to torchvision."


for _name in ("resnet18", "resnet34", "resnet50", "resnet152", "resnext101_32x8d", "mobilenet_v2"):
    _register_torchvision(_name)


@register_model("imagenet_resnext101_32x4d", input_kind="imagenet")
def imagenet_resnext101_32x4d(num_classes: int, **kwargs: object) -> nn.Module:
    """ResNeXt-101 32x4d (Xie et al., 2017): torchvision ``ResNet(Bottleneck, [3, 4, 23, 3], groups=32,
    width_per_group=4)``; extra kwargs go to torchvision's ``ResNet``."""
    from torchvision.models.resnet import Bottleneck, ResNet

    return ResNet(Bottleneck, [3, 4, 23, 3], num_classes=num_classes, groups=32, width_per_group=4, **kwargs)
