"""Typed settings of adversarial training (the ``adversarial:`` section of a config).

One class per method, chosen by ``method`` (a tagged union, see
:mod:`gkl.settings._variants`): TRADES, GKL-AT and PGD-AT. The choice tuples of the
attack (norms, losses, random starts) and of the schedules (eps schedules, attack
budgets) live here, in the config layer; :mod:`gkl.attacks` and :mod:`gkl.objectives`
import them, so validating a config never imports an attack.
Defaults follow the recipes (``configs/cifar10_at``). Loss weights use the paper's
naming: ``alpha`` = wMSE weight, ``beta`` = soft-label CE weight.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, ClassVar, Literal

from gkl.settings._variants import build_variant
from gkl.settings.kl_family import ClassWiseWeights, GKLTerm, check_kl_family
from gkl.utils.errors import ConfigError
from gkl.utils.validation import check_bool, check_choice, check_int, check_number, fail

ADVERSARIAL_METHODS: tuple[str, ...] = ("trades", "gkl", "pgd_at")
#: eps schedules over training: fixed, or linear in the epoch (GKL-AT).
EPS_SCHEDULES: tuple[str, ...] = ("fixed", "linear")
#: PGD step budgets over training (see gkl.objectives.epsilon_schedule).
ATTACK_BUDGETS: tuple[str, ...] = ("fixed", "low", "high", "high-as-released")
#: Losses an attack maximises (see gkl.attacks.attack_losses).
ATTACK_LOSSES: tuple[str, ...] = ("ce", "kl", "gkl", "cw")
#: PGD starting points: TRADES' x + 0.001 N(0, 1), uniform in the ball, or x itself (None).
RANDOM_STARTS: tuple[str | None, ...] = ("trades", "uniform", None)
#: Threat models.
NORMS: tuple[str, ...] = ("linf", "l2")
#: How the clean cross-entropy of the two AutoAugment views is weighted: like the view's other terms
#: (``weighted``: 1 and autoaugment_weight) or as one mean over both views (``mean``: 1/2 and 1/2,
#: the authors' code, which takes CE over the concatenated batch).
AUTOAUGMENT_CE: tuple[str, ...] = ("weighted", "mean")

#: The fixed budget's defaults (TRADES / PGD-AT recipes: 10 steps of 2/255).
DEFAULT_ATTACK_STEPS = 10
DEFAULT_ATTACK_STEP_SIZE = 2 / 255

_OWNER = "adversarial"


def _number(obj: Any, name: str, **kwargs: Any) -> None:
    check_number(_OWNER, name, getattr(obj, name), error=ConfigError, **kwargs)


@dataclass
class AdversarialSettings:
    """Fields every adversarial-training method has; build one with :func:`adversarial_settings`
    or a method's class (:class:`TRADESSettings`, :class:`GKLATSettings`, :class:`PGDATSettings`).

    ``attack_steps``/``attack_step_size`` belong to the ``fixed`` budget (default 10 x 2/255);
    the other budgets derive steps and step size from eps per epoch, so setting them then
    is an error. AWP is on when ``awp_gamma > 0`` and ``epoch >= awp_start_epoch``; the
    proxy's learning rate only scales a difference renormalised per layer (0.01 as in AWP).
    ``label_smoothing`` ε in [0, 1) smooths the one-hot labels of the objective's cross-entropy term
    (TRADES and GKL-AT: the clean CE; PGD-AT: the adversarial CE) to (1 − ε) one-hot + ε / C, as
    ``F.cross_entropy(label_smoothing=ε)`` (DM-AT's TRADES: 0.1); the attack's loss is not smoothed.
    """

    variant_key: ClassVar[str] = "method"

    method: str = "gkl"
    eps: float = 8 / 255
    eps_schedule: Literal["fixed", "linear"] = "fixed"
    attack_budget: Literal["fixed", "low", "high", "high-as-released"] = "fixed"
    attack_steps: int | None = None
    attack_step_size: float | None = None
    attack_loss: Literal["ce", "kl", "gkl", "cw"] = "ce"
    random_start: Literal["trades", "uniform"] | None = "trades"
    norm: Literal["linf", "l2"] = "linf"
    # AWP
    awp_gamma: float = 5e-3
    awp_start_epoch: int = 10
    awp_proxy_lr: float = 0.01
    # second AutoAugment view
    autoaugment_weight: float = 0.0
    autoaugment_ce: Literal["weighted", "mean"] = "weighted"
    label_smoothing: float = 0.0

    @classmethod
    def variants(cls) -> dict[str, type[AdversarialSettings]]:
        return ADVERSARIAL_SETTINGS

    def __post_init__(self) -> None:
        if type(self) not in ADVERSARIAL_SETTINGS.values():
            raise TypeError(
                "AdversarialSettings is the common base; use adversarial_settings(method, ...) "
                "or a method's class such as GKLATSettings"
            )
        expected = next(m for m, cls in ADVERSARIAL_SETTINGS.items() if cls is type(self))
        if self.method != expected:
            raise fail(_OWNER, "method", repr(expected) + f" for {type(self).__name__}", self.method, error=ConfigError)
        check_choice(_OWNER, "eps_schedule", self.eps_schedule, EPS_SCHEDULES, error=ConfigError)
        check_choice(_OWNER, "attack_budget", self.attack_budget, ATTACK_BUDGETS, error=ConfigError)
        check_choice(_OWNER, "attack_loss", self.attack_loss, ATTACK_LOSSES, error=ConfigError)
        check_choice(_OWNER, "random_start", self.random_start, RANDOM_STARTS, error=ConfigError)
        check_choice(_OWNER, "norm", self.norm, NORMS, error=ConfigError)
        check_choice(_OWNER, "autoaugment_ce", self.autoaugment_ce, AUTOAUGMENT_CE, error=ConfigError)
        if self.attack_budget == "fixed":
            if self.attack_steps is None:
                self.attack_steps = DEFAULT_ATTACK_STEPS
            if self.attack_step_size is None:
                self.attack_step_size = DEFAULT_ATTACK_STEP_SIZE
            check_int(_OWNER, "attack_steps", self.attack_steps, minimum=0, error=ConfigError)
            _number(self, "attack_step_size", minimum=0.0)
        else:
            for name in ("attack_steps", "attack_step_size"):
                if getattr(self, name) is not None:
                    raise fail(
                        _OWNER,
                        name,
                        f"null: the {self.attack_budget!r} budget sets the steps and "
                        "step size per epoch (they are used by attack_budget 'fixed' only)",
                        getattr(self, name),
                        error=ConfigError,
                    )
        for name in ("eps", "awp_gamma", "autoaugment_weight"):
            _number(self, name, minimum=0.0)
        _number(self, "awp_proxy_lr", minimum=0.0, strict=True)
        _number(self, "label_smoothing", minimum=0.0)
        if self.label_smoothing >= 1.0:
            raise fail(_OWNER, "label_smoothing", "a value in [0, 1)", self.label_smoothing, error=ConfigError)
        check_int(_OWNER, "awp_start_epoch", self.awp_start_epoch, minimum=0, error=ConfigError)

    def to_dict(self) -> dict[str, Any]:
        """The settings as a plain dict (for logs and config.yaml)."""
        return asdict(self)


@dataclass
class TRADESSettings(AdversarialSettings):
    """TRADES (Zhang et al. 2019): CE(clean) + trades_beta KL(adv || clean); 10 x 2/255 KL attack."""

    method: Literal["trades"] = "trades"
    attack_loss: Literal["ce", "kl", "gkl", "cw"] = "kl"
    trades_beta: float = 6.0

    def __post_init__(self) -> None:
        super().__post_init__()
        _number(self, "trades_beta", minimum=0.0)


@dataclass
class GKLATSettings(GKLTerm, ClassWiseWeights, AdversarialSettings):
    """GKL-AT (Eq. 13): CE(clean) + GKL(adv, clean); GKL attack, linear eps.

    The outer GKL term takes the shared KL-family settings (:mod:`gkl.settings.kl_family`,
    their one set of defaults; the recipes set α = 20, β = 4, τ_w = 4, class-wise weights).
    ``attack_*`` are the inner attack's GKL settings (recipes: α = β = γ = T = 1; its τ_w and
    weights are the outer term's).
    """

    method: Literal["gkl"] = "gkl"
    eps_schedule: Literal["fixed", "linear"] = "linear"
    attack_budget: Literal["fixed", "low", "high", "high-as-released"] = "high-as-released"
    attack_loss: Literal["ce", "kl", "gkl", "cw"] = "gkl"
    attack_alpha: float = 1.0
    attack_beta: float = 1.0
    attack_gamma: float = 1.0
    attack_temperature: float = 1.0
    #: False: DKL's stop-gradient, the wMSE trains only the clean logits (Table I ablation, row (b))
    break_asymmetry: bool = True

    def __post_init__(self) -> None:
        super().__post_init__()
        check_kl_family(self, _OWNER)
        check_bool(_OWNER, "break_asymmetry", self.break_asymmetry, error=ConfigError)
        for name in ("attack_alpha", "attack_beta", "attack_gamma"):
            _number(self, name, minimum=0.0)
        _number(self, "attack_temperature", minimum=0.0, strict=True)


@dataclass
class PGDATSettings(AdversarialSettings):
    """Madry et al. PGD-AT: CE on PGD examples (10 x 2/255 CE attack)."""

    method: Literal["pgd_at"] = "pgd_at"


#: method name -> its settings class.
ADVERSARIAL_SETTINGS: dict[str, type[AdversarialSettings]] = {
    "trades": TRADESSettings,
    "gkl": GKLATSettings,
    "pgd_at": PGDATSettings,
}
assert tuple(ADVERSARIAL_SETTINGS) == ADVERSARIAL_METHODS


def adversarial_settings(method: str = "gkl", **settings: Any) -> AdversarialSettings:
    """The settings of ``method``; a key the method does not use is a ConfigError naming it."""
    return build_variant(AdversarialSettings, _OWNER, method, **settings)
