"""The experiment config: one typed schema for ``gkl train``, ``gkl distill`` and ``gkl adv-train``.

A config is a YAML file (recipes live in ``configs/``; ``base:`` pulls in a shared file)
plus ``key=value`` overrides on the command line. :func:`load_config` validates the whole
tree (unknown keys, types, cross-section rules) before any work starts.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Sequence

from gkl.config_schema import apply_overrides, deep_merge, from_dict, load_yaml, read_yaml_file, to_dict
from gkl.settings._variants import drop_unused_keys
from gkl.settings.adversarial import ADVERSARIAL_SETTINGS, AdversarialSettings, GKLATSettings
from gkl.settings.clip import ClipDataSettings, ClipDistillSettings, ClipEvalSettings, check_clip_config
from gkl.settings.distill import DistillSettings, GKLSettings
from gkl.settings.segmentation import SegmentationSettings, check_segmentation_config
from gkl.settings.ssl import SSLSettings
from gkl.settings.teacher import check_teacher
from gkl.settings.train import TrainSettings
from gkl.utils.errors import ConfigError, InputError
from gkl.utils.validation import check_int, check_number, fail

__all__ = [
    "ConfigError", "DataConfig", "ModelConfig", "TeacherConfig", "ExperimentConfig", "load_config",
    "config_from_dict", "recorded_config_from_dict", "to_dict",
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
        if self.generated_ratio > 0 and self.generated_path is None:
            raise ConfigError("data.generated_path: expected an npz of generated images when "
                              f"data.generated_ratio > 0 (it is {self.generated_ratio}), got null")


@dataclass
class ModelConfig:
    """A registry model name, an optional checkpoint to load, extra constructor arguments."""

    name: str
    checkpoint: str | None = None
    kwargs: dict[str, Any] = field(default_factory=dict)
    checkpoint_key: str | None = None  #: e.g. "ema" to load the averaged weights of our checkpoints


@dataclass
class TeacherConfig(ModelConfig):
    """The frozen teacher of a distillation run: a registry model and its trained weights.

    ``checkpoint`` is required; ``random_init: true`` instead distills from randomly
    initialised weights on purpose (tests, sanity baselines).
    """

    random_init: bool = False

    def __post_init__(self) -> None:
        if self.random_init and self.checkpoint is not None:
            raise ConfigError("teacher.random_init: expected false when teacher.checkpoint is set "
                              f"(the teacher either loads {self.checkpoint!r} or starts from random weights)")


@dataclass
class ExperimentConfig:
    """A whole run. ``kind`` picks the objective family; the matching section must be present."""

    kind: Literal["train", "distill", "adv_train", "ssl", "segmentation", "clip_train", "clip_distill"]
    model: ModelConfig
    name: str = "run"
    out_dir: str = "runs"
    data: DataConfig = field(default_factory=DataConfig)
    teacher: TeacherConfig | None = None
    distill: DistillSettings | None = None
    adversarial: AdversarialSettings | None = None
    ssl: SSLSettings | None = None  #: for kind "ssl" (FixMatch / Mean-Teacher, docs/ssl.md)
    segmentation: SegmentationSettings | None = None  #: for kind "segmentation" (docs/segmentation.md)
    clip_data: ClipDataSettings | None = None  #: kinds "clip_train" / "clip_distill" (docs/clip.md)
    clip_eval: ClipEvalSettings | None = None
    clip_distill: ClipDistillSettings | None = None
    label_smoothing: float = 0.0  #: for kind "train"
    train: TrainSettings = field(default_factory=TrainSettings)

    def __post_init__(self) -> None:
        check_number("", "label_smoothing", self.label_smoothing, minimum=0.0, error=ConfigError)
        if self.label_smoothing >= 1.0:
            raise fail("", "label_smoothing", "a value in [0, 1)", self.label_smoothing, error=ConfigError)
        if self.kind != "train" and self.label_smoothing != 0.0:
            raise fail("", "label_smoothing", f"0 for kind {self.kind!r} (it applies to kind 'train' only)",
                       self.label_smoothing, error=ConfigError)
        if self.kind == "distill":
            check_teacher(self.teacher, "kind 'distill'")
            if self.distill is None:
                self.distill = GKLSettings()
        if self.kind == "adv_train" and self.adversarial is None:
            self.adversarial = GKLATSettings()
        if self.kind != "distill" and self.distill is not None:
            raise ConfigError(f"distill: section used by kind 'distill' only, not {self.kind!r}")
        if self.kind != "adv_train" and self.adversarial is not None:
            raise ConfigError(f"adversarial: section used by kind 'adv_train' only, not {self.kind!r}")
        if self.kind == "ssl" and self.ssl is None:
            self.ssl = SSLSettings()
        if self.kind != "ssl" and self.ssl is not None:
            raise ConfigError(f"ssl: section used by kind 'ssl' only, not {self.kind!r}")
        if self.kind == "segmentation":
            check_segmentation_config(self)  # fills in the section; teacher and select_metric rules
        elif self.segmentation is not None:
            raise ConfigError(f"segmentation: section used by kind 'segmentation' only, not {self.kind!r}")
        check_clip_config(self)  # OpenCLIP names are checked when the CLIP models are built
        if not self.kind.startswith("clip_"):
            self._check_names()

    def _check_names(self) -> None:
        """Dataset and model names exist, and every model takes this dataset's inputs."""
        from gkl.data import dataset_info, list_datasets
        from gkl.models import list_models, model_input_kind

        if self.data.name not in list_datasets():
            raise ConfigError(f"data.name: expected a known dataset ({', '.join(list_datasets())}), "
                              f"got {self.data.name!r}")
        kind = dataset_info(self.data.name).input_kind
        for section, model in (("model", self.model), ("teacher", self.teacher)):
            if model is None or (section == "teacher" and self.kind not in ("distill", "segmentation")):
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


