"""Settings of the CLIP kinds (``clip_train``, ``clip_distill``): data, loss, evaluation, cross-section rules.

Values only (stdlib + gkl.utils); the implementations live in gkl.models.clip,
gkl.data.image_text, gkl.clip, gkl.objectives.clip_distill and gkl.metrics.zeroshot/retrieval.
Paper naming: α weights the wMSE term, β the soft-label cross-entropy.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal, Optional

from gkl.settings.teacher import check_teacher
from gkl.utils.errors import ConfigError
from gkl.utils.validation import check_choice as _choice, check_number as _number

__all__ = ["ClipDistillSettings", "ClipDataSettings", "ClipEvalSettings", "CLIP_KINDS", "check_clip_config"]


def _check_str(owner: str, name: str, value: object, *, optional: bool = False) -> None:
    if value is None and optional:
        return
    if not isinstance(value, str) or not value:
        raise ValueError(f"{owner}.{name}: expected a non-empty string, got {value!r}")


@dataclass
class ClipDistillSettings:
    """``clip_distill`` section: loss = contrastive_weight · CLIP loss + distill_weight · term.

    method: "kl" (OpenCLIP's DistillClipLoss term, the paper's KL-KD) | "gkl" | "ikl" | "dkl".
    GKL uses sample-wise weights softmax(teacher logits / weight_temperature) (paper Sec. 4.4).
    local_loss / gather_with_grad: OpenCLIP's DDP options; the defaults make every row
    span the global batch with exact gradients.
    """

    method: Literal["kl", "gkl", "ikl", "dkl"] = "gkl"
    contrastive_weight: float = 1.0
    distill_weight: float = 1.0
    alpha: float = 1.0
    beta: float = 1.0
    gamma: float = 1.0
    temperature: float = 1.0
    weight_temperature: float = 1.0
    normalize: Literal["weights", "batch"] = "weights"
    local_loss: bool = False
    gather_with_grad: bool = True
    clamp_logit_scale: float = 100.0  #: OpenCLIP clamps the learned scale to <= 100 after each step

    def __post_init__(self) -> None:
        _choice("clip_distill", "method", self.method, ("kl", "gkl", "ikl", "dkl"))
        _choice("clip_distill", "normalize", self.normalize, ("weights", "batch"))
        for name in ("contrastive_weight", "distill_weight", "alpha", "beta", "gamma"):
            _number("clip_distill", name, getattr(self, name), minimum=0.0)
        for name in ("temperature", "weight_temperature", "clamp_logit_scale"):
            _number("clip_distill", name, getattr(self, name), minimum=0.0, strict=True)
        for name in ("local_loss", "gather_with_grad"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"clip_distill.{name}: expected a bool, got {getattr(self, name)!r}")


@dataclass
class ClipDataSettings:
    """``clip_data`` section of a CLIP run (batch size and workers are ``data.batch_size`` / ``data.num_workers``).

    format: "csv" (caption CSV/TSV: ``train`` is the file), "webdataset" (``train`` is a
    shard pattern such as ``shards/{00000..01023}.tar``), or "digits" (bundled demo set).
    samples_per_epoch: webdataset only (required there): shards are resampled with
    replacement and an epoch is this many pairs (the paper: 15M pairs of DataComp-1B per epoch).
    """

    format: Literal["csv", "webdataset", "digits"] = "csv"
    train: Optional[str] = None
    image_key: str = "filepath"
    caption_key: str = "title"
    separator: Optional[str] = None  #: None: tab for .tsv files, comma otherwise
    samples_per_epoch: Optional[int] = None
    shuffle_buffer: int = 1000

    def __post_init__(self) -> None:
        _choice("clip_data", "format", self.format, ("csv", "webdataset", "digits"))
        if self.format != "digits":
            _check_str("clip_data", "train", self.train)
        elif self.train is not None:
            raise ValueError("clip_data.train: not used with clip_data.format 'digits' (the bundled set)")
        for name in ("image_key", "caption_key"):
            _check_str("clip_data", name, getattr(self, name))
        if self.samples_per_epoch is not None:
            _number("clip_data", "samples_per_epoch", self.samples_per_epoch, minimum=1, integer=True)
            if self.format != "webdataset":
                raise ValueError("clip_data.samples_per_epoch: only for clip_data.format 'webdataset'")
        elif self.format == "webdataset":
            raise ValueError("clip_data.samples_per_epoch: required for clip_data.format 'webdataset' "
                             "(pairs per epoch; shards are resampled, as OpenCLIP's --train-num-samples)")
        _number("clip_data", "shuffle_buffer", self.shuffle_buffer, minimum=0, integer=True)


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

    zeroshot: Optional[str] = None
    classnames: Optional[str] = None
    templates: Literal["openai", "simple", "digits"] = "openai"
    retrieval: Optional[str] = None

    def __post_init__(self) -> None:
        for name in ("zeroshot", "classnames", "retrieval"):
            _check_str("clip_eval", name, getattr(self, name), optional=True)
        _choice("clip_eval", "templates", self.templates, ("openai", "simple", "digits"))
        if self.classnames is not None and self.zeroshot is None:
            raise ValueError("clip_eval.classnames: only with clip_eval.zeroshot")

    def metrics(self) -> tuple[str, ...]:
        """The metric names this evaluation reports (for ``train.select_metric``)."""
        names: tuple[str, ...] = ()
        if self.zeroshot is not None:
            names += ("zeroshot_top1", "zeroshot_top5")
        if self.retrieval is not None:
            names += tuple(f"{d}_R@{k}" for d in ("i2t", "t2i") for k in (1, 5, 10))
        return names


CLIP_KINDS = ("clip_train", "clip_distill")
#: data keys a CLIP run does not read (its pairs are described by clip_data)
_UNUSED_DATA_KEYS = ("name", "root", "download", "in_memory", "normalize", "generated_path", "generated_ratio",
                     "label_noise")


def check_clip_config(cfg) -> None:
    """Cross-section rules of the CLIP kinds on an ExperimentConfig ``cfg`` (ConfigError naming the key).

    ``clip_data`` / ``clip_eval`` belong to the CLIP kinds only, ``clip_distill`` to kind
    ``clip_distill``; a CLIP run refuses gradient accumulation and data keys it would ignore.
    """
    kind = cfg.kind
    clip = kind in CLIP_KINDS
    for section in ("clip_data", "clip_eval"):
        if not clip and getattr(cfg, section) is not None:
            raise ConfigError(f"{section}: section used by kinds {' and '.join(CLIP_KINDS)} only, not {kind!r}")
    if kind != "clip_distill" and cfg.clip_distill is not None:
        raise ConfigError(f"clip_distill: section used by kind 'clip_distill' only, not {kind!r}")
    if not clip:
        return
    if cfg.clip_data is None:
        raise ConfigError(f"clip_data: kind {kind!r} needs a 'clip_data' section (format and train file)")
    k = cfg.train.accumulate_steps
    if k != 1:
        raise ConfigError(
            f"train.accumulate_steps: expected 1 for kind {kind!r}, got {k}: the contrastive and distillation "
            "losses normalise every row over the whole batch, so they do not decompose over micro-batches "
            "(as in OpenCLIP without its feature cache); raise data.batch_size or the number of processes")
    defaults = type(cfg.data)()
    for key in _UNUSED_DATA_KEYS:
        if getattr(cfg.data, key) != getattr(defaults, key):
            raise ConfigError(f"data.{key}: not used by kind {kind!r} (its image-text pairs are clip_data)")
    if cfg.data.val_fraction > 0 and cfg.clip_data.format != "digits":
        raise ConfigError("data.val_fraction: a held-out validation split is available for clip_data.format "
                          f"'digits' only, got {cfg.clip_data.format!r}")
    if cfg.data.val_fraction > 0 and (cfg.clip_eval is None or cfg.clip_eval.zeroshot is None):
        raise ConfigError("data.val_fraction: the validation split is scored by zero-shot classification; "
                          "set clip_eval.zeroshot")
    if kind == "clip_distill":
        check_teacher(cfg.teacher, "kind 'clip_distill'", section="OpenCLIP name and checkpoint",
                      weights="the teacher's OpenCLIP weight file")
        if cfg.clip_distill is None:
            cfg.clip_distill = ClipDistillSettings()
    elif cfg.teacher is not None:
        raise ConfigError(f"teacher: section used by kinds 'distill' and 'clip_distill', not {kind!r}")
    available = cfg.clip_eval.metrics() if cfg.clip_eval is not None else ()
    if available and cfg.train.select_metric not in available:
        raise ConfigError(f"train.select_metric: expected one of {list(available)} for this CLIP evaluation, "
                          f"got {cfg.train.select_metric!r}")
