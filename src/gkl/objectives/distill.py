"""Logit distillation objectives: Hinton KD, DKD, DKL, IKL, GKL, logit MSE and JSD.

Every method is ``ce_weight · CE(student, y) + warm(epoch) · kd_weight · term(student, teacher)``
with the KD-term warm-up ``warm(epoch) = min(epoch / warmup_epochs, 1)`` (epochs from 1), as in
the DKD/mdistiller solver the papers use. The teacher is a frozen submodule: always in eval
mode, no gradient, not checkpointed. Class-wise GKL/IKL weights (GKL Eqs. 8-9) come from a
:class:`~gkl.losses.ClassPrior` fed the teacher's logits during an epoch and frozen at its end.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Literal

import torch
import torch.nn.functional as F
from torch import nn

from gkl.losses import ClassPrior, dkd_loss, dkl_loss, gkl_loss, js_div, kl_div, logit_mse
from gkl.objectives.base import Objective, StepOutput

DistillMethod = Literal["kd", "dkd", "dkl", "ikl", "gkl", "mse", "jsd"]


@dataclass
class DistillSettings:
    """Loss weights of a distillation recipe (paper naming: α = wMSE weight, β = soft-CE weight).

    The authors' released code swaps the names α and β; recipes in ``configs/`` are converted.
    """

    method: DistillMethod = "gkl"
    ce_weight: float = 1.0  #: weight of CE(student, labels)
    kd_weight: float = 1.0  #: weight of the distillation term (Hinton KD recipe: 0.9 with ce_weight 0.1)
    temperature: float = 4.0  #: T of the KL / soft-CE term (KD, DKD, DKL, JSD, GKL's CE term)
    warmup_epochs: int = 20  #: linear warm-up of the distillation term; 0 disables it
    # GKL / IKL / DKL
    alpha: float = 1.0  #: wMSE weight α (paper naming)
    beta: float = 1.0  #: soft-label CE weight β (paper naming)
    gamma: float = 1.0  #: weight smoothing γ of GKL (IKL: 1)
    weight_temperature: float = 4.0  #: τ_w of the weights softmax(o_m / τ_w)
    class_wise: bool = False  #: class-wise weights (Eqs. 8-9) instead of sample-wise
    normalize: Literal["weights", "batch"] = "weights"
    prior_momentum: float | None = None  #: None: epoch-frozen prior (the authors'); else EMA
    # DKD (Zhao et al. 2022)
    dkd_alpha: float = 1.0
    dkd_beta: float = 8.0

    def __post_init__(self) -> None:
        for name in ("ce_weight", "kd_weight", "alpha", "beta", "gamma", "dkd_alpha", "dkd_beta"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        for name in ("temperature", "weight_temperature"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be > 0, got {getattr(self, name)}")
        if self.warmup_epochs < 0:
            raise ValueError(f"warmup_epochs must be >= 0, got {self.warmup_epochs}")
        if self.class_wise and self.method not in ("gkl", "ikl"):
            raise ValueError(f"class_wise=True applies to methods 'gkl' and 'ikl', not {self.method!r}")


TermFn = Callable[["DistillObjective", torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]


def _kd_term(obj: "DistillObjective", s: torch.Tensor, t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return kl_div(s, t, temperature=obj.settings.temperature)


def _dkd_term(obj: "DistillObjective", s: torch.Tensor, t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    cfg = obj.settings
    return dkd_loss(s, t, y, alpha=cfg.dkd_alpha, beta=cfg.dkd_beta, temperature=cfg.temperature)


def _dkl_term(obj: "DistillObjective", s: torch.Tensor, t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    # DKL (Eq. 5) at temperature T, scaled by T² like Hinton KD; the wMSE has no gradient in KD.
    cfg = obj.settings
    temp = cfg.temperature
    return dkl_loss(s / temp, t / temp, alpha=cfg.alpha, beta=cfg.beta) * temp**2


def _gkl_term(obj: "DistillObjective", s: torch.Tensor, t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    cfg = obj.settings
    weights = None
    if obj.prior is not None:
        weights = obj.prior(y)  # previous epoch's class-wise means (Eq. 9)
        if obj.training:
            obj.prior.update(t, y)
    gamma = 1.0 if cfg.method == "ikl" else cfg.gamma
    normalize = "batch" if cfg.method == "ikl" else cfg.normalize
    return gkl_loss(
        s, t, weights=weights, alpha=cfg.alpha, beta=cfg.beta, gamma=gamma,
        temperature=cfg.temperature, weight_temperature=cfg.weight_temperature, normalize=normalize,
    )


def _mse_term(obj: "DistillObjective", s: torch.Tensor, t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return logit_mse(s, t)


def _jsd_term(obj: "DistillObjective", s: torch.Tensor, t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return js_div(s, t, temperature=obj.settings.temperature)


DISTILL_TERMS: dict[str, TermFn] = {
    "kd": _kd_term, "dkd": _dkd_term, "dkl": _dkl_term, "ikl": _gkl_term,
    "gkl": _gkl_term, "mse": _mse_term, "jsd": _jsd_term,
}


class DistillObjective(Objective):
    """Student training against a frozen teacher's logits with one of :data:`DISTILL_TERMS`."""

    frozen = ("teacher",)

    def __init__(self, teacher: nn.Module, settings: DistillSettings, *, num_classes: int) -> None:
        super().__init__()
        self.teacher = teacher
        self.settings = settings
        self.term = DISTILL_TERMS[settings.method]
        self.prior = (
            ClassPrior(num_classes, temperature=settings.weight_temperature, momentum=settings.prior_momentum)
            if settings.class_wise
            else None
        )
        self.freeze()

    def warmup_factor(self, epoch: int) -> float:
        """min(epoch / warmup_epochs, 1), epochs counted from 1."""
        warm = self.settings.warmup_epochs
        return 1.0 if warm == 0 else min(epoch / warm, 1.0)

    def forward(self, model: nn.Module, images: torch.Tensor, labels: torch.Tensor, *, epoch: int) -> StepOutput:
        cfg = self.settings
        logits = model(images)
        with torch.no_grad():
            teacher_logits = self.teacher(images)
        losses = {"ce": cfg.ce_weight * F.cross_entropy(logits.float(), labels)}
        term = self.term(self, logits, teacher_logits, labels)
        losses[cfg.method] = (self.warmup_factor(epoch) * cfg.kd_weight) * term
        return StepOutput(losses=losses, logits=logits)

    def on_epoch_end(self, epoch: int) -> None:
        if self.prior is not None:
            self.prior.step()
