"""Settings of the CLIP kinds (``clip_train``, ``clip_distill``): data, loss, evaluation, cross-section rules.

Values only (stdlib + gkl.utils); the implementations live in gkl.models.clip,
gkl.data.image_text, gkl.clip, gkl.objectives.clip_distill and gkl.metrics.zeroshot/retrieval.
Paper naming: α weights the wMSE term, β the soft-label cross-entropy.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Literal

from gkl.settings._variants import UnionConstructor
from gkl.settings.kl_family import DKLTerm, GKLTerm, IKLTerm, check_kl_family
from gkl.settings.loss_choice import RegisteredLoss, check_registered_loss
from gkl.settings.teacher import check_teacher
from gkl.utils.errors import ConfigError
from gkl.utils.validation import check_bool, check_choice, fail
from gkl.utils.validation import check_number as _number


def _choice(owner: str, name: str, value: object, choices: tuple) -> None:
    check_choice(owner, name, value, choices, error=ConfigError)


__all__ = [
    "ClipDistillSettings",
    "ClipKLSettings",
    "ClipDKLSettings",
    "ClipIKLSettings",
    "ClipGKLSettings",
    "ClipLogitLossSettings",
    "CLIP_DISTILL_SETTINGS",
    "ClipDataSettings",
    "ClipEvalSettings",
    "check_clip_config",
]


def _check_str(owner: str, name: str, value: object, *, optional: bool = False) -> None:
    if value is None and optional:
        return
    if not isinstance(value, str) or not value:
        raise fail(owner, name, "a non-empty string", value, error=ConfigError)


@dataclass
class ClipDistillSettings(UnionConstructor):
    """``clip_distill`` section: loss = contrastive_weight · CLIP loss + distill_weight · term.

    A tagged union on ``method`` (one class per method, :mod:`gkl.settings._variants`):
    "kl" (``temperature``; the registry's T² · KL, see docs/clip.md) | "dkl" | "ikl" | "gkl"
    (the shared KL-family settings, :mod:`gkl.settings.kl_family`) | any other registered logit
    loss by name (``temperature`` + ``loss_params``). GKL/IKL use sample-wise weights
    softmax(teacher logits / weight_temperature) (paper Sec. 4.4).
    local_loss / gather_with_grad: OpenCLIP's DDP options; the defaults make every row
    span the global batch with exact gradients.
    ``ClipDistillSettings(method=..., ...)`` builds the matching class.
    """

    variant_key: ClassVar[str] = "method"
    section: ClassVar[str] = "clip_distill"

    method: str = "gkl"
    contrastive_weight: float = 1.0
    distill_weight: float = 1.0
    local_loss: bool = False
    gather_with_grad: bool = True
    clamp_logit_scale: float = 100.0  #: OpenCLIP clamps the learned scale to <= 100 after each step

    @classmethod
    def variants(cls) -> dict[str, type[ClipDistillSettings]]:
        return CLIP_DISTILL_SETTINGS

    @classmethod
    def generic_variant(cls) -> type[ClipDistillSettings]:
        return ClipLogitLossSettings

    def __post_init__(self) -> None:
        owner = "clip_distill"
        if type(self) is ClipLogitLossSettings:
            if (
                not isinstance(self.method, str)
                or not self.method.isidentifier()
                or self.method in CLIP_DISTILL_SETTINGS
            ):
                raise fail(owner, "method", "the name of a registered logit loss", self.method, error=ConfigError)
            check_registered_loss(self, owner)
        elif type(self) not in CLIP_DISTILL_SETTINGS.values():
            raise TypeError("ClipDistillSettings is the common base: call ClipDistillSettings(method=..., ...)")
        else:
            expected = next(m for m, cls in CLIP_DISTILL_SETTINGS.items() if cls is type(self))
            if self.method != expected:
                raise fail(owner, "method", f"{expected!r} for {type(self).__name__}", self.method, error=ConfigError)
        for name in ("contrastive_weight", "distill_weight"):
            _number(owner, name, getattr(self, name), minimum=0.0, error=ConfigError)
        _number(owner, "clamp_logit_scale", self.clamp_logit_scale, minimum=0.0, strict=True, error=ConfigError)
        if isinstance(self, ClipKLSettings):
            _number(owner, "temperature", self.temperature, minimum=0.0, strict=True, error=ConfigError)
        check_kl_family(self, owner)
        for name in ("local_loss", "gather_with_grad"):
            check_bool(owner, name, getattr(self, name), error=ConfigError)


@dataclass
class ClipKLSettings(ClipDistillSettings):
    """``kl``: T² · KL(softmax(L_t/T) ‖ softmax(L_s/T)) per row (the registry's ``kl``)."""

    method: str = "kl"
    temperature: float = 1.0


@dataclass
class ClipDKLSettings(DKLTerm, ClipDistillSettings):
    """``dkl``: T² · DKL (Eq. 5) of the logits divided by T."""

    method: str = "dkl"


@dataclass
class ClipIKLSettings(IKLTerm, ClipDistillSettings):
    """``ikl``: IKL with sample-wise weights (γ = 1, per-row normalisation)."""

    method: str = "ikl"


@dataclass
class ClipGKLSettings(GKLTerm, ClipDistillSettings):
    """``gkl``: GKL with sample-wise weights softmax(L_t / τ_w)."""

    method: str = "gkl"


@dataclass
class ClipLogitLossSettings(RegisteredLoss, ClipDistillSettings):
    """Any other registered logit loss by name: its ``temperature`` and ``loss_params``."""

    method: str = "kl"


#: method name -> settings class (any other registered logit loss: :class:`ClipLogitLossSettings`).
CLIP_DISTILL_SETTINGS: dict[str, type[ClipDistillSettings]] = {
    "kl": ClipKLSettings,
    "gkl": ClipGKLSettings,
    "ikl": ClipIKLSettings,
    "dkl": ClipDKLSettings,
}


@dataclass
class ClipDataSettings:
    """``clip_data`` section of a CLIP run (batch size and workers are ``data.batch_size`` / ``data.num_workers``).

    format: "csv" (caption CSV/TSV: ``train`` is the file), "webdataset" (``train`` is a
    shard pattern such as ``shards/{00000..01023}.tar``), or "digits" (bundled demo set).
    samples_per_epoch: webdataset only (required there): shards are resampled with
    replacement and an epoch is this many pairs (the paper: 15M pairs of DataComp-1B per epoch).
    """

    format: Literal["csv", "webdataset", "digits"] = "csv"
    train: str | None = None
    image_key: str = "filepath"
    caption_key: str = "title"
    separator: str | None = None  #: None: tab for .tsv files, comma otherwise
    samples_per_epoch: int | None = None
    shuffle_buffer: int = 1000

    def __post_init__(self) -> None:
        _choice("clip_data", "format", self.format, ("csv", "webdataset", "digits"))
        if self.format != "digits":
            _check_str("clip_data", "train", self.train)
        elif self.train is not None:
            raise fail(
                "clip_data",
                "train",
                "null with clip_data.format 'digits' (the bundled set)",
                self.train,
                error=ConfigError,
            )
        for name in ("image_key", "caption_key"):
            _check_str("clip_data", name, getattr(self, name))
        if self.samples_per_epoch is not None:
            _number(
                "clip_data", "samples_per_epoch", self.samples_per_epoch, minimum=1, integer=True, error=ConfigError
            )
            if self.format != "webdataset":
                raise fail(
                    "clip_data",
                    "samples_per_epoch",
                    "null unless clip_data.format is 'webdataset'",
                    self.samples_per_epoch,
                    error=ConfigError,
                )
        elif self.format == "webdataset":
            raise fail(
                "clip_data",
                "samples_per_epoch",
                "the pairs per epoch for clip_data.format 'webdataset' "
                "(shards are resampled, as OpenCLIP's --train-num-samples)",
                None,
                error=ConfigError,
            )
        _number("clip_data", "shuffle_buffer", self.shuffle_buffer, minimum=0, integer=True, error=ConfigError)


@dataclass
class ClipEvalSettings:
    """``clip_eval`` section: zero-shot classification and/or image-text retrieval (batch: data.eval_batch_size).

    zeroshot: ImageFolder-layout folder (ImageNet val, -V2, -Sketch, -R), or "digits"
    (the bundled held-out digits). classnames: optional file, one name per line in
    sorted-folder order (default: derived from the folder names, ImageNet wnids and
    indices mapped to OpenCLIP's ImageNet names). templates: "openai" (80), "simple"
    (7), or "digits" (the five caption templates of the bundled set). retrieval: caption
    CSV/TSV for recall@1/5/10 (read with clip_data's column names and separator).
    """

    zeroshot: str | None = None
    classnames: str | None = None
    templates: Literal["openai", "simple", "digits"] = "openai"
    retrieval: str | None = None

    def __post_init__(self) -> None:
        for name in ("zeroshot", "classnames", "retrieval"):
            _check_str("clip_eval", name, getattr(self, name), optional=True)
        _choice("clip_eval", "templates", self.templates, ("openai", "simple", "digits"))
        if self.classnames is not None and self.zeroshot is None:
            raise fail(
                "clip_eval", "classnames", "null unless clip_eval.zeroshot is set", self.classnames, error=ConfigError
            )

    def metrics(self) -> tuple[str, ...]:
        """The metric names this evaluation reports (for ``train.select_metric``)."""
        names: tuple[str, ...] = ()
        if self.zeroshot is not None:
            names += ("zeroshot_top1", "zeroshot_top5")
        if self.retrieval is not None:
            names += tuple(f"{d}_R@{k}" for d in ("i2t", "t2i") for k in (1, 5, 10))
        return names


#: data keys a CLIP run does not read (its pairs are described by clip_data)
_UNUSED_DATA_KEYS = (
    "name",
    "root",
    "download",
    "in_memory",
    "normalize",
    "generated_path",
    "generated_ratio",
    "label_noise",
)


def check_clip_config(cfg, *, distill: bool) -> None:
    """Cross-section rules of a CLIP run on an ExperimentConfig ``cfg`` (ConfigError naming the key).

    A CLIP run needs ``clip_data``, refuses gradient accumulation and data keys it would ignore;
    ``distill`` (the CLIP distillation task) requires a teacher, otherwise a teacher is refused.
    The task registry (:mod:`gkl.tasks`) calls this with the task's own ``distill`` value.
    """
    kind = cfg.kind
    if cfg.clip_data is None:
        raise ConfigError(f"clip_data: kind {kind!r} needs a 'clip_data' section (format and train file)")
    k = cfg.train.accumulate_steps
    if k != 1:
        raise ConfigError(
            f"train.accumulate_steps: expected 1 for kind {kind!r}, got {k}: the contrastive and distillation "
            "losses normalise every row over the whole batch, so they do not decompose over micro-batches "
            "(as in OpenCLIP without its feature cache); raise data.batch_size or the number of processes"
        )
    defaults = type(cfg.data)()
    for key in _UNUSED_DATA_KEYS:
        if getattr(cfg.data, key) != getattr(defaults, key):
            raise ConfigError(f"data.{key}: not used by kind {kind!r} (its image-text pairs are clip_data)")
    if cfg.data.val_fraction > 0 and cfg.clip_data.format != "digits":
        raise ConfigError(
            "data.val_fraction: a held-out validation split is available for clip_data.format "
            f"'digits' only, got {cfg.clip_data.format!r}"
        )
    if cfg.data.val_fraction > 0 and (cfg.clip_eval is None or cfg.clip_eval.zeroshot is None):
        raise ConfigError(
            "data.val_fraction: the validation split is scored by zero-shot classification; set clip_eval.zeroshot"
        )
    if distill:
        check_teacher(
            cfg.teacher,
            f"kind {kind!r}",
            section="OpenCLIP name and checkpoint",
            weights="the teacher's OpenCLIP weight file",
        )
    elif cfg.teacher is not None:
        raise ConfigError(f"teacher: not used by kind {kind!r} (it trains without a teacher)")
    available = cfg.clip_eval.metrics() if cfg.clip_eval is not None else ()
    if available and cfg.train.select_metric not in available:
        raise ConfigError(
            f"train.select_metric: expected one of {list(available)} for this CLIP evaluation, "
            f"got {cfg.train.select_metric!r}"
        )
