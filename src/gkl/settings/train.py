"""Typed training settings: the ``train:`` section of a run's config.

Plain dataclasses with defaults, so the config loader can build them from YAML
and check key names and types generically. Values are checked here, in
``__post_init__``, with ``ValueError``s that name the offending field.
"""

from __future__ import annotations

import math
import re
from dataclasses import asdict, dataclass, field
from typing import Any, Literal, Optional

ScheduleKind = Literal["multistep", "cosine", "cosine_at", "constant"]
AmpMode = Literal["off", "bf16", "fp16", "auto"]

_DEVICE_PATTERN = re.compile(r"^(auto|cpu|cuda|cuda:\d+)$")


def _check_choice(owner: str, name: str, value: Any, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ValueError(f"{owner}.{name}: expected one of {list(choices)}, got {value!r}")


def _check_number(owner: str, name: str, value: Any, *, minimum: float | None = None,
                  strict: bool = False, integer: bool = False) -> None:
    kinds = (int,) if integer else (int, float)
    if isinstance(value, bool) or not isinstance(value, kinds) or not math.isfinite(value):
        kind = "an integer" if integer else "a finite number"
        raise ValueError(f"{owner}.{name}: expected {kind}, got {value!r}")
    if minimum is not None and (value <= minimum if strict else value < minimum):
        relation = ">" if strict else ">="
        raise ValueError(f"{owner}.{name}: expected a value {relation} {minimum}, got {value!r}")


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


@dataclass
class EMASettings:
    """Exponential moving average of the weights.

    decay: ``None`` turns EMA off; the GKL-AT models use 0.9 per epoch.
    every: update after every ``"epoch"`` or every optimizer ``"step"``.
    evaluate: which model's top-1 drives best-epoch tracking and ``best.pt``
        (both are evaluated and logged when EMA is on).
    """

    decay: Optional[float] = None
    every: Literal["epoch", "step"] = "epoch"
    evaluate: Literal["raw", "ema"] = "raw"

    def __post_init__(self) -> None:
        if self.decay is not None:
            _check_number("ema", "decay", self.decay, minimum=0.0)
            if self.decay >= 1.0:
                raise ValueError(f"ema.decay: expected a value in [0, 1) or null, got {self.decay!r}")
        _check_choice("ema", "every", self.every, ("epoch", "step"))
        _check_choice("ema", "evaluate", self.evaluate, ("raw", "ema"))
        if self.evaluate == "ema" and self.decay is None:
            raise ValueError("ema.evaluate: 'ema' needs ema.decay to be set")


@dataclass
class TrainSettings:
    """Everything the engine needs besides model, objective and data.

    amp: ``"auto"`` = bf16 on CUDA devices that support it, else fp16 on CUDA, off on CPU.
    clip_grad_norm: max global L2 norm of the gradients, or ``None``.
    sync_bn: convert BatchNorm to SyncBatchNorm under DDP (CUDA only).
    deterministic: ask torch for deterministic kernels (slower on GPU).
    eval_every / checkpoint_every: in epochs; the last epoch is always evaluated and saved.
    log_every: steps between progress updates (0 = only per epoch).
    device: ``"auto"`` | ``"cpu"`` | ``"cuda"`` | ``"cuda:N"``.
    """

    epochs: int = 240
    optim: OptimSettings = field(default_factory=OptimSettings)
    schedule: ScheduleSettings = field(default_factory=ScheduleSettings)
    amp: AmpMode = "off"
    clip_grad_norm: Optional[float] = None
    ema: EMASettings = field(default_factory=EMASettings)
    sync_bn: bool = False
    seed: int = 0
    deterministic: bool = False
    eval_every: int = 1
    log_every: int = 50
    progress: bool = True
    device: str = "auto"
    checkpoint_every: int = 1

    def __post_init__(self) -> None:
        if isinstance(self.optim, dict):
            self.optim = OptimSettings(**self.optim)
        if isinstance(self.schedule, dict):
            self.schedule = ScheduleSettings(**self.schedule)
        if isinstance(self.ema, dict):
            self.ema = EMASettings(**self.ema)
        _check_number("train", "epochs", self.epochs, minimum=1, integer=True)
        for name, cls in (("optim", OptimSettings), ("schedule", ScheduleSettings), ("ema", EMASettings)):
            if not isinstance(getattr(self, name), cls):
                raise ValueError(f"train.{name}: expected {cls.__name__}, got {getattr(self, name)!r}")
        if self.schedule.warmup_epochs > self.epochs:
            raise ValueError(
                f"schedule.warmup_epochs: expected at most train.epochs ({self.epochs}), "
                f"got {self.schedule.warmup_epochs}"
            )
        _check_choice("train", "amp", self.amp, ("off", "bf16", "fp16", "auto"))
        if self.clip_grad_norm is not None:
            _check_number("train", "clip_grad_norm", self.clip_grad_norm, minimum=0.0, strict=True)
        for name in ("sync_bn", "deterministic", "progress"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"train.{name}: expected a bool, got {getattr(self, name)!r}")
        _check_number("train", "seed", self.seed, minimum=0, integer=True)
        _check_number("train", "eval_every", self.eval_every, minimum=1, integer=True)
        _check_number("train", "checkpoint_every", self.checkpoint_every, minimum=1, integer=True)
        _check_number("train", "log_every", self.log_every, minimum=0, integer=True)
        if not isinstance(self.device, str) or not _DEVICE_PATTERN.match(self.device):
            raise ValueError(
                f"train.device: expected 'auto', 'cpu', 'cuda' or 'cuda:N', got {self.device!r}"
            )

    def to_dict(self) -> dict[str, Any]:
        """Plain nested dict (for checkpoints and logs)."""
        return asdict(self)


# Fields that do not change what is computed; they may differ between a run and its resume.
RESUME_TOLERANT_FIELDS: frozenset[str] = frozenset(
    {"progress", "log_every", "device", "eval_every", "checkpoint_every"}
)
