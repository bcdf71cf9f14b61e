"""Detect a finite collapse: the selected metric falls back to chance level and stays there.

A loss can stay finite while the model degenerates to predicting one class
(e.g. GKL with a far too large alpha). The engine flags this instead of
silently reporting an early "best" epoch.

Definitions (documented in docs/training.md, "Collapse"):

- the chance level of the selected metric comes from the task's evaluator (its optional
  ``chance_level(metric)``; the classification evaluator gives ``100 * K / num_classes`` percent
  for ``topK``). A metric without one (mIoU, a loss, ...) is not monitored.
- an evaluation is *at chance* when ``value <= chance + margin`` and *above chance* when
  ``value > chance + margin`` (``train.collapse_margin`` percentage points, default 1).
- the run has *collapsed* at the K-th consecutive evaluation at chance
  (``train.collapse_patience`` = K, default 3) that follows an evaluation above chance.
"""

from __future__ import annotations

from typing import Any


class CollapseMonitor:
    """Feeds on one metric value per evaluation; :meth:`update` returns the flag when collapse is detected."""

    def __init__(self, *, metric: str, chance: float | None, patience: int, margin: float) -> None:
        self.metric = metric
        self.chance = chance
        self.patience = int(patience)
        self.margin = float(margin)
        self.was_above = False
        self.streak = 0
        self.streak_start: int | None = None
        self.flag: dict[str, Any] | None = None

    def update(self, epoch: int, value: float, *, step: int | None = None) -> dict[str, Any] | None:
        """Record the evaluation after ``epoch``; return the collapse record the first time it fires."""
        if self.chance is None:
            return None
        if value > self.chance + self.margin:
            self.was_above, self.streak, self.streak_start = True, 0, None
            return None
        if not self.was_above:
            return None
        self.streak += 1
        if self.streak_start is None:
            self.streak_start = epoch
        if self.streak >= self.patience and self.flag is None:
            self.flag = {
                "epoch": epoch,
                "metric": self.metric,
                "value": float(value),
                "chance": self.chance,
                "margin": self.margin,
                "evaluations": self.streak,
                "since_epoch": self.streak_start,
            }
            if step is not None:
                self.flag["step"] = step
            return dict(self.flag)
        return None

    def state_dict(self) -> dict[str, Any]:
        return {
            "was_above": self.was_above,
            "streak": self.streak,
            "streak_start": self.streak_start,
            "flag": self.flag,
        }

    def load_state_dict(self, state: dict[str, Any] | None) -> None:
        if not state:
            return
        self.was_above = bool(state.get("was_above", False))
        self.streak = int(state.get("streak", 0))
        self.streak_start = state.get("streak_start")
        self.flag = state.get("flag")
