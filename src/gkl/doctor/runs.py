"""The runs ``gkl doctor`` trains: the bundled demo recipes of every task, a few steps each.

A demo recipe is a shipped recipe under a ``demo`` directory (``demo/``, ``demo_at/``,
``ssl/demo/``, ...); a task with none there (its recipes are demo-sized where they are, as
``lm/``'s) contributes its GKL recipe from any folder. The task of a recipe is its ``kind``;
nothing here names a kind. A recipe
whose teacher is a checkpoint file gets the ``teacher`` recipe of its directory trained first
(a few steps, as the sweep chains a study's teacher run). A run's training and evaluation batches
hold at most :data:`MAX_BATCH` examples, and its evaluations read only the first :data:`EVAL_BATCHES`
batches of each evaluation split (:func:`first_eval_batches`, :func:`first_batches`): the evaluator
still runs end to end, on fewer examples.
"""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

__all__ = [
    "EVAL_BATCHES",
    "MAX_BATCH",
    "DemoRuns",
    "PlannedStop",
    "demo_recipes",
    "first_batches",
    "first_eval_batches",
    "stop_after_batches",
]

#: every run is a few optimizer steps with no warm-up, no tracker and no progress bar
SHORT_RUN = (
    "train.iterations={steps}",
    "train.epochs=null",
    "train.loggers=[]",
    "train.progress=false",
    "train.schedule.warmup_epochs=0",
    "train.schedule.warmup_steps=0",
)
TEACHER_RECIPE = "teacher"
#: examples per training and evaluation batch at most (``data.batch_size``, ``data.eval_batch_size``; the
#: demos' smallest training batch: the language-model and SSL demos train on theirs, so the language
#: model's fused loss still spans several chunks)
MAX_BATCH = 16
#: batches of each evaluation split (eval, val) a run's evaluation reads (two: the evaluator still adds up
#: several batches where a split has them)
EVAL_BATCHES = 2


def _is_demo(name: str) -> bool:
    return any(part == "demo" or part.startswith("demo_") for part in name.split("/")[:-1])


def demo_recipes() -> dict[str, str]:
    """``{kind: recipe name}``: one bundled demo recipe per task (a GKL one where the task has one); a
    task with no recipe under a demo folder gets one of its other recipes (the GKL one)."""
    from gkl.config_schema import load_yaml
    from gkl.recipes import is_study, list_recipes, read_recipe, recipes_root

    root = recipes_root()
    demos: dict[str, list[str]] = {}
    others: dict[str, list[str]] = {}  # a task without a demo folder: its recipes elsewhere
    for name in list_recipes():
        path = root / f"{name}.yaml"
        if not is_study(read_recipe(path)):
            kind = load_yaml(path).get("kind")
            if isinstance(kind, str):
                (demos if _is_demo(name) else others).setdefault(kind, []).append(name)
    by_kind = {kind: demos.get(kind) or names for kind, names in {**others, **demos}.items()}
    return {
        kind: next((n for n in names if "gkl" in n.rsplit("/", 1)[-1]), names[0]) for kind, names in by_kind.items()
    }


class PlannedStop(KeyboardInterrupt):
    """Raised by :func:`stop_after_batches`: the run stops as on Ctrl-C, keeping its last checkpoint."""


class _StoppingLoader:
    """A train loader that raises :class:`PlannedStop` when asked for batch number ``limit + 1``."""

    def __init__(self, loader: Any, limit: int) -> None:
        self._loader, self._limit, self._served = loader, limit, 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self._loader, name)

    def __len__(self) -> int:
        return len(self._loader)

    def __iter__(self):
        for batch in self._loader:
            if self._served == self._limit:
                raise PlannedStop()
            self._served += 1
            yield batch


def stop_after_batches(limit: int) -> Callable[[Any], Any]:
    """``adapt_parts`` for :func:`gkl.runner.run_experiment`: stop the run after ``limit`` batches."""

    def adapt(parts: Any) -> Any:
        parts.train_loader = _StoppingLoader(parts.train_loader, limit)
        return parts

    return adapt


class _FirstBatches:
    """An evaluation loader that yields its first ``limit`` batches only (its ``len`` says so); every
    other attribute (``rank_shard``, ``batch_size``, ...) is the wrapped loader's."""

    def __init__(self, loader: Any, limit: int) -> None:
        self._loader, self._limit = loader, limit

    def __getattr__(self, name: str) -> Any:
        return getattr(self.__dict__["_loader"], name)

    def __len__(self) -> int:
        return min(len(self._loader), self._limit)

    def __iter__(self):
        return itertools.islice(iter(self._loader), self._limit)


