"""What every task builder returns and shares: :class:`RunParts`, registry models with their weights,
the random-teacher warning and the epoch count of an iteration-based run."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from torch import nn

from gkl.models import create_model, load_usb_pretrained, load_weights
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
    """A registry model of ``cfg`` (a ``ModelConfig``), with its checkpoint loaded when one is named
    (or, for a ViT, USB's pretrained backbone named by ``pretrained``: :mod:`gkl.models.vit_pretrained`);
    a missing checkpoint file is an :class:`InputError` naming ``<section>.checkpoint`` (or the
    ``<section>.kwargs.<name>_checkpoint`` key of a file the model's constructor reads, e.g. the
    ImageNet backbone of the ADE20K / Cityscapes recipes)."""
    check_kwarg_files(cfg, section)
    pretrained = getattr(cfg, "pretrained", None)
    if pretrained is not None and cfg.checkpoint is not None:
        raise InputError(
            f"{section}.pretrained: expected null when {section}.checkpoint is set (the checkpoint holds "
            f"the whole model), got {pretrained!r}"
        )
    if pretrained is not None and not Path(pretrained).is_file():
        raise InputError(f"{section}.pretrained: file not found: {pretrained} ({_PRETRAINED_HINT})")
    model = create_model(cfg.name, num_classes, **cfg.kwargs)
    if pretrained is not None:
        load_usb_pretrained(model, pretrained)
    if cfg.checkpoint is not None:
        try:
            load_weights(model, cfg.checkpoint, key=cfg.checkpoint_key)
        except FileNotFoundError:
            hint = " (train the teacher first)" if section == "teacher" else ""
            raise InputError(f"{section}.checkpoint: file not found: {cfg.checkpoint}{hint}") from None
    return model


_PRETRAINED_HINT = "USB's ImageNet-pretrained ViT weights, a file the user supplies; see docs/ssl.md"

#: where a missing file of a ``*_checkpoint`` constructor argument comes from (docs)
_KWARG_FILE_HINTS = {
    "backbone_checkpoint": "an ImageNet ResNet state_dict the user supplies; see 'ImageNet backbone weights' "
    "in docs/segmentation.md",
}


def check_kwarg_files(cfg: Any, section: str = "model") -> None:
    """A ``<section>.kwargs.<name>_checkpoint`` file that does not exist: one line naming the key."""
    for key, value in cfg.kwargs.items():
        if key.endswith("_checkpoint") and isinstance(value, str) and not Path(value).is_file():
            hint = _KWARG_FILE_HINTS.get(key)
            raise InputError(f"{section}.kwargs.{key}: file not found: {value}" + (f" ({hint})" if hint else ""))


def run_epochs(cfg: Any, steps_per_epoch: int | None) -> int:
    """The run's number of epochs: ``train.epochs``, or the epochs ``train.iterations`` steps span."""
    if cfg.train.iterations is None:
        return cfg.train.epochs
    if not steps_per_epoch:
        raise ValueError("steps_per_epoch is needed for an iteration-based run")
    return -(-cfg.train.iterations // steps_per_epoch)
