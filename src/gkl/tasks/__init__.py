"""Tasks: one module per config ``kind`` and the registry that finds them.

A :class:`Task` declares a kind's config sections, CLI verb, teacher rule, model selection and
summary columns, and builds its run (``build(cfg, dist) -> RunParts``) and its ``gkl evaluate``.
``gkl.config``, ``gkl.cli``, the sweep, ``gkl evaluate`` and the runner read the registry; no
module outside this package names a kind. Third-party tasks register through the entry-point
group ``gkl.tasks`` (docs/training.md, "Adding a task").
"""

from gkl.tasks.base import Section, Task, TeacherMode
from gkl.tasks.registry import ENTRY_POINT_GROUP, get_task, list_tasks, register, task_of_command

__all__ = [
    "ENTRY_POINT_GROUP",
    "Section",
    "Task",
    "TeacherMode",
    "get_task",
    "list_tasks",
    "register",
    "task_of_command",
]
