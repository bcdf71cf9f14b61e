"""Settings of a CLIP distillation run (``kind: clip_distill``): models, data, loss, evaluation.

Values only (stdlib + gkl.utils); the implementations live in gkl.models.clip,
gkl.data.image_text, gkl.clip, gkl.objectives.clip_distill and gkl.metrics.zeroshot/retrieval.
Paper naming: α weights the wMSE term, β the soft-label cross-entropy.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal, Optional

from gkl.utils.validation import check_choice as _choice, check_number as _number

__all__ = ["ClipModelSettings", "ClipDistillSettings", "ClipDataSettings", "ClipEvalSettings"]


def _check_str(owner: str, name: str, value: object, *, optional: bool = False) -> None:
    if value is None and optional:
        return
    if not isinstance(value, str) or not value:
        raise ValueError(f"{owner}.{name}: expected a non-empty string, got {value!r}")


@dataclass
class ClipModelSettings:
    """One CLIP: an OpenCLIP model name and an optional local weight file (``weights_only`` load)."""

    name: str = "ViT-B-16"
    pretrained: Optional[str] = None  #: local .pt/.pth/.bin/.safetensors file; never downloaded
    owner: str = field(default="model", repr=False, compare=False)

    def __post_init__(self) -> None:
        _check_str(self.owner, "name", self.name)
        _check_str(self.owner, "pretrained", self.pretrained, optional=True)


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
    """``data`` section of a CLIP run.

    format: "csv" (caption CSV/TSV: ``train`` is the file), "webdataset" (``train`` is a
    shard pattern such as ``shards/{00000..01023}.tar``), or "digits" (bundled demo set).
    samples_per_epoch: webdataset only; shards are then resampled with replacement
    and an epoch is this many pairs (the paper: 15M pairs of DataComp-1B per epoch).
    """

    format: Literal["csv", "webdataset", "digits"] = "csv"
    train: Optional[str] = None
    image_key: str = "filepath"
    caption_key: str = "title"
    separator: Optional[str] = None  #: None: tab for .tsv files, comma otherwise
    samples_per_epoch: Optional[int] = None
    shuffle_buffer: int = 1000
    workers: int = 4

    def __post_init__(self) -> None:
        _choice("data", "format", self.format, ("csv", "webdataset", "digits"))
        if self.format != "digits":
            _check_str("data", "train", self.train)
        for name in ("image_key", "caption_key"):
            _check_str("data", name, getattr(self, name))
        if self.samples_per_epoch is not None:
            _number("data", "samples_per_epoch", self.samples_per_epoch, minimum=1, integer=True)
            if self.format != "webdataset":
                raise ValueError("data.samples_per_epoch: only for data.format 'webdataset'")
        _number("data", "shuffle_buffer", self.shuffle_buffer, minimum=0, integer=True)
        _number("data", "workers", self.workers, minimum=0, integer=True)


@dataclass
class ClipEvalSettings:
    """``eval`` section: zero-shot classification and/or image-text retrieval.

    zeroshot: ImageFolder-layout folder (ImageNet val, -V2, -Sketch, -R), or "digits"
    (the bundled held-out digits). classnames: optional file, one name per line in
    sorted-folder order (default: derived from the folder names, ImageNet wnids and
    indices mapped to OpenCLIP's ImageNet names). templates: "openai" (80), "simple"
    (7), or "digits". retrieval: caption CSV/TSV for recall@1/5/10.
    """

    zeroshot: Optional[str] = None
    classnames: Optional[str] = None
    templates: Literal["openai", "simple", "digits"] = "openai"
    retrieval: Optional[str] = None
    batch_size: int = 256

    def __post_init__(self) -> None:
        for name in ("zeroshot", "classnames", "retrieval"):
            _check_str("eval", name, getattr(self, name), optional=True)
        _choice("eval", "templates", self.templates, ("openai", "simple", "digits"))
        _number("eval", "batch_size", self.batch_size, minimum=1, integer=True)
