"""Typed settings of a segmentation run: the ``segmentation:`` section of its config.

``method`` picks the objective (:mod:`gkl.objectives.segmentation`):

* ``ce``  -- main cross-entropy + ``aux_weight`` · aux cross-entropy (no teacher);
* ``kd``  -- ce + ``kd_weight`` · pixel-wise ``kd_term`` (``kl`` or ``gkl``) on logits upsampled to the labels;
* ``cwd`` -- ce + ``kd_weight`` · channel-wise distillation (Shu et al. 2021) on the 1/8 logits;
* ``apd`` -- ce + ``kd_weight`` · ``kd_term`` + APD's perspective terms (Tian et al. 2022).

Paper naming for GKL: ``alpha`` weights the wMSE term, ``beta`` the soft-label CE.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal, Optional

from gkl.settings.teacher import check_teacher
from gkl.utils.errors import ConfigError
from gkl.utils.validation import check_choice, check_number

SegMethod = Literal["ce", "kd", "cwd", "apd"]
KDTerm = Literal["kl", "gkl"]
KDNormalize = Literal["pixel", "pixel_class"]


@dataclass
class SegAugmentSettings:
    """Training transform (PSPNet/APD): random scale, rotation, blur, flip, pad-and-crop."""

    crop_size: int = 473
    scale_min: float = 0.5
    scale_max: float = 2.0
    rotate: float = 10.0  #: degrees, applied with probability 0.5
    blur: bool = True
    flip: bool = True
    voc_aug: bool = False  #: Pascal VOC: train on the SBD-augmented list (train_aug.txt)

    def __post_init__(self) -> None:
        check_number("segmentation.augment", "crop_size", self.crop_size, minimum=1, integer=True)
        check_number("segmentation.augment", "scale_min", self.scale_min, minimum=0.0, strict=True)
        check_number("segmentation.augment", "scale_max", self.scale_max, minimum=self.scale_min)
        check_number("segmentation.augment", "rotate", self.rotate, minimum=0.0)


@dataclass
class SegEvalSettings:
    """Inference of the evaluator: ``whole`` image or sliding ``slide`` windows, optional flip."""

    mode: Literal["whole", "slide"] = "whole"
    crop_size: Optional[int] = None  #: window size for mode 'slide'
    stride: Optional[int] = None  #: window stride; default ceil(2/3 crop)
    flip: bool = False
    base_size: Optional[int] = None  #: resize the longer side to this first (PSPNet/APD test: 512 / 2048)

    def __post_init__(self) -> None:
        check_choice("segmentation.eval", "mode", self.mode, ("whole", "slide"))
        if self.mode == "slide" and self.crop_size is None:
            raise ValueError("segmentation.eval.crop_size: expected an integer for mode 'slide', got None")
        for name in ("crop_size", "stride", "base_size"):
            if getattr(self, name) is not None:
                check_number("segmentation.eval", name, getattr(self, name), minimum=1, integer=True)


@dataclass
class SegmentationSettings:
    """Loss weights and options of a segmentation objective (see module docstring)."""

    method: SegMethod = "ce"
    ignore_index: int = 255
    ce_weight: float = 1.0  #: main cross-entropy
    aux_weight: float = 0.4  #: auxiliary head (layer 3) cross-entropy
    head_lr_scale: float = 10.0  #: lr multiplier of the heads and APD's student adapter (PSPNet/APD: 10)
    # pixel-wise logit distillation (kd, apd)
    kd_term: KDTerm = "kl"
    kd_weight: float = 1.0  #: APD: 10
    temperature: float = 1.0  #: T of the KL / GKL soft-label term (APD, CIRKD: 1)
    kd_normalize: KDNormalize = "pixel"  #: 'pixel': per-pixel mean; 'pixel_class': also / C (APD's KLDivLoss 'mean')
    mask_ignore: bool = True  #: leave pixels labelled ignore_index out of the KD term (APD: false)
    kd_chunk_rows: Optional[int] = 32  #: KL/GKL on label-size rows in chunks (memory); null: one pass
    # GKL (kd_term: gkl)
    alpha: float = 1.0
    beta: float = 1.0
    gamma: float = 1.0
    weight_temperature: float = 1.0
    class_wise: bool = True  #: class-wise weights from a ClassPrior over labelled pixels
    normalize: Literal["weights", "batch"] = "weights"
    prior_momentum: Optional[float] = None
    # CWD (method: cwd)
    cwd_temperature: float = 4.0
    # APD (method: apd)
    apd_pred_weight: float = 10.0  #: prototype-prediction KL ("pred_kmeans_weight")
    apd_align_weight: float = 10.0  #: prototype alignment ("proto_align_weight")
    apd_temperature: float = 10.0  #: scale of the cosine similarities ("kmeans_temp")
    apd_adapter_dim: int = 512  #: hidden width of the 1x1-conv adapters ("kmeans_adapt_dim")
    apd_teacher_lr: float = 1e-5  #: Adam lr of the teacher adapter (betas 0.9, 0.99)
    augment: SegAugmentSettings = field(default_factory=SegAugmentSettings)
    eval: SegEvalSettings = field(default_factory=SegEvalSettings)
    #: use only the first N items of the training / evaluation split (smoke runs, tests);
    #: digit_scenes generates exactly N scenes. null: the whole split
    train_size: Optional[int] = None
    eval_size: Optional[int] = None

    def __post_init__(self) -> None:
        if isinstance(self.augment, dict):
            self.augment = SegAugmentSettings(**self.augment)
        if isinstance(self.eval, dict):
            self.eval = SegEvalSettings(**self.eval)
        owner = "segmentation"
        check_choice(owner, "method", self.method, ("ce", "kd", "cwd", "apd"))
        check_choice(owner, "kd_term", self.kd_term, ("kl", "gkl"))
        check_choice(owner, "kd_normalize", self.kd_normalize, ("pixel", "pixel_class"))
        check_choice(owner, "normalize", self.normalize, ("weights", "batch"))
        check_number(owner, "ignore_index", self.ignore_index, integer=True)
        for name in ("ce_weight", "aux_weight", "kd_weight", "alpha", "beta", "gamma", "apd_pred_weight",
                     "apd_align_weight", "apd_teacher_lr"):
            check_number(owner, name, getattr(self, name), minimum=0.0)
        for name in ("temperature", "weight_temperature", "cwd_temperature", "apd_temperature", "head_lr_scale"):
            check_number(owner, name, getattr(self, name), minimum=0.0, strict=True)
        check_number(owner, "apd_adapter_dim", self.apd_adapter_dim, minimum=1, integer=True)
        for name in ("train_size", "eval_size"):
            if getattr(self, name) is not None:
                check_number(owner, name, getattr(self, name), minimum=1, integer=True)
        if self.kd_chunk_rows is not None:
            check_number(owner, "kd_chunk_rows", self.kd_chunk_rows, minimum=1, integer=True)
        if self.prior_momentum is not None:
            check_number(owner, "prior_momentum", self.prior_momentum, minimum=0.0, strict=True)
            if self.prior_momentum > 1:
                raise ValueError(f"segmentation.prior_momentum: expected a value in (0, 1] or null, "
                                 f"got {self.prior_momentum!r}")
        if self.kd_term == "gkl" and self.class_wise and not self.mask_ignore:
            raise ValueError("segmentation.mask_ignore: class-wise GKL weights need a class per pixel; "
                             "set mask_ignore: true (ignored pixels are left out) or class_wise: false")

    @property
    def needs_teacher(self) -> bool:
        return self.method != "ce"


#: what :class:`gkl.metrics.segmentation.SegmentationEvaluator` returns (``train.select_metric``)
SEGMENTATION_METRICS = ("mIoU", "mAcc", "pixel_accuracy")


def check_segmentation_config(cfg: Any) -> None:
    """Rules of a ``kind: segmentation`` ExperimentConfig (duck-typed: settings never import the config).

    Fills in a default ``segmentation:`` section; a method with a teacher (kd, cwd, apd) needs
    ``teacher`` with ``checkpoint`` (or ``random_init: true``), ``ce`` takes none;
    ``train.select_metric`` is one of :data:`SEGMENTATION_METRICS` (the default ``top1`` becomes ``mIoU``).
    """
    if cfg.segmentation is None:
        cfg.segmentation = SegmentationSettings()
    method = cfg.segmentation.method
    if cfg.segmentation.needs_teacher:
        check_teacher(cfg.teacher, f"segmentation.method {method!r}")
    elif cfg.teacher is not None:
        raise ConfigError("teacher: segmentation.method 'ce' trains without a teacher; remove the 'teacher' "
                          "section (or choose method kd, cwd or apd)")
    for key, value, default in (("data.in_memory", cfg.data.in_memory, False),
                                ("data.label_noise", cfg.data.label_noise, None),
                                ("data.generated_path", cfg.data.generated_path, None)):
        if value != default:
            raise ConfigError(f"{key}: not supported by kind 'segmentation' (expected {default!r}, got {value!r})")
    if cfg.train.select_metric == "top1":  # the classification default: a segmentation run selects on mIoU
        cfg.train.select_metric = "mIoU"
    if cfg.train.select_metric not in SEGMENTATION_METRICS:
        raise ConfigError(f"train.select_metric: expected one of {list(SEGMENTATION_METRICS)} for kind "
                          f"'segmentation', got {cfg.train.select_metric!r}")
