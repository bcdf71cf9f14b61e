"""The settings of a KL-family term (DKL, IKL, GKL): one set of fields and defaults for every task.

Each task's settings class embeds the pieces its term uses, flat in its section (YAML keys
``distill.alpha``, ``segmentation.gamma``, ``clip_distill.weight_temperature``, ...):

* :class:`DKLTerm`: ``temperature`` T, ``alpha`` (wMSE weight α) and ``beta`` (soft-label CE
  weight β) of DKL (Eq. 5) -- paper naming; the authors' released code swaps α and β;
* :class:`IKLTerm`: + ``weight_temperature`` τ_w of the weights softmax(o_m / τ_w) (Eqs. 8-9);
* :class:`GKLTerm`: + ``gamma`` γ (weight smoothing) and ``normalize`` (``weights``: the wMSE is
  normalised by the weight mass, GKL; ``batch``: by the batch size, IKL);
* :class:`ClassWiseWeights`: ``class_wise`` (class-wise weights from a ClassPrior instead of
  sample-wise ones) and ``prior_momentum`` (None: the previous epoch's frozen prior; else an EMA).

The defaults are the same everywhere (α = β = γ = T = τ_w = 1, sample-wise, ``weights``); a
recipe that trains with other values writes them out. :func:`check_kl_family` validates the
pieces an object has, in the one error format of :mod:`gkl.utils.validation`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from gkl.utils.errors import ConfigError
from gkl.utils.validation import check_bool, check_choice, check_number, fail

__all__ = [
    "DKLTerm",
    "IKLTerm",
    "GKLTerm",
    "ClassWiseWeights",
    "GKL_NORMALIZATIONS",
    "KL_FAMILY_DEFAULTS",
    "check_kl_family",
    "kl_family_params",
]

#: How GKL normalises its wMSE term: by the weight mass (the authors' GKL code) or by the batch (IKL).
GKL_NORMALIZATIONS: tuple[str, ...] = ("weights", "batch")


@dataclass
class DKLTerm:
    """DKL (Eq. 5) at temperature T: α · wMSE + β · soft-label CE."""

    temperature: float = 1.0  #: T of the soft-label CE term
    alpha: float = 1.0  #: wMSE weight α
    beta: float = 1.0  #: soft-label CE weight β


@dataclass
class IKLTerm(DKLTerm):
    """IKL: DKL with the weights softmax(o_m / τ_w) (γ = 1, batch normalisation)."""

    weight_temperature: float = 1.0  #: τ_w of the weights (Eqs. 8-9)


@dataclass
class GKLTerm(IKLTerm):
    """GKL: IKL with smoothed weights (γ) and a choice of wMSE normalisation."""

    gamma: float = 1.0  #: weight smoothing γ (Eqs. 8-9); 0 = plain pairwise logit-difference MSE
    normalize: Literal["weights", "batch"] = "weights"


@dataclass
class ClassWiseWeights:
    """Class-wise weights (Eqs. 8-9): the class means of softmax(o_m / τ_w), kept by a ClassPrior."""

    class_wise: bool = False  #: class-wise weights instead of sample-wise ones
    prior_momentum: float | None = None  #: None: epoch-frozen prior (the authors'), else EMA in (0, 1]


#: field -> default of every KL-family piece (the one set of defaults).
KL_FAMILY_DEFAULTS: dict[str, Any] = {
    "temperature": 1.0,
    "alpha": 1.0,
    "beta": 1.0,
    "weight_temperature": 1.0,
    "gamma": 1.0,
    "normalize": "weights",
    "class_wise": False,
    "prior_momentum": None,
}


def check_kl_family(obj: Any, owner: str) -> None:
    """ConfigError (``<owner>.<key>: expected ..., got ...``) for a bad value of the pieces ``obj`` embeds."""

    def number(name: str, **kwargs: Any) -> None:
        check_number(owner, name, getattr(obj, name), error=ConfigError, **kwargs)

    if isinstance(obj, DKLTerm):
        number("temperature", minimum=0.0, strict=True)
        number("alpha", minimum=0.0)
        number("beta", minimum=0.0)
    if isinstance(obj, IKLTerm):
        number("weight_temperature", minimum=0.0, strict=True)
    if isinstance(obj, GKLTerm):
        number("gamma", minimum=0.0)
        check_choice(owner, "normalize", obj.normalize, GKL_NORMALIZATIONS, error=ConfigError)
    if isinstance(obj, ClassWiseWeights):
        check_bool(owner, "class_wise", obj.class_wise, error=ConfigError)
        if obj.prior_momentum is not None:
            number("prior_momentum", minimum=0.0, strict=True)
            if obj.prior_momentum > 1.0:
                raise fail(owner, "prior_momentum", "a value in (0, 1] or null", obj.prior_momentum, error=ConfigError)
            if not obj.class_wise:
                raise fail(
                    owner,
                    "prior_momentum",
                    f"null unless {owner}.class_wise is true (it only affects class-wise weights)",
                    obj.prior_momentum,
                    error=ConfigError,
                )


def kl_family_params(obj: Any) -> dict[str, Any]:
    """The loss parameters of the KL-family term ``obj`` embeds (α, β, and τ_w, γ, normalize if present)."""
    names = [
        n
        for n in ("alpha", "beta", "weight_temperature", "gamma", "normalize")
        if isinstance(obj, DKLTerm) and hasattr(obj, n)
    ]
    return {n: getattr(obj, n) for n in names}
