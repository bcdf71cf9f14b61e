"""Typed settings of a segmentation run: the ``segmentation:`` section of its config.

``method`` picks the objective (:mod:`gkl.objectives.segmentation`):

* ``ce``  -- main cross-entropy + ``aux_weight`` · aux cross-entropy (no teacher);
* ``kd``  -- ce + ``kd_weight`` · pixel-wise ``kd_term`` on logits upsampled to the labels: ``kl``,
  ``gkl`` (the shared KL-family settings, :mod:`gkl.settings.kl_family`), or any other logit
  loss registered in :mod:`gkl.losses` by name (``temperature`` + ``loss_params``);
* ``cwd`` -- ce + ``kd_weight`` · channel-wise distillation (Shu et al. 2021) on the 1/8 logits;
* ``apd`` -- ce + ``kd_weight`` · ``kd_term`` + APD's perspective terms (Tian et al. 2022).

A tagged union (:mod:`gkl.settings._variants`) on ``method`` and, for ``kd`` / ``apd``, on
``kd_term``: each class holds exactly the keys its method and term use; another key is a
ConfigError naming it. Paper naming for GKL: ``alpha`` weights the wMSE term, ``beta`` the soft-label CE.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

from gkl.settings._variants import UnionConstructor
from gkl.settings.kl_family import ClassWiseWeights, GKLTerm, check_kl_family
from gkl.settings.loss_choice import RegisteredLoss, check_registered_loss
from gkl.settings.teacher import check_teacher
from gkl.utils.errors import ConfigError
from gkl.utils.validation import check_bool, check_choice, check_int, check_number, fail

SegMethod = Literal["ce", "kd", "cwd", "apd"]
KDNormalize = Literal["pixel", "pixel_class"]
_OWNER = "segmentation"


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
        owner = "segmentation.augment"
        check_int(owner, "crop_size", self.crop_size, minimum=1, error=ConfigError)
        check_number(owner, "scale_min", self.scale_min, minimum=0.0, strict=True, error=ConfigError)
        check_number(owner, "scale_max", self.scale_max, minimum=self.scale_min, error=ConfigError)
        check_number(owner, "rotate", self.rotate, minimum=0.0, error=ConfigError)
        check_bool(owner, "blur", self.blur, error=ConfigError)
        check_bool(owner, "flip", self.flip, error=ConfigError)
        check_bool(owner, "voc_aug", self.voc_aug, error=ConfigError)


@dataclass
class SegEvalSettings:
    """Inference of the evaluator: ``whole`` image or sliding ``slide`` windows, optional flip."""

    mode: Literal["whole", "slide"] = "whole"
    crop_size: int | None = None  #: window size for mode 'slide'
    stride: int | None = None  #: window stride; default ceil(2/3 crop)
    flip: bool = False
    base_size: int | None = None  #: resize the longer side to this first (PSPNet/APD test: 512 / 2048)

    def __post_init__(self) -> None:
        owner = "segmentation.eval"
        check_choice(owner, "mode", self.mode, ("whole", "slide"), error=ConfigError)
        if self.mode == "slide" and self.crop_size is None:
            raise fail(owner, "crop_size", "an integer for mode 'slide'", None, error=ConfigError)
        for name in ("crop_size", "stride", "base_size"):
            if getattr(self, name) is not None:
                check_int(owner, name, getattr(self, name), minimum=1, error=ConfigError)
        check_bool(owner, "flip", self.flip, error=ConfigError)


@dataclass
class SegmentationSettings(UnionConstructor):
    """The fields every segmentation method has (see module docstring).

    ``SegmentationSettings(method=..., kd_term=..., ...)`` builds the matching class.
    """

    variant_key: ClassVar[str] = "method"
    section: ClassVar[str] = _OWNER

    method: str = "ce"
    ignore_index: int = 255
    ce_weight: float = 1.0  #: main cross-entropy
    aux_weight: float = 0.4  #: auxiliary head (layer 3) cross-entropy
    head_lr_scale: float = 10.0  #: lr multiplier of the heads and APD's student adapter (PSPNet/APD: 10)
    augment: SegAugmentSettings = field(default_factory=SegAugmentSettings)
    eval: SegEvalSettings = field(default_factory=SegEvalSettings)
    #: use only the first N items of the training / evaluation split (smoke runs, tests);
    #: digit_scenes generates exactly N scenes. null: the whole split
    train_size: int | None = None
    eval_size: int | None = None

    @classmethod
    def variants(cls) -> dict[str, type[SegmentationSettings]]:
        return {"ce": SegCESettings, "kd": SegKDSettings, "cwd": SegCWDSettings, "apd": SegAPDSettings}

    def __post_init__(self) -> None:
        if type(self) not in _LEAVES:
            raise TypeError("SegmentationSettings is the common base: call SegmentationSettings(method=..., ...)")
        method, kd_term = _LEAVES[type(self)]
        if self.method != method:
            raise fail(_OWNER, "method", f"{method!r} for {type(self).__name__}", self.method, error=ConfigError)
        if isinstance(self, _PixelKD):
            if kd_term is not None and self.kd_term != kd_term:
                raise fail(_OWNER, "kd_term", f"{kd_term!r} for {type(self).__name__}", self.kd_term, error=ConfigError)
            if kd_term is None and (
                not isinstance(self.kd_term, str) or not self.kd_term.isidentifier() or self.kd_term in SEG_KD_TERMS
            ):
                raise fail(_OWNER, "kd_term", "the name of a registered logit loss", self.kd_term, error=ConfigError)
            check_choice(_OWNER, "kd_normalize", self.kd_normalize, ("pixel", "pixel_class"), error=ConfigError)
            check_bool(_OWNER, "mask_ignore", self.mask_ignore, error=ConfigError)
            if self.kd_chunk_rows is not None:
                check_int(_OWNER, "kd_chunk_rows", self.kd_chunk_rows, minimum=1, error=ConfigError)
        if isinstance(self.augment, dict):
            self.augment = SegAugmentSettings(**self.augment)
        if isinstance(self.eval, dict):
            self.eval = SegEvalSettings(**self.eval)
        check_int(_OWNER, "ignore_index", self.ignore_index, error=ConfigError)
        for name in ("ce_weight", "aux_weight", "kd_weight", "apd_pred_weight", "apd_align_weight", "apd_teacher_lr"):
            if hasattr(self, name):
                check_number(_OWNER, name, getattr(self, name), minimum=0.0, error=ConfigError)
        for name in ("head_lr_scale", "cwd_temperature", "apd_temperature"):
            if hasattr(self, name):
                check_number(_OWNER, name, getattr(self, name), minimum=0.0, strict=True, error=ConfigError)
        if hasattr(self, "apd_adapter_dim"):
            check_int(_OWNER, "apd_adapter_dim", self.apd_adapter_dim, minimum=1, error=ConfigError)
        for name in ("train_size", "eval_size"):
            if getattr(self, name) is not None:
                check_int(_OWNER, name, getattr(self, name), minimum=1, error=ConfigError)
        if isinstance(self, _KLTerm):
            check_number(_OWNER, "temperature", self.temperature, minimum=0.0, strict=True, error=ConfigError)
        check_kl_family(self, _OWNER)
        if isinstance(self, RegisteredLoss):
            check_registered_loss(self, _OWNER)
        if isinstance(self, _PixelKD) and isinstance(self, _GKLTerm) and self.class_wise and not self.mask_ignore:
            raise fail(
                _OWNER,
                "mask_ignore",
                "true with class-wise GKL weights, which need a class per pixel "
                "(ignored pixels are left out; or set class_wise: false)",
                self.mask_ignore,
                error=ConfigError,
            )

    @property
    def needs_teacher(self) -> bool:
        return self.method != "ce"

    @property
    def uses_class_prior(self) -> bool:
        """Whether the pixel-wise term takes class-wise weights from a ClassPrior (kd_term gkl, class_wise)."""
        return isinstance(self, _GKLTerm) and self.class_wise


@dataclass
class SegCESettings(SegmentationSettings):
    """``ce``: main CE + aux CE, no teacher."""

    method: str = "ce"


@dataclass
class SegCWDSettings(SegmentationSettings):
    """``cwd``: ce + kd_weight · channel-wise distillation at ``cwd_temperature`` on the 1/8 logits."""

    method: str = "cwd"
    kd_weight: float = 1.0
    cwd_temperature: float = 4.0


@dataclass
class _PixelKD(SegmentationSettings):
    """The pixel-wise logit term of ``kd`` and ``apd`` on logits upsampled to the labels."""

    variant_key: ClassVar[str] = "kd_term"
    kd_term: str = "kl"  #: a registered logit loss: kl, gkl, or any other name
    kd_weight: float = 1.0  #: APD: 10
    kd_normalize: KDNormalize = "pixel"  #: 'pixel': per-pixel mean; 'pixel_class': also / C (APD's KLDivLoss 'mean')
    mask_ignore: bool = True  #: leave pixels labelled ignore_index out of the KD term (APD: false)
    kd_chunk_rows: int | None = 32  #: KL/GKL on label-size rows in chunks (memory); null: one pass


@dataclass
class SegKDSettings(_PixelKD):
    """``kd``: ce + kd_weight · pixel-wise ``kd_term``."""

    variant_key: ClassVar[str] = "kd_term"
    method: str = "kd"

    @classmethod
    def variants(cls) -> dict[str, type[SegmentationSettings]]:
        return _TABLES["kd"]

    @classmethod
    def generic_variant(cls) -> type[SegmentationSettings]:
        return _GENERIC["kd"]


@dataclass
class SegAPDSettings(_PixelKD):
    """``apd``: ce + kd_weight · ``kd_term`` + APD's perspective terms (Tian et al. 2022)."""

    variant_key: ClassVar[str] = "kd_term"
    method: str = "apd"
    apd_pred_weight: float = 10.0  #: prototype-prediction KL ("pred_kmeans_weight")
    apd_align_weight: float = 10.0  #: prototype alignment ("proto_align_weight")
    apd_temperature: float = 10.0  #: scale of the cosine similarities ("kmeans_temp")
    apd_adapter_dim: int = 512  #: hidden width of the 1x1-conv adapters ("kmeans_adapt_dim")
    apd_teacher_lr: float = 1e-5  #: Adam lr of the teacher adapter (betas 0.9, 0.99)

    @classmethod
    def variants(cls) -> dict[str, type[SegmentationSettings]]:
        return _TABLES["apd"]

    @classmethod
    def generic_variant(cls) -> type[SegmentationSettings]:
        return _GENERIC["apd"]


