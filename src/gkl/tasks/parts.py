"""What every task builder returns and shares: :class:`RunParts`, registry models with their weights,
the random-teacher warning and the epoch count of an iteration-based run."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from torch import nn

from gkl.models import create_model, load_weights
from gkl.utils.errors import InputError

__all__ = ["RunParts", "build_model", "run_epochs", "warn_if_random_teacher"]

log = logging.getLogger(__name__)


@dataclass
class RunParts:
    """Everything :class:`~gkl.engine.Trainer` needs, built from one config."""

    model: nn.Module
    objective: Any  # gkl.objectives.Objective
    train_loader: Any
    eval_loader: Any
    info: Any = None  # gkl.data.DatasetInfo of the data set (None for a task without one, e.g. CLIP)
    evaluator: Any = None  # gkl.metrics.base.Evaluator of the task (required by the engine when it evaluates)
    val_loader: Any = None  # a validation split that drives best.pt, when the task configures one
    after_fit: Any = None  # called with the summary on rank 0 after training (e.g. CLIP's OpenCLIP export)
    param_lr_scales: dict[str, float] | None = None  # LR multiplier by model parameter name (e.g. heads x10)


def warn_if_random_teacher(teacher: Any) -> None:
    """Log that the run distills from random weights (``teacher.random_init: true``, on purpose)."""
    if teacher.random_init:
        log.warning("teacher.random_init: distilling from the random weights of %r", teacher.name)


def build_model(cfg: Any, num_classes: int, section: str = "model") -> nn.Module:
    """A registry model of ``cfg`` (a ``ModelConfig``), with its checkpoint loaded when one is named;
    a missing checkpoint file is an :class:`InputError` naming ``<section>.checkpoint``."""
    model = create_model(cfg.name, num_classes, **cfg.kwargs)
    if cfg.checkpoint is not None:
        try:
            load_weights(model, cfg.checkpoint, key=cfg.checkpoint_key)
        except FileNotFoundError:
            hint = " (train the teacher first)" if section == "teacher" else ""
            raise InputError(f"{section}.checkpoint: file not found: {cfg.checkpoint}{hint}") from None
    return model


def run_epochs(cfg: Any, steps_per_epoch: int | None) -> int:
    """The run's number of epochs: ``train.epochs``, or the epochs ``train.iterations`` steps span."""
    if cfg.train.iterations is None:
        return cfg.train.epochs
    if not steps_per_epoch:
        raise ValueError("steps_per_epoch is needed for an iteration-based run")
    return -(-cfg.train.iterations // steps_per_epoch)
