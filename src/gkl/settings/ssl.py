"""Settings of the semi-supervised objectives (the ``ssl:`` section of a run's config).

A tagged union with two tags (see :mod:`gkl.settings._variants`): ``algorithm``
(``fixmatch`` / ``meanteacher``) and then ``consistency`` (the loss between the strong and
the weak view, a name of the logit-loss registry: ``hard_ce``, ``soft_ce``, ``kl``,
``softmax_mse``, ``gkl``, ``ikl``; the former ``ce`` / ``mse`` are errors naming these).
Each (algorithm, consistency) pair is one class holding exactly the keys it uses: a key it does not use is a
ConfigError naming it, and the saved config lists what ran.
Defaults follow USB's CIFAR-100 protocol; GKL/IKL embed the shared KL-family settings
(:mod:`gkl.settings.kl_family`, paper naming: α = wMSE weight, β = soft-label CE weight).
Any other registered logit loss is a consistency by its name (``temperature`` + ``loss_params``).

``SSLSettings(algorithm=..., consistency=..., ...)`` builds the matching class.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

from gkl.settings._variants import UnionConstructor
from gkl.settings.kl_family import GKLTerm, IKLTerm, check_kl_family
from gkl.settings.loss_choice import RegisteredLoss, check_registered_loss
from gkl.utils.errors import ConfigError
from gkl.utils.validation import check_bool, check_int, check_number, fail

__all__ = [
    "SSLSettings",
    "FixMatchSettings",
    "MeanTeacherSettings",
    "SSL_ALGORITHMS",
    "SSL_CONSISTENCIES",
    "ssl_settings_class",
]

SSL_ALGORITHMS: tuple[str, ...] = ("fixmatch", "meanteacher")
#: the built-in consistency losses (any other registered logit loss is accepted by name).
SSL_CONSISTENCIES: tuple[str, ...] = ("hard_ce", "soft_ce", "kl", "softmax_mse", "gkl", "ikl")
#: the names before the registry's (``mse`` there is logit MSE): a ConfigError naming the new name.
_RENAMED = {"ce": "hard_ce", "mse": "softmax_mse"}

_OWNER = "ssl"


@dataclass
class SSLSettings(UnionConstructor):
    """FixMatch or Mean-Teacher with a consistency loss: the fields every combination has.

    num_labels_per_class: labelled examples per class (exactly; drawn with the run's seed).
    uratio: µ, unlabelled examples per labelled one in a step.
    p_cutoff: confidence threshold in (0, 1] of the mask max softmax(weak) ≥ p_cutoff; null: no mask.
    lambda_u: weight of the unsupervised loss.
    unsup_warmup: linear ramp of lambda_u over this fraction of all iterations.
    crop_padding, flip, randaugment_ops, randaugment_magnitude: the views (USB CIFAR: 4, true, 3, 5).
    """

    variant_key: ClassVar[str] = "algorithm"
    section: ClassVar[str] = _OWNER

    algorithm: str = "fixmatch"
    consistency: str = "hard_ce"
    num_labels_per_class: int = 2
    uratio: int = 1
    p_cutoff: float | None = 0.95
    lambda_u: float = 1.0
    unsup_warmup: float = 0.0
    crop_padding: int = 4
    flip: bool = True
    randaugment_ops: int = 3
    randaugment_magnitude: int = 5

    @classmethod
    def variants(cls) -> dict[str, type[SSLSettings]]:
        return {"fixmatch": FixMatchSettings, "meanteacher": MeanTeacherSettings}

    def __post_init__(self) -> None:
        if type(self) not in _LEAVES:
            raise TypeError(
                "SSLSettings is the common base: call SSLSettings(algorithm=..., consistency=...) "
                "or ssl_settings_class(algorithm, consistency)"
            )
        algorithm, consistency = _LEAVES[type(self)]
        if self.algorithm != algorithm:
            raise fail(
                _OWNER, "algorithm", f"{algorithm!r} for {type(self).__name__}", self.algorithm, error=ConfigError
            )
        if consistency is not None and self.consistency != consistency:
            raise fail(
                _OWNER, "consistency", f"{consistency!r} for {type(self).__name__}", self.consistency, error=ConfigError
            )
        if consistency is None and (
            not isinstance(self.consistency, str)
            or not self.consistency.isidentifier()
            or self.consistency in SSL_CONSISTENCIES
        ):
            raise fail(
                _OWNER, "consistency", "the name of a registered logit loss", self.consistency, error=ConfigError
            )
        check_int(_OWNER, "num_labels_per_class", self.num_labels_per_class, minimum=1, error=ConfigError)
        check_int(_OWNER, "uratio", self.uratio, minimum=1, error=ConfigError)
        if self.p_cutoff is not None:
            check_number(_OWNER, "p_cutoff", self.p_cutoff, minimum=0.0, strict=True, error=ConfigError)
            if self.p_cutoff > 1.0:
                raise fail(_OWNER, "p_cutoff", "a value in (0, 1]", self.p_cutoff, error=ConfigError)
        check_number(_OWNER, "lambda_u", self.lambda_u, minimum=0.0, error=ConfigError)
        check_number(_OWNER, "unsup_warmup", self.unsup_warmup, minimum=0.0, error=ConfigError)
        if self.unsup_warmup > 1.0:
            raise fail(_OWNER, "unsup_warmup", "a fraction in [0, 1]", self.unsup_warmup, error=ConfigError)
        if isinstance(self, MeanTeacherSettings):
            check_number(_OWNER, "ema_decay", self.ema_decay, minimum=0.0, error=ConfigError)
            if self.ema_decay >= 1.0:
                raise fail(_OWNER, "ema_decay", "a value in [0, 1)", self.ema_decay, error=ConfigError)
        if isinstance(self, (_SoftTarget, _SoftmaxMSE)):
            check_number(_OWNER, "temperature", self.temperature, minimum=0.0, strict=True, error=ConfigError)
        if isinstance(self, (_GKLConsistency, _IKLConsistency)):
            check_bool(_OWNER, "detach_weak", self.detach_weak, error=ConfigError)
        check_kl_family(self, _OWNER)
        if isinstance(self, RegisteredLoss):
            check_registered_loss(self, _OWNER)
        for name in ("crop_padding", "randaugment_ops", "randaugment_magnitude"):
            check_int(_OWNER, name, getattr(self, name), minimum=0, error=ConfigError)
        check_bool(_OWNER, "flip", self.flip, error=ConfigError)

    @property
    def uses_kl_family(self) -> bool:
        """Whether the consistency is GKL or IKL (the detach_weak / KL-family settings apply)."""
        return isinstance(self, KL_FAMILY_CONSISTENCY)


@dataclass
class FixMatchSettings(SSLSettings):
    """FixMatch: one forward on cat(labelled, weak, strong); mask = max softmax(weak) ≥ p_cutoff."""

    variant_key: ClassVar[str] = "consistency"
    renamed_tags: ClassVar[dict[str, str]] = _RENAMED
    algorithm: str = "fixmatch"

    @classmethod
    def variants(cls) -> dict[str, type[SSLSettings]]:
        return _TABLES["fixmatch"]

    @classmethod
    def generic_variant(cls) -> type[SSLSettings]:
        return _GENERIC["fixmatch"]


@dataclass
class MeanTeacherSettings(SSLSettings):
    """Mean-Teacher: EMA teacher (``ema_decay``, buffers copied) on the weak view, student on the strong.

    USB defaults: no mask, lambda_u 50, unsup_warmup 0.4.
    """

    variant_key: ClassVar[str] = "consistency"
    renamed_tags: ClassVar[dict[str, str]] = _RENAMED
    algorithm: str = "meanteacher"
    p_cutoff: float | None = None
    lambda_u: float = 50.0
    unsup_warmup: float = 0.4
    ema_decay: float = 0.999

    @classmethod
    def variants(cls) -> dict[str, type[SSLSettings]]:
        return _TABLES["meanteacher"]

    @classmethod
    def generic_variant(cls) -> type[SSLSettings]:
        return _GENERIC["meanteacher"]


# -- the consistency pieces ----------------------------------------------------------------------
@dataclass
class _HardLabel:
    """``hard_ce``: CE(strong, argmax weak), hard pseudo-labels (no temperature)."""


@dataclass
class _SoftTarget:
    """``soft_ce`` / ``kl``: the registry loss at T = 1 between strong and weak / T (T sharpens the target)."""

    temperature: float = 1.0  #: FixMatch's soft pseudo-labels: 0.5


@dataclass
class _SoftmaxMSE:
    """``softmax_mse``: mean_j (softmax(strong) − softmax(weak / T))² (Mean-Teacher)."""

    temperature: float = 1.0


@dataclass
class _GKLConsistency(GKLTerm):
    """``gkl``: GKL(strong, weak) with sample-wise weights softmax(weak / τ_w)."""

    detach_weak: bool = False  #: stop the wMSE gradient into the weak view (the authors' fork: False)


@dataclass
class _IKLConsistency(IKLTerm):
    """``ikl``: IKL(strong, weak) (γ = 1, batch normalisation)."""

    detach_weak: bool = False


#: the KL-family consistency pieces (GKL, IKL): ``isinstance(settings, KL_FAMILY_CONSISTENCY)``
KL_FAMILY_CONSISTENCY = (_GKLConsistency, _IKLConsistency)

_PIECES: dict[str, type] = {
    "hard_ce": _HardLabel,
    "soft_ce": _SoftTarget,
    "kl": _SoftTarget,
    "softmax_mse": _SoftmaxMSE,
    "gkl": _GKLConsistency,
    "ikl": _IKLConsistency,
}
_ALGORITHMS: dict[str, type[SSLSettings]] = {"fixmatch": FixMatchSettings, "meanteacher": MeanTeacherSettings}
_TABLES: dict[str, dict[str, type[SSLSettings]]] = {}
_GENERIC: dict[str, type[SSLSettings]] = {}
_LEAVES: dict[type, tuple[str, str | None]] = {}


def _leaf(algorithm: str, consistency: str | None) -> type[SSLSettings]:
    piece = RegisteredLoss if consistency is None else _PIECES[consistency]
    fields: list[Any] = [
        (
            "consistency",
            str if consistency is None else Literal[consistency],
            "kl" if consistency is None else consistency,
        )
    ]
    if algorithm == "fixmatch" and consistency in ("soft_ce", "kl"):
        fields.append(("temperature", float, 0.5))
    name = (
        {"fixmatch": "FixMatch", "meanteacher": "MeanTeacher"}[algorithm]
        + "".join(p.title() for p in (consistency or "logit_loss").split("_"))
        + "Settings"
    )
    cls = dataclasses.make_dataclass(name, fields, bases=(piece, _ALGORITHMS[algorithm]))
    cls.__module__ = __name__
    cls.__doc__ = f"ssl.algorithm {algorithm!r}, ssl.consistency " + (
        f"{consistency!r}: {piece.__doc__}" if consistency else "a registered logit loss by name"
    )
    return cls


for _algorithm in SSL_ALGORITHMS:
    _TABLES[_algorithm] = {c: _leaf(_algorithm, c) for c in SSL_CONSISTENCIES}
    _GENERIC[_algorithm] = _leaf(_algorithm, None)
    _LEAVES.update({cls: (_algorithm, c) for c, cls in _TABLES[_algorithm].items()})
    _LEAVES[_GENERIC[_algorithm]] = (_algorithm, None)
globals().update({cls.__name__: cls for cls in _LEAVES})  # importable by name (pickle, DDP spawn)


def ssl_settings_class(algorithm: str, consistency: str) -> type[SSLSettings]:
    """The settings class of (algorithm, consistency); another name: the registered-loss class."""
    if algorithm not in _TABLES:
        raise fail(_OWNER, "algorithm", f"one of {list(SSL_ALGORITHMS)}", algorithm, error=ConfigError)
    return _TABLES[algorithm].get(consistency, _GENERIC[algorithm])