@dataclass
class _KLTerm:
    """``kd_term: kl``: T² · KL(softmax(t/T) ‖ softmax(s/T)) per pixel (the registry's ``kl``)."""

    temperature: float = 1.0  #: APD, CIRKD: 1


@dataclass
class _GKLTerm(GKLTerm, ClassWiseWeights):
    """``kd_term: gkl``: GKL per pixel; class-wise weights from a ClassPrior over labelled pixels."""


#: the pieces a kd / apd leaf combines, for isinstance narrowing and annotations in the objectives
SegKLTermPiece = _KLTerm
SegGKLTermPiece = _GKLTerm

#: the built-in pixel-wise terms (any other registered logit loss is accepted by name).
SEG_KD_TERMS: tuple[str, ...] = ("kl", "gkl")
_TERMS: dict[str, type] = {"kl": _KLTerm, "gkl": _GKLTerm}
_TABLES: dict[str, dict[str, type[SegmentationSettings]]] = {}
_GENERIC: dict[str, type[SegmentationSettings]] = {}
_LEAVES: dict[type, tuple[str, str | None]] = {SegCESettings: ("ce", None), SegCWDSettings: ("cwd", None)}


def _leaf(method: str, kd_term: str | None) -> type[SegmentationSettings]:
    base = {"kd": SegKDSettings, "apd": SegAPDSettings}[method]
    piece = RegisteredLoss if kd_term is None else _TERMS[kd_term]
    name = f"Seg{method.upper()}{kd_term.upper() if kd_term else 'LogitLoss'}Settings"
    cls = dataclasses.make_dataclass(
        name,
        [("kd_term", str if kd_term is None else Literal[kd_term], "kl" if kd_term is None else kd_term)],
        bases=(piece, base),
    )
    cls.__module__ = __name__
    cls.__doc__ = f"segmentation.method {method!r}, kd_term " + (
        f"{kd_term!r}: {piece.__doc__}" if kd_term else "a registered logit loss by name"
    )
    return cls


