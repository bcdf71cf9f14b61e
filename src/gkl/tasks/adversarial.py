"""Kind ``adv_train`` (``gkl adv-train``): adversarial training (TRADES, GKL-AT, PGD-AT; the
``adversarial:`` section, :mod:`gkl.settings.adversarial`)."""

from __future__ import annotations

from typing import Any

from gkl.settings._variants import drop_unused_keys
from gkl.settings.adversarial import ADVERSARIAL_SETTINGS, AdversarialSettings, GKLATSettings
from gkl.tasks.base import Section, Task
from gkl.tasks.classifier import CLASSIFIER_METRICS, classifier_analysis

__all__ = ["TASK"]


def upgrade(recorded: dict) -> dict:
    """An ``adversarial:`` section of an earlier gkl, which recorded every method's settings and
    ``attack_steps`` / ``attack_step_size`` for every budget: what the run used."""
    recorded = drop_unused_keys(AdversarialSettings, recorded)
    method_class = ADVERSARIAL_SETTINGS.get(recorded.get("method", AdversarialSettings.method))
    default_budget = method_class.attack_budget if method_class is not None else "fixed"
    if recorded.get("attack_budget", default_budget) != "fixed":
        recorded.pop("attack_steps", None)
        recorded.pop("attack_step_size", None)
    return recorded


def _objective(cfg: Any, num_classes: int, steps_per_epoch: int, model: Any) -> Any:
    from gkl.objectives.adversarial import build_adversarial_objective
    from gkl.tasks.parts import run_epochs

    return build_adversarial_objective(
        cfg.adversarial, num_classes=num_classes, epochs=run_epochs(cfg, steps_per_epoch)
    )


def build(cfg: Any, dist: Any) -> Any:
    from gkl.tasks.classifier import build_classifier_parts

    return build_classifier_parts(cfg, dist, _objective)


def evaluate(cfg: Any, run_dir: Any, paths: Any, **kwargs: Any) -> Any:
    from gkl.tasks.classifier import evaluate_classifier_run

    return evaluate_classifier_run(cfg, run_dir, paths, **kwargs)


TASK = Task(
    name="adv_train",
    command="adv-train",
    help="adversarial training (TRADES, GKL-AT, PGD-AT)",
    metric_names=CLASSIFIER_METRICS,
    sections=(
        Section(
            "adversarial",
            AdversarialSettings | None,
            fill=GKLATSettings,
            upgrade=upgrade,
            help="the adversarial-training method, attack and AWP",
        ),
    ),
    build=build,
    evaluate=evaluate,
    robust_evaluation=True,
    analysis=classifier_analysis,
    feature_statistics=True,
)
