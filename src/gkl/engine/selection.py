"""Best-checkpoint and collapse policy, apart from the loop (in the spirit of timm's CheckpointSaver).

At every evaluation :meth:`BestCheckpoint.update` receives the selected value (``train.select_metric``
of the model ``ema.evaluate`` names, on the validation split when there is one); when it is better
(``select_mode`` max|min) than every earlier one, rank 0 writes ``best.pt`` =
``{"model": state_dict, "epoch": e, <select_metric>: value}`` (for ``top1`` the community format).
The same value feeds the collapse watch (:class:`~gkl.engine.collapse.CollapseMonitor`) when the
evaluator gives the metric a chance level.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

from gkl.engine.checkpoint import atomic_save
from gkl.engine.collapse import CollapseMonitor
from gkl.settings.train import TrainSettings

__all__ = ["BestCheckpoint", "collapse_message"]


class BestCheckpoint:
    """Tracks the best selected value (epoch, step; with a validation split also the eval split's
    value at that epoch), writes ``best.pt`` and watches for a collapse."""

    def __init__(
        self,
        path: Path,
        settings: TrainSettings,
        *,
        chance: float | None,
        has_val: bool,
        is_main: bool,
        logger: logging.Logger,
    ) -> None:
        self.path = path
        self.metric = settings.select_metric
        self.mode = settings.select_mode
        self.has_val = has_val
        self.is_main = is_main
        self.logger = logger
        self.value: float | None = None
        self.epoch: int | None = None
        self.step: int | None = None
        self.eval_at_best: float | None = None  # with a val split: the eval split's value at the best epoch
        self.collapse = CollapseMonitor(
            metric=self.metric, chance=chance, patience=settings.collapse_patience, margin=settings.collapse_margin
        )

    def is_better(self, value: float) -> bool:
        return self.value is None or (value > self.value if self.mode == "max" else value < self.value)

    def update(self, result: dict[str, Any], *, epoch: int, step: int, weights: Callable[[], dict]) -> bool:
        """Record the evaluation ``result`` (:class:`~gkl.engine.evaluation.RunEvaluation`) after
        ``epoch``/``step``; on a new best, rank 0 saves ``weights()`` to ``best.pt``. Returns whether it was."""
        value = result["selected"]
        if not self.is_better(value):
            return False
        self.value, self.epoch, self.step = value, epoch, step
        if self.has_val and "eval" in result:
            self.eval_at_best = float(result["eval"][self.metric])
        if self.is_main:
            atomic_save({"model": weights(), "epoch": int(epoch), self.metric: value}, self.path)
        return True

    def watch_collapse(self, epoch: int, value: float, *, step: int | None) -> dict[str, Any] | None:
        """Feed the collapse watch; the collapse record (logged as a warning) the first time it fires."""
        flag = self.collapse.update(epoch, value, step=step)
        if flag is not None:
            self.logger.warning(
                "collapse: %s = %.2f has been at chance level (%.2f + margin %.2f) for %d "
                "evaluations since epoch %d, after having been above it",
                flag["metric"],
                flag["value"],
                flag["chance"],
                flag["margin"],
                flag["evaluations"],
                flag["since_epoch"],
            )
        return flag

    def observe(
        self,
        result: dict[str, Any],
        record: dict[str, Any],
        *,
        epoch: int,
        step: int,
        weights: Callable[[], dict],
        collapse_step: int | None,
    ) -> dict[str, Any] | None:
        """One evaluation: :meth:`update`, the collapse watch, and the metrics-line fields in ``record``
        (each split's metrics without ``per_class``, ``features``, ``select``, ``best``, ``best_epoch``,
        ``collapsed``). Returns the collapse record the first time the watch fires, else None."""
        self.update(result, epoch=epoch, step=step, weights=weights)
        for key in ("eval", "ema_eval", "val", "ema_val"):
            if key in result:
                record[key] = {k: v for k, v in result[key].items() if k != "per_class"}
        if "features" in result:
            record["features"] = result["features"]
        record["select"] = {"metric": self.metric, "split": result["selected_from"], "value": result["selected"]}
        record["best"] = self.value
        record["best_epoch"] = self.epoch
        collapsed = self.watch_collapse(epoch, result["selected"], step=collapse_step)
        if collapsed is not None:
            record["collapsed"] = collapsed
        return collapsed

    def summary_fields(self, final: dict[str, Any]) -> dict[str, Any]:
        """``best``, ``best_epoch``, ``best_step`` and the metric-named fields of ``summary.json``."""
        last = final.get("selected") if final else None
        fields: dict[str, Any] = {"last": last, "best": self.value, "best_epoch": self.epoch, "best_step": self.step}
        metric = self.metric  # e.g. top1: last_top1, best_top1 or best_val_top1, test_top1_at_best_val
        if not self.has_val:
            fields[f"last_{metric}"] = last
            fields[f"best_{metric}"] = self.value  # selected on the test (eval) set itself
        else:  # model selection on the validation split; the test metric at the last and best-val epoch
            fields[f"last_{metric}"] = (final.get("eval") or {}).get(metric)
            fields[f"best_val_{metric}"] = self.value
            fields[f"test_{metric}_at_best_val"] = self.eval_at_best
        return fields

    def state_dict(self) -> dict[str, Any]:
        return {"value": self.value, "epoch": self.epoch, "step": self.step, "eval_at_best": self.eval_at_best}

    def load_state_dict(self, best: dict[str, Any]) -> None:
        self.value = best["value"] if "value" in best else best["top1"]  # checkpoints before select_metric
        self.epoch = best["epoch"]
        self.step = best.get("step")
        self.eval_at_best = best.get("eval_at_best")


def collapse_message(flag: dict[str, Any], where: str) -> str:
    """The :class:`~gkl.engine.errors.CollapseError` message of a collapse record."""
    return (
        f"collapse at epoch {flag['epoch']}: {flag['metric']} = {flag['value']:.2f} has been at chance "
        f"level {flag['chance']:.2f} (+ margin {flag['margin']:.2f}) for {flag['evaluations']} "
        f"evaluations since epoch {flag['since_epoch']} (train.stop_on_collapse is set); {where}"
    )
