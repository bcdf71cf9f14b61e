"""Learning-rate schedules of the recipes, per epoch or per optimizer step.

The learning rate is a pure function of the epoch (``unit: epoch``, epochs count from 1; set
once at the start of each epoch like mdistiller's ``adjust_learning_rate``, nothing changes
within an epoch) or of the global optimizer step (``unit: step``, steps count from 1).
:class:`LRSchedule` serves both from the global step; :class:`EpochLRSchedule` is the older
per-epoch interface.

Step unit, with ``k = step - 1`` optimizer steps already taken (the counter of
``torch.optim.lr_scheduler.LambdaLR`` in USB and Hugging Face), ``T`` total steps and
``W = warmup_steps``: ``k < W`` gives ``lr * k / W``; after warm-up, with ``t = k - W`` and
``T' = T - W``:

- multistep: ``lr * gamma ** #{m in milestones : step > m}`` (milestones in steps)
- cosine: ``lr * ½(1 + cos(π t / T'))`` (Hugging Face ``get_cosine_schedule_with_warmup``)
- poly: ``lr * (1 - t / T') ** power`` (mmsegmentation's ``PolyLR`` with ``eta_min = 0``)
- usb_cosine: ``lr * cos(num_cycles · π · t / T')``, num_cycles 7/16 by default
  (USB, ``semilearn/core/utils/build.py: get_cosine_schedule_with_warmup``)
- constant: ``lr``
- one_cycle: :func:`one_cycle_at` of position ``k`` of ``T`` (no separate warm-up)

one_cycle (either unit) is ``torch.optim.lr_scheduler.OneCycleLR`` with two phases and cosine
annealing, at position ``u`` (``epoch - 1`` or ``step - 1``) of ``T`` (epochs or steps): with
``e = pct_start · T - 1`` and ``anneal(a, b, f) = b + (a - b)/2 · (1 + cos(π f))``, ``u <= e`` gives
``anneal(lr / div_factor, lr, u / e)`` and later ``u`` ``anneal(lr, lr / div_factor / final_div_factor,
(u - e) / (T - 1 - e))``; with ``momentum_range = (base, max)`` the momentum is ``anneal(max, base, ·)``
then ``anneal(base, max, ·)`` at the same fractions. DM-AT (``cosinew``) steps it once per epoch.
"""

from __future__ import annotations

import math

import torch

from gkl.settings.optim import ScheduleSettings
from gkl.utils.errors import InputError


def _anneal(start: float, end: float, fraction: float) -> float:
    """Cosine from ``start`` (fraction 0) to ``end`` (fraction 1), as OneCycleLR's ``_annealing_cos``."""
    return end + (start - end) / 2.0 * (math.cos(math.pi * fraction) + 1)


def one_cycle_at(
    position: int, total: int, *, base_lr: float, settings: ScheduleSettings
) -> tuple[float, float | None]:
    """``(lr, momentum)`` of OneCycleLR at 0-based ``position`` of ``total`` (momentum None without
    ``momentum_range``); formula in the module docstring."""
    rise_end = settings.pct_start * total - 1
    if rise_end <= 0:
        raise InputError(
            f"schedule.pct_start: {settings.pct_start} of the run's {total} {settings.unit}s leaves the one_cycle "
            f"warm-up no length (pct_start × {total} must exceed 1)"
        )
    initial = base_lr / settings.div_factor
    if position <= rise_end:
        fraction, lrs, phase = position / rise_end, (initial, base_lr), 0
    else:
        fraction = (position - rise_end) / (total - 1 - rise_end)
        lrs, phase = (base_lr, initial / settings.final_div_factor), 1
    lr = _anneal(lrs[0], lrs[1], fraction)
    if settings.momentum_range is None:
        return lr, None
    low, high = settings.momentum_range
    momenta = (high, low) if phase == 0 else (low, high)
    return lr, _anneal(momenta[0], momenta[1], fraction)