def config_from_dict(data: dict[str, Any]) -> ExperimentConfig:
    """Validate a plain dict into an :class:`ExperimentConfig` (errors name the dotted key)."""
    return from_dict(ExperimentConfig, data)


def recorded_config_from_dict(data: dict[str, Any]) -> ExperimentConfig:
    """A run's recorded ``config.yaml``, also one written by an earlier gkl.

    Earlier versions recorded every method's settings and ``attack_steps`` for every budget,
    and let a distillation run start from a random teacher without saying so. The settings
    that did not take part in the run are dropped and ``teacher.random_init`` is set where
    the teacher had no checkpoint, so the result describes what ran. A config written by
    this version is returned unchanged.
    """
    data = deep_merge({}, data)
    for key, union in (("distill", DistillSettings), ("ssl", SSLSettings), ("segmentation", SegmentationSettings),
                       ("clip_distill", ClipDistillSettings)):
        if isinstance(data.get(key), dict):
            data[key] = drop_unused_keys(union, data[key])
    adversarial = data.get("adversarial")
    if isinstance(adversarial, dict):
        adversarial = drop_unused_keys(AdversarialSettings, adversarial)
        method_class = ADVERSARIAL_SETTINGS.get(adversarial.get("method", AdversarialSettings.method))
        default_budget = method_class.attack_budget if method_class is not None else "fixed"
        if adversarial.get("attack_budget", default_budget) != "fixed":
            adversarial.pop("attack_steps", None)
            adversarial.pop("attack_step_size", None)
        data["adversarial"] = adversarial
    teacher = data.get("teacher")
    if data.get("kind") == "distill" and isinstance(teacher, dict) and teacher.get("checkpoint") is None:
        teacher.setdefault("random_init", True)
    return config_from_dict(data)


def load_config(path: str | Path | None, overrides: list[str] | tuple[str, ...] = (), *,
                defaults: dict[str, Any] | None = None) -> ExperimentConfig:
    """Read ``path`` (or start from ``defaults``), apply ``key=value`` overrides, validate."""
    data: dict[str, Any] = dict(defaults or {})
    if path is not None:
        data = deep_merge(data, load_yaml(path))
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
