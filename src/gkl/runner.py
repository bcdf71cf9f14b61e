"""Run an :class:`~gkl.config.ExperimentConfig`: its task builds the parts, the one engine trains them.

Data flows one way: config → task.build (data + models → objective, evaluator) → engine → metrics/artifacts.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from gkl.config import ExperimentConfig, to_dict
from gkl.engine import Trainer
from gkl.engine.resume import DEFAULT_TOLERANT_CONFIG_KEYS
from gkl.engine.seeding import seed_everything
from gkl.tasks import get_task, list_tasks
from gkl.tasks.parts import RunParts
from gkl.utils.distributed import DistInfo, cleanup, init_distributed

__all__ = ["build_parts", "run_experiment"]


def build_parts(cfg: ExperimentConfig, dist: DistInfo) -> RunParts:
    """Datasets, loaders, model, objective and evaluator of this process: the task's ``build``."""
    return get_task(cfg.kind).build(cfg, dist)


def resume_tolerant_keys(cfg: ExperimentConfig) -> tuple[str, ...]:
    """Config keys a resume tolerates: the engine's, plus the other kinds' sections, which a checkpoint
    of an earlier gkl recorded as null and this version leaves out (the config refuses any other value)."""
    own = set(get_task(cfg.kind).section_names)
    foreign = sorted({n for task in list_tasks() for n in task.section_names} - own)
    return (*DEFAULT_TOLERANT_CONFIG_KEYS, *foreign)


def run_experiment(
    cfg: ExperimentConfig,
    *,
    resume: bool = False,
    dist: DistInfo | None = None,
    adapt_parts: Callable[[RunParts], RunParts] | None = None,
) -> dict[str, Any]:
    """Train the run ``cfg`` describes (whatever its kind); returns the engine's summary.

    ``dist``: this process's place in a job whose process group the caller set up and tears down
    (default: from torchrun's environment, set up and torn down here). ``adapt_parts``: a function
    applied to the task's parts before training (``gkl doctor`` wraps the train loader in it)."""
    if dist is not None:
        return _fit(cfg, dist, resume=resume, adapt_parts=adapt_parts)
    dist = init_distributed(cfg.train.device)
    summary = _fit(cfg, dist, resume=resume, adapt_parts=adapt_parts)
    cleanup()  # after the trainer is gone; only on success: a failing rank raises and torchrun stops the others
    return summary


def _fit(
    cfg: ExperimentConfig,
    dist: DistInfo,
    *,
    resume: bool,
    adapt_parts: Callable[[RunParts], RunParts] | None = None,
) -> dict[str, Any]:
    # The same seed on every rank: model initialisation is part of the run's reproducibility.
    seed_everything(cfg.train.seed)
    parts = build_parts(cfg, dist)
    if adapt_parts is not None:
        parts = adapt_parts(parts)
    trainer = Trainer(
        model=parts.model,
        objective=parts.objective,
        train_loader=parts.train_loader,
        eval_loader=parts.eval_loader,
        settings=cfg.train,
        run_dir=cfg.run_dir,
        config=to_dict(cfg),
        dist=dist,
        evaluator=parts.evaluator,
        val_loader=parts.val_loader,
        param_lr_scales=parts.param_lr_scales,
        resume_tolerant_keys=resume_tolerant_keys(cfg),
    )
    summary = trainer.fit(resume=resume)
    if parts.after_fit is not None and dist.is_main:
        parts.after_fit(summary)
    return summary
