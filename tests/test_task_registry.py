"""The task registry: built-in tasks, entry points loaded lazily and once, broken plugins named, no clashes."""

from __future__ import annotations

from importlib.metadata import EntryPoint

import pytest

from gkl.tasks import Section, Task, get_task, list_tasks, register, registry
from gkl.utils.errors import ConfigError


@pytest.fixture
def fresh(monkeypatch: pytest.MonkeyPatch):
    """An empty registry that loads the built-ins and the given entry points on first use."""
    points: list[EntryPoint] = []
    calls: list[str] = []

    def entry_points(*, group: str) -> list[EntryPoint]:
        calls.append(group)
        return list(points)

    monkeypatch.setattr(registry, "_TASKS", {})
    monkeypatch.setattr(registry, "_BROKEN", {})
    monkeypatch.setattr(registry, "_loaded", False)
    monkeypatch.setattr(registry, "entry_points", entry_points)
    return points, calls


def _task(name: str, command: str) -> Task:
    return Task(
        name=name,
        command=command,
        help="a test task",
        build=lambda cfg, dist: None,
        evaluate=lambda *a, **k: None,
        sections=(Section(name, int, default=0),),
    )


ALIEN = _task("alien", "alien-fit")


def test_entry_points_are_read_once_and_broken_ones_are_named(fresh) -> None:
    points, calls = fresh
    points += [
        EntryPoint("alien", f"{__name__}:ALIEN", "gkl.tasks"),
        EntryPoint("ghost", "gkl_no_such_module:TASK", "gkl.tasks"),
        EntryPoint("liar", f"{__name__}:ALIEN", "gkl.tasks"),
        EntryPoint("thing", f"{__name__}:_task", "gkl.tasks"),
    ]
    names = [t.name for t in list_tasks()]
    builtin = ("train", "distill", "adv_train", "ssl", "segmentation", "clip_train", "clip_distill", "lm_distill")
    assert names == [*builtin, "alien"]
    assert get_task("alien") is ALIEN and calls == ["gkl.tasks"]  # loaded once
    with pytest.raises(ConfigError, match=r"^kind: task 'ghost' is installed but did not load \(ModuleNotFoundError"):
        get_task("ghost")
    with pytest.raises(ConfigError, match=r"task 'liar' is installed but did not load .*registered under 'liar'"):
        get_task("liar")
    with pytest.raises(ConfigError, match=r"task 'thing' is installed but did not load .*not a gkl.tasks.Task"):
        get_task("thing")
    with pytest.raises(ConfigError, match=r"^kind: unknown task 'alein'; did you mean 'alien'\?"):
        get_task("alein")


def test_kinds_and_commands_are_unique(fresh) -> None:
    list_tasks()
    assert register(get_task("ssl")) is get_task("ssl")  # the same object again: a no-op
    with pytest.raises(ValueError, match="kind 'ssl' is already registered"):
        register(_task("ssl", "other-verb"))
    with pytest.raises(ValueError, match="command 'distill' is already the command of 'distill'"):
        register(_task("new_kind", "distill"))
    with pytest.raises(TypeError, match="Task.teacher"):
        Task(name="x", command="x", help="x", build=print, evaluate=print, teacher="sometimes")


def test_sections_of_other_kinds_read_as_none_and_unknown_attributes_fail() -> None:
    from pathlib import Path

    from gkl.config import load_config

    cfg = load_config(Path(__file__).resolve().parents[1] / "configs" / "demo" / "teacher.yaml")
    assert cfg.sections == {"label_smoothing": 0.0} and cfg.label_smoothing == 0.0
    assert cfg.distill is None and cfg.clip_eval is None
    with pytest.raises(AttributeError, match="no attribute 'distil'"):
        cfg.distil  # noqa: B018
    cfg.label_smoothing = 0.2
    assert cfg.sections["label_smoothing"] == 0.2
