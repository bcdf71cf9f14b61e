"""Exponential moving average (EMA) of a model's weights."""

from __future__ import annotations

import copy
from typing import Any

import torch
from torch import nn


class ModelEMA:
    """Keeps ``ema = d_k * ema + (1 - d_k) * weights`` at update ``k`` (from 1) for every floating-point
    parameter and buffer (BatchNorm statistics included); integer buffers are copied.

    ``d_k`` (:meth:`decay_at`) is ``decay``; with ``warmup_updates = W > 0`` it is 0 for ``k < W`` (the
    average is a copy of the weights); with ``dynamic`` it is ``min(decay, (1 + t) / (10 + t))``,
    ``t = k - W``. ``copy_buffers``: buffers are copied from the model instead of averaged. DM-AT's
    weight averaging (``ema_update`` with ``dynamic_decay=True`` and ``update_bn``) is decay 0.995,
    W = 2.5 % of the run's steps, dynamic, buffers copied. The GKL-AT recipe averages per-epoch
    weights with decay 0.9.
    """

    def __init__(
        self,
        model: nn.Module,
        decay: float,
        *,
        warmup_updates: float = 0.0,
        dynamic: bool = False,
        copy_buffers: bool = False,
    ) -> None:
        if not 0.0 <= decay < 1.0:
            raise ValueError(f"decay: expected a value in [0, 1), got {decay!r}")
        if not warmup_updates >= 0.0:
            raise ValueError(f"warmup_updates: expected a value >= 0, got {warmup_updates!r}")
        self.decay = float(decay)
        self.warmup_updates = float(warmup_updates)
        self.dynamic = bool(dynamic)
        self.copy_buffers = bool(copy_buffers)
        self.module = copy.deepcopy(model).eval()
        self.module.requires_grad_(False)
        #: the state-dict entries copied instead of averaged (the buffers, with ``copy_buffers``)
        self._copied = frozenset(name for name, _ in self.module.named_buffers()) if self.copy_buffers else frozenset()
        self.updates = 0

    @classmethod
    def from_settings(cls, model: nn.Module, settings: Any, *, steps: int, epochs: int) -> ModelEMA | None:
        """The EMA of ``train.ema`` (an EMASettings) for a run of ``steps`` steps in ``epochs`` epochs
        (None when ``decay`` is null): the warm-up counts updates, steps or epochs by ``every``."""
        if settings.decay is None:
            return None
        updates = steps if settings.every == "step" else epochs
        return cls(
            model,
            settings.decay,
            warmup_updates=settings.warmup * updates,
            dynamic=settings.dynamic_decay,
            copy_buffers=settings.buffers == "copy",
        )

    def decay_at(self, update: int) -> float:
        """The decay of update ``update`` (from 1); see the class docstring."""
        if update < self.warmup_updates:
            return 0.0
        if not self.dynamic:
            return self.decay
        since = update - self.warmup_updates
        return min(self.decay, (1.0 + since) / (10.0 + since))

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        """Fold the current weights of ``model`` (same architecture, unwrapped) into the average."""
        decay = self.decay_at(self.updates + 1)
        source = model.state_dict()
        for name, ema_value in self.module.state_dict().items():
            value = source[name].detach()
            if ema_value.is_floating_point() and name not in self._copied:
                ema_value.mul_(decay).add_(value.to(ema_value.dtype), alpha=1.0 - decay)
            else:
                ema_value.copy_(value)
        self.updates += 1

    def state_dict(self) -> dict:
        return {"decay": self.decay, "updates": self.updates, "model": self.module.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        self.module.load_state_dict(state["model"])
        self.decay = float(state["decay"])
        self.updates = int(state["updates"])
