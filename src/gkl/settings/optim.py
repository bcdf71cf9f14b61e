"""Optimizer and learning-rate schedule settings (``train.optim`` and ``train.schedule``).

Keys that belong to one optimizer only default to ``None`` ("not set"): ``momentum`` and
``nesterov`` are SGD's, ``betas`` and ``eps`` are AdamW's. Setting one of them for the other
optimizer is an error naming the key; unset ones are filled with the optimizer's defaults
(SGD: momentum 0.9, nesterov false; AdamW: betas (0.9, 0.999), eps 1e-8), so the saved
``config.yaml`` records exactly what ran.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import partial
from typing import Literal, get_args

from gkl.utils.errors import ConfigError
from gkl.utils.validation import check_choice, check_number

_check_choice = partial(check_choice, error=ConfigError)
_check_number = partial(check_number, error=ConfigError)

OptimName = Literal["sgd", "adamw"]
ScheduleKind = Literal["multistep", "cosine", "cosine_at", "constant", "poly", "usb_cosine", "one_cycle"]
SCHEDULE_KINDS: tuple[str, ...] = get_args(ScheduleKind)  #: the kinds, in the order of ScheduleKind
ScheduleUnit = Literal["epoch", "step"]

_SGD_ONLY = ("momentum", "nesterov")
_ADAMW_ONLY = ("betas", "eps")


@dataclass
class OptimSettings:
    """Optimizer settings (see :func:`gkl.engine.optim.build_optimizer`).

    name: ``sgd`` (default, today's behaviour) or ``adamw`` (decoupled weight decay).
    lr: base learning rate (for ``reference_batch_size`` samples when that is set).
    weight_decay: L2 penalty (SGD) or decoupled decay (AdamW).
    momentum, nesterov: SGD only (defaults 0.9, false).
    betas, eps: AdamW only (defaults (0.9, 0.999), 1e-8).
    no_decay_norm_bias: no weight decay on normalisation weights, biases and embedding-like
        parameters (ViT ``pos_embed``, ``cls_token``, ...): timm's/USB's ``param_groups_weight_decay``.
    layer_decay: layer-wise LR decay in (0, 1] for ViT-style models; parameter group of layer
        ``i`` gets ``lr_scale = layer_decay ** (L + 1 - i)`` (BEiT / timm / USB rule).
    reference_batch_size: when set, the LR-scaling rule applies:
        ``lr_used = lr * global_batch / reference_batch_size`` with
        ``global_batch = per-process batch size * world_size``.
    """

    name: OptimName = "sgd"
    lr: float = 0.05
    momentum: float | None = None
    weight_decay: float = 5e-4
    nesterov: bool | None = None
    betas: tuple[float, float] | None = None
    eps: float | None = None
    no_decay_norm_bias: bool = False
    layer_decay: float | None = None
    reference_batch_size: int | None = None

    def __post_init__(self) -> None:
        _check_choice("train.optim", "name", self.name, ("sgd", "adamw"))
        foreign = _ADAMW_ONLY if self.name == "sgd" else _SGD_ONLY
        for key in foreign:
            if getattr(self, key) is not None:
                raise ConfigError(
                    f"train.optim.{key}: not used by train.optim.name={self.name!r} "
                    f"(remove it, or set train.optim.name to the optimizer it belongs to)"
                )
        _check_number("train.optim", "lr", self.lr, minimum=0.0, strict=True)
        _check_number("train.optim", "weight_decay", self.weight_decay, minimum=0.0)
        if self.name == "sgd":
            if self.momentum is None:
                self.momentum = 0.9
            if self.nesterov is None:
                self.nesterov = False
            _check_number("train.optim", "momentum", self.momentum, minimum=0.0)
            if self.momentum >= 1.0:
                raise ConfigError(f"train.optim.momentum: expected a value in [0, 1), got {self.momentum!r}")
            if not isinstance(self.nesterov, bool):
                raise ConfigError(f"train.optim.nesterov: expected a bool, got {self.nesterov!r}")
            if self.nesterov and self.momentum == 0.0:
                raise ConfigError("train.optim.nesterov: nesterov=True needs train.optim.momentum > 0")
        else:
            if self.betas is None:
                self.betas = (0.9, 0.999)
            if self.eps is None:
                self.eps = 1e-8
            if not isinstance(self.betas, (list, tuple)) or len(self.betas) != 2:
                raise ConfigError(f"train.optim.betas: expected two numbers in [0, 1), got {self.betas!r}")
            betas = (self.betas[0], self.betas[1])  # a YAML list becomes a pair
            self.betas = betas
            for beta in betas:
                _check_number("train.optim", "betas", beta, minimum=0.0)
                if beta >= 1.0:
                    raise ConfigError(f"train.optim.betas: expected two numbers in [0, 1), got {self.betas!r}")
            _check_number("train.optim", "eps", self.eps, minimum=0.0, strict=True)
        if not isinstance(self.no_decay_norm_bias, bool):
            raise ConfigError(f"train.optim.no_decay_norm_bias: expected a bool, got {self.no_decay_norm_bias!r}")
        if self.layer_decay is not None:
            _check_number("train.optim", "layer_decay", self.layer_decay, minimum=0.0, strict=True)
            if self.layer_decay > 1.0:
                raise ConfigError(f"train.optim.layer_decay: expected a value in (0, 1], got {self.layer_decay!r}")
        if self.reference_batch_size is not None:
            _check_number("train.optim", "reference_batch_size", self.reference_batch_size, minimum=1, integer=True)


@dataclass
class ScheduleSettings:
    """Learning-rate schedule; formulas in :mod:`gkl.engine.schedules`.

    unit: ``epoch`` (default: the LR is a function of the epoch, constant within it, as
        mdistiller's ``adjust_learning_rate``) or ``step`` (a function of the global optimizer step).
    kind:
        ``multistep``: ``lr * gamma ** #{m in milestones : t > m}`` (t = epoch, or step with
            ``unit: step``; mdistiller: milestones 150/180/210, epochs 1-150 use lr, 151-180 lr/10, ...).
        ``cosine``: half-cosine from lr to 0 after the warm-up.
        ``cosine_at``: the GKL-AT recipe, ``lr * ½(1 + cos(π (epoch - w) / (epochs - w + 1)))`` after a
            warm-up of w epochs (w = 0: ``½(1 + cos(π epoch / (epochs + 1)))``; epoch unit only).
        ``constant``: ``lr``.
        ``poly``: ``lr * (1 - t / T) ** power`` (segmentation recipes).
        ``usb_cosine``: USB's ``lr * cos(num_cycles · π · t / T)`` (num_cycles 7/16).
        ``one_cycle``: ``torch.optim.lr_scheduler.OneCycleLR`` (two phases, cosine annealing) stepped once
            per epoch or step: from ``lr / div_factor`` up to ``lr`` over the first ``pct_start`` of the
            run, then down to ``lr / div_factor / final_div_factor`` (DM-AT's ``cosinew``: pct_start 0.025,
            per epoch). Its own warm-up: warmup_epochs / warmup_steps must be 0.
    pct_start, div_factor, final_div_factor: of ``one_cycle`` (torch's defaults 0.3, 25, 1e4).
    momentum_range: ``[base, max]`` or null; ``one_cycle`` with SGD only: the momentum is cycled against
        the LR, from max down to base while it rises and back (OneCycleLR's ``cycle_momentum``; DM-AT
        [0.85, 0.95], torch's defaults); it replaces ``train.optim.momentum``. Null: momentum fixed.
    warmup_epochs: linear warm-up counted in epochs (``unit: epoch``); epoch ``e <= warmup_epochs``
        uses ``lr * e / warmup_epochs``.
    warmup_steps: linear warm-up counted in optimizer steps (``unit: step``).
    power: exponent of ``poly``. num_cycles: cycles of ``usb_cosine``.
    """

    kind: ScheduleKind = "multistep"
    unit: ScheduleUnit = "epoch"
    milestones: list[int] = field(default_factory=lambda: [150, 180, 210])
    gamma: float = 0.1
    warmup_epochs: int = 0
    warmup_steps: int = 0
    power: float = 0.9
    num_cycles: float = 7.0 / 16.0
    pct_start: float = 0.3
    div_factor: float = 25.0
    final_div_factor: float = 1.0e4
    momentum_range: tuple[float, float] | None = None

    def __post_init__(self) -> None:
        _check_choice("train.schedule", "kind", self.kind, SCHEDULE_KINDS)
        _check_choice("train.schedule", "unit", self.unit, ("epoch", "step"))
        if not isinstance(self.milestones, (list, tuple)):
            raise ConfigError(f"train.schedule.milestones: expected a list of epochs, got {self.milestones!r}")
        self.milestones = list(self.milestones)
        for m in self.milestones:
            if isinstance(m, bool) or not isinstance(m, int) or m < 1:
                raise ConfigError(f"train.schedule.milestones: expected positive integers, got {self.milestones!r}")
        if self.milestones != sorted(set(self.milestones)):
            raise ConfigError(
                f"train.schedule.milestones: expected strictly increasing values, got {self.milestones!r}"
            )
        _check_number("train.schedule", "gamma", self.gamma, minimum=0.0, strict=True)
        _check_number("train.schedule", "warmup_epochs", self.warmup_epochs, minimum=0, integer=True)
        _check_number("train.schedule", "warmup_steps", self.warmup_steps, minimum=0, integer=True)
        _check_number("train.schedule", "power", self.power, minimum=0.0, strict=True)
        _check_number("train.schedule", "num_cycles", self.num_cycles, minimum=0.0, strict=True)
        if self.unit == "epoch" and self.warmup_steps:
            raise ConfigError(
                "train.schedule.warmup_steps: counts optimizer steps, needs train.schedule.unit: step "
                "(use train.schedule.warmup_epochs with unit: epoch)"
            )
        if self.unit == "step" and self.warmup_epochs:
            raise ConfigError(
                "train.schedule.warmup_epochs: counts epochs, needs train.schedule.unit: epoch "
                "(use train.schedule.warmup_steps with unit: step)"
            )
        self._check_one_cycle()
        if self.unit == "step" and self.kind == "cosine_at":
            raise ConfigError(
                "train.schedule.kind: 'cosine_at' is the per-epoch GKL-AT schedule; it needs train.schedule.unit: epoch"
            )

    def _check_one_cycle(self) -> None:
        _check_number("train.schedule", "pct_start", self.pct_start, minimum=0.0, strict=True)
        if self.pct_start >= 1.0:
            raise ConfigError(f"train.schedule.pct_start: expected a value in (0, 1), got {self.pct_start!r}")
        _check_number("train.schedule", "div_factor", self.div_factor, minimum=0.0, strict=True)
        _check_number("train.schedule", "final_div_factor", self.final_div_factor, minimum=0.0, strict=True)
        if self.momentum_range is not None:
            if self.kind != "one_cycle":
                raise ConfigError(
                    f"train.schedule.momentum_range: used by kind 'one_cycle' only, got kind {self.kind!r} "
                    "(set it to null)"
                )
            bad = ConfigError(
                "train.schedule.momentum_range: expected [base, max] with 0 <= base <= max < 1, "
                f"got {self.momentum_range!r}"
            )
            if not isinstance(self.momentum_range, (list, tuple)) or len(self.momentum_range) != 2:
                raise bad
            base, top = self.momentum_range
            for value in (base, top):
                _check_number("train.schedule", "momentum_range", value, minimum=0.0)
            if not base <= top < 1.0:
                raise bad
            self.momentum_range = (base, top)  # a YAML list becomes a pair
        if self.kind == "one_cycle" and (self.warmup_epochs or self.warmup_steps):
            raise ConfigError(
                "train.schedule.warmup_epochs: kind 'one_cycle' warms up by itself over pct_start of the run; "
                "set warmup_epochs and warmup_steps to 0"
            )
