"""WideResNets for adversarial training on [0, 1] inputs: ``wrn34_10``, ``wrn28_10``, ``wrn16_4_robust``.

The architecture and parameter names are those of the TRADES / RobustBench
WideResNet (:class:`gkl.models.cifar.wrn.WideResNet`). Input normalisation is part
of the model (``mean``/``std`` buffers, non-persistent, so state_dicts are the same
with or without it), which lets attacks work directly in pixel space.

Builder keyword arguments:
    activation: ``"relu"`` (default) or ``"swish"`` (SiLU).
    mean, std: per-channel statistics; CIFAR-10's by default; ``None`` for both
        means identity (no normalisation).
    drop_rate: dropout inside the blocks (default 0).
    sub_block1: add TRADES's unused ``sub_block1`` so its published WRN-34-10 files load.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from gkl.models.cifar.wrn import WideResNet
from gkl.models.registry import register_model

CIFAR10_MEAN: tuple[float, float, float] = (0.4914, 0.4822, 0.4465)
CIFAR10_STD: tuple[float, float, float] = (0.2471, 0.2435, 0.2616)

_ACTIVATIONS: dict[str, type[nn.Module]] = {"relu": nn.ReLU, "swish": nn.SiLU}


class InputNormalization(nn.Module):
    """``(x - mean) / std`` per channel, or identity when ``mean`` and ``std`` are None.

    The statistics are non-persistent buffers: they follow ``.to(device)`` but are
    not written to (or expected in) state_dicts.
    """

    mean: torch.Tensor  #: buffers registered in __init__
    std: torch.Tensor

    def __init__(self, mean: Sequence[float] | None, std: Sequence[float] | None) -> None:
        super().__init__()
        if (mean is None) != (std is None):
            raise ValueError("mean and std must both be given or both be None")
        self.enabled = mean is not None
        if mean is None or std is None:
            return
        mean_t = torch.as_tensor(mean, dtype=torch.float32)
        std_t = torch.as_tensor(std, dtype=torch.float32)
        if mean_t.ndim != 1 or std_t.shape != mean_t.shape:
            raise ValueError(
                f"mean and std must be 1-d sequences of the same length (one value per channel), "
                f"got shapes {tuple(mean_t.shape)} and {tuple(std_t.shape)}"
            )
        if not bool((std_t > 0).all()):
            raise ValueError(f"std must be positive, got {std_t.tolist()}")
        self.register_buffer("mean", mean_t.view(1, -1, 1, 1), persistent=False)
        self.register_buffer("std", std_t.view(1, -1, 1, 1), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.enabled:
            return x
        return (x - self.mean) / self.std


class RobustWideResNet(WideResNet):
    """WideResNet with input normalisation inside: takes [0, 1] images."""

    def __init__(
        self,
        depth: int,
        widen_factor: int,
        num_classes: int,
        *,
        activation: str = "relu",
        mean: Sequence[float] | None = CIFAR10_MEAN,
        std: Sequence[float] | None = CIFAR10_STD,
        drop_rate: float = 0.0,
        sub_block1: bool = False,
    ) -> None:
        if activation not in _ACTIVATIONS:
            raise ValueError(f"activation must be one of {sorted(_ACTIVATIONS)}, got {activation!r}")
        super().__init__(
            depth,
            widen_factor,
            num_classes,
            drop_rate=drop_rate,
            activation=_ACTIVATIONS[activation],
            sub_block1=sub_block1,
        )
        self.normalize = InputNormalization(mean, std)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(self.normalize(x))


def _register(name: str, depth: int, widen_factor: int) -> None:
    @register_model(name, input_kind="cifar")
    def build(
        num_classes: int,
        *,
        activation: str = "relu",
        mean: Sequence[float] | None = CIFAR10_MEAN,
        std: Sequence[float] | None = CIFAR10_STD,
        drop_rate: float = 0.0,
        sub_block1: bool = False,
    ) -> RobustWideResNet:
        return RobustWideResNet(
            depth,
            widen_factor,
            num_classes,
            activation=activation,
            mean=mean,
            std=std,
            drop_rate=drop_rate,
            sub_block1=sub_block1,
        )

    build.__doc__ = f"WRN-{depth}-{widen_factor} for adversarial training, [0, 1] inputs."


_register("wrn34_10", 34, 10)
_register("wrn28_10", 28, 10)
_register("wrn16_4_robust", 16, 4)
