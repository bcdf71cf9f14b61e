"""A third-party gkl task used by tests/test_toy_task.py: noisy linear regression on procedural data.

This module is the task's declaration (cheap to import: a settings class and the Task); the
model, data, objective and evaluator are in ``gkl_toy_impl``, imported when the task runs. The
test installs it through an entry point (group ``gkl.tasks``) of a dist-info written at test time.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from gkl.tasks import Section, Task
from gkl.utils.errors import ConfigError


@dataclass
class ToySettings:
    """The ``toy:`` section: ``features`` inputs, ``train_examples`` / ``eval_examples`` drawn with
    ``data_seed``, targets ``x @ w + noise * N(0, 1)``; ``batch_delay`` seconds of sleep per batch
    (slows a run down so a test can kill it; changes no number)."""

    features: int = 4
    train_examples: int = 64
    eval_examples: int = 32
    noise: float = 0.1
    data_seed: int = 0
    batch_delay: float = 0.0

    def __post_init__(self) -> None:
        for name in ("features", "train_examples", "eval_examples"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"toy.{name}: expected an integer >= 1, got {value!r}")
        if not self.noise >= 0.0:
            raise ConfigError(f"toy.noise: expected a value >= 0, got {self.noise!r}")


def check(cfg: Any) -> None:
    if cfg.data.batch_size > cfg.toy.train_examples:
        raise ConfigError(
            f"data.batch_size: expected at most toy.train_examples ({cfg.toy.train_examples}), "
            f"got {cfg.data.batch_size}"
        )


def build(cfg: Any, dist: Any) -> Any:
    from gkl_toy_impl import build_parts

    return build_parts(cfg, dist)


def evaluate(cfg: Any, run_dir: Any, paths: Any, **kwargs: Any) -> Any:
    from gkl_toy_impl import evaluate_run

    return evaluate_run(cfg, run_dir, paths, **kwargs)


TASK = Task(
    name="toy",
    command="toy-fit",
    help="fit a linear regression on procedural data (a test task)",
    sections=(Section("toy", ToySettings | None, fill=ToySettings),),
    select_metric="mse",
    select_mode="min",
    summary_metrics=("mae",),
    registry_names=False,
    check=check,
    build=build,
    evaluate=evaluate,
    evaluation="mse / mae",
)
