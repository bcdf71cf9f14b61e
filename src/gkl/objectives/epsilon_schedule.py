"""Perturbation-size (eps) and attack-budget schedules for adversarial training.

Epochs are numbered from 1 to ``epochs``. All functions are pure.

eps schedules:
  - ``"fixed"``: eps_t = eps.
  - ``"linear"``: eps_t = eps * epoch / epochs (the GKL-AT recipe; reaches eps at the last epoch).

Attack budgets (number of PGD steps and step size at epoch t), from the authors' code:
  - ``"fixed"``: the configured ``steps`` and ``step_size`` every epoch
    (TRADES / PGD-AT: 10 steps of 2/255).
  - ``"low"``: 2 steps of size eps_t every epoch (the authors' default ``train_budget``).
  - ``"high"``: as intended by the authors, by quarter of training: 2 steps of eps_t,
    then 3 of 2 eps_t / 3, then 4 of eps_t / 2, then 5 of eps_t / 2. Quarter k
    (k = 1..4) holds the epochs with 4 * epoch <= k * epochs.
  - ``"high-as-released"``: 5 steps of eps_t / 2 every epoch, which is what the
    released code runs for "high" (its quarter tests overwrite one another).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

EpsSchedule = Literal["fixed", "linear"]
AttackBudget = Literal["fixed", "low", "high", "high-as-released"]
EPS_SCHEDULES: tuple[str, ...] = ("fixed", "linear")
ATTACK_BUDGETS: tuple[str, ...] = ("fixed", "low", "high", "high-as-released")


@dataclass(frozen=True)
class AttackPlan:
    """The attack used in one epoch: radius, number of steps and step size."""

    eps: float
    steps: int
    step_size: float


def _check_epoch(epoch: int, epochs: int) -> None:
    if isinstance(epochs, bool) or not isinstance(epochs, int) or epochs < 1:
        raise ValueError(f"epochs must be an integer >= 1, got {epochs!r}")
    if isinstance(epoch, bool) or not isinstance(epoch, int) or not 1 <= epoch <= epochs:
        raise ValueError(f"epoch must be an integer in [1, epochs={epochs}], got {epoch!r}")


def scheduled_eps(eps: float, epoch: int, epochs: int, schedule: str = "fixed") -> float:
    """eps_t for ``epoch`` under ``schedule`` ("fixed" or "linear")."""
    _check_epoch(epoch, epochs)
    if not isinstance(eps, (int, float)) or isinstance(eps, bool) or not 0 <= eps < float("inf"):
        raise ValueError(f"eps must be a finite number >= 0, got {eps!r}")
    if schedule == "fixed":
        return float(eps)
    if schedule == "linear":
        return float(eps) * epoch / epochs
    raise ValueError(f"eps schedule must be one of {EPS_SCHEDULES}, got {schedule!r}")


def attack_budget(budget: str, eps_t: float, epoch: int, epochs: int, *,
                  steps: int = 10, step_size: float = 2 / 255) -> tuple[int, float]:
    """(number of steps, step size) at ``epoch`` for ``budget`` (see the module docstring)."""
    _check_epoch(epoch, epochs)
    if budget == "fixed":
        if isinstance(steps, bool) or not isinstance(steps, int) or steps < 0:
            raise ValueError(f"steps must be an integer >= 0, got {steps!r}")
        return steps, float(step_size)
    if budget == "low":
        return 2, eps_t
    if budget == "high-as-released":
        return 5, eps_t / 2
    if budget == "high":
        if 4 * epoch <= epochs:
            return 2, eps_t
        if 4 * epoch <= 2 * epochs:
            return 3, 2 * eps_t / 3
        if 4 * epoch <= 3 * epochs:
            return 4, eps_t / 2
        return 5, eps_t / 2
    raise ValueError(f"attack budget must be one of {ATTACK_BUDGETS}, got {budget!r}")


def attack_plan(*, eps: float, epoch: int, epochs: int, eps_schedule: str = "fixed",
                budget: str = "fixed", steps: int = 10, step_size: float = 2 / 255) -> AttackPlan:
    """Combine :func:`scheduled_eps` and :func:`attack_budget` for one epoch."""
    eps_t = scheduled_eps(eps, epoch, epochs, eps_schedule)
    n, size = attack_budget(budget, eps_t, epoch, epochs, steps=steps, step_size=step_size)
    return AttackPlan(eps=eps_t, steps=n, step_size=size)
