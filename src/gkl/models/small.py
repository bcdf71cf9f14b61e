"""Small models for the bundled offline data, so a full run takes seconds on a CPU.

scikit-learn digits, inputs (N, 1, 8, 8):
    ``digits_cnn_large`` (teacher, ~57k parameters, BatchNorm) and
    ``digits_mlp_small`` (student, ~1.2k parameters).
MNIST-1D, inputs (N, 1, 40):
    ``mnist1d_cnn`` (teacher, ~22k parameters, BatchNorm) and
    ``mnist1d_mlp_small`` (student, ~2.5k parameters) and ``mnist1d_mlp`` (the demo's
    student, two hidden layers, ~7.5k parameters).
"""

from __future__ import annotations

import torch
from torch import nn

from gkl.models._init import init_conv_bn_linear
from gkl.models.registry import register_model


def _check_input(x: torch.Tensor, shape: tuple[int, ...], model: str) -> None:
    if x.ndim != len(shape) + 1 or tuple(x.shape[1:]) != shape:
        expected = ", ".join(str(s) for s in shape)
        raise ValueError(f"{model}: expected input of shape (N, {expected}), got {tuple(x.shape)}")


class DigitsCNN(nn.Module):
    """Three 3x3 conv-BN-ReLU layers (32, 64, 64 channels; 2x2 max-pool after the second) and a linear head."""

    input_shape = (1, 8, 8)

    def __init__(self, num_classes: int, widths: tuple[int, int, int] = (32, 64, 64)) -> None:
        super().__init__()
        c1, c2, c3 = widths
        self.features = nn.Sequential(
            nn.Conv2d(1, c1, 3, padding=1, bias=False),
            nn.BatchNorm2d(c1),
            nn.ReLU(inplace=True),
            nn.Conv2d(c1, c2, 3, padding=1, bias=False),
            nn.BatchNorm2d(c2),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(2),
            nn.Conv2d(c2, c3, 3, padding=1, bias=False),
            nn.BatchNorm2d(c3),
            nn.ReLU(inplace=True),
            nn.AdaptiveAvgPool2d(1),
        )
        self.fc = nn.Linear(c3, num_classes)
        init_conv_bn_linear(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _check_input(x, self.input_shape, type(self).__name__)
        return self.fc(torch.flatten(self.features(x), 1))


class FlatMLP(nn.Module):
    """Flatten, ``depth`` hidden ReLU layers of width ``hidden``, linear head."""

    def __init__(self, input_shape: tuple[int, ...], hidden: int, num_classes: int, depth: int = 1) -> None:
        super().__init__()
        if depth < 1:
            raise ValueError(f"depth: expected at least one hidden layer, got {depth}")
        self.input_shape = input_shape
        in_features = 1
        for size in input_shape:
            in_features *= size
        layers: list[nn.Module] = [nn.Flatten()]
        for i in range(depth):
            layers += [nn.Linear(in_features if i == 0 else hidden, hidden), nn.ReLU(inplace=True)]
        layers.append(nn.Linear(hidden, num_classes))
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _check_input(x, self.input_shape, type(self).__name__)
        return self.net(x)


class Mnist1dCNN(nn.Module):
    """Three strided Conv1d-BN-ReLU layers (40 -> 20 -> 10 -> 5 positions) and a linear head on the flat map.

    Position matters in MNIST-1D, so the head sees every position (no global pooling).
    """

    input_shape = (1, 40)

    def __init__(self, num_classes: int, channels: int = 48) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv1d(1, channels, 5, stride=2, padding=2, bias=False),
            nn.BatchNorm1d(channels),
            nn.ReLU(inplace=True),
            nn.Conv1d(channels, channels, 5, stride=2, padding=2, bias=False),
            nn.BatchNorm1d(channels),
            nn.ReLU(inplace=True),
            nn.Conv1d(channels, channels, 3, stride=2, padding=1, bias=False),
            nn.BatchNorm1d(channels),
            nn.ReLU(inplace=True),
        )
        self.fc = nn.Linear(channels * 5, num_classes)
        init_conv_bn_linear(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _check_input(x, self.input_shape, type(self).__name__)
        return self.fc(torch.flatten(self.features(x), 1))


@register_model("digits_cnn_large", input_kind="digits")
def digits_cnn_large(num_classes: int) -> DigitsCNN:
    """Teacher-sized CNN for 8x8 digits."""
    return DigitsCNN(num_classes)


@register_model("digits_mlp_small", input_kind="digits")
def digits_mlp_small(num_classes: int, hidden: int = 16) -> FlatMLP:
    """Student-sized MLP for 8x8 digits (64 -> hidden -> classes)."""
    return FlatMLP((1, 8, 8), hidden, num_classes)


@register_model("mnist1d_cnn", input_kind="mnist1d")
def mnist1d_cnn(num_classes: int) -> Mnist1dCNN:
    """Teacher-sized 1-D CNN for MNIST-1D."""
    return Mnist1dCNN(num_classes)


@register_model("mnist1d_mlp_small", input_kind="mnist1d")
def mnist1d_mlp_small(num_classes: int, hidden: int = 48) -> FlatMLP:
    """Student-sized MLP for MNIST-1D (40 -> hidden -> classes)."""
    return FlatMLP((1, 40), hidden, num_classes)


@register_model("mnist1d_mlp", input_kind="mnist1d")
def mnist1d_mlp(num_classes: int, hidden: int = 64, depth: int = 2) -> FlatMLP:
    """The demo's student: an MLP for MNIST-1D (40 -> 64 -> 64 -> classes, ~7.5k parameters)."""
    return FlatMLP((1, 40), hidden, num_classes, depth=depth)
