"""The experiment config: one typed schema for every run (``gkl fit`` and the task verbs).

A config is a YAML file (recipes live in ``configs/``; ``base:`` pulls in a shared file)
plus ``key=value`` overrides on the command line. :func:`load_config` validates the whole
tree (unknown keys, types, cross-section rules) before any work starts.

The common keys (``kind``, ``model``, ``name``, ``out_dir``, ``data``, ``teacher``, ``train``)
are :class:`ExperimentConfig`'s fields; every other top-level key is a section of the task
named by ``kind`` (:mod:`gkl.tasks`: ``distill:``, ``adversarial:``, ``segmentation:``, ...),
read as ``cfg.<section>``. A section of another task is an error naming it.
"""

from __future__ import annotations

import dataclasses
import difflib
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from gkl import config_schema
from gkl.config_schema import apply_overrides, deep_merge, from_dict, load_yaml, read_yaml_file
from gkl.recipes import resolve_recipe
from gkl.settings.train import TrainSettings
from gkl.tasks import Task, get_task, list_tasks
from gkl.utils.errors import ConfigError, InputError
from gkl.utils.validation import check_choice, check_int, check_number, fail

__all__ = [
    "ConfigError",
    "DataConfig",
    "ModelConfig",
    "TeacherConfig",
    "ExperimentConfig",
    "load_config",
    "config_from_dict",
    "recorded_config_from_dict",
    "to_dict",
]


@dataclass
class LabelNoiseConfig:
    """``data.label_noise``: training labels replaced as :class:`gkl.data.LabelNoise` does.

    rate: fraction in [0, 1) of training examples that get a wrong label; kind: ``symmetric``
    (uniform over the other classes) or ``asymmetric`` (a fixed class map, docs/study.md);
    seed: the noise's own seed (the same on every rank and for every ``train.seed``).
    The test set always keeps its clean labels.
    """

    rate: float
    kind: Literal["symmetric", "asymmetric"] = "symmetric"
    seed: int = 0

    def __post_init__(self) -> None:
        check_number("data.label_noise", "rate", self.rate, minimum=0.0, error=ConfigError)
        if self.rate >= 1.0:
            raise fail("data.label_noise", "rate", "a value in [0, 1)", self.rate, error=ConfigError)
        check_int("data.label_noise", "seed", self.seed, minimum=0, error=ConfigError)


@dataclass
class DataConfig:
    """Which dataset, where, and how it is loaded."""

    name: str = "digits"
    root: str = "data"
    download: bool = False  #: torchvision download for CIFAR when online
    batch_size: int = 64  #: per process; the global batch is batch_size × world size
    eval_batch_size: int = 256
    num_workers: int = 4  #: per-image DataLoader workers (ignored by the in-memory path)
    in_memory: bool = False  #: whole split as a tensor on the device, augmentation on batches
    normalize: bool = True  #: False: inputs in [0, 1] (adversarial training normalises inside the model)
    generated_path: str | None = None  #: DM-AT style npz of generated images
    generated_ratio: float = 0.0  #: fraction of each training batch drawn from generated_path
    #: epoch of mixed batches: one pass over the real examples ("real_pass"), or ceil(real examples /
    #: batch_size) batches ("real_count", DM-AT's sampler: each epoch a random part of the real set)
    generated_epoch: Literal["real_pass", "real_count"] = "real_pass"
    label_noise: LabelNoiseConfig | None = None  #: noisy training labels (the test set stays clean)
    #: fraction of the training set held out (stratified) for model selection: best.pt and the
    #: best epoch are chosen on it, and test top-1 is reported at the last and the best-val epoch
    val_fraction: float = 0.0
    val_seed: int = 0  #: seed of the stratified hold-out (independent of train.seed)

    def __post_init__(self) -> None:
        for name in ("batch_size", "eval_batch_size"):
            check_int("data", name, getattr(self, name), minimum=1, error=ConfigError)
        check_int("data", "num_workers", self.num_workers, minimum=0, error=ConfigError)
        check_number("data", "generated_ratio", self.generated_ratio, minimum=0.0, error=ConfigError)
        if self.generated_ratio >= 1.0:
            raise fail("data", "generated_ratio", "a value in [0, 1)", self.generated_ratio, error=ConfigError)
        check_number("data", "val_fraction", self.val_fraction, minimum=0.0, error=ConfigError)
        if self.val_fraction >= 1.0:
            raise fail("data", "val_fraction", "a value in [0, 1)", self.val_fraction, error=ConfigError)
        check_int("data", "val_seed", self.val_seed, minimum=0, error=ConfigError)
        check_choice("data", "generated_epoch", self.generated_epoch, ("real_pass", "real_count"), error=ConfigError)
        if self.generated_epoch != "real_pass" and self.generated_path is None:
            raise ConfigError(
                f"data.generated_epoch: {self.generated_epoch!r} sets the epoch of mixed real/generated batches; "
                "it needs data.generated_path"
            )
        if self.generated_ratio > 0 and self.generated_path is None:
            raise ConfigError(
                "data.generated_path: expected an npz of generated images when "
                f"data.generated_ratio > 0 (it is {self.generated_ratio}), got null"
            )