for _method in ("kd", "apd"):
    _TABLES[_method] = {term: _leaf(_method, term) for term in SEG_KD_TERMS}
    _GENERIC[_method] = _leaf(_method, None)
    _LEAVES.update({cls: (_method, term) for term, cls in _TABLES[_method].items()})
    _LEAVES[_GENERIC[_method]] = (_method, None)
globals().update({cls.__name__: cls for cls in _LEAVES})  # importable by name (pickle, DDP spawn)


#: what :class:`gkl.metrics.segmentation.SegmentationEvaluator` returns (``train.select_metric``)
SEGMENTATION_METRICS = ("mIoU", "mAcc", "pixel_accuracy")


def check_segmentation_config(cfg: Any) -> None:
    """Rules of a ``kind: segmentation`` ExperimentConfig (duck-typed: settings never import the config).

    Fills in a default ``segmentation:`` section; a method with a teacher (kd, cwd, apd) needs
    ``teacher`` with ``checkpoint`` (or ``random_init: true``), ``ce`` takes none;
    ``train.select_metric`` is one of :data:`SEGMENTATION_METRICS` (the default ``top1`` becomes ``mIoU``).
    """
    if cfg.segmentation is None:
        cfg.segmentation = SegCESettings()
    method = cfg.segmentation.method
    if cfg.segmentation.needs_teacher:
        check_teacher(cfg.teacher, f"segmentation.method {method!r}")
    elif cfg.teacher is not None:
        raise ConfigError(
            "teacher: segmentation.method 'ce' trains without a teacher; remove the 'teacher' "
            "section (or choose method kd, cwd or apd)"
        )
    for key, value, default in (
        ("data.in_memory", cfg.data.in_memory, False),
        ("data.label_noise", cfg.data.label_noise, None),
        ("data.generated_path", cfg.data.generated_path, None),
    ):
        if value != default:
            raise ConfigError(f"{key}: not supported by kind {cfg.kind!r} (expected {default!r}, got {value!r})")
    if cfg.train.select_metric == "top1":  # the classification default: a segmentation run selects on mIoU
        cfg.train.select_metric = "mIoU"
    if cfg.train.select_metric not in SEGMENTATION_METRICS:
        raise ConfigError(
            f"train.select_metric: expected one of {list(SEGMENTATION_METRICS)} for kind "
            f"{cfg.kind!r}, got {cfg.train.select_metric!r}"
        )
