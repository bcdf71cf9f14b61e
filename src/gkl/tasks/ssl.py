"""Kind ``ssl`` (``gkl ssl-train``): semi-supervised training, FixMatch or Mean-Teacher with a
CE/KL/MSE/GKL consistency loss (the ``ssl:`` section, :mod:`gkl.settings.ssl`, docs/ssl.md)."""

from __future__ import annotations

from functools import partial
from typing import Any

from gkl.settings._variants import drop_unused_keys
from gkl.settings.ssl import SSLSettings
from gkl.tasks.base import Section, Task, check_loss_name
from gkl.tasks.classifier import CLASSIFIER_METRICS, classifier_analysis
from gkl.utils.errors import InputError

__all__ = ["TASK", "build_ssl_loader"]


def build_ssl_loader(cfg: Any, train_set: Any, dist: Any) -> Any:
    """Labelled + unlabelled two-view batches (:class:`gkl.data.ssl.SSLLoader`).

    The labelled split draws ``ssl.num_labels_per_class`` examples per class with ``train.seed``
    (as USB draws it with its seed); an epoch is one pass over the unlabelled set.
    """
    from gkl.data.ssl import SSLLoader, ViewSettings, split_labeled

    if not getattr(train_set, "supports_in_memory", False):
        raise InputError(
            f"data.name: kind {cfg.kind!r} needs a dataset held in memory (cifar10, cifar100, digits), "
            f"got {cfg.data.name!r}"
        )
    split = train_set.memory_split()
    labeled, unlabeled = split_labeled(split.labels, cfg.ssl.num_labels_per_class, cfg.train.seed)
    per_step = cfg.data.batch_size * cfg.ssl.uratio * dist.world_size
    views = ViewSettings(
        crop_padding=cfg.ssl.crop_padding,
        flip=cfg.ssl.flip,
        randaugment_ops=cfg.ssl.randaugment_ops,
        randaugment_magnitude=cfg.ssl.randaugment_magnitude,
    )
    return SSLLoader(
        split,
        labeled,
        unlabeled,
        batch_size=cfg.data.batch_size,
        uratio=cfg.ssl.uratio,
        steps_per_epoch=max(1, len(unlabeled) // per_step),
        views=views,
        seed=cfg.train.seed,
        rank=dist.rank,
        world_size=dist.world_size,
        device=dist.device,
    )


def _objective(cfg: Any, num_classes: int, steps_per_epoch: int, model: Any) -> Any:
    from gkl.objectives.ssl import FixMatchObjective, MeanTeacherObjective
    from gkl.tasks.parts import run_epochs

    if cfg.ssl.algorithm == "fixmatch":
        return FixMatchObjective(cfg.ssl)
    total = cfg.train.iterations or run_epochs(cfg, steps_per_epoch) * steps_per_epoch
    return MeanTeacherObjective(cfg.ssl, model, total_steps=total)


def build(cfg: Any, dist: Any) -> Any:
    from gkl.tasks.classifier import build_classifier_parts

    return build_classifier_parts(cfg, dist, _objective, train_loader_of=build_ssl_loader)


def evaluate(cfg: Any, run_dir: Any, paths: Any, **kwargs: Any) -> Any:
    from gkl.tasks.classifier import evaluate_classifier_run

    return evaluate_classifier_run(cfg, run_dir, paths, **kwargs)


def check(cfg: Any) -> None:
    check_loss_name(cfg.ssl, "consistency")


TASK = Task(
    name="ssl",
    command="ssl-train",
    help="semi-supervised training (FixMatch, Mean-Teacher; CE/KL/MSE/GKL consistency)",
    metric_names=CLASSIFIER_METRICS,
    sections=(
        Section(
            "ssl",
            SSLSettings | None,
            fill=SSLSettings,
            help="algorithm, consistency loss, views",
            upgrade=partial(drop_unused_keys, SSLSettings),
        ),
    ),
    check=check,
    build=build,
    evaluate=evaluate,
    robust_evaluation=True,
    analysis=classifier_analysis,
    feature_statistics=True,
)
