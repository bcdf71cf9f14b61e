"""Why a training run stopped early: the engine's exceptions (the ``gkl`` command exits 3 on them)."""

from __future__ import annotations


class TrainingStopped(RuntimeError):
    """Training stopped on purpose (divergence or collapse); everything saved before is intact.

    The message names the epoch, the step or metric and the last good checkpoint.
    """


class NonFiniteLossError(TrainingStopped):
    """A loss term was NaN or infinite; raised before backward, the last checkpoint is left as it was."""


class CollapseError(TrainingStopped):
    """The selected metric stayed at chance level (``train.collapse``) and ``train.stop_on_collapse`` is set."""
