"""The built-in entries of the logit-loss registry (:mod:`gkl.losses.registry`).

Each adapter gives a function of :mod:`gkl.losses.functional` the registry's one signature.
"""

from __future__ import annotations

from typing import Any

import torch

from . import _core
from . import functional as LF
from ._validation import check_real
from .registry import register_logit_loss


def _no_extra(name: str, targets: Any, weights: Any) -> None:
    if targets is not None:
        raise ValueError(f"targets: loss {name!r} takes no targets, got a tensor")
    if weights is not None:
        raise ValueError(f"weights: loss {name!r} takes no class weights, got a tensor")


def _pair(logits: torch.Tensor, target_logits: torch.Tensor, reduction: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Checked inputs of an adapter that computes its own formula (one host sync), upcast like the losses'."""
    _core._checked_pair(logits, target_logits, reduction)
    return _core._upcast(logits, target_logits)


@register_logit_loss("kl", description="T² · KL(softmax(o_m/T) ‖ softmax(o_n/T)) (Hinton KD; T = inf: the exact limit)")
def kl(
    logits: torch.Tensor,
    target_logits: torch.Tensor,
    *,
    temperature: float = 1.0,
    reduction: str = "mean",
    targets: torch.Tensor | None = None,
    weights: torch.Tensor | None = None,
) -> torch.Tensor:
    _no_extra("kl", targets, weights)
    return LF.kl_div(logits, target_logits, temperature=temperature, reduction=reduction)


@register_logit_loss("reverse_kl", description="T² · KL(softmax(o_n/T) ‖ softmax(o_m/T))")
def reverse_kl(
    logits: torch.Tensor,
    target_logits: torch.Tensor,
    *,
    temperature: float = 1.0,
    reduction: str = "mean",
    targets: torch.Tensor | None = None,
    weights: torch.Tensor | None = None,
) -> torch.Tensor:
    _no_extra("reverse_kl", targets, weights)
    return LF.kl_div(target_logits, logits, temperature=temperature, reduction=reduction)


@register_logit_loss(
    "jsd",
    params={"beta": 0.5},
    description="T² · generalised Jensen-Shannon divergence of softmax(o_n/T), softmax(o_m/T) (β = 0.5: JS)",
)
def jsd(
    logits: torch.Tensor,
    target_logits: torch.Tensor,
    *,
    temperature: float = 1.0,
    reduction: str = "mean",
    targets: torch.Tensor | None = None,
    weights: torch.Tensor | None = None,
    beta: float = 0.5,
) -> torch.Tensor:
    _no_extra("jsd", targets, weights)
    return LF.js_div(logits, target_logits, temperature=temperature, reduction=reduction, beta=beta)


@register_logit_loss("soft_ce", description="T² · −Σ_j softmax(o_m/T)^j log softmax(o_n/T)^j (soft-label CE)")
def soft_ce(
    logits: torch.Tensor,
    target_logits: torch.Tensor,
    *,
    temperature: float = 1.0,
    reduction: str = "mean",
    targets: torch.Tensor | None = None,
    weights: torch.Tensor | None = None,
) -> torch.Tensor:
    _no_extra("soft_ce", targets, weights)
    temperature = check_real("temperature", temperature, strictly_positive=True)
    o_n, o_m = _pair(logits, target_logits, reduction)
    with _core._full_precision(o_n.device):
        per_example = -_core._rowdot(
            torch.softmax(o_m / temperature, dim=1), torch.log_softmax(o_n / temperature, dim=1)
        )
        return _core._reduce(per_example * (temperature * temperature), reduction)


@register_logit_loss("softmax_mse", description="mean_j (softmax(o_n/T)^j − softmax(o_m/T)^j)² (Mean-Teacher)")
def softmax_mse(
    logits: torch.Tensor,
    target_logits: torch.Tensor,
    *,
    temperature: float = 1.0,
    reduction: str = "mean",
    targets: torch.Tensor | None = None,
    weights: torch.Tensor | None = None,
) -> torch.Tensor:
    _no_extra("softmax_mse", targets, weights)
    temperature = check_real("temperature", temperature, strictly_positive=True)
    o_n, o_m = _pair(logits, target_logits, reduction)
    with _core._full_precision(o_n.device):
        per_example = (
            (torch.softmax(o_n / temperature, dim=1) - torch.softmax(o_m / temperature, dim=1)).square().mean(dim=1)
        )
        return _core._reduce(per_example, reduction)


@register_logit_loss("hard_ce", uses_temperature=False, description="CE(o_n, argmax o_m) (hard pseudo-label)")
def hard_ce(
    logits: torch.Tensor,
    target_logits: torch.Tensor,
    *,
    temperature: float = 1.0,
    reduction: str = "mean",
    targets: torch.Tensor | None = None,
    weights: torch.Tensor | None = None,
) -> torch.Tensor:
    _no_extra("hard_ce", targets, weights)
    o_n, o_m = _pair(logits, target_logits, reduction)
    with _core._full_precision(o_n.device):
        per_example = torch.nn.functional.cross_entropy(o_n, o_m.argmax(dim=1), reduction="none")
        return _core._reduce(per_example, reduction)


@register_logit_loss("mse", uses_temperature=False, description="logit matching ‖o_n − o_m‖² / C")
def mse(
    logits: torch.Tensor,
    target_logits: torch.Tensor,
    *,
    temperature: float = 1.0,
    reduction: str = "mean",
    targets: torch.Tensor | None = None,
    weights: torch.Tensor | None = None,
) -> torch.Tensor:
    _no_extra("mse", targets, weights)
    return LF.logit_mse(logits, target_logits, reduction=reduction)


@register_logit_loss(
    "dkl",
    params={"alpha": 1.0, "beta": 1.0},
    description="Decoupled KL (Eq. 5) on o/T: α wMSE (to o_m) + β soft CE (to o_n), no T²",
)
def dkl(
    logits: torch.Tensor,
    target_logits: torch.Tensor,
    *,
    temperature: float = 1.0,
    reduction: str = "mean",
    targets: torch.Tensor | None = None,
    weights: torch.Tensor | None = None,
    alpha: float = 1.0,
    beta: float = 1.0,
) -> torch.Tensor:
    _no_extra("dkl", targets, weights)
    return LF.dkl_loss(logits, target_logits, alpha=alpha, beta=beta, temperature=temperature, reduction=reduction)


_GKL_PARAMS = {
    "alpha": 1.0,
    "beta": 1.0,
    "gamma": 1.0,
    "weight_temperature": 1.0,
    "normalize": "weights",
    "ignore_index": -100,
    "break_asymmetry": True,
}


@register_logit_loss(
    "gkl",
    params=_GKL_PARAMS,
    uses_weights=True,
    description="Generalized KL (GKL): α wMSE (weights^γ) + β soft CE at T, no T²",
)
def gkl(
    logits: torch.Tensor,
    target_logits: torch.Tensor,
    *,
    temperature: float = 1.0,
    reduction: str = "mean",
    targets: torch.Tensor | None = None,
    weights: torch.Tensor | None = None,
    **params: Any,
) -> torch.Tensor:
    return LF.gkl_loss(
        logits, target_logits, weights=weights, temperature=temperature, targets=targets, reduction=reduction, **params
    )


@register_logit_loss(
    "ikl",
    params={k: v for k, v in _GKL_PARAMS.items() if k not in ("gamma", "normalize", "break_asymmetry")},
    uses_weights=True,
    description="Improved KL (IKL): GKL with γ = 1, batch normalisation",
)
def ikl(
    logits: torch.Tensor,
    target_logits: torch.Tensor,
    *,
    temperature: float = 1.0,
    reduction: str = "mean",
    targets: torch.Tensor | None = None,
    weights: torch.Tensor | None = None,
    **params: Any,
) -> torch.Tensor:
    return LF.ikl_loss(
        logits, target_logits, weights=weights, temperature=temperature, targets=targets, reduction=reduction, **params
    )


@register_logit_loss(
    "dkd",
    params={"alpha": 1.0, "beta": 8.0},
    uses_targets=True,
    description="Decoupled KD (Zhao et al. 2022): T² (α TCKD + β NCKD)",
)
def dkd(
    logits: torch.Tensor,
    target_logits: torch.Tensor,
    *,
    temperature: float = 4.0,
    reduction: str = "mean",
    targets: torch.Tensor | None = None,
    weights: torch.Tensor | None = None,
    alpha: float = 1.0,
    beta: float = 8.0,
) -> torch.Tensor:
    if targets is None:
        raise ValueError("targets: loss 'dkd' needs the class indices (N,), got None")
    _no_extra("dkd", None, weights)
    return LF.dkd_loss(
        logits, target_logits, targets, alpha=alpha, beta=beta, temperature=temperature, reduction=reduction
    )
