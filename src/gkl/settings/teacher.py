"""The one rule for a run that distills: a ``teacher`` section with a weights file (or, on purpose,
``random_init: true``). Duck-typed on the config's ``TeacherConfig``: settings never import the config."""

from __future__ import annotations

from typing import Any

from gkl.utils.errors import ConfigError

__all__ = ["check_teacher"]


def check_teacher(
    teacher: Any,
    needed_by: str,
    *,
    section: str = "name and checkpoint",
    weights: str = "the trained teacher's weights file",
) -> None:
    """ConfigError naming the key unless ``teacher`` is set and has a checkpoint or ``random_init``.

    ``needed_by`` names what needs it (``kind 'distill'``, ``segmentation.method 'kd'``).
    """
    if teacher is None:
        raise ConfigError(f"teacher: {needed_by} needs a 'teacher' section ({section})")
    if teacher.checkpoint is None and not teacher.random_init:
        raise ConfigError(
            f"teacher.checkpoint: expected {weights} for {needed_by}, got null (set "
            "teacher.random_init=true to distill from random weights on purpose)"
        )
