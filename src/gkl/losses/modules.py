"""nn.Module forms of the losses in :mod:`gkl.losses.functional`."""

from __future__ import annotations

import math

import torch
from torch import nn

from . import functional as LF
from ._validation import (
    check_choice,
    check_int,
    check_pair,
    check_pair_values,
    check_real,
    check_reduction,
    check_targets,
    targets_check,
    value_checks_active,
)
from .prior import ClassPrior

__all__ = ["GKLLoss", "IKLLoss", "KLDivLoss", "DKLLoss", "DKDLoss", "JSDivLoss", "LogitMSELoss"]


class GKLLoss(nn.Module):
    """Module form of :func:`~gkl.losses.gkl_loss`, optionally with class-wise weights.

    ``forward(logits, target_logits, targets=None)``. With ``class_wise=True`` the
    module owns a :class:`ClassPrior` (submodule ``prior``, temperature
    ``weight_temperature``): each call weights the wMSE with ``prior(targets)``
    (the statistics frozen at the last epoch end, uniform in the first epoch) and,
    in training mode, accumulates ``target_logits`` into it. Call
    ``loss.prior.step()`` at every epoch end (after the last batch, before saving
    the checkpoint; under DDP on every rank). The prior is in ``state_dict``.
    """

    def __init__(
        self,
        num_classes: int | None = None,
        *,
        alpha: float = 1.0,
        beta: float = 1.0,
        gamma: float = 1.0,
        temperature: float = 1.0,
        weight_temperature: float = 1.0,
        class_wise: bool = False,
        normalize: str = "weights",
        reduction: str = "mean",
        ignore_index: int = -100,
        momentum: float | None = None,
    ) -> None:
        super().__init__()
        self.alpha = check_real("alpha", alpha, minimum=0.0)
        self.beta = check_real("beta", beta, minimum=0.0)
        self.gamma = check_real("gamma", gamma, minimum=0.0)
        self.temperature = check_real("temperature", temperature, strictly_positive=True)
        self.weight_temperature = check_real("weight_temperature", weight_temperature, strictly_positive=True)
        self.normalize = check_choice("normalize", normalize, ("weights", "batch"))
        self.reduction = check_reduction(reduction)
        self.ignore_index = check_int("ignore_index", ignore_index)
        self.class_wise = bool(class_wise)
        self.prior: ClassPrior | None
        if self.class_wise:
            if num_classes is None:
                raise ValueError("num_classes must be a positive int when class_wise=True, got None")
            self.prior = ClassPrior(num_classes, temperature=self.weight_temperature, momentum=momentum)
        else:
            if momentum is not None:
                raise ValueError("momentum must be None unless class_wise=True")
            self.prior = None
        self.num_classes = num_classes

    def extra_repr(self) -> str:
        return (
            f"alpha={self.alpha}, beta={self.beta}, gamma={self.gamma}, temperature={self.temperature}, "
            f"weight_temperature={self.weight_temperature}, class_wise={self.class_wise}, "
            f"normalize={self.normalize!r}, reduction={self.reduction!r}"
        )

    def forward(
        self, logits: torch.Tensor, target_logits: torch.Tensor, targets: torch.Tensor | None = None
    ) -> torch.Tensor:
        if self.prior is None:
            return LF.gkl_loss(
                logits,
                target_logits,
                alpha=self.alpha,
                beta=self.beta,
                gamma=self.gamma,
                temperature=self.temperature,
                weight_temperature=self.weight_temperature,
                normalize=self.normalize,
                targets=targets,
                ignore_index=self.ignore_index,
                reduction=self.reduction,
            )
        # class-wise: the inputs are checked once (one host sync at most, none while compiling), then
        # the prior's rows weight the wMSE and, in training mode, target_logits feed the prior
        if targets is None:
            raise ValueError(
                "targets: expected class indices of shape (N,) or (N, d1, ...) when class_wise=True, got None"
            )
        check_pair(logits, target_logits)
        if logits.shape[1] != self.prior.num_classes:
            raise ValueError(
                f"logits: expected num_classes={self.prior.num_classes} in dim 1, got shape {tuple(logits.shape)}"
            )
        check_targets(targets, logits)
        if value_checks_active():
            check_pair_values(logits, target_logits, targets_check(targets, self.prior.num_classes, self.ignore_index))
        valid = targets != self.ignore_index
        weights = self.prior._rows(targets, valid).to(logits.device)
        loss = LF._gkl(
            logits,
            target_logits,
            weights,
            alpha=self.alpha,
            beta=self.beta,
            gamma=self.gamma,
            temperature=self.temperature,
            weight_temperature=self.weight_temperature,
            normalize=self.normalize,
            valid=valid,
            reduction=self.reduction,
        )
        if self.training:
            self.prior._accumulate(target_logits, targets, valid)
        return loss


