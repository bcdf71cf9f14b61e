"""What a task declares: :class:`Task` (one per config ``kind``) and :class:`Section` (one config key it owns).

A task module holds one ``Task`` object. Everything the config loader, the CLI, the sweep
and ``gkl evaluate`` need to know about a kind is here; nothing outside :mod:`gkl.tasks`
names a kind. Declarations are cheap: a task module imports settings classes only, and its
``build`` / ``evaluate`` functions import the heavy code (models, data, objectives) when called.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

__all__ = ["Section", "Task", "TeacherMode"]

#: ``required``: the config needs a teacher (the sweep chains a setting's ``teacher:`` run into it);
#: ``optional``: the task's check decides (e.g. by method); ``none``: no teacher is read.
TeacherMode = Literal["required", "optional", "none"]


@dataclass(frozen=True)
class Section:
    """A top-level config key owned by a task: ``name: <type>`` (a settings dataclass or a plain type).

    ``annotation`` is what the config loader checks the value against (``Optional[X]`` for an
    optional section); ``default`` is the value when the key is absent; ``fill`` (a zero-argument
    callable) replaces an absent or null value for a run of the task (e.g. ``GKLSettings``).
    A key owned by another task is an error naming it, unless it holds ``default`` (old
    ``config.yaml`` files recorded every kind's sections, null when unused). ``upgrade`` maps the
    section as an earlier gkl recorded it (a dict) to today's keys (``recorded_config_from_dict``).
    """

    name: str
    annotation: Any
    default: Any = None
    fill: Callable[[], Any] | None = None
    upgrade: Callable[[dict], dict] | None = None
    help: str = ""


@dataclass(frozen=True)
class Task:
    """One kind of run: its config sections, CLI verb, teacher rule, model selection, builder and evaluation.

    name: the config's ``kind:`` value. command / help: the CLI verb ``gkl <command>`` (an alias of
    ``gkl fit`` that checks the kind) and its help text. sections: the top-level config keys it owns.
    teacher: see :data:`TeacherMode`. teacher_checkpoint_key: ``teacher.checkpoint_key`` the sweep sets
    when it chains a teacher run's gkl checkpoint into this task (None: the checkpoint as written).
    select_metric / select_mode: ``train.select_metric`` / ``train.select_mode`` when the config
    sets none. summary_metrics: metrics of the last evaluation that ``gkl summarize`` / ``gkl sweep``
    show besides the selected one. metric_names: the scalar metrics its evaluator writes at every
    evaluation (``top1``, ``mIoU``, ...; a name may also be a key of the evaluator's ``groups``, e.g.
    ImageNet-LT's ``many``): the columns a study setting's ``paper:`` may name (empty: ``select_metric``
    and ``summary_metrics`` only). registry_names: ``model.name`` / ``teacher.name`` / ``data.name``
    are names of the gkl model and dataset registries (checked by the config). check: cross-section
    rules, ``check(cfg)`` on the whole config after the sections are filled (raise ConfigError).
    build: ``build(cfg, dist) -> gkl.tasks.parts.RunParts``. evaluate: ``gkl evaluate``'s
    ``evaluate(cfg, run_dir, paths, *, weights, overrides, robust) -> (report, table)``, where
    ``paths`` maps ``last``/``best`` to existing checkpoint files and ``robust`` is None or a callable
    ``robust(model, eval_set) -> report`` (only for ``robust_evaluation`` tasks: the classifier tasks,
    a registry model giving class logits of a registry dataset). evaluation: what ``gkl evaluate``
    reports, for messages. analysis: ``analysis(cfg, checkpoint, device, *, attack=False) ->
    gkl.tasks.analysis.AnalysisView``, what ``gkl analyze scores|margins|tsne`` read of a run (class
    scores, labels and features per example); None (the default): the kind has no such analyses and
    ``gkl analyze`` refuses its runs in one line. feature_statistics: ``train.log_feature_stats`` applies
    to the kind (a model giving (batch, classes) logits with an ``nn.Linear`` classifier), so
    ``gkl analyze features`` can read its runs; False (the default): refused in one line. cost:
    ``cost(cfg) -> (examples_per_epoch, forward_flops, teacher_forward_flops)`` for ``gkl sweep
    --dry-run``'s estimate (:mod:`gkl.study.cost`) of a kind whose models are not registry models: the
    training examples of one epoch and the forward FLOPs of one example through the model and the
    teacher (0 without one); a ValueError's message is shown as the reason when there is no estimate.
    None (the default): the estimate is measured on the registry model and dataset.
    """

    name: str
    command: str
    help: str
    build: Callable[..., Any]
    evaluate: Callable[..., Any]
    sections: tuple[Section, ...] = ()
    teacher: TeacherMode = "none"
    teacher_checkpoint_key: str | None = None
    select_metric: str = "top1"
    select_mode: Literal["max", "min"] = "max"
    summary_metrics: tuple[str, ...] = ()
    metric_names: tuple[str, ...] = ()
    registry_names: bool = True
    check: Callable[[Any], None] | None = None
    robust_evaluation: bool = False
    evaluation: str = "top-1 / top-5"
    analysis: Callable[..., Any] | None = None
    feature_statistics: bool = False
    cost: Callable[[Any], tuple[float, float, float]] | None = None
    section_names: tuple[str, ...] = field(init=False, default=())

    def __post_init__(self) -> None:
        for name in ("name", "command", "help"):
            if not isinstance(getattr(self, name), str) or not getattr(self, name):
                raise TypeError(f"Task.{name}: expected a non-empty string, got {getattr(self, name)!r}")
        if self.teacher not in ("required", "optional", "none"):
            raise TypeError(f"Task.teacher: expected 'required', 'optional' or 'none', got {self.teacher!r}")
        if self.select_mode not in ("max", "min"):
            raise TypeError(f"Task.select_mode: expected 'max' or 'min', got {self.select_mode!r}")
        if not all(isinstance(s, Section) for s in self.sections):
            raise TypeError(f"Task.sections: expected Section objects, got {self.sections!r}")
        object.__setattr__(self, "section_names", tuple(s.name for s in self.sections))

    def metrics(self) -> tuple[str, ...]:
        """The metric names a run of this task writes at an evaluation (:attr:`metric_names`, or the
        selected metric and the summary metrics when the task declares none)."""
        return self.metric_names or tuple(dict.fromkeys((self.select_metric, *self.summary_metrics)))

    def section(self, name: str) -> Section:
        return next(s for s in self.sections if s.name == name)


def check_loss_name(settings: Any, key: str) -> None:
    """A section whose ``key`` names a logit loss outside its built-in choices (a
    :class:`~gkl.settings.loss_choice.RegisteredLoss`) names a registered loss, with parameters it
    takes: checked when the config loads, before any work starts (imports :mod:`gkl.losses` only then)."""
    from gkl.settings.loss_choice import RegisteredLoss

    if isinstance(settings, RegisteredLoss):
        from gkl.objectives.loss_choice import settings_logit_loss

        settings_logit_loss(settings, key)
