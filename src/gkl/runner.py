"""Build a run from an :class:`~gkl.config.ExperimentConfig` and hand it to the one engine.

Data flows one way: config → data + models → objective → engine → metrics/artifacts.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from gkl.config import ExperimentConfig, ModelConfig, TeacherConfig, to_dict
from gkl.data import build_dataset, build_loader
from gkl.engine import Trainer
from gkl.engine.seeding import seed_everything
from gkl.utils.distributed import DistInfo, cleanup, init_distributed
from gkl.utils.errors import InputError
from gkl.models import create_model, load_weights
from gkl.objectives import Objective
from gkl.objectives.adversarial import build_adversarial_objective
from gkl.objectives.distill import build_distill_objective
from gkl.objectives.supervised import SupervisedObjective

log = logging.getLogger(__name__)


@dataclass
class RunParts:
    """Everything :class:`~gkl.engine.Trainer` needs, built from one config."""

    model: nn.Module
    objective: Objective
    train_loader: Any
    eval_loader: Any
    info: Any = None  # gkl.data.DatasetInfo of the data set (None for a task without one, e.g. CLIP)
    evaluator: Any = None  # gkl.metrics.base.Evaluator of the task (the engine needs it to evaluate)
    val_loader: Any = None  # a validation split that drives best.pt, when the task configures one
    after_fit: Any = None  # called with the summary on rank 0 after training (e.g. CLIP's OpenCLIP export)
    param_lr_scales: dict[str, float] | None = None  # LR multiplier by model parameter name (e.g. heads x10)


def warn_if_random_teacher(teacher: TeacherConfig) -> None:
    """Log that the run distills from random weights (``teacher.random_init: true``, on purpose)."""
    if teacher.random_init:
        log.warning("teacher.random_init: distilling from the random weights of %r", teacher.name)


def build_model(cfg: ModelConfig, num_classes: int, section: str = "model") -> nn.Module:
    """A registry model, with its checkpoint loaded when one is named; a missing checkpoint file is
    an :class:`InputError` naming ``<section>.checkpoint``."""
    model = create_model(cfg.name, num_classes, **cfg.kwargs)
    if cfg.checkpoint is not None:
        try:
            load_weights(model, cfg.checkpoint, key=cfg.checkpoint_key)
        except FileNotFoundError:
            hint = " (train the teacher first)" if section == "teacher" else ""
            raise InputError(f"{section}.checkpoint: file not found: {cfg.checkpoint}{hint}") from None
    return model


def build_objective(cfg: ExperimentConfig, num_classes: int, steps_per_epoch: int | None = None,
                    model: nn.Module | None = None) -> Objective:
    """The objective object of ``cfg.kind`` (one small class per method)."""
    if cfg.kind == "ssl":
        from gkl.objectives.ssl import FixMatchObjective, MeanTeacherObjective

        assert cfg.ssl is not None and model is not None and steps_per_epoch
        if cfg.ssl.algorithm == "fixmatch":
            return FixMatchObjective(cfg.ssl)
        total = cfg.train.iterations or run_epochs(cfg, steps_per_epoch) * steps_per_epoch
        return MeanTeacherObjective(cfg.ssl, model, total_steps=total)
    if cfg.kind == "train":
        return SupervisedObjective(label_smoothing=cfg.label_smoothing)
    if cfg.kind == "distill":
        assert cfg.teacher is not None and cfg.distill is not None  # checked by the config
        warn_if_random_teacher(cfg.teacher)
        teacher = build_model(cfg.teacher, num_classes, section="teacher")
        return build_distill_objective(teacher, cfg.distill, num_classes=num_classes)
    assert cfg.adversarial is not None
    return build_adversarial_objective(cfg.adversarial, num_classes=num_classes, epochs=run_epochs(cfg, steps_per_epoch))


def run_epochs(cfg: ExperimentConfig, steps_per_epoch: int | None) -> int:
    """The run's number of epochs: ``train.epochs``, or the epochs ``train.iterations`` steps span."""
    if cfg.train.iterations is None:
        return cfg.train.epochs
    if not steps_per_epoch:
        raise ValueError("steps_per_epoch is needed for an iteration-based run")
    return -(-cfg.train.iterations // steps_per_epoch)


def build_parts(cfg: ExperimentConfig, dist: DistInfo) -> RunParts:
    """Datasets, loaders, model and objective for this process."""
    if cfg.kind == "segmentation":  # a task's own builder (gkl.tasks.<task>), imported when used
        from gkl.tasks.segmentation import build_segmentation_parts

        return build_segmentation_parts(cfg, dist)
    if cfg.kind in ("clip_train", "clip_distill"):
        from gkl.tasks.clip import build_clip_parts

        return build_clip_parts(cfg, dist)
    data = cfg.data
    if data.download and dist.world_size > 1 and not dist.is_main:
        torch.distributed.barrier()  # rank 0 downloads first
    train_set = build_dataset(data.name, data.root, True, download=data.download, normalize=data.normalize)
    eval_set = build_dataset(data.name, data.root, False, download=data.download, normalize=data.normalize)
    if data.download and dist.world_size > 1 and dist.is_main:
        torch.distributed.barrier()
    info = train_set.info
    if data.label_noise is not None:
        from gkl.data import LabelNoise

        train_set = LabelNoise(train_set, data.label_noise.rate, kind=data.label_noise.kind,
                               num_classes=info.num_classes, seed=data.label_noise.seed)
    val_loader = None
    if data.val_fraction > 0:  # held out after the noise: the validation labels are as noisy as training's
        from gkl.data import split_dataset

        train_set, val_set = split_dataset(train_set, data.val_fraction, data.val_seed)
        val_loader = build_loader(
            val_set, batch_size=data.eval_batch_size, train=False, device=dist.device, in_memory=data.in_memory,
            num_workers=data.num_workers, seed=cfg.train.seed, rank=dist.rank, world_size=dist.world_size,
        )
    generated = None
    if data.generated_path is not None:
        from gkl.data import GeneratedImages

        generated = GeneratedImages(data.generated_path, num_classes=info.num_classes)
    train_loader = build_loader(
        train_set, batch_size=data.batch_size, train=True, device=dist.device, in_memory=data.in_memory,
        num_workers=data.num_workers, seed=cfg.train.seed, rank=dist.rank, world_size=dist.world_size,
        generated=generated, generated_ratio=data.generated_ratio,
    )
    eval_loader = build_loader(
        eval_set, batch_size=data.eval_batch_size, train=False, device=dist.device, in_memory=data.in_memory,
        num_workers=data.num_workers, seed=cfg.train.seed, rank=dist.rank, world_size=dist.world_size,
    )
    if cfg.kind == "ssl":
        train_loader = build_ssl_loader(cfg, train_set, dist)
    model = build_model(cfg.model, info.num_classes)
    steps_per_epoch = len(train_loader) // cfg.train.accumulate_steps
    objective = build_objective(cfg, info.num_classes, steps_per_epoch, model=model)
    return RunParts(model, objective, train_loader, eval_loader, info, evaluator=build_evaluator(cfg, info),
                    val_loader=val_loader)


def build_ssl_loader(cfg: ExperimentConfig, train_set: Any, dist: DistInfo) -> Any:
    """Labelled + unlabelled two-view batches (:class:`gkl.data.ssl.SSLLoader`) for kind "ssl".

    The labelled split draws ``ssl.num_labels_per_class`` examples per class with ``train.seed``
    (as USB draws it with its seed); an epoch is one pass over the unlabelled set.
    """
    from gkl.data.ssl import SSLLoader, ViewSettings, split_labeled

    assert cfg.ssl is not None
    if not getattr(train_set, "supports_in_memory", False):
        raise InputError(f"data.name: kind 'ssl' needs a dataset held in memory (cifar10, cifar100, digits), "
                         f"got {cfg.data.name!r}")
    split = train_set.memory_split()
    labeled, unlabeled = split_labeled(split.labels, cfg.ssl.num_labels_per_class, cfg.train.seed)
    per_step = cfg.data.batch_size * cfg.ssl.uratio * dist.world_size
    views = ViewSettings(crop_padding=cfg.ssl.crop_padding, flip=cfg.ssl.flip,
                         randaugment_ops=cfg.ssl.randaugment_ops, randaugment_magnitude=cfg.ssl.randaugment_magnitude)
    return SSLLoader(split, labeled, unlabeled, batch_size=cfg.data.batch_size, uratio=cfg.ssl.uratio,
                     steps_per_epoch=max(1, len(unlabeled) // per_step), views=views, seed=cfg.train.seed,
                     rank=dist.rank, world_size=dist.world_size, device=dist.device)


def build_evaluator(cfg: ExperimentConfig, info: Any) -> Any:
    """The evaluator of the run's task: classification (top-1/top-5/per-class/groups) for every
    kind today; a new task adds its branch here (``gkl.metrics.<task>``)."""
    from gkl.metrics.classification import ClassificationEvaluator

    return ClassificationEvaluator(info.num_classes, info.class_groups)


def run_experiment(cfg: ExperimentConfig, *, resume: bool = False) -> dict[str, Any]:
    """Train (or distill, or adversarially train) as ``cfg`` says; returns the engine's summary."""
    dist = init_distributed(cfg.train.device)
    summary = _fit(cfg, dist, resume=resume)
    cleanup()  # after the trainer is gone; only on success: a failing rank raises and torchrun stops the others
    return summary


def _fit(cfg: ExperimentConfig, dist: DistInfo, *, resume: bool) -> dict[str, Any]:
    # The same seed on every rank: model initialisation is part of the run's reproducibility.
    seed_everything(cfg.train.seed)
    parts = build_parts(cfg, dist)
    trainer = Trainer(
        model=parts.model, objective=parts.objective, train_loader=parts.train_loader,
        eval_loader=parts.eval_loader, settings=cfg.train, run_dir=cfg.run_dir, config=to_dict(cfg),
        dist=dist, evaluator=parts.evaluator, val_loader=parts.val_loader, param_lr_scales=parts.param_lr_scales,
    )
    summary = trainer.fit(resume=resume)
    if parts.after_fit is not None and dist.is_main:
        parts.after_fit(summary)
    return summary
