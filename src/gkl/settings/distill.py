"""Typed settings of the logit-distillation methods (the ``distill:`` section of a config).

One class per method, chosen by ``method`` (a tagged union, see
:mod:`gkl.settings._variants`): a key the chosen method does not use is an error
naming it, and a run's saved ``config.yaml`` lists exactly the settings that ran.
DKL, IKL and GKL embed the shared KL-family settings of :mod:`gkl.settings.kl_family`
(paper naming: ``alpha`` weights the wMSE term, ``beta`` the soft-label cross-entropy; one
set of defaults for every task, T = τ_w = 1). Any other logit loss registered in
:mod:`gkl.losses` is a method by its name (:class:`LogitLossSettings`).

Every method trains ``ce_weight * CE(student, y) + warm(epoch) * kd_weight * term``
with ``warm(epoch) = min(epoch / warmup_epochs, 1)`` (epochs from 1; 0 = no warm-up).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, ClassVar, Literal

from gkl.settings._variants import build_variant
from gkl.settings.kl_family import GKL_NORMALIZATIONS, ClassWiseWeights, DKLTerm, GKLTerm, IKLTerm, check_kl_family  # noqa: F401
from gkl.settings.loss_choice import RegisteredLoss, check_registered_loss
from gkl.utils.errors import ConfigError
from gkl.utils.validation import check_bool, check_int, check_number, fail

#: Every distillation method, in the order the docs list them.
DISTILL_METHODS: tuple[str, ...] = ("kd", "dkd", "dkl", "ikl", "gkl", "mse", "jsd")

_OWNER = "distill"


def _number(obj: Any, name: str, **kwargs: Any) -> None:
    check_number(_OWNER, name, getattr(obj, name), error=ConfigError, **kwargs)


@dataclass
class DistillSettings:
    """Fields every distillation method has. Build a method's settings with :func:`distill_settings`
    or its class (:class:`KDSettings`, ...); the base class itself is not a method."""

    variant_key: ClassVar[str] = "method"
    section: ClassVar[str] = _OWNER

    method: str = "gkl"
    ce_weight: float = 1.0  #: weight of CE(student, labels)
    kd_weight: float = 1.0  #: weight of the distillation term (Hinton KD recipe: 0.9 with ce_weight 0.1)
    warmup_epochs: int = 20  #: linear warm-up of the distillation term; 0 disables it

    @classmethod
    def variants(cls) -> dict[str, type[DistillSettings]]:
        return DISTILL_SETTINGS

    @classmethod
    def generic_variant(cls) -> type[DistillSettings]:
        return LogitLossSettings

    def __post_init__(self) -> None:
        if type(self) is LogitLossSettings:
            if not isinstance(self.method, str) or not self.method.isidentifier() or self.method in DISTILL_SETTINGS:
                raise fail(
                    _OWNER,
                    "method",
                    f"a registered logit loss other than {list(DISTILL_SETTINGS)} for LogitLossSettings",
                    self.method,
                    error=ConfigError,
                )
            check_registered_loss(self, _OWNER)
        elif type(self) is DistillSettings or type(self) not in DISTILL_SETTINGS.values():
            raise TypeError(
                "DistillSettings is the common base; use distill_settings(method, ...) "
                "or a method's class such as GKLSettings"
            )
        else:
            expected = next(m for m, cls in DISTILL_SETTINGS.items() if cls is type(self))
            if self.method != expected:
                raise fail(
                    _OWNER, "method", repr(expected) + f" for {type(self).__name__}", self.method, error=ConfigError
                )
        _number(self, "ce_weight", minimum=0.0)
        _number(self, "kd_weight", minimum=0.0)
        check_int(_OWNER, "warmup_epochs", self.warmup_epochs, minimum=0, error=ConfigError)
        check_kl_family(self, _OWNER)

    def to_dict(self) -> dict[str, Any]:
        """The settings as a plain dict (for logs and config.yaml)."""
        return asdict(self)


@dataclass
class KDSettings(DistillSettings):
    """Hinton KD: ``T² KL(softmax(t/T) || softmax(s/T))``; ``temperature: .inf`` is its logit-MSE limit."""

    method: Literal["kd"] = "kd"
    temperature: float = 4.0

    def __post_init__(self) -> None:
        super().__post_init__()
        _number(self, "temperature", minimum=0.0, strict=True, allow_inf=True)


@dataclass
class DKDSettings(DistillSettings):
    """Decoupled KD (Zhao et al. 2022): ``dkd_alpha`` TCKD + ``dkd_beta`` NCKD, both times T²."""

    method: Literal["dkd"] = "dkd"
    temperature: float = 4.0
    dkd_alpha: float = 1.0
    dkd_beta: float = 8.0

    def __post_init__(self) -> None:
        super().__post_init__()
        _number(self, "temperature", minimum=0.0, strict=True)
        _number(self, "dkd_alpha", minimum=0.0)
        _number(self, "dkd_beta", minimum=0.0)


@dataclass
class DKLSettings(DKLTerm, DistillSettings):
    """Decoupled KL (Eq. 5) of the logits divided by T, times T² (α = β = 1: the KD gradient)."""

    method: Literal["dkl"] = "dkl"


@dataclass
class IKLSettings(IKLTerm, ClassWiseWeights, DistillSettings):
    """IKL (conference version): GKL with γ = 1 and the wMSE normalised by the batch size."""

    method: Literal["ikl"] = "ikl"


@dataclass
class GKLSettings(GKLTerm, ClassWiseWeights, DistillSettings):
    """GKL (journal version): smoothed weights (γ) and the wMSE normalised by the weight mass.

    ``break_asymmetry: false`` keeps DKL's stop-gradient in the wMSE (Eq. 5): with a frozen teacher
    the wMSE then trains nothing (the GKL paper's Table I ablation, row (b)).
    """

    method: Literal["gkl"] = "gkl"
    break_asymmetry: bool = True

    def __post_init__(self) -> None:
        super().__post_init__()
        check_bool(_OWNER, "break_asymmetry", self.break_asymmetry, error=ConfigError)


@dataclass
class MSESettings(DistillSettings):
    """Plain logit matching ``||s - t||² / C``; no temperature (KD's T -> inf limit is ``kd`` at ``.inf``)."""

    method: Literal["mse"] = "mse"


@dataclass
class JSDSettings(DistillSettings):
    """Jensen-Shannon divergence of the softmaxes at T, times T² (GKL Appendix 6.5)."""

    method: Literal["jsd"] = "jsd"
    temperature: float = 4.0

    def __post_init__(self) -> None:
        super().__post_init__()
        _number(self, "temperature", minimum=0.0, strict=True)


@dataclass
class LogitLossSettings(RegisteredLoss, DistillSettings):
    """Any other registered logit loss by name (``gkl.losses.register_logit_loss``): its T and ``loss_params``."""

    method: str = "kl"


#: method name -> its settings class (any other registered logit loss: :class:`LogitLossSettings`).
DISTILL_SETTINGS: dict[str, type[DistillSettings]] = {
    "kd": KDSettings,
    "dkd": DKDSettings,
    "dkl": DKLSettings,
    "ikl": IKLSettings,
    "gkl": GKLSettings,
    "mse": MSESettings,
    "jsd": JSDSettings,
}
assert tuple(DISTILL_SETTINGS) == DISTILL_METHODS


def distill_settings(method: str = "gkl", **settings: Any) -> DistillSettings:
    """The settings of ``method``; a key the method does not use is a ConfigError naming it."""
    return build_variant(DistillSettings, _OWNER, method, **settings)
