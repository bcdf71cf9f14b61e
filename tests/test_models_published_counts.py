"""Parameter counts of registered models against published numbers, and their forward shapes.

Sources of the published numbers:
- torchvision's model documentation ("num_params" of the ImageNet weights): resnet50 25,557,032,
  resnet152 60,192,808, resnext101_32x8d 88,791,336.
- ResNeXt-101 32x4d is not in torchvision; 44,177,704 is the count of timm's and Cadene's
  ``pretrainedmodels`` ``resnext101_32x4d`` (the weights the ImageNet-LT literature uses).
- Wide ResNets: Zagoruyko & Komodakis 2016 ("Wide Residual Networks"), Tables 1 and 2, give the
  CIFAR-10 counts in millions rounded to 0.1 M. The exact counts come from the closed form of the
  reference layout (conv 3x3 stem with 16 channels; per block BN-ReLU-conv3x3-BN-ReLU-conv3x3 and
  a 1x1 shortcut conv when the width changes; final BN and a linear layer with bias), which is
  first checked against those rounded published numbers.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

from gkl.models import create_model, model_input_kind
from gkl.models.cifar.wrn import WideResNet


def _num_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def wrn_parameter_count(depth: int, widen_factor: int, num_classes: int) -> int:
    """Parameters of WRN-depth-widen_factor in the reference layout, counted by hand."""
    n = (depth - 4) // 6
    widths = [16, 16 * widen_factor, 32 * widen_factor, 64 * widen_factor]
    total = 3 * widths[0] * 9  # stem conv, no bias
    for c_in, c_out in zip(widths[:-1], widths[1:]):
        # first block: BN(c_in), conv(c_in -> c_out), BN(c_out), conv(c_out -> c_out), 1x1 shortcut if widths differ
        total += 2 * c_in + 9 * c_in * c_out + 2 * c_out + 9 * c_out * c_out + (c_in * c_out if c_in != c_out else 0)
        total += (n - 1) * (2 * c_out + 9 * c_out * c_out + 2 * c_out + 9 * c_out * c_out)
    return total + 2 * widths[3] + widths[3] * num_classes + num_classes


# WRN paper, Tables 1-2 (CIFAR-10, millions of parameters).
WRN_PAPER_MILLIONS = {(40, 1): 0.6, (40, 2): 2.2, (40, 4): 8.9, (16, 8): 11.0, (28, 10): 36.5, (22, 8): 17.2}


@pytest.mark.parametrize(("depth", "widen"), list(WRN_PAPER_MILLIONS))
def test_wrn_closed_form_matches_the_wrn_paper(depth: int, widen: int) -> None:
    count = wrn_parameter_count(depth, widen, 10)
    assert round(count / 1e6, 1) == WRN_PAPER_MILLIONS[(depth, widen)]


@pytest.mark.parametrize(("depth", "widen"), [(40, 1), (40, 4), (16, 8)])
def test_wide_resnet_class_counts_equal_the_closed_form(depth: int, widen: int) -> None:
    assert _num_parameters(WideResNet(depth, widen, 10)) == wrn_parameter_count(depth, widen, 10)


# Kim et al. 2021's CIFAR-100 students and teacher (and the zoo's wrn_40_2).
@pytest.mark.parametrize("name", ["wrn_16_2", "wrn_16_4", "wrn_28_2", "wrn_28_4", "wrn_40_2", "wrn_40_6"])
def test_registered_wrn_counts_and_shapes(name: str) -> None:
    _, depth, widen = name.split("_")
    model = create_model(name, 100)
    assert model_input_kind(name) == "cifar"
    assert _num_parameters(model) == wrn_parameter_count(int(depth), int(widen), 100)
    assert len(model.block1.layer) == (int(depth) - 4) // 6
    assert model.fc.in_features == 64 * int(widen)
    with torch.no_grad():
        assert model.eval()(torch.rand(2, 3, 32, 32)).shape == (2, 100)


TORCHVISION_COUNTS = {
    "imagenet_resnet50": 25_557_032,
    "imagenet_resnet152": 60_192_808,
    "imagenet_resnext101_32x8d": 88_791_336,
    "imagenet_resnext101_32x4d": 44_177_704,
}


@pytest.mark.parametrize("name", list(TORCHVISION_COUNTS))
def test_imagenet_counts_equal_the_published_ones(name: str) -> None:
    model = create_model(name, 1000)
    assert model_input_kind(name) == "imagenet"
    assert _num_parameters(model) == TORCHVISION_COUNTS[name]


def test_resnext101_32x4d_structure_and_forward() -> None:
    model = create_model("imagenet_resnext101_32x4d", 7).eval()
    blocks = [len(getattr(model, f"layer{i}")) for i in range(1, 5)]
    assert blocks == [3, 4, 23, 3]
    first = model.layer1[0]
    # 32 groups of width 4 in the first stage: 128 channels in the grouped 3x3 conv.
    assert first.conv2.groups == 32 and first.conv2.in_channels == 128
    assert model.layer4[0].conv2.in_channels == 1024 and model.fc.in_features == 2048
    with torch.no_grad():
        assert model(torch.rand(1, 3, 64, 64)).shape == (1, 7)


def test_resnet152_keeps_torchvision_layout() -> None:
    from torchvision import models as tv_models

    ours = create_model("imagenet_resnet152", 10).state_dict()
    reference = tv_models.resnet152(weights=None, num_classes=10).state_dict()
    assert [(k, v.shape) for k, v in ours.items()] == [(k, v.shape) for k, v in reference.items()]