def learning_rate_at(epoch: int, *, base_lr: float, epochs: int, settings: ScheduleSettings) -> float:
    """Learning rate of ``epoch`` (1-based) for a run of ``epochs`` epochs.

    Warm-up (``settings.warmup_epochs = w > 0``): epoch ``e <= w`` uses ``base_lr * e / w``.
    After warm-up:

    - multistep: ``base_lr * gamma ** #{m in milestones : epoch > m}``
    - cosine: ``base_lr * ½(1 + cos(π (epoch - 1 - w) / (epochs - w)))``
    - cosine_at: ``base_lr * ½(1 + cos(π (epoch - w) / (epochs - w + 1)))``: with w = 0 the GKL-AT
      recipe ``½(1 + cos(π epoch / (epochs + 1)))``; with a warm-up, the authors' AT and ImageNet-LT
      scripts (``adjust_learning_rate(_cosine)`` with ``lr_warmup`` / ``warmup_epochs``)
    - constant: ``base_lr``
    - poly: ``base_lr * (1 - (epoch - 1 - w) / (epochs - w)) ** power``
    - usb_cosine: ``base_lr * cos(num_cycles · π (epoch - 1 - w) / (epochs - w))``
    """
    if isinstance(epoch, bool) or not isinstance(epoch, int) or not 1 <= epoch <= epochs:
        raise ValueError(f"epoch: expected an integer in [1, {epochs}], got {epoch!r}")
    if settings.kind == "one_cycle":
        return one_cycle_at(epoch - 1, epochs, base_lr=base_lr, settings=settings)[0]
    warmup = settings.warmup_epochs
    if warmup > 0 and epoch <= warmup:
        return base_lr * epoch / warmup
    if settings.kind == "multistep":
        passed = sum(1 for m in settings.milestones if epoch > m)
        return base_lr * settings.gamma**passed
    if settings.kind == "cosine":
        progress = (epoch - 1 - warmup) / (epochs - warmup)
        return base_lr * 0.5 * (1.0 + math.cos(math.pi * progress))
    if settings.kind == "cosine_at":
        return base_lr * 0.5 * (1.0 + math.cos(math.pi * (epoch - warmup) / (epochs - warmup + 1)))
    if settings.kind == "constant":
        return base_lr
    progress = (epoch - 1 - warmup) / (epochs - warmup)
    if settings.kind == "poly":
        return base_lr * (1.0 - progress) ** settings.power
    if settings.kind == "usb_cosine":
        return base_lr * max(0.0, math.cos(math.pi * settings.num_cycles * progress))
    raise ValueError(f"settings.kind: unknown schedule {settings.kind!r}")


def scaled_base_lr(lr: float, *, global_batch_size: int, reference_batch_size: int | None) -> float:
    """The LR-scaling rule: ``lr * global_batch_size / reference_batch_size`` (``lr`` if no reference)."""
    if reference_batch_size is None:
        return lr
    if global_batch_size < 1:
        raise ValueError(f"global_batch_size: expected a positive integer, got {global_batch_size!r}")
    return lr * global_batch_size / reference_batch_size


class EpochLRSchedule:
    """Sets the learning rate of every parameter group at the start of each epoch."""

    def __init__(
        self, optimizer: torch.optim.Optimizer, *, base_lr: float, epochs: int, settings: ScheduleSettings
    ) -> None:
        self.optimizer = optimizer
        self.base_lr = float(base_lr)
        self.epochs = int(epochs)
        self.settings = settings
        self.last_epoch = 0

    def lr_at(self, epoch: int) -> float:
        return learning_rate_at(epoch, base_lr=self.base_lr, epochs=self.epochs, settings=self.settings)

    def start_epoch(self, epoch: int) -> float:
        """Set the LR for ``epoch`` and return it."""
        lr = self.lr_at(epoch)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        self.last_epoch = epoch
        return lr

    def state_dict(self) -> dict:
        return {
            "base_lr": self.base_lr,
            "epochs": self.epochs,
            "last_epoch": self.last_epoch,
            "kind": self.settings.kind,
        }

    def load_state_dict(self, state: dict) -> None:
        # base_lr may legitimately differ (LR scaling after a change of world size).
        for key in ("epochs", "kind"):
            mine = self.state_dict()[key]
            if state.get(key) != mine:
                raise ValueError(f"schedule state: checkpoint has {key}={state.get(key)!r}, this run has {mine!r}")
        self.last_epoch = int(state["last_epoch"])


def learning_rate_at_step(step: int, *, base_lr: float, total_steps: int, settings: ScheduleSettings) -> float:
    """Learning rate of global optimizer ``step`` (1-based) under ``unit: step`` (formulas above)."""
    if isinstance(step, bool) or not isinstance(step, int) or not 1 <= step <= total_steps:
        raise ValueError(f"step: expected an integer in [1, {total_steps}], got {step!r}")
    if settings.kind == "one_cycle":
        return one_cycle_at(step - 1, total_steps, base_lr=base_lr, settings=settings)[0]
    k, warmup = step - 1, settings.warmup_steps
    if k < warmup:
        return base_lr * k / warmup
    t, span = k - warmup, max(1, total_steps - warmup)
    kind = settings.kind
    if kind == "multistep":
        return base_lr * settings.gamma ** sum(1 for m in settings.milestones if step > m)
    if kind == "cosine":
        return base_lr * 0.5 * (1.0 + math.cos(math.pi * t / span))
    if kind == "poly":
        return base_lr * (1.0 - t / span) ** settings.power
    if kind == "usb_cosine":
        return base_lr * max(0.0, math.cos(math.pi * settings.num_cycles * t / span))
    if kind == "constant":
        return base_lr
    raise ValueError(f"schedule.kind: {kind!r} has no per-step form (use schedule.unit: epoch)")


