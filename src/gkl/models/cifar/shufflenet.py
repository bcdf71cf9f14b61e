"""Channel shuffle, shared by the CIFAR ShuffleNet V1 and V2."""

from __future__ import annotations

import torch


def channel_shuffle(x: torch.Tensor, groups: int) -> torch.Tensor:
    """Interleave the channels of ``groups`` groups: (N, g*c, ...) -> (N, c*g, ...)."""
    if groups == 1:
        return x
    n, channels = x.shape[:2]
    rest = x.shape[2:]
    return x.view(n, groups, channels // groups, *rest).transpose(1, 2).reshape(n, channels, *rest)