@dataclass
class ModelConfig:
    """A registry model name, an optional checkpoint to load, extra constructor arguments."""

    name: str
    checkpoint: str | None = None
    kwargs: dict[str, Any] = field(default_factory=dict)
    checkpoint_key: str | None = None  #: e.g. "ema" to load the averaged weights of our checkpoints
    #: USB's ImageNet-pretrained ViT weights: classifier dropped, pos_embed resized (gkl.models.vit_pretrained)
    pretrained: str | None = None


@dataclass
class TeacherConfig(ModelConfig):
    """The frozen teacher of a distillation run: a registry model and its trained weights.

    ``checkpoint`` is required; ``random_init: true`` instead distills from randomly
    initialised weights on purpose (tests, sanity baselines).
    """

    random_init: bool = False

    def __post_init__(self) -> None:
        if self.random_init and self.checkpoint is not None:
            raise ConfigError(
                "teacher.random_init: expected false when teacher.checkpoint is set "
                f"(the teacher either loads {self.checkpoint!r} or starts from random weights)"
            )


@dataclass
class ExperimentConfig:
    """A whole run. ``kind`` names its task (:func:`gkl.tasks.get_task`); the task's sections are in
    ``sections`` and read as attributes (``cfg.distill``); another task's section reads as None."""

    kind: str
    model: ModelConfig
    name: str = "run"
    out_dir: str = "runs"
    data: DataConfig = field(default_factory=DataConfig)
    teacher: TeacherConfig | None = None
    train: TrainSettings = field(default_factory=TrainSettings)
    sections: dict[str, Any] = field(default_factory=dict)  #: the task's sections by name, filled in

    def __post_init__(self) -> None:
        task = get_task(self.kind)
        extra = set(self.sections) - set(task.section_names)
        if extra:
            raise ConfigError(
                f"{sorted(extra)[0]}: not a section of kind {self.kind!r} "
                f"(its sections: {', '.join(task.section_names) or 'none'})"
            )
        filled = {}
        for section in task.sections:
            value = self.sections.get(section.name, section.default)
            filled[section.name] = section.fill() if value is None and section.fill is not None else value
        object.__setattr__(self, "sections", filled)
        if task.check is not None:
            task.check(self)  # cross-section rules: teacher, select_metric, data keys the task ignores
        if task.registry_names:
            self._check_names(task)

    def __getattr__(self, name: str) -> Any:
        sections = self.__dict__.get("sections")
        if sections is not None and not name.startswith("__"):
            if name in sections:
                return sections[name]
            if any(name in task.section_names for task in list_tasks()):
                return None  # a section of another kind
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")

    def __setattr__(self, name: str, value: Any) -> None:
        sections = self.__dict__.get("sections")
        if sections is not None and name in sections:
            sections[name] = value
        else:
            object.__setattr__(self, name, value)

    def _check_names(self, task: Task) -> None:
        """Dataset and model names exist, and every model takes this dataset's inputs."""
        from gkl.data import dataset_info, list_datasets
        from gkl.models import list_models, model_input_kind

        if self.data.name not in list_datasets():
            raise ConfigError(
                f"data.name: expected a known dataset ({', '.join(list_datasets())}), got {self.data.name!r}"
            )
        kind = dataset_info(self.data.name).input_kind
        for section, model in (("model", self.model), ("teacher", self.teacher)):
            if model is None or (section == "teacher" and task.teacher == "none"):
                continue
            if model.name not in list_models():
                close = difflib.get_close_matches(model.name, list_models(), n=3)
                hint = f" (did you mean {', '.join(close)}?)" if close else ""
                raise ConfigError(f"{section}.name: unknown model {model.name!r}{hint}")
            if model_input_kind(model.name) != kind:
                raise ConfigError(
                    f"{section}.name: model {model.name!r} takes {model_input_kind(model.name)!r} inputs, "
                    f"but dataset {self.data.name!r} gives {kind!r} inputs"
                )

    @property
    def run_dir(self) -> Path:
        return Path(self.out_dir) / self.name


#: the top-level keys every config has (the rest are sections of its task)
COMMON_KEYS = tuple(f.name for f in dataclasses.fields(ExperimentConfig) if f.name != "sections")
_SECTION_CLASSES: dict[str, tuple[Task, type]] = {}


def _sections_class(task: Task) -> type:
    """A dataclass of the task's sections, so the schema checks them like any section (cached per task)."""
    cached = _SECTION_CLASSES.get(task.name)
    if cached is None or cached[0] is not task:
        for section in task.sections:
            if section.name in COMMON_KEYS or section.name == "sections":
                raise ConfigError(f"kind {task.name!r}: its section {section.name!r} is a common config key")
        cls = dataclasses.make_dataclass(
            f"{task.name}_sections", [(s.name, s.annotation, field(default=s.default)) for s in task.sections]
        )
        cached = _SECTION_CLASSES[task.name] = (task, cls)
    return cached[1]


