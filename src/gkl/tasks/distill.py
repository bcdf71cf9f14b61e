"""Kind ``distill`` (``gkl distill``): a student classifier distilled from a frozen teacher
(KD, DKD, DKL, IKL, GKL, MSE, JSD; the ``distill:`` section, :mod:`gkl.settings.distill`)."""

from __future__ import annotations

from typing import Any

from gkl.settings._variants import drop_unused_keys
from gkl.settings.distill import DistillSettings, GKLSettings
from gkl.settings.teacher import check_teacher
from gkl.tasks.base import Section, Task, check_loss_name
from gkl.tasks.classifier import CLASSIFIER_METRICS, classifier_analysis

__all__ = ["TASK"]


def check(cfg: Any) -> None:
    check_teacher(cfg.teacher, f"kind {cfg.kind!r}")
    check_loss_name(cfg.distill, "method")


def _objective(cfg: Any, num_classes: int, steps_per_epoch: int, model: Any) -> Any:
    from gkl.objectives.distill import build_distill_objective
    from gkl.tasks.parts import build_model, warn_if_random_teacher

    warn_if_random_teacher(cfg.teacher)
    teacher = build_model(cfg.teacher, num_classes, section="teacher")
    return build_distill_objective(teacher, cfg.distill, num_classes=num_classes)


def build(cfg: Any, dist: Any) -> Any:
    from gkl.tasks.classifier import build_classifier_parts

    return build_classifier_parts(cfg, dist, _objective)


def evaluate(cfg: Any, run_dir: Any, paths: Any, **kwargs: Any) -> Any:
    from gkl.tasks.classifier import evaluate_classifier_run

    return evaluate_classifier_run(cfg, run_dir, paths, **kwargs)


TASK = Task(
    name="distill",
    command="distill",
    help="distill a student from a frozen teacher (KD, DKD, DKL, IKL, GKL, ...)",
    metric_names=CLASSIFIER_METRICS,
    sections=(
        Section(
            "distill",
            DistillSettings | None,
            fill=GKLSettings,
            help="the distillation method",
            # earlier versions recorded every method's settings
            upgrade=lambda recorded: drop_unused_keys(DistillSettings, recorded),
        ),
    ),
    teacher="required",
    check=check,
    build=build,
    evaluate=evaluate,
    robust_evaluation=True,
    analysis=classifier_analysis,
    feature_statistics=True,
)
