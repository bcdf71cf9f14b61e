"""Kind ``train`` (``gkl train``): a classifier trained with cross-entropy (a teacher, or a CE baseline).

Owns the top-level key ``label_smoothing`` (in [0, 1); 0 = plain cross-entropy).
"""

from __future__ import annotations

from typing import Any

from gkl.tasks.base import Section, Task
from gkl.tasks.classifier import CLASSIFIER_METRICS, classifier_analysis
from gkl.utils.errors import ConfigError
from gkl.utils.validation import check_number, fail

__all__ = ["TASK"]


def check(cfg: Any) -> None:
    check_number("", "label_smoothing", cfg.label_smoothing, minimum=0.0, error=ConfigError)
    if cfg.label_smoothing >= 1.0:
        raise fail("", "label_smoothing", "a value in [0, 1)", cfg.label_smoothing, error=ConfigError)


def _objective(cfg: Any, num_classes: int, steps_per_epoch: int, model: Any) -> Any:
    from gkl.objectives.supervised import SupervisedObjective

    return SupervisedObjective(label_smoothing=cfg.label_smoothing)


def build(cfg: Any, dist: Any) -> Any:
    from gkl.tasks.classifier import build_classifier_parts

    return build_classifier_parts(cfg, dist, _objective)


def evaluate(cfg: Any, run_dir: Any, paths: Any, **kwargs: Any) -> Any:
    from gkl.tasks.classifier import evaluate_classifier_run

    return evaluate_classifier_run(cfg, run_dir, paths, **kwargs)


TASK = Task(
    name="train",
    command="train",
    help="train a teacher or a CE baseline from a recipe",
    metric_names=CLASSIFIER_METRICS,
    sections=(Section("label_smoothing", float, default=0.0, help="cross-entropy label smoothing in [0, 1)"),),
    check=check,
    build=build,
    evaluate=evaluate,
    robust_evaluation=True,
    analysis=classifier_analysis,
    feature_statistics=True,
)