def _foreign_section(key: str, value: Any, kind: str) -> Exception | None:
    """The error of top-level ``key`` in a config of ``kind`` when ``key`` is another task's section;
    None when it holds that section's default (a ``config.yaml`` of an earlier gkl listed them all)."""
    owners = [t for t in list_tasks() if key in t.section_names]
    if not owners:
        return None
    default = owners[0].section(key).default
    if value is None or value == default:
        return None
    names = " and ".join(repr(t.name) for t in owners)
    if default is None:
        return ConfigError(f"{key}: section used by kind{'s' if len(owners) > 1 else ''} {names} only, not {kind!r}")
    return fail("", key, f"{default:g} for kind {kind!r} (it applies to kind {names} only)", value, error=ConfigError)


def config_from_dict(data: dict[str, Any]) -> ExperimentConfig:
    """Validate a plain dict into an :class:`ExperimentConfig` (errors name the dotted key)."""
    if not isinstance(data, dict):
        raise ConfigError(f"config: expected a mapping of config keys, got {type(data).__name__}")
    if "kind" not in data:
        return from_dict(ExperimentConfig, {k: v for k, v in data.items() if k in COMMON_KEYS})  # names what is missing
    task = get_task(data["kind"])
    common: dict[str, Any] = {}
    sections: dict[str, Any] = {}
    for key, value in data.items():
        if key in COMMON_KEYS:
            common[key] = value
        elif key in task.section_names:
            sections[key] = value
        elif key in [n for t in list_tasks() for n in t.section_names]:
            error = _foreign_section(key, value, task.name)
            if error is not None:
                raise error
        else:
            valid = [*COMMON_KEYS, *task.section_names]
            close = difflib.get_close_matches(str(key), valid, n=1)
            hint = f"; did you mean '{close[0]}'?" if close else ""
            raise ConfigError(
                f"unknown config key '{key}'{hint} (valid keys for kind {task.name!r}: {', '.join(sorted(valid))})"
            )
    typed: Any = from_dict(_sections_class(task), sections)  # a dataclass made per task at run time
    train = common.get("train")
    if train is None or isinstance(train, dict):  # the task's model selection unless the config picks one
        common["train"] = {"select_metric": task.select_metric, "select_mode": task.select_mode, **(train or {})}
    return from_dict(ExperimentConfig, {**common, "sections": {n: getattr(typed, n) for n in task.section_names}})


def to_dict(obj: Any) -> Any:
    """The plain (YAML-serialisable) form of a config: for an :class:`ExperimentConfig` the layout of
    ``config.yaml`` (common keys, the task's sections before ``train``); any other dataclass field by field."""
    if not isinstance(obj, ExperimentConfig):
        return config_schema.to_dict(obj)
    out: dict[str, Any] = {}
    for name in COMMON_KEYS:
        if name == "train":
            out.update({k: config_schema.to_dict(v) for k, v in obj.sections.items()})
        out[name] = config_schema.to_dict(getattr(obj, name))
    return out


def recorded_config_from_dict(data: dict[str, Any]) -> ExperimentConfig:
    """A run's recorded ``config.yaml``, also one written by an earlier gkl.

    Earlier versions recorded every method's settings and ``attack_steps`` for every budget,
    let a distillation run start from a random teacher without saying so, and listed every
    kind's sections (null when unused). Each section of the run's task is upgraded by its
    ``Section.upgrade``; ``teacher.random_init`` is set where a task that requires a teacher had
    none with a checkpoint, so the result describes what ran. A config written by this version
    is returned unchanged.
    """
    data = deep_merge({}, data)
    try:
        task = get_task(data.get("kind"))
    except ConfigError:
        return config_from_dict(data)  # names the unknown kind
    for section in task.sections:
        if section.upgrade is not None and isinstance(data.get(section.name), dict):
            data[section.name] = section.upgrade(data[section.name])
    teacher = data.get("teacher")
    if task.teacher == "required" and isinstance(teacher, dict) and teacher.get("checkpoint") is None:
        teacher.setdefault("random_init", True)
    return config_from_dict(data)


def load_config(
    path: str | Path | None, overrides: list[str] | tuple[str, ...] = (), *, defaults: dict[str, Any] | None = None
) -> ExperimentConfig:
    """Read ``path`` (or start from ``defaults``), apply ``key=value`` overrides, validate."""
    data: dict[str, Any] = dict(defaults or {})
    if path is not None:
        data = deep_merge(data, load_yaml(resolve_recipe(path)))  # a local file, or a recipe name
    data = apply_overrides(data, list(overrides))
    return config_from_dict(data)


def load_run_config(run_dir: Path, overrides: Sequence[str] = ()) -> ExperimentConfig:
    """The resolved config a run recorded in ``config.yaml``, with overrides applied."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise InputError(f"run directory not found: {run_dir}")
    path = run_dir / "config.yaml"
    if not path.is_file():
        raise InputError(f"{run_dir} is not a gkl run directory: {path} is missing")
    data = read_yaml_file(path) or {}
    return recorded_config_from_dict(apply_overrides(data, list(overrides)))
