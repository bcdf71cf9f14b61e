"""Exponential moving average (EMA) of a model's weights."""

from __future__ import annotations

import copy

import torch
from torch import nn


class ModelEMA:
    """Keeps ``ema = decay * ema + (1 - decay) * weights`` for every floating-point
    parameter and buffer (BatchNorm statistics included); integer buffers are copied.

    The GKL-AT recipe averages per-epoch weights with decay 0.9.
    """

    def __init__(self, model: nn.Module, decay: float) -> None:
        if not 0.0 <= decay < 1.0:
            raise ValueError(f"decay: expected a value in [0, 1), got {decay!r}")
        self.decay = float(decay)
        self.module = copy.deepcopy(model).eval()
        self.module.requires_grad_(False)
        self.updates = 0

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        """Fold the current weights of ``model`` (same architecture, unwrapped) into the average."""
        source = model.state_dict()
        for name, ema_value in self.module.state_dict().items():
            value = source[name].detach()
            if ema_value.is_floating_point():
                ema_value.mul_(self.decay).add_(value.to(ema_value.dtype), alpha=1.0 - self.decay)
            else:
                ema_value.copy_(value)
        self.updates += 1

    def state_dict(self) -> dict:
        return {"decay": self.decay, "updates": self.updates, "model": self.module.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        self.module.load_state_dict(state["model"])
        self.decay = float(state["decay"])
        self.updates = int(state["updates"])
