"""Optimizer and learning-rate schedule settings (``train.optim`` and ``train.schedule``)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal, Optional

from gkl.utils.validation import check_choice as _check_choice, check_number as _check_number

ScheduleKind = Literal["multistep", "cosine", "cosine_at", "constant"]


@dataclass
class OptimSettings:
    """SGD settings.

    lr: base learning rate (for ``reference_batch_size`` samples when that is set).
    reference_batch_size: when set, the LR-scaling rule applies:
        ``lr_used = lr * global_batch / reference_batch_size`` with
        ``global_batch = per-process batch size * world_size``.
    """

    lr: float = 0.05
    momentum: float = 0.9
    weight_decay: float = 5e-4
    nesterov: bool = False
    reference_batch_size: Optional[int] = None

    def __post_init__(self) -> None:
        _check_number("optim", "lr", self.lr, minimum=0.0, strict=True)
        _check_number("optim", "momentum", self.momentum, minimum=0.0)
        if self.momentum >= 1.0:
            raise ValueError(f"optim.momentum: expected a value in [0, 1), got {self.momentum!r}")
        _check_number("optim", "weight_decay", self.weight_decay, minimum=0.0)
        if not isinstance(self.nesterov, bool):
            raise ValueError(f"optim.nesterov: expected a bool, got {self.nesterov!r}")
        if self.nesterov and self.momentum == 0.0:
            raise ValueError("optim.nesterov: nesterov=True needs optim.momentum > 0")
        if self.reference_batch_size is not None:
            _check_number("optim", "reference_batch_size", self.reference_batch_size,
                          minimum=1, integer=True)


@dataclass
class ScheduleSettings:
    """Learning-rate schedule, stepped once per epoch (epochs count from 1).

    kind:
        ``multistep``: ``lr * gamma ** #{m in milestones : epoch > m}`` (mdistiller:
            with milestones 150/180/210, epochs 1-150 use lr, 151-180 lr/10, ...).
        ``cosine``: ``lr * ½(1 + cos(π (epoch - 1 - warmup) / (epochs - warmup)))``.
        ``cosine_at``: the GKL-AT recipe, ``lr * ½(1 + cos(π epoch / (epochs + 1)))``.
        ``constant``: ``lr``.
    warmup_epochs: linear warm-up; epoch ``e <= warmup_epochs`` uses ``lr * e / warmup_epochs``,
        later epochs follow ``kind`` (see :mod:`gkl.engine.schedules`).
    """

    kind: ScheduleKind = "multistep"
    milestones: list[int] = field(default_factory=lambda: [150, 180, 210])
    gamma: float = 0.1
    warmup_epochs: int = 0

    def __post_init__(self) -> None:
        _check_choice("schedule", "kind", self.kind, ("multistep", "cosine", "cosine_at", "constant"))
        if not isinstance(self.milestones, (list, tuple)):
            raise ValueError(f"schedule.milestones: expected a list of epochs, got {self.milestones!r}")
        self.milestones = list(self.milestones)
        for m in self.milestones:
            if isinstance(m, bool) or not isinstance(m, int) or m < 1:
                raise ValueError(f"schedule.milestones: expected positive integer epochs, got {self.milestones!r}")
        if self.milestones != sorted(set(self.milestones)):
            raise ValueError(f"schedule.milestones: expected strictly increasing epochs, got {self.milestones!r}")
        _check_number("schedule", "gamma", self.gamma, minimum=0.0, strict=True)
        _check_number("schedule", "warmup_epochs", self.warmup_epochs, minimum=0, integer=True)
