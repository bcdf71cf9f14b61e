"""Logit distillation objectives, one class per method: KD, DKD, DKL, IKL, GKL, logit MSE and JSD.

Every method trains ``ce_weight · CE(student, y) + warm(epoch) · kd_weight · term(student, teacher)``
with the KD-term warm-up ``warm(epoch) = min(epoch / warmup_epochs, 1)`` (epochs from 1), as in
the DKD/mdistiller solver the papers use; the loss terms are named ``ce`` and the method
(``kd``, ``gkl``, ...). The teacher is a frozen submodule: always in eval mode, no gradient,
not checkpointed. Every term is a logit loss of the registry of :mod:`gkl.losses` by name (``kd``:
``kl``; any other registered loss: :class:`LogitLossObjective`). Class-wise IKL/GKL weights (GKL Eqs. 8-9) come from a
:class:`~gkl.losses.ClassPrior` fed the teacher's logits during an epoch and frozen at its end.
Each class takes its own settings class from :mod:`gkl.settings.distill`.
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from gkl.losses import ClassPrior, logit_loss
from gkl.objectives.base import Objective, StepOutput, classification_batch
from gkl.objectives.loss_choice import settings_logit_loss
from gkl.settings.distill import (
    DistillSettings,
    DKDSettings,
    DKLSettings,
    GKLSettings,
    IKLSettings,
    JSDSettings,
    KDSettings,
    LogitLossSettings,
    MSESettings,
)
from gkl.settings.kl_family import kl_family_params
from gkl.utils.validation import check_int, fail


class DistillObjective(Objective):
    """Student training against a frozen teacher's logits; subclasses define :meth:`distill_term`."""

    frozen = ("teacher",)
    #: the name of the loss term: a class constant, except that LogitLossObjective sets its loss's name
    method: str
    settings_class: ClassVar[type[DistillSettings]]

    def __init__(self, teacher: nn.Module, settings: DistillSettings, *, num_classes: int) -> None:
        super().__init__()
        if type(settings) is not self.settings_class:
            raise fail(
                "",
                "settings",
                f"a {self.settings_class.__name__} for {type(self).__name__}",
                type(settings).__name__,
                show_value=False,
            )
        check_int("", "num_classes", num_classes, minimum=2)
        self.teacher = teacher
        self.settings = settings
        self.num_classes = num_classes
        self.freeze()

    def distill_term(self, student: torch.Tensor, teacher: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """The unweighted distillation loss of one batch."""
        raise NotImplementedError

    def warmup_factor(self, epoch: int) -> float:
        """min(epoch / warmup_epochs, 1), epochs counted from 1."""
        warm = self.settings.warmup_epochs
        return 1.0 if warm == 0 else min(epoch / warm, 1.0)

    def forward(self, model: nn.Module, batch: Any, *, epoch: int, step: int) -> StepOutput:
        images, labels = classification_batch(batch)
        cfg = self.settings
        logits = model(images)
        with torch.no_grad():
            teacher_logits = self.teacher(images)
        losses = {"ce": cfg.ce_weight * F.cross_entropy(logits.float(), labels)}
        term = self.distill_term(logits, teacher_logits, labels)
        losses[self.method] = (self.warmup_factor(epoch) * cfg.kd_weight) * term
        return StepOutput(losses=losses, logits=logits, targets=labels)


class KDObjective(DistillObjective):
    """Hinton KD: T² KL(softmax(t/T) ‖ softmax(s/T)) (GKL paper Eq. 2 with temperature)."""

    method = "kd"
    settings_class = KDSettings

    def distill_term(self, student, teacher, labels):
        return logit_loss("kl", student, teacher, temperature=self.settings.temperature)


class DKDObjective(DistillObjective):
    """Decoupled KD (Zhao et al. 2022): dkd_alpha · TCKD + dkd_beta · NCKD, times T²."""

    method = "dkd"
    settings_class = DKDSettings

    def distill_term(self, student, teacher, labels):
        cfg = self.settings
        return logit_loss(
            "dkd", student, teacher, targets=labels, alpha=cfg.dkd_alpha, beta=cfg.dkd_beta, temperature=cfg.temperature
        )


class DKLObjective(DistillObjective):
    """DKL (Eq. 5) at temperature T, scaled by T² like Hinton KD; its wMSE has no gradient in KD."""

    method = "dkl"
    settings_class = DKLSettings

    def distill_term(self, student, teacher, labels):
        cfg = self.settings
        temp = cfg.temperature
        return logit_loss("dkl", student / temp, teacher / temp, alpha=cfg.alpha, beta=cfg.beta) * temp**2


class _WeightedKLObjective(DistillObjective):
    """IKL and GKL: sample-wise weights, or class-wise ones from a ClassPrior (Eqs. 8-9)."""

    def __init__(self, teacher: nn.Module, settings: IKLSettings | GKLSettings, *, num_classes: int) -> None:
        super().__init__(teacher, settings, num_classes=num_classes)
        self.prior = (
            ClassPrior(num_classes, temperature=settings.weight_temperature, momentum=settings.prior_momentum)
            if settings.class_wise
            else None
        )

    def class_weights(self, teacher: torch.Tensor, labels: torch.Tensor) -> torch.Tensor | None:
        """The previous epoch's class-wise means (Eq. 9) of each label; feeds this batch to the prior."""
        if self.prior is None:
            return None
        weights = self.prior(labels)
        if self.training:
            self.prior.update(teacher, labels)
        return weights

    def on_epoch_end(self, epoch: int) -> None:
        if self.prior is not None:
            self.prior.step()


class IKLObjective(_WeightedKLObjective):
    """IKL (conference version): GKL with γ = 1 and the wMSE normalised by the batch size."""

    method = "ikl"
    settings_class = IKLSettings

    def distill_term(self, student, teacher, labels):
        cfg = self.settings
        return logit_loss(
            "ikl",
            student,
            teacher,
            weights=self.class_weights(teacher, labels),
            temperature=cfg.temperature,
            **kl_family_params(cfg),
        )


class GKLObjective(_WeightedKLObjective):
    """GKL (journal version, docs/losses.md): smoothed weights γ, wMSE normalised as configured."""

    method = "gkl"
    settings_class = GKLSettings

    def distill_term(self, student, teacher, labels):
        cfg = self.settings
        return logit_loss(
            "gkl",
            student,
            teacher,
            weights=self.class_weights(teacher, labels),
            temperature=cfg.temperature,
            break_asymmetry=cfg.break_asymmetry,
            **kl_family_params(cfg),
        )


class MSEObjective(DistillObjective):
    """Plain logit matching ‖s − t‖² / C (Kim et al.'s L_MSE; KD's T → ∞ limit is the centred form)."""

    method = "mse"
    settings_class = MSESettings

    def distill_term(self, student, teacher, labels):
        return logit_loss("mse", student, teacher)


class JSDObjective(DistillObjective):
    """Jensen-Shannon divergence of the softmaxes at T, times T² (GKL Appendix 6.5)."""

    method = "jsd"
    settings_class = JSDSettings

    def distill_term(self, student, teacher, labels):
        return logit_loss("jsd", student, teacher, temperature=self.settings.temperature)


class LogitLossObjective(DistillObjective):
    """Any other registered logit loss by name, at ``temperature`` with its ``loss_params``.

    The loss gets the labels as ``targets`` when it declares ``uses_targets``; the term is
    named after the loss (``losses[<name>]``).
    """

    method = "logit_loss"
    settings_class = LogitLossSettings

    def __init__(self, teacher: nn.Module, settings: LogitLossSettings, *, num_classes: int) -> None:
        super().__init__(teacher, settings, num_classes=num_classes)
        self.loss, _ = settings_logit_loss(settings, "method")
        self.method = settings.method

    def distill_term(self, student, teacher, labels):
        cfg = self.settings
        targets = labels if self.loss.uses_targets else None
        return self.loss(student, teacher, temperature=cfg.temperature, targets=targets, **cfg.loss_params)


#: method name -> objective class (any other registered logit loss: :class:`LogitLossObjective`).
DISTILL_OBJECTIVES: dict[str, type[DistillObjective]] = {
    cls.method: cls
    for cls in (KDObjective, DKDObjective, DKLObjective, IKLObjective, GKLObjective, MSEObjective, JSDObjective)
}


def build_distill_objective(teacher: nn.Module, settings: DistillSettings, *, num_classes: int) -> DistillObjective:
    """The objective of ``settings.method`` with ``teacher`` frozen inside it."""
    if not isinstance(settings, DistillSettings):
        raise fail("", "settings", "a gkl.settings.distill settings object", type(settings).__name__, show_value=False)
    return DISTILL_OBJECTIVES.get(settings.method, LogitLossObjective)(teacher, settings, num_classes=num_classes)
