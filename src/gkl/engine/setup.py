"""The run's training modules: argument checks, the (DDP/compiled) model and its buffers, optimizer and LR schedule."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any, cast

import torch
import torch.distributed
import yaml
from torch import nn

from gkl.engine.batches import per_process_batch_size
from gkl.engine.optim import build_optimizer
from gkl.engine.schedules import LRSchedule, scaled_base_lr
from gkl.objectives.base import Objective
from gkl.settings.train import TrainSettings
from gkl.utils.distributed import DistInfo

__all__ = ["broadcast_buffers", "build_optimization", "check_trainer_arguments", "wrap_model"]


def check_trainer_arguments(model: Any, objective: Any, train_loader: Any, settings: Any, config: Any) -> None:
    """One-line errors for Trainer arguments of the wrong kind."""
    if not isinstance(settings, TrainSettings):
        raise ValueError(f"settings: expected a TrainSettings, got {type(settings).__name__}")
    if not isinstance(model, nn.Module):
        raise ValueError(f"model: expected an nn.Module, got {type(model).__name__}")
    if not isinstance(objective, Objective):
        raise ValueError(f"objective: expected a gkl.objectives.base.Objective, got {type(objective).__name__}")
    if not hasattr(train_loader, "set_epoch") or not hasattr(train_loader, "__len__"):
        raise ValueError("train_loader: expected an iterable with __len__ and set_epoch(epoch)")
    if config is not None:
        if not isinstance(config, dict):
            raise ValueError(f"config: expected a dict or None, got {type(config).__name__}")
        try:
            yaml.safe_dump(config)
        except yaml.YAMLError as error:
            raise ValueError(f"config: expected plain YAML values (dict/list/str/number/bool/None): {error}") from None


def wrap_model(
    model: nn.Module, settings: TrainSettings, dist: DistInfo
) -> tuple[nn.Module, nn.Module, nn.parallel.DistributedDataParallel | None]:
    """``(model, train_model, ddp)``: the plain model on the device (channels-last, SyncBN as set), the
    module the objective calls (DDP-wrapped under several ranks, then compiled with ``train.compile``)
    and the DDP wrapper (for ``no_sync``) or None. Evaluation, EMA and checkpoints use the plain model."""
    model = model.to(dist.device)
    if settings.channels_last:
        model = model.to(memory_format=torch.channels_last)
    if settings.sync_bn and dist.distributed:
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
    ddp = None
    train_model: nn.Module = model
    if dist.distributed:
        ids = [dist.device.index] if dist.device.type == "cuda" else None
        ddp = train_model = nn.parallel.DistributedDataParallel(model, device_ids=ids)
    if settings.compile:
        # torch.compile of a module returns an OptimizedModule (an nn.Module); its stub says Callable
        train_model = cast(nn.Module, torch.compile(train_model))
    return model, train_model, ddp


def build_optimization(
    model: nn.Module,
    objective: Objective,
    *,
    train_loader: Iterable,
    settings: TrainSettings,
    dist: DistInfo,
    steps_per_epoch: int,
    total_steps: int,
    param_lr_scales: Mapping[str, float] | None,
) -> tuple[list[nn.Parameter], torch.optim.Optimizer, LRSchedule]:
    """``(trained parameters, optimizer, LR schedule)``: the model's and the objective's parameter
    groups; with ``optim.reference_batch_size`` the LR-scaling rule on the global batch."""
    extra_groups = objective.trainable_param_groups()
    parameters = [p for p in model.parameters() if p.requires_grad]
    parameters += [p for group in extra_groups for p in group["params"] if p.requires_grad]
    opt = settings.optim
    base_lr = opt.lr
    if opt.reference_batch_size is not None:
        batch_size = per_process_batch_size(train_loader)
        if batch_size is None:
            raise ValueError(
                "train_loader: needs an integer batch_size attribute (per process) "
                "for optim.reference_batch_size (LR scaling)"
            )
        global_batch = batch_size * dist.world_size * settings.accumulate_steps
        base_lr = scaled_base_lr(opt.lr, global_batch_size=global_batch, reference_batch_size=opt.reference_batch_size)
    optimizer = build_optimizer(model, opt, base_lr=base_lr, lr_scales=param_lr_scales, extra_groups=extra_groups)
    schedule = LRSchedule(
        optimizer, base_lr=base_lr, steps_per_epoch=steps_per_epoch, total_steps=total_steps, settings=settings.schedule
    )
    return parameters, optimizer, schedule


def broadcast_buffers(model: nn.Module, dist: DistInfo) -> None:
    """Under DDP, give every rank rank 0's buffers (BatchNorm statistics), at an epoch end or before
    an evaluation. DDP broadcasts them at the start of every forward, so training is unchanged; without
    this the last forward leaves per-rank statistics that evaluation and EMA would use."""
    if not dist.distributed:
        return
    for buffer in model.buffers():
        torch.distributed.broadcast(buffer, 0)
