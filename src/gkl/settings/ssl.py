"""Settings of the semi-supervised objectives (the ``ssl:`` section of a run's config).

Defaults follow USB's CIFAR-100 protocol; the GKL parameters use the paper's naming
(α = wMSE weight, β = soft-label CE weight; the authors' fork of USB swaps the names).
Keys that the chosen algorithm or consistency loss does not use must stay unset (None):
setting one is an error naming it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Optional

from gkl.utils.errors import ConfigError
from gkl.utils.validation import check_choice, check_number

Algorithm = Literal["fixmatch", "meanteacher"]
Consistency = Literal["ce", "soft_ce", "kl", "mse", "gkl", "ikl"]

_GKL_DEFAULTS = {"alpha": 1.0, "beta": 1.0, "gamma": 1.0, "weight_temperature": 1.0, "normalize": "weights"}


@dataclass
class SSLSettings:
    """FixMatch or Mean-Teacher with a configurable consistency loss.

    algorithm: ``fixmatch`` (one forward on cat(labelled, weak, strong); mask = max softmax(weak)
        ≥ p_cutoff) or ``meanteacher`` (EMA teacher on the weak view, student on the strong view).
    num_labels_per_class: labelled examples per class (exactly; drawn with the run's seed).
    uratio: µ, unlabelled examples per labelled one in a step.
    consistency: the loss of :func:`gkl.ssl.consistency_loss`.
    p_cutoff: confidence threshold in (0, 1]; FixMatch default 0.95; Mean-Teacher: None = no mask.
    temperature: T of soft pseudo-labels; default 0.5 for FixMatch soft targets, 1 otherwise.
    lambda_u: weight of the unsupervised loss (FixMatch 1, Mean-Teacher 50 in USB).
    unsup_warmup: linear ramp of lambda_u over this fraction of all iterations
        (Mean-Teacher default 0.4; FixMatch 0).
    ema_decay: Mean-Teacher's teacher decay (default 0.999; buffers are copied).
    detach_weak: GKL/IKL only: stop the wMSE gradient into the weak view (fork: False).
    alpha, beta, gamma, weight_temperature, normalize: GKL/IKL only (gamma, normalize: GKL only).
    crop_padding, flip, randaugment_ops, randaugment_magnitude: the views (USB CIFAR: 4, true, 3, 5).
    """

    algorithm: Algorithm = "fixmatch"
    num_labels_per_class: int = 2
    uratio: int = 1
    consistency: Consistency = "ce"
    p_cutoff: Optional[float] = None
    temperature: Optional[float] = None
    lambda_u: Optional[float] = None
    unsup_warmup: Optional[float] = None
    ema_decay: Optional[float] = None
    detach_weak: Optional[bool] = None
    alpha: Optional[float] = None
    beta: Optional[float] = None
    gamma: Optional[float] = None
    weight_temperature: Optional[float] = None
    normalize: Optional[Literal["weights", "batch"]] = None
    crop_padding: int = 4
    flip: bool = True
    randaugment_ops: int = 3
    randaugment_magnitude: int = 5

    def __post_init__(self) -> None:
        check_choice("ssl", "algorithm", self.algorithm, ("fixmatch", "meanteacher"), error=ConfigError)
        check_choice("ssl", "consistency", self.consistency, ("ce", "soft_ce", "kl", "mse", "gkl", "ikl"), error=ConfigError)
        check_number("ssl", "num_labels_per_class", self.num_labels_per_class, minimum=1, integer=True, error=ConfigError)
        check_number("ssl", "uratio", self.uratio, minimum=1, integer=True, error=ConfigError)
        fixmatch = self.algorithm == "fixmatch"
        self._unused_by(fixmatch, "algorithm 'fixmatch'", ("ema_decay",))
        uses_gkl = self.consistency in ("gkl", "ikl")
        self._unused_by(not uses_gkl, f"consistency {self.consistency!r}",
                        ("detach_weak", "alpha", "beta", "gamma", "weight_temperature", "normalize"))
        self._unused_by(self.consistency == "ikl", "consistency 'ikl' (γ = 1, batch normalisation)",
                        ("gamma", "normalize"))
        self._unused_by(self.consistency == "ce", "consistency 'ce' (hard pseudo-labels)", ("temperature",))
        soft = self.consistency in ("soft_ce", "kl")
        defaults = {
            "p_cutoff": 0.95 if fixmatch else None,
            "temperature": None if self.consistency == "ce" else (0.5 if (fixmatch and soft) else 1.0),
            "lambda_u": 1.0 if fixmatch else 50.0,
            "unsup_warmup": 0.0 if fixmatch else 0.4,
            "ema_decay": None if fixmatch else 0.999,
            "detach_weak": False if uses_gkl else None,
        }
        if uses_gkl:
            defaults.update({k: v for k, v in _GKL_DEFAULTS.items()
                             if self.consistency == "gkl" or k not in ("gamma", "normalize")})
        for name, value in defaults.items():
            if getattr(self, name) is None:
                setattr(self, name, value)
        if self.p_cutoff is not None:
            check_number("ssl", "p_cutoff", self.p_cutoff, minimum=0.0, strict=True, error=ConfigError)
            if self.p_cutoff > 1.0:
                raise ConfigError(f"ssl.p_cutoff: expected a value in (0, 1], got {self.p_cutoff!r}")
        if self.temperature is not None:
            check_number("ssl", "temperature", self.temperature, minimum=0.0, strict=True, error=ConfigError)
        check_number("ssl", "lambda_u", self.lambda_u, minimum=0.0, error=ConfigError)
        check_number("ssl", "unsup_warmup", self.unsup_warmup, minimum=0.0, error=ConfigError)
        if self.unsup_warmup > 1.0:
            raise ConfigError(f"ssl.unsup_warmup: expected a fraction in [0, 1], got {self.unsup_warmup!r}")
        if self.ema_decay is not None:
            check_number("ssl", "ema_decay", self.ema_decay, minimum=0.0, error=ConfigError)
            if self.ema_decay >= 1.0:
                raise ConfigError(f"ssl.ema_decay: expected a value in [0, 1), got {self.ema_decay!r}")
        for name in ("alpha", "beta", "gamma"):
            if getattr(self, name) is not None:
                check_number("ssl", name, getattr(self, name), minimum=0.0, error=ConfigError)
        if self.weight_temperature is not None:
            check_number("ssl", "weight_temperature", self.weight_temperature, minimum=0.0, strict=True, error=ConfigError)
        check_number("ssl", "crop_padding", self.crop_padding, minimum=0, integer=True, error=ConfigError)
        check_number("ssl", "randaugment_ops", self.randaugment_ops, minimum=0, integer=True, error=ConfigError)
        check_number("ssl", "randaugment_magnitude", self.randaugment_magnitude, minimum=0, integer=True, error=ConfigError)
        if not isinstance(self.flip, bool):
            raise ConfigError(f"ssl.flip: expected true or false, got {self.flip!r}")

    def _unused_by(self, condition: bool, who: str, names: tuple[str, ...]) -> None:
        if not condition:
            return
        for name in names:
            if getattr(self, name) is not None:
                raise ConfigError(f"ssl.{name}: not used by {who}; remove it")

    def gkl_kwargs(self) -> dict:
        """The GKL/IKL keyword arguments of :func:`gkl.ssl.consistency_loss` (empty for other losses)."""
        names = {"gkl": ("alpha", "beta", "gamma", "weight_temperature", "normalize"),
                 "ikl": ("alpha", "beta", "weight_temperature")}.get(self.consistency, ())
        return {name: getattr(self, name) for name in names}