class LRSchedule:
    """Sets every parameter group's ``lr = lr_at(step) * group['lr_scale']`` (scale 1 if absent), and
    its ``momentum`` (:meth:`momentum_at`) when the schedule cycles it (``momentum_range``).

    ``step`` is the global optimizer step counting from 1. With ``unit: epoch`` the LR of step
    ``s`` is :func:`learning_rate_at` of epoch ``(s - 1) // steps_per_epoch + 1`` of
    ``ceil(total_steps / steps_per_epoch)`` epochs, so it is constant within an epoch and equal
    to the older :class:`EpochLRSchedule`; with ``unit: step`` it is :func:`learning_rate_at_step`.

    The LR is a pure function of the step rather than the state of a
    ``torch.optim.lr_scheduler.LambdaLR``: resuming from any step (mid-epoch included) needs
    only that step, and the same function reports the LR for logs.
    """

    def __init__(
        self,
        optimizer: torch.optim.Optimizer,
        *,
        base_lr: float,
        steps_per_epoch: int,
        total_steps: int,
        settings: ScheduleSettings,
    ) -> None:
        for name, value in (("steps_per_epoch", steps_per_epoch), ("total_steps", total_steps)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name}: expected a positive integer, got {value!r}")
        self.optimizer = optimizer
        self.base_lr = float(base_lr)
        self.steps_per_epoch = steps_per_epoch
        self.total_steps = total_steps
        self.epochs = -(-total_steps // steps_per_epoch)
        self.settings = settings
        self.last_step = 0
        if settings.unit == "epoch" and settings.warmup_epochs > self.epochs:
            raise InputError(
                f"schedule.warmup_epochs: expected at most the run's {self.epochs} epochs, got {settings.warmup_epochs}"
            )
        if settings.unit == "step" and settings.warmup_steps >= total_steps:
            raise InputError(
                f"schedule.warmup_steps: expected fewer than the run's {total_steps} steps, got {settings.warmup_steps}"
            )
        if settings.kind == "one_cycle":  # the warm-up needs a length: an InputError now, not at step 1
            one_cycle_at(0, self.epochs if settings.unit == "epoch" else total_steps, base_lr=1.0, settings=settings)

    def epoch_of(self, step: int) -> int:
        """The epoch (from 1) that global ``step`` (from 1) falls in."""
        return (step - 1) // self.steps_per_epoch + 1

    def _check_step(self, step: int) -> None:
        if isinstance(step, bool) or not isinstance(step, int) or not 1 <= step <= self.total_steps:
            raise ValueError(f"step: expected an integer in [1, {self.total_steps}], got {step!r}")

    def lr_at(self, step: int) -> float:
        """Base learning rate (before ``lr_scale``) of global ``step``."""
        if self.settings.unit == "epoch":
            self._check_step(step)
            return learning_rate_at(
                self.epoch_of(step), base_lr=self.base_lr, epochs=self.epochs, settings=self.settings
            )
        return learning_rate_at_step(step, base_lr=self.base_lr, total_steps=self.total_steps, settings=self.settings)

    def momentum_at(self, step: int) -> float | None:
        """SGD momentum of global ``step`` under ``momentum_range`` (one_cycle), else None (left as set)."""
        if self.settings.kind != "one_cycle" or self.settings.momentum_range is None:
            return None
        self._check_step(step)
        if self.settings.unit == "epoch":
            position, total = self.epoch_of(step) - 1, self.epochs
        else:
            position, total = step - 1, self.total_steps
        return one_cycle_at(position, total, base_lr=self.base_lr, settings=self.settings)[1]

    def apply(self, step: int) -> float:
        """Set the learning rates (and a cycled momentum) for ``step`` and return the base LR."""
        lr = self.lr_at(step)
        momentum = self.momentum_at(step)
        for group in self.optimizer.param_groups:
            group["lr"] = lr * group.get("lr_scale", 1.0)
            if momentum is not None:
                group["momentum"] = momentum
        self.last_step = step
        return lr

    def state_dict(self) -> dict:
        return {
            "base_lr": self.base_lr,
            "unit": self.settings.unit,
            "kind": self.settings.kind,
            "epochs": self.epochs,
            "total_steps": self.total_steps,
            "steps_per_epoch": self.steps_per_epoch,
            "last_step": self.last_step,
        }

    def load_state_dict(self, state: dict) -> None:
        # base_lr may legitimately differ (LR scaling after a change of world size); so may the
        # steps of an epoch-unit run, whose length is its number of epochs.
        keys = ("unit", "kind") + (("epochs",) if self.settings.unit == "epoch" else ("total_steps",))
        mine = self.state_dict()
        for key in keys:
            if state.get(key) != mine[key]:
                raise ValueError(f"schedule state: checkpoint has {key}={state.get(key)!r}, this run has {mine[key]!r}")
        self.last_step = int(state["last_step"])