def first_batches(split: Any, limit: int) -> Any:
    """``split`` capped at ``limit`` batches: a loader is wrapped; a split made of several loaders (a
    dataclass of them, as a CLIP run's zero-shot and caption loaders) gets each of them wrapped. An
    evaluator that reads the loader's ``dataset`` instead of iterating it (retrieval's) still reads it whole."""
    if split is None:
        return None
    if dataclasses.is_dataclass(split) and not isinstance(split, type) and not hasattr(split, "__iter__"):
        fields = {f.name: getattr(split, f.name) for f in dataclasses.fields(split)}
        return dataclasses.replace(split, **{k: first_batches(v, limit) for k, v in fields.items() if v is not None})
    return _FirstBatches(split, limit)


def first_eval_batches(limit: int) -> Callable[[Any], Any]:
    """``adapt_parts`` for :func:`gkl.runner.run_experiment`: every evaluation of the run reads only the
    first ``limit`` batches of the eval and val splits (the evaluator, its metrics and the model
    selection run as before, on fewer examples)."""

    def adapt(parts: Any) -> Any:
        parts.eval_loader = first_batches(parts.eval_loader, limit)
        parts.val_loader = first_batches(parts.val_loader, limit)
        return parts

    return adapt


class DemoRuns:
    """Loads and trains short demo runs under ``root`` on ``device``; teachers are trained once.

    ``dist``: the process's place in a job the caller set up (every run, teachers included, trains in it).
    ``data_root``: the runs' ``data.root`` (default: ``root/data``; the bundled data sets are written there).
    ``eval_batches``: the batches of each evaluation split every run evaluates (:func:`first_eval_batches`;
    None: all of them).
    """

    def __init__(
        self,
        root: Path,
        device: str,
        steps: int = 2,
        dist: Any = None,
        data_root: Path | None = None,
        eval_batches: int | None = EVAL_BATCHES,
    ) -> None:
        self.root, self.device, self.steps, self.dist = Path(root), device, steps, dist
        self.eval_batches = eval_batches
        self.data_root = self.root / "data" if data_root is None else Path(data_root)
        self.teachers: dict[str, Path] = {}  # teacher recipe -> its trained checkpoint
        self._names = itertools.count()

    def config(self, recipe: str, overrides: Sequence[str] = (), *, run: str | None = None) -> Any:
        """The recipe's config as a short run in a folder of its own (``run``: its name, default: fresh)."""
        from gkl.config import load_config
        from gkl.config_schema import load_yaml
        from gkl.recipes import resolve_recipe

        path = resolve_recipe(recipe)
        name = run or f"{recipe.replace('/', '_')}_{next(self._names)}"
        common = [f"out_dir={self.root}", f"name={name}", f"train.device={self.device}"]
        common += [item.format(steps=self.steps) for item in SHORT_RUN]
        data = load_yaml(path).get("data")
        if isinstance(data, dict) and "root" in data:  # the kinds that read data.root (CLIP reads clip_data)
            common.append(f"data.root={self.data_root}")
        cfg = load_config(path, common)
        for key in ("batch_size", "eval_batch_size"):  # a few steps check the code path, not the batch size
            size = getattr(getattr(cfg, "data", None), key, None)
            if isinstance(size, int) and size > MAX_BATCH:
                common.append(f"data.{key}={MAX_BATCH}")
        teacher = getattr(cfg, "teacher", None)
        if teacher is not None and getattr(teacher, "checkpoint", None):
            common += self._teacher_overrides(recipe, cfg.kind)
        return load_config(path, [*common, *overrides])

    def _teacher_overrides(self, recipe: str, kind: str) -> list[str]:
        from gkl.tasks import get_task

        directory = recipe.rsplit("/", 1)[0]
        teacher_recipe = f"{directory}/{TEACHER_RECIPE}"
        if teacher_recipe not in self.teachers:
            cfg = self.config(teacher_recipe, run=f"{directory.replace('/', '_')}_teacher")
            self.train(cfg)
            self.teachers[teacher_recipe] = cfg.run_dir / "best.pt"
        overrides = [f"teacher.checkpoint={self.teachers[teacher_recipe]}"]
        key = get_task(kind).teacher_checkpoint_key
        if key is not None:
            overrides.append(f"teacher.checkpoint_key={key}")
        return overrides

    def train(
        self, cfg: Any, *, resume: bool = False, adapt_parts: Callable[[Any], Any] | None = None
    ) -> dict[str, Any]:
        """Train ``cfg``, its evaluations capped at ``eval_batches`` (``adapt_parts``: a further
        :func:`gkl.runner.run_experiment` adaptation, applied after the cap)."""
        from gkl.runner import run_experiment

        adapters = [first_eval_batches(self.eval_batches)] if self.eval_batches is not None else []
        adapters += [adapt_parts] if adapt_parts is not None else []

        def adapt(parts: Any) -> Any:
            for adapter in adapters:
                parts = adapter(parts)
            return parts

        return run_experiment(cfg, resume=resume, dist=self.dist, adapt_parts=adapt if adapters else None)
