"""The task registry: ``kind`` -> :class:`~gkl.tasks.base.Task`.

Built-in tasks are registered the first time the registry is read; third-party tasks come
from the entry-point group ``gkl.tasks`` (``name = "package.module:TASK"``, the name being
the task's kind), loaded at the same moment, once. ``register(task)`` adds one from code.
"""

from __future__ import annotations

import difflib
import logging
from importlib import import_module
from importlib.metadata import entry_points

from gkl.tasks.base import Task
from gkl.utils.errors import ConfigError

__all__ = ["ENTRY_POINT_GROUP", "get_task", "list_tasks", "register", "task_of_command"]

log = logging.getLogger(__name__)

ENTRY_POINT_GROUP = "gkl.tasks"
#: the modules of the built-in tasks, in the order the CLI lists them (each defines ``TASK``)
BUILTIN_MODULES = (
    "classification",
    "distill",
    "adversarial",
    "ssl",
    "segmentation",
    "clip_train",
    "clip_distill",
    "lm_distill",
)

_TASKS: dict[str, Task] = {}
_BROKEN: dict[str, str] = {}  #: entry point name -> why it did not load
_loaded = False


def register(task: Task) -> Task:
    """Add ``task``; its kind and command must be new (registering the same object again is a no-op)."""
    if not isinstance(task, Task):
        raise TypeError(f"register: expected a gkl.tasks.Task, got {type(task).__name__}")
    if _TASKS.get(task.name) is task:
        return task
    if task.name in _TASKS:
        raise ValueError(f"task kind {task.name!r} is already registered")
    for other in _TASKS.values():
        if other.command == task.command:
            raise ValueError(f"task {task.name!r}: command {task.command!r} is already the command of {other.name!r}")
    _TASKS[task.name] = task
    return task


def _load() -> None:
    global _loaded
    if _loaded:
        return
    _loaded = True
    for module in BUILTIN_MODULES:
        register(import_module(f"gkl.tasks.{module}").TASK)
    for point in entry_points(group=ENTRY_POINT_GROUP):
        if point.name in _TASKS:
            continue  # a second installation of the same task
        try:
            task = point.load()
            if not isinstance(task, Task):
                raise TypeError(f"{point.value} is a {type(task).__name__}, not a gkl.tasks.Task")
            if task.name != point.name:
                raise ValueError(f"{point.value} is task {task.name!r}, registered under {point.name!r}")
            register(task)
        except Exception as err:  # a broken plugin must not stop the other kinds
            _BROKEN[point.name] = f"{type(err).__name__}: {err}"
            log.warning("gkl task entry point %r (%s) did not load: %s", point.name, point.value, err)


def list_tasks() -> list[Task]:
    """Every registered task: the built-in ones first, then the entry points'."""
    _load()
    return list(_TASKS.values())


def get_task(kind: object) -> Task:
    """The task of ``kind``; an unknown kind is a ConfigError naming ``kind`` (with a close match)."""
    _load()
    if isinstance(kind, str) and kind in _TASKS:
        return _TASKS[kind]
    if isinstance(kind, str) and kind in _BROKEN:
        raise ConfigError(f"kind: task {kind!r} is installed but did not load ({_BROKEN[kind]})")
    close = difflib.get_close_matches(str(kind), list(_TASKS), n=1)
    hint = f"; did you mean {close[0]!r}?" if close else ""
    raise ConfigError(f"kind: unknown task {kind!r}{hint} (known: {', '.join(_TASKS)})")


def task_of_command(command: str) -> Task | None:
    """The task whose CLI verb is ``command``, or None."""
    return next((t for t in list_tasks() if t.command == command), None)
