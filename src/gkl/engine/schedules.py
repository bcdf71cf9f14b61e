"""Per-epoch learning-rate schedules of the recipes.

The learning rate is a pure function of the epoch (epochs count from 1) and is
set once, at the start of each epoch, like mdistiller's ``adjust_learning_rate``.
Nothing changes within an epoch.
"""

from __future__ import annotations

import math

import torch

from gkl.settings.optim import ScheduleSettings


def learning_rate_at(epoch: int, *, base_lr: float, epochs: int, settings: ScheduleSettings) -> float:
    """Learning rate of ``epoch`` (1-based) for a run of ``epochs`` epochs.

    Warm-up (``settings.warmup_epochs = w > 0``): epoch ``e <= w`` uses ``base_lr * e / w``.
    After warm-up:

    - multistep: ``base_lr * gamma ** #{m in milestones : epoch > m}``
    - cosine: ``base_lr * ½(1 + cos(π (epoch - 1 - w) / (epochs - w)))``
    - cosine_at: ``base_lr * ½(1 + cos(π epoch / (epochs + 1)))`` (GKL-AT recipe)
    - constant: ``base_lr``
    """
    if isinstance(epoch, bool) or not isinstance(epoch, int) or not 1 <= epoch <= epochs:
        raise ValueError(f"epoch: expected an integer in [1, {epochs}], got {epoch!r}")
    warmup = settings.warmup_epochs
    if warmup > 0 and epoch <= warmup:
        return base_lr * epoch / warmup
    if settings.kind == "multistep":
        passed = sum(1 for m in settings.milestones if epoch > m)
        return base_lr * settings.gamma**passed
    if settings.kind == "cosine":
        progress = (epoch - 1 - warmup) / (epochs - warmup)
        return base_lr * 0.5 * (1.0 + math.cos(math.pi * progress))
    if settings.kind == "cosine_at":
        return base_lr * 0.5 * (1.0 + math.cos(math.pi * epoch / (epochs + 1)))
    if settings.kind == "constant":
        return base_lr
    raise ValueError(f"settings.kind: unknown schedule {settings.kind!r}")


def scaled_base_lr(lr: float, *, global_batch_size: int, reference_batch_size: int | None) -> float:
    """The LR-scaling rule: ``lr * global_batch_size / reference_batch_size`` (``lr`` if no reference)."""
    if reference_batch_size is None:
        return lr
    if global_batch_size < 1:
        raise ValueError(f"global_batch_size: expected a positive integer, got {global_batch_size!r}")
    return lr * global_batch_size / reference_batch_size


class EpochLRSchedule:
    """Sets the learning rate of every parameter group at the start of each epoch."""

    def __init__(self, optimizer: torch.optim.Optimizer, *, base_lr: float, epochs: int,
                 settings: ScheduleSettings) -> None:
        self.optimizer = optimizer
        self.base_lr = float(base_lr)
        self.epochs = int(epochs)
        self.settings = settings
        self.last_epoch = 0

    def lr_at(self, epoch: int) -> float:
        return learning_rate_at(epoch, base_lr=self.base_lr, epochs=self.epochs, settings=self.settings)

    def start_epoch(self, epoch: int) -> float:
        """Set the LR for ``epoch`` and return it."""
        lr = self.lr_at(epoch)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        self.last_epoch = epoch
        return lr

    def state_dict(self) -> dict:
        return {"base_lr": self.base_lr, "epochs": self.epochs, "last_epoch": self.last_epoch,
                "kind": self.settings.kind}

    def load_state_dict(self, state: dict) -> None:
        # base_lr may legitimately differ (LR scaling after a change of world size).
        for key in ("epochs", "kind"):
            mine = self.state_dict()[key]
            if state.get(key) != mine:
                raise ValueError(
                    f"schedule state: checkpoint has {key}={state.get(key)!r}, this run has {mine!r}"
                )
        self.last_epoch = int(state["last_epoch"])
