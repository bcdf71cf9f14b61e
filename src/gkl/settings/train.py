"""Typed training settings: the ``train:`` section of a run's config.

Plain dataclasses with defaults, so the config loader can build them from YAML
and check key names and types generically. Values are checked here, in
``__post_init__``, with ``ValueError``s that name the offending field.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field
from functools import partial
from typing import Any, Literal

from gkl.settings.optim import OptimSettings, ScheduleKind, ScheduleSettings  # noqa: F401
from gkl.utils.errors import ConfigError
from gkl.utils.validation import check_choice, check_number

_check_choice = partial(check_choice, error=ConfigError)
_check_number = partial(check_number, error=ConfigError)

AmpMode = Literal["off", "bf16", "fp16", "auto"]

_LOGGERS = ("tensorboard", "wandb", "mlflow")

_DEVICE_PATTERN = re.compile(r"^(auto|cpu|cuda|cuda:\d+)$")


@dataclass
class EMASettings:
    """Exponential moving average of the weights.

    decay: ``None`` turns EMA off; the GKL-AT models use 0.9 per epoch.
    every: update after every ``"epoch"`` or every optimizer ``"step"``.
    evaluate: which model's top-1 drives best-epoch tracking and ``best.pt``
        (both are evaluated and logged when EMA is on).
    warmup: fraction in [0, 1) of the run's updates (its steps, or epochs with ``every: epoch``) during
        which the average is a copy of the weights (decay 0); DM-AT: 0.025.
    dynamic_decay: after the warm-up, decay ``min(decay, (1 + t) / (10 + t))`` at the t-th update
        (DM-AT's ``ema_update(dynamic_decay=True)``); false: ``decay`` throughout.
    buffers: ``average`` the BatchNorm statistics like the weights, or ``copy`` the model's (DM-AT's
        ``update_bn``).
    """

    decay: float | None = None
    every: Literal["epoch", "step"] = "epoch"
    evaluate: Literal["raw", "ema"] = "raw"
    warmup: float = 0.0
    dynamic_decay: bool = False
    buffers: Literal["average", "copy"] = "average"

    def __post_init__(self) -> None:
        if self.decay is not None:
            _check_number("train.ema", "decay", self.decay, minimum=0.0)
            if self.decay >= 1.0:
                raise ConfigError(f"train.ema.decay: expected a value in [0, 1) or null, got {self.decay!r}")
        _check_choice("train.ema", "every", self.every, ("epoch", "step"))
        _check_choice("train.ema", "evaluate", self.evaluate, ("raw", "ema"))
        if self.evaluate == "ema" and self.decay is None:
            raise ConfigError("train.ema.evaluate: 'ema' needs train.ema.decay to be set")
        _check_number("train.ema", "warmup", self.warmup, minimum=0.0)
        if self.warmup >= 1.0:
            raise ConfigError(f"train.ema.warmup: expected a fraction in [0, 1), got {self.warmup!r}")
        if not isinstance(self.dynamic_decay, bool):
            raise ConfigError(f"train.ema.dynamic_decay: expected a bool, got {self.dynamic_decay!r}")
        _check_choice("train.ema", "buffers", self.buffers, ("average", "copy"))
        if self.decay is None:
            for name, default in (("warmup", 0.0), ("dynamic_decay", False), ("buffers", "average")):
                if getattr(self, name) != default:
                    raise ConfigError(f"train.ema.{name}: needs train.ema.decay to be set (EMA is off)")


@dataclass
class TrainSettings:
    """Everything the engine needs besides model, objective and data.

    amp: ``"auto"`` = bf16 on CUDA devices that support it, else fp16 on CUDA, off on CPU.
    clip_grad_norm: max global L2 norm of the gradients, or ``None``.
    sync_bn: convert BatchNorm to SyncBatchNorm under DDP (CUDA only).
    deterministic: ask torch for deterministic kernels (slower on GPU).
    epochs / iterations: the training length, in epochs or in optimizer steps (exactly one;
        neither = 240 epochs). An iteration-based run's last epoch may be partial.
    eval_every / checkpoint_every: in epochs; the last step is always evaluated and saved.
    eval_every_steps / checkpoint_every_steps: in optimizer steps instead of epochs (when set,
        the epoch-based field is not used); checkpoints may then fall mid-epoch and resume exactly.
    accumulate_steps: micro-batches per optimizer step (gradient accumulation; the loss of each
        is scaled by 1/k; DDP synchronises gradients on the last one only).
    compile: wrap the trained model in ``torch.compile``. channels_last: NHWC memory format for
        the model and 4-D input tensors (conv nets on GPU).
    loggers: ``tensorboard``, ``wandb``, ``mlflow`` (rank 0 only; metrics.jsonl is always written).
    select_metric / select_mode: the evaluator's metric that defines the best checkpoint
        (``best.pt``) and whether higher (``max``) or lower (``min``) is better.
    log_every: steps between progress updates (0 = only per epoch).
    device: ``"auto"`` | ``"cpu"`` | ``"cuda"`` | ``"cuda:N"``.
    log_feature_stats: at every evaluation, log the mean penultimate-feature norm, logit sum and
        logit norm of the student (and of the objective's teacher) on the test split
        (``features`` in metrics.jsonl; see :mod:`gkl.metrics.features`). Off by default.
    stop_on_collapse / collapse_patience / collapse_margin: a run whose selected accuracy is
        at chance (``<= 100 * k / num_classes + collapse_margin`` percent for top-k) for
        ``collapse_patience`` consecutive evaluations after having been above it is flagged
        as collapsed (metrics.jsonl, summary.json, train.log) and, with ``stop_on_collapse``,
        stopped (see :mod:`gkl.engine.collapse`).
    """

    epochs: int | None = None
    iterations: int | None = None
    optim: OptimSettings = field(default_factory=OptimSettings)
    schedule: ScheduleSettings = field(default_factory=ScheduleSettings)
    amp: AmpMode = "off"
    clip_grad_norm: float | None = None
    ema: EMASettings = field(default_factory=EMASettings)
    sync_bn: bool = False
    seed: int = 0
    deterministic: bool = False
    eval_every: int = 1
    log_every: int = 50
    progress: bool = True
    device: str = "auto"
    checkpoint_every: int = 1
    eval_every_steps: int | None = None
    checkpoint_every_steps: int | None = None
    accumulate_steps: int = 1
    compile: bool = False
    channels_last: bool = False
    loggers: list[str] = field(default_factory=lambda: ["tensorboard"])
    select_metric: str = "top1"
    select_mode: Literal["max", "min"] = "max"
    stop_on_collapse: bool = False
    collapse_patience: int = 3
    collapse_margin: float = 1.0
    log_feature_stats: bool = False

    def __post_init__(self) -> None:
        if isinstance(self.optim, dict):
            self.optim = OptimSettings(**self.optim)
        if isinstance(self.schedule, dict):
            self.schedule = ScheduleSettings(**self.schedule)
        if isinstance(self.ema, dict):
            self.ema = EMASettings(**self.ema)
        if self.epochs is not None and self.iterations is not None:
            raise ConfigError(
                f"train.iterations: set either train.epochs ({self.epochs}) or train.iterations "
                f"({self.iterations}), not both"
            )
        if self.epochs is None and self.iterations is None:
            self.epochs = 240
        if self.epochs is not None:
            _check_number("train", "epochs", self.epochs, minimum=1, integer=True)
        else:
            _check_number("train", "iterations", self.iterations, minimum=1, integer=True)
        for name in ("eval_every_steps", "checkpoint_every_steps"):
            if getattr(self, name) is not None:
                _check_number("train", name, getattr(self, name), minimum=1, integer=True)
        _check_number("train", "accumulate_steps", self.accumulate_steps, minimum=1, integer=True)
        if not isinstance(self.loggers, (list, tuple)) or any(x not in _LOGGERS for x in self.loggers):
            raise ConfigError(f"train.loggers: expected a list of {list(_LOGGERS)}, got {self.loggers!r}")
        self.loggers = list(dict.fromkeys(self.loggers))
        if not isinstance(self.select_metric, str) or not self.select_metric:
            raise ConfigError(f"train.select_metric: expected a metric name, got {self.select_metric!r}")
        _check_choice("train", "select_mode", self.select_mode, ("max", "min"))
        for name, cls in (("optim", OptimSettings), ("schedule", ScheduleSettings), ("ema", EMASettings)):
            if not isinstance(getattr(self, name), cls):
                raise ConfigError(f"train.{name}: expected {cls.__name__}, got {getattr(self, name)!r}")
        if self.epochs is not None and self.schedule.warmup_epochs > self.epochs:
            raise ConfigError(
                f"train.schedule.warmup_epochs: expected at most train.epochs ({self.epochs}), "
                f"got {self.schedule.warmup_epochs}"
            )
        if self.schedule.momentum_range is not None and self.optim.name != "sgd":
            raise ConfigError(
                "train.schedule.momentum_range: cycles SGD's momentum; needs train.optim.name: sgd, "
                f"got {self.optim.name!r}"
            )
        _check_choice("train", "amp", self.amp, ("off", "bf16", "fp16", "auto"))
        if self.clip_grad_norm is not None:
            _check_number("train", "clip_grad_norm", self.clip_grad_norm, minimum=0.0, strict=True)
        for name in (
            "sync_bn",
            "deterministic",
            "progress",
            "stop_on_collapse",
            "compile",
            "channels_last",
            "log_feature_stats",
        ):
            if not isinstance(getattr(self, name), bool):
                raise ConfigError(f"train.{name}: expected a bool, got {getattr(self, name)!r}")
        _check_number("train", "seed", self.seed, minimum=0, integer=True)
        _check_number("train", "eval_every", self.eval_every, minimum=1, integer=True)
        _check_number("train", "checkpoint_every", self.checkpoint_every, minimum=1, integer=True)
        _check_number("train", "log_every", self.log_every, minimum=0, integer=True)
        _check_number("train", "collapse_patience", self.collapse_patience, minimum=1, integer=True)
        _check_number("train", "collapse_margin", self.collapse_margin, minimum=0.0)
        if not isinstance(self.device, str) or not _DEVICE_PATTERN.match(self.device):
            raise ConfigError(f"train.device: expected 'auto', 'cpu', 'cuda' or 'cuda:N', got {self.device!r}")

    def to_dict(self) -> dict[str, Any]:
        """Plain nested dict (for checkpoints and logs)."""
        return asdict(self)


# Fields that do not change the trained weights; they may differ between a run and its resume.
RESUME_TOLERANT_FIELDS: frozenset[str] = frozenset(
    {
        "progress",
        "log_every",
        "device",
        "eval_every",
        "checkpoint_every",
        "eval_every_steps",
        "checkpoint_every_steps",
        "stop_on_collapse",
        "collapse_patience",
        "collapse_margin",
        "loggers",
        "compile",
        "channels_last",
        "log_feature_stats",
    }
)

# Fields a resume may change after the run stopped on a non-finite loss ("fix the cause and resume").
RESUME_FIX_FIELDS: frozenset[str] = frozenset({"optim.lr", "clip_grad_norm", "amp", "schedule"})
