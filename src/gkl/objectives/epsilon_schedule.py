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

from gkl.settings.adversarial import ATTACK_BUDGETS, DEFAULT_ATTACK_STEP_SIZE, DEFAULT_ATTACK_STEPS, EPS_SCHEDULES
from gkl.utils.validation import check_choice, check_int, check_number, fail


@dataclass(frozen=True)
class AttackPlan:
    """The attack used in one epoch: radius, number of steps and step size."""

    eps: float
    steps: int
    step_size: float


def _check_epoch(epoch: int, epochs: int) -> None:
    check_int("", "epochs", epochs, minimum=1)
    check_int("", "epoch", epoch, minimum=1)
    if epoch > epochs:
        raise fail("", "epoch", f"an integer in [1, epochs={epochs}]", epoch)


def scheduled_eps(eps: float, epoch: int, epochs: int, schedule: str = "fixed") -> float:
    """eps_t for ``epoch`` under ``schedule`` ("fixed" or "linear")."""
    _check_epoch(epoch, epochs)
    check_number("", "eps", eps, minimum=0.0)
    check_choice("", "schedule", schedule, EPS_SCHEDULES)
    if schedule == "fixed":
        return float(eps)
    return float(eps) * epoch / epochs


def attack_budget(
    budget: str,
    eps_t: float,
    epoch: int,
    epochs: int,
    *,
    steps: int = DEFAULT_ATTACK_STEPS,
    step_size: float = DEFAULT_ATTACK_STEP_SIZE,
) -> tuple[int, float]:
    """(number of steps, step size) at ``epoch`` for ``budget`` (see the module docstring)."""
    _check_epoch(epoch, epochs)
    check_choice("", "budget", budget, ATTACK_BUDGETS)
    if budget == "fixed":
        check_int("", "steps", steps, minimum=0)
        check_number("", "step_size", step_size, minimum=0.0)
        return steps, float(step_size)
    if budget == "low":
        return 2, eps_t
    if budget == "high-as-released":
        return 5, eps_t / 2
    # budget == "high" (the choice is checked above)
    if 4 * epoch <= epochs:
        return 2, eps_t
    if 4 * epoch <= 2 * epochs:
        return 3, 2 * eps_t / 3
    if 4 * epoch <= 3 * epochs:
        return 4, eps_t / 2
    return 5, eps_t / 2


def attack_plan(
    *,
    eps: float,
    epoch: int,
    epochs: int,
    eps_schedule: str = "fixed",
    budget: str = "fixed",
    steps: int = DEFAULT_ATTACK_STEPS,
    step_size: float = DEFAULT_ATTACK_STEP_SIZE,
) -> AttackPlan:
    """Combine :func:`scheduled_eps` and :func:`attack_budget` for one epoch."""
    eps_t = scheduled_eps(eps, epoch, epochs, eps_schedule)
    n, size = attack_budget(budget, eps_t, epoch, epochs, steps=steps, step_size=step_size)
    return AttackPlan(eps=eps_t, steps=n, step_size=size)
