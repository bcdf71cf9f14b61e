"""The run's length in optimizer steps, and at which steps evaluations, checkpoints and log lines fall.

Epoch ``e`` (from 1) covers steps ``(e-1)·S+1 .. e·S`` with ``S = len(train_loader) // accumulate_steps``
(left-over batches of an epoch are not used); a run lasts ``train.epochs`` epochs or
``train.iterations`` steps (then possibly ending inside an epoch).
"""

from __future__ import annotations

from gkl.settings.train import TrainSettings
from gkl.utils.errors import InputError

__all__ = ["Cadence"]


class Cadence:
    """Step arithmetic of a run with ``batches_per_epoch`` train batches per epoch and rank."""

    def __init__(self, settings: TrainSettings, batches_per_epoch: int) -> None:
        k = settings.accumulate_steps
        if batches_per_epoch < k:
            raise InputError(
                f"train.accumulate_steps: {k} micro-batches per step, but the train loader "
                f"has only {batches_per_epoch} batches per epoch"
            )
        self.settings = settings
        self.steps_per_epoch = batches_per_epoch // k
        if settings.iterations is not None:
            self.total_steps = settings.iterations
        else:
            assert settings.epochs is not None  # TrainSettings sets 240 epochs when neither is given
            self.total_steps = settings.epochs * self.steps_per_epoch
        self.epochs = -(-self.total_steps // self.steps_per_epoch)
        #: step-based runs (iterations, or evaluation/checkpoints every N steps) log against the step
        self.by_steps = (
            settings.iterations is not None
            or settings.eval_every_steps is not None
            or settings.checkpoint_every_steps is not None
        )

    def epoch_of(self, step: int) -> int:
        return (step - 1) // self.steps_per_epoch + 1

    def log_x(self, step: int) -> int:
        """The x-axis of TensorBoard/trackers: the epoch for epoch-based runs, else the global step."""
        return step if self.by_steps else self.epoch_of(step)

    def due(self, step: int, every_epochs: int, every_steps: int | None, *, epoch_end: bool) -> bool:
        """Whether an evaluation/checkpoint is due after ``step`` (always after the last one)."""
        if step >= self.total_steps:
            return True
        if every_steps is not None:
            return step % every_steps == 0
        return epoch_end and self.epoch_of(step) % every_epochs == 0

    def evaluation_due(self, step: int, *, epoch_end: bool) -> bool:
        return self.due(step, self.settings.eval_every, self.settings.eval_every_steps, epoch_end=epoch_end)

    def checkpoint_due(self, step: int, *, epoch_end: bool) -> bool:
        return self.due(step, self.settings.checkpoint_every, self.settings.checkpoint_every_steps, epoch_end=epoch_end)

    def logging_step(self, in_epoch: int) -> bool:
        """Whether the ``in_epoch``-th step of an epoch shows a progress line (``train.log_every``)."""
        every = self.settings.log_every
        return bool(every) and in_epoch % every == 0