class IKLLoss(GKLLoss):
    """IKL (conference version): :class:`GKLLoss` with γ = 1 and normalize="batch"."""

    def __init__(
        self,
        num_classes: int | None = None,
        *,
        alpha: float = 1.0,
        beta: float = 1.0,
        temperature: float = 1.0,
        weight_temperature: float = 1.0,
        class_wise: bool = False,
        reduction: str = "mean",
        ignore_index: int = -100,
        momentum: float | None = None,
    ) -> None:
        super().__init__(
            num_classes,
            alpha=alpha,
            beta=beta,
            gamma=1.0,
            temperature=temperature,
            weight_temperature=weight_temperature,
            class_wise=class_wise,
            normalize="batch",
            reduction=reduction,
            ignore_index=ignore_index,
            momentum=momentum,
        )


class KLDivLoss(nn.Module):
    """Hinton KD, T²·KL(softmax(t/T) ‖ softmax(s/T)): module form of :func:`~gkl.losses.kl_div`.

    ``temperature=math.inf`` is the exact T → ∞ limit (centred logit matching).
    """

    def __init__(self, *, temperature: float = 1.0, reduction: str = "mean") -> None:
        super().__init__()
        if isinstance(temperature, (int, float)) and not isinstance(temperature, bool) and temperature == math.inf:
            self.temperature = math.inf
        else:
            self.temperature = check_real("temperature", temperature, strictly_positive=True)
        self.reduction = check_reduction(reduction)

    def forward(self, logits: torch.Tensor, target_logits: torch.Tensor) -> torch.Tensor:
        return LF.kl_div(logits, target_logits, temperature=self.temperature, reduction=self.reduction)


class DKLLoss(nn.Module):
    """Decoupled KL (Eq. 5) at temperature T: module form of :func:`~gkl.losses.dkl_loss`."""

    def __init__(
        self, *, alpha: float = 1.0, beta: float = 1.0, temperature: float = 1.0, reduction: str = "mean"
    ) -> None:
        super().__init__()
        self.alpha = check_real("alpha", alpha, minimum=0.0)
        self.beta = check_real("beta", beta, minimum=0.0)
        self.temperature = check_real("temperature", temperature, strictly_positive=True)
        self.reduction = check_reduction(reduction)

    def forward(self, logits: torch.Tensor, target_logits: torch.Tensor) -> torch.Tensor:
        return LF.dkl_loss(
            logits,
            target_logits,
            alpha=self.alpha,
            beta=self.beta,
            temperature=self.temperature,
            reduction=self.reduction,
        )


class DKDLoss(nn.Module):
    """Decoupled KD (Zhao et al. 2022): module form of :func:`~gkl.losses.dkd_loss`."""

    def __init__(
        self, *, alpha: float = 1.0, beta: float = 8.0, temperature: float = 4.0, reduction: str = "mean"
    ) -> None:
        super().__init__()
        self.alpha = check_real("alpha", alpha, minimum=0.0)
        self.beta = check_real("beta", beta, minimum=0.0)
        self.temperature = check_real("temperature", temperature, strictly_positive=True)
        self.reduction = check_reduction(reduction)

    def forward(self, logits: torch.Tensor, target_logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return LF.dkd_loss(
            logits,
            target_logits,
            targets,
            alpha=self.alpha,
            beta=self.beta,
            temperature=self.temperature,
            reduction=self.reduction,
        )


class JSDivLoss(nn.Module):
    """Jensen-Shannon divergence (× T²): module form of :func:`~gkl.losses.js_div`."""

    def __init__(self, *, temperature: float = 1.0, reduction: str = "mean") -> None:
        super().__init__()
        self.temperature = check_real("temperature", temperature, strictly_positive=True)
        self.reduction = check_reduction(reduction)

    def forward(self, logits: torch.Tensor, target_logits: torch.Tensor) -> torch.Tensor:
        return LF.js_div(logits, target_logits, temperature=self.temperature, reduction=self.reduction)


class LogitMSELoss(nn.Module):
    """Logit matching ‖o_n − o_m‖²/C: module form of :func:`~gkl.losses.logit_mse`."""

    def __init__(self, *, reduction: str = "mean") -> None:
        super().__init__()
        self.reduction = check_reduction(reduction)

    def forward(self, logits: torch.Tensor, target_logits: torch.Tensor) -> torch.Tensor:
        return LF.logit_mse(logits, target_logits, reduction=self.reduction)
