"""One evaluation of a run: the raw model (and the EMA model) on the eval and validation splits.

The engine knows no task: the evaluator (:class:`gkl.metrics.base.Evaluator`) returns flat
named metrics and the engine picks ``train.select_metric`` of the model ``ema.evaluate`` names,
on the validation split when there is one, else on the eval split. With
``train.log_feature_stats`` the evaluation of the eval split also records the feature
statistics of the model and of the objective's teacher (:mod:`gkl.metrics.features`).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from torch import nn

from gkl.metrics.features import watch_feature_statistics
from gkl.settings.train import TrainSettings
from gkl.utils.distributed import DistInfo
from gkl.utils.errors import InputError
from gkl.utils.modules import find_classifier

__all__ = ["RunEvaluation"]

SPLITS = ("eval", "ema_eval", "val", "ema_val")


class RunEvaluation:
    """Evaluates the splits of a run with the task's ``evaluator``.

    ``feature_teacher``: the objective's frozen teacher for ``train.log_feature_stats`` (its
    statistics are measured at the first evaluation only) or None.
    """

    def __init__(
        self,
        evaluator: Any,
        *,
        eval_loader: Iterable | None,
        val_loader: Iterable | None,
        settings: TrainSettings,
        dist: DistInfo,
        feature_teacher: nn.Module | None = None,
    ) -> None:
        if evaluator is None and (eval_loader is not None or val_loader is not None):
            raise ValueError(
                "evaluator: expected a gkl.metrics.base.Evaluator (the task's) when an "
                "eval_loader or val_loader is given, got None"
            )
        if evaluator is not None and not callable(evaluator):
            raise ValueError(
                f"evaluator: expected a callable gkl.metrics.base.Evaluator, got {type(evaluator).__name__}"
            )
        self.evaluator = evaluator
        self.eval_loader = eval_loader
        self.val_loader = val_loader
        self.settings = settings
        self.dist = dist
        self.feature_teacher = feature_teacher
        self._teacher_features: dict[str, float] | None = None

    @property
    def enabled(self) -> bool:
        return self.eval_loader is not None or self.val_loader is not None

    @property
    def select_split(self) -> str:
        return "val" if self.val_loader is not None else "eval"

    def check_feature_models(self, model: nn.Module) -> None:
        """``train.log_feature_stats`` needs a classifier in the model (and teacher): one-line error otherwise."""
        for role, net in (("model", model), ("teacher", self.feature_teacher)):
            try:
                if net is not None:
                    find_classifier(net)
            except ValueError as error:
                raise InputError(
                    f"train.log_feature_stats: the {role} has no classifier to read penultimate features from ({error})"
                ) from None

    def chance_level(self) -> float | None:
        """The selected metric's chance level from the evaluator's optional ``chance_level(metric)``
        (None: no collapse watch; also for ``select_mode: min``)."""
        probe = getattr(self.evaluator, "chance_level", None)
        if probe is None or self.settings.select_mode != "max":
            return None
        return probe(self.settings.select_metric)

    def __call__(self, model: nn.Module, ema_model: nn.Module | None) -> dict[str, Any]:
        """``{split: metrics}`` for ``eval``/``val`` (and ``ema_*``), ``features`` with feature
        statistics, ``selected`` (value of the selected metric) and ``selected_from`` (its split key)."""
        kwargs = dict(device=self.dist.device, dist=self.dist)
        result: dict[str, Any] = {}
        feature_split = "eval" if self.eval_loader is not None else "val"
        for split, loader in (("eval", self.eval_loader), ("val", self.val_loader)):
            if loader is None:
                continue
            if self.settings.log_feature_stats and split == feature_split:
                result[split], result["features"] = self._with_features(model, loader, split, kwargs)
            else:
                result[split] = self.evaluator(model, loader, **kwargs)
            if ema_model is not None:
                result[f"ema_{split}"] = self.evaluator(ema_model, loader, **kwargs)
        key = f"ema_{self.select_split}" if self.settings.ema.evaluate == "ema" else self.select_split
        metric = self.settings.select_metric
        if metric not in result[key]:
            numbers = sorted(k for k, v in result[key].items() if isinstance(v, (int, float)))
            raise InputError(f"train.select_metric: the evaluator returns no {metric!r} (it returns {numbers})")
        result["selected"] = float(result[key][metric])
        result["selected_from"] = key
        return result

    def _with_features(
        self, model: nn.Module, loader: Iterable, split: str, kwargs: dict[str, Any]
    ) -> tuple[dict[str, Any], dict[str, Any]]:
        """The evaluation of ``split`` with the feature statistics of the model (and the teacher, fed the
        same inputs; measured at the first evaluation only, since it is frozen) read by hooks."""
        teacher = self.feature_teacher if self._teacher_features is None else None
        with watch_feature_statistics(model, teacher) as meters:
            metrics = self.evaluator(model, loader, **kwargs)
        features: dict[str, Any] = {"split": split, "student": meters["student"].result(self.dist)}
        if teacher is not None:
            self._teacher_features = meters["teacher"].result(self.dist)
        if self._teacher_features is not None:
            features["teacher"] = self._teacher_features
        return metrics, features
