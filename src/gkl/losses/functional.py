"""Functional forms of the KL loss family (Cui et al.: DKL, IKL, GKL) and related KD losses.

Conventions (docs/losses.md):

* ``logits`` are o_n (student / adversarial image), ``target_logits`` are o_m
  (teacher / clean image). Shapes (N, C) or dense (N, C, d1, ...); dim 1 is the
  class dim and every other position is one example.
* float16/bfloat16 inputs are computed in float32 (float64 stays float64), with
  autocast disabled inside the loss; the result is float32 (or float64).
* Gradients flow into ``target_logits`` unless the caller detaches them (detach
  the teacher in KD; keep the clean logits attached in adversarial training).
* Reductions (every loss): ``"none"`` returns one value per example, shape (N,) or
  (N, d1, ...), whose mean is the ``"mean"`` result; ``"sum"`` is their sum.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F

from ._core import (
    _centred_wmse,
    _checked_pair,
    _full_precision,
    _gkl_terms_autograd,
    _GKLTerms,
    _reduce,
    _rowdot,
    _upcast,
)
from ._validation import (
    check_choice,
    check_int,
    check_pair,
    check_pair_values,
    check_real,
    check_reduction,
    check_targets,
    check_weights,
    targets_check,
    value_checks_active,
    weights_check,
)

__all__ = ["kl_div", "dkl_loss", "gkl_loss", "ikl_loss", "js_div", "logit_mse", "dkd_loss"]


# ----------------------------------------------------------------------------- KL family


def kl_div(
    logits: torch.Tensor, target_logits: torch.Tensor, *, temperature: float = 1.0, reduction: str = "mean"
) -> torch.Tensor:
    """Hinton KD loss T² · KL(softmax(o_m/T) ‖ softmax(o_n/T)) (paper Eq. 2 with temperature).

    ``temperature=math.inf`` gives the exact limit T → ∞ of T²·KL (Kim et al. 2021):
    per example ``(1/2C) ‖d − mean(d)‖²`` with d = o_n − o_m and the mean over the C
    classes, i.e. half the squared distance of the *centred* logits divided by C. Its
    gradient w.r.t. o_n is (C·d − Σ_j d_j)/C². Kim et al. write the limit as
    ``(1/2C)‖d‖² + δ∞`` with δ∞ = −(Σ_j d_j)²/(2C²) + const; the constant is 0 here.
    It differs from :func:`logit_mse` (= ‖d‖²/C, uncentred): ``kl_div(T=inf) =
    logit_mse/2 − (Σ_j d_j)²/(2C²)``, so a shift of all student logits by the same
    amount changes ``logit_mse`` but not the limit (softmax is shift-invariant).

    Args:
        logits: o_n (student), (N, C) or (N, C, d1, ...).
        target_logits: o_m (teacher), same shape; detach it yourself for KD.
        temperature: T > 0 (or ``math.inf``), applied to both softmaxes; the result is scaled by T².
        reduction: "mean" (of the per-example values summed over classes: the mean over
            examples/positions), "sum", or "none" (per-example values).
    """
    if not (isinstance(temperature, float) and temperature == math.inf):
        temperature = check_real("temperature", temperature, strictly_positive=True)
    _checked_pair(logits, target_logits, reduction)
    with _full_precision(logits.device):
        o_n, o_m = _upcast(logits, target_logits)
        if temperature == math.inf:
            d = o_n - o_m
            centred = d - d.mean(dim=1, keepdim=True)
            per_example = centred.square().sum(dim=1) / (2.0 * o_n.shape[1])
            return _reduce(per_example, reduction)
        log_p_n = torch.log_softmax(o_n / temperature, dim=1)
        log_p_m = torch.log_softmax(o_m / temperature, dim=1)
        per_example = (log_p_m.exp() * (log_p_m - log_p_n)).sum(dim=1) * (temperature * temperature)
        return _reduce(per_example, reduction)


def dkl_loss(
    logits: torch.Tensor,
    target_logits: torch.Tensor,
    *,
    alpha: float = 1.0,
    beta: float = 1.0,
    temperature: float = 1.0,
    reduction: str = "mean",
) -> torch.Tensor:
    """Decoupled KL loss, Theorem 1 / Eq. 5 of Cui et al., at temperature T.

    L = (α/4) Σ_jk S(w^jk)(Δm_jk − S(Δn_jk))² − β Σ_j S(s_m^j) log s_n^j, w^jk = s_m^j s_m^k,
    evaluated on the logits divided by T: Δ = differences of o/T, s = softmax(o/T), so
    ``dkl_loss(o_n, o_m, temperature=T) == dkl_loss(o_n/T, o_m/T)`` (wMSE on logits/T with
    weights softmax(o_m/T), cross-entropy at T, no T² factor).
    The wMSE term sends gradient only to ``target_logits`` (o_m), the soft-label
    cross-entropy only to ``logits`` (o_n). With α = β = 1 the gradients w.r.t. both inputs
    equal those of KL(softmax(o_m/T) ‖ softmax(o_n/T)) (Eqs. 3-4 at T; i.e. those of
    ``kl_div(..., temperature=T) / T²``); the values differ. Computed in the O(C) centred form.
    """
    alpha = check_real("alpha", alpha, minimum=0.0)
    beta = check_real("beta", beta, minimum=0.0)
    temperature = check_real("temperature", temperature, strictly_positive=True)
    _checked_pair(logits, target_logits, reduction)
    with _full_precision(logits.device):
        o_n, o_m = _upcast(logits, target_logits)
        if temperature != 1.0:
            o_n, o_m = o_n / temperature, o_m / temperature
        log_q = torch.log_softmax(o_n, dim=1)
        w = torch.softmax(o_m.detach(), dim=1)
        per_example = alpha * _centred_wmse(o_m, o_n.detach(), w) - beta * _rowdot(w, log_q)
        return _reduce(per_example, reduction)


def _gkl_weights(
    target_logits: torch.Tensor,
    weights: torch.Tensor | None,
    gamma: float,
    temperature: float,
    weight_temperature: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(w^γ, p): the detached wMSE weights raised to γ and the CE targets S(softmax(o_m/T))."""
    o_m = target_logits.detach()
    target_probs = None
    if weights is None:
        w = torch.softmax(o_m / weight_temperature if weight_temperature != 1.0 else o_m, dim=1)
        if weight_temperature == temperature:
            target_probs = w  # reuse for the cross-entropy term
    else:
        w = weights.detach()
        w = w if w.dtype == o_m.dtype else w.to(o_m.dtype)
    if gamma == 0.0:
        w = torch.ones_like(w)
    elif gamma != 1.0:
        w = w.pow(gamma)
    if target_probs is None:
        target_probs = torch.softmax(o_m / temperature if temperature != 1.0 else o_m, dim=1)
    return w, target_probs


def _gkl(
    logits: torch.Tensor,
    target_logits: torch.Tensor,
    weights: torch.Tensor | None,
    *,
    alpha: float,
    beta: float,
    gamma: float,
    temperature: float,
    weight_temperature: float,
    normalize: str,
    valid: torch.Tensor | None,
    reduction: str,
) -> torch.Tensor:
    """The computation of :func:`gkl_loss` on checked arguments (no checks, no host sync)."""
    with _full_precision(logits.device):
        o_n, o_m = _upcast(logits, target_logits)
        w, target_probs = _gkl_weights(o_m, weights, gamma, temperature, weight_temperature)
        # W_i = Σ_j (w_i^j)^γ; exactly 1 for sample-wise weights (a softmax) with γ = 1
        total_weight: torch.Tensor | float = 1.0 if weights is None and gamma == 1.0 else w.sum(dim=1, keepdim=True)
        if valid is None:
            n_valid: torch.Tensor | float = float(max(o_n.numel() // o_n.shape[1], 1))
        else:
            mask = valid.to(o_n.dtype)
            n_valid = mask.sum().clamp_min(1.0)
        if normalize == "batch" or isinstance(total_weight, float):
            denom = n_valid  # D = N (also D = Σ_i W_i² when every W_i = 1)
        else:
            mass = total_weight.square()
            denom = (mass if valid is None else mass.squeeze(1) * mask).sum().clamp_min(torch.finfo(o_n.dtype).tiny)
        # the loss is Σ_i a_i mse_i + b_i ce_i; "none" returns v_i = α (N/D) mse_i + β ce_i (0 where
        # ignored), whose mean over the non-ignored examples is the "mean" loss and whose sum is "sum"
        a = alpha / denom if reduction == "mean" else alpha * n_valid / denom
        b = beta / n_valid if reduction == "mean" else beta
        if valid is not None:
            a, b = a * mask, b * mask
        reduce = reduction != "none" and valid is None
        if torch.compiler.is_compiling():  # plain autograd: the compiler chooses what backward keeps
            value = _gkl_terms_autograd(o_n, o_m, w, total_weight, target_probs, temperature, a, b, reduce)
        else:
            value = _GKLTerms.apply(
                o_n, o_m, w, total_weight, None if target_probs is w else target_probs, temperature, a, b, reduce
            )
        return value if reduce or reduction == "none" else value.sum()


def _check_gkl_tensors(
    logits: torch.Tensor,
    target_logits: torch.Tensor,
    weights: torch.Tensor | None,
    targets: torch.Tensor | None,
    ignore_index: int,
    reduction: str,
) -> None:
    """Shape checks of gkl_loss's tensors and their content checks with one host sync."""
    check_pair(logits, target_logits)
    check_reduction(reduction)
    if weights is not None:
        check_weights(weights, logits)
    if targets is not None:
        check_targets(targets, logits)
    if value_checks_active():
        extra = [] if weights is None else [weights_check(weights)]
        if targets is not None:
            extra.append(targets_check(targets, logits.shape[1], ignore_index))
        check_pair_values(logits, target_logits, *extra)


def gkl_loss(
    logits: torch.Tensor,
    target_logits: torch.Tensor,
    *,
    weights: torch.Tensor | None = None,
    alpha: float = 1.0,
    beta: float = 1.0,
    gamma: float = 1.0,
    temperature: float = 1.0,
    weight_temperature: float = 1.0,
    normalize: str = "weights",
    targets: torch.Tensor | None = None,
    ignore_index: int = -100,
    reduction: str = "mean",
    break_asymmetry: bool = True,
) -> torch.Tensor:
    """Generalised KL loss (GKL, journal version of Cui et al.; docs/losses.md).

    Per example i (every position of a dense input is an example):

        mse_i = (1/4) Σ_jk φ_i^jk (Δm_i,jk − Δn_i,jk)²,   φ^jk = (w^j)^γ (w^k)^γ  (Eqs. 8-9 weights)
        ce_i  = − Σ_j S(softmax(o_m,i/T))^j log softmax(o_n,i/T)^j

    and L = α Σ_i mse_i / D + β (1/N) Σ_i ce_i with D = Σ_i W_i², W_i = Σ_j (w_i^j)^γ
    (``normalize="weights"``, the authors' GKL code) or D = N (``normalize="batch"``,
    the conference IKL code). N counts the examples not equal to ``ignore_index``.
    No stop-gradient inside the wMSE; the weights are always detached. The wMSE is
    computed in the centred O(C) form (docs/losses.md); no N×C×C tensor is built.
    The gradients are hand-written (see ``_GKLTerms``): the loss supports ``backward()``
    but not double backward (``create_graph=True`` then raises).

    Args:
        logits: o_n, (N, C) or (N, C, d1, ...), any floating dtype.
        target_logits: o_m, same shape (teacher in KD -- detach it; clean logits in AT).
        weights: None for sample-wise weights softmax(o_m / weight_temperature), or a
            probability tensor of the logits' shape, e.g. ``ClassPrior(targets)``
            (then ``weight_temperature`` is not used).
        alpha: weight of the wMSE term (paper α; the authors' code calls it β); a float, or a
            0-dim tensor for a data-dependent weight (used as is: not value-checked, no host sync).
        beta: weight of the cross-entropy term (paper β).
        gamma: smoothing exponent γ ≥ 0 (γ = 0: plain pairwise logit-difference MSE).
        temperature: T > 0 of the cross-entropy term (no T² factor).
        weight_temperature: τ_w > 0 of the sample-wise weights.
        normalize: "weights" or "batch" (see above).
        targets: optional class indices (N,) or (N, d1, ...); only used to mask
            ``ignore_index`` positions here.
        ignore_index: target value whose positions are excluded from sums and normalisation.
        reduction: "mean" (the formula above), "sum" (N × mean), or "none": per-example
            values v_i = α mse_i N / D + β ce_i (0 at ignored positions), whose mean over
            the non-ignored examples is the "mean" result.
        break_asymmetry: True (GKL): the wMSE sends gradient to both inputs. False: the
            stop-gradient of DKL (Eq. 5) on the ``logits`` side of the wMSE, so it sends gradient
            only to ``target_logits``; with α = β = γ = 1 and sample-wise weights at τ_w = T = 1
            this is :func:`dkl_loss` (the KL gradient). The GKL paper's Table I ablation (b).
    """
    if not (isinstance(alpha, torch.Tensor) and alpha.dim() == 0):  # a 0-dim tensor is used as is (no sync)
        alpha = check_real("alpha", alpha, minimum=0.0)
    beta = check_real("beta", beta, minimum=0.0)
    gamma = check_real("gamma", gamma, minimum=0.0)
    temperature = check_real("temperature", temperature, strictly_positive=True)
    if weights is None:
        weight_temperature = check_real("weight_temperature", weight_temperature, strictly_positive=True)
    check_choice("normalize", normalize, ("weights", "batch"))
    ignore_index = check_int("ignore_index", ignore_index)
    _check_gkl_tensors(logits, target_logits, weights, targets, ignore_index, reduction)
    valid = None if targets is None else targets != ignore_index
    if not isinstance(break_asymmetry, bool):
        raise ValueError(f"break_asymmetry: expected a bool, got {break_asymmetry!r}")
    common: dict[str, Any] = dict(
        gamma=gamma,
        temperature=temperature,
        weight_temperature=weight_temperature,
        normalize=normalize,
        valid=valid,
        reduction=reduction,
    )
    if not break_asymmetry:  # DKL's stop-gradient: the wMSE sees detached logits, the CE the live ones
        wmse = _gkl(logits.detach(), target_logits, weights, alpha=alpha, beta=0.0, **common)
        return wmse + _gkl(logits, target_logits, weights, alpha=0.0, beta=beta, **common)
    return _gkl(logits, target_logits, weights, alpha=alpha, beta=beta, **common)


def ikl_loss(
    logits: torch.Tensor,
    target_logits: torch.Tensor,
    *,
    weights: torch.Tensor | None = None,
    alpha: float = 1.0,
    beta: float = 1.0,
    temperature: float = 1.0,
    weight_temperature: float = 1.0,
    targets: torch.Tensor | None = None,
    ignore_index: int = -100,
    reduction: str = "mean",
) -> torch.Tensor:
    """Improved KL loss (IKL, conference version): :func:`gkl_loss` with γ = 1, normalize="batch".

    The IKL paper's AT optimum is α = 20 (α/4 = 5), β = 5, class-wise weights, τ_w = 4.
    """
    return gkl_loss(
        logits,
        target_logits,
        weights=weights,
        alpha=alpha,
        beta=beta,
        gamma=1.0,
        temperature=temperature,
        weight_temperature=weight_temperature,
        normalize="batch",
        targets=targets,
        ignore_index=ignore_index,
        reduction=reduction,
    )


# ----------------------------------------------------------------------------- other KD losses


def js_div(
    logits: torch.Tensor,
    target_logits: torch.Tensor,
    *,
    temperature: float = 1.0,
    reduction: str = "mean",
    beta: float = 0.5,
) -> torch.Tensor:
    """Generalised Jensen-Shannon divergence of p_n = softmax(o_n/T) and p_m = softmax(o_m/T), times T².

    JSD_β = β KL(p_m ‖ m) + (1 − β) KL(p_n ‖ m), m = β p_m + (1 − β) p_n (the generalised JSD of
    on-policy distillation, as in TRL and Liger-Kernel), with their end points: β = 0 is the
    forward KL(p_m ‖ p_n) and β = 1 the reverse KL(p_n ‖ p_m). β = 0.5 (default) is the symmetric
    JS divergence ½ KL(p_n ‖ m) + ½ KL(p_m ‖ m) of GKL Appendix 6.5. Computed from
    log-probabilities (log m = logaddexp(log β + log p_m, log(1 − β) + log p_n)); T² keeps
    gradients comparable with :func:`kl_div` (T = 1: plain JSD).
    """
    temperature = check_real("temperature", temperature, strictly_positive=True)
    beta = check_real("beta", beta, minimum=0.0)
    if beta > 1.0:
        raise ValueError(f"beta: expected a value in [0, 1], got {beta!r}")
    _checked_pair(logits, target_logits, reduction)
    with _full_precision(logits.device):
        o_n, o_m = _upcast(logits, target_logits)
        log_p = torch.log_softmax(o_n / temperature, dim=1)
        log_q = torch.log_softmax(o_m / temperature, dim=1)
        if beta == 0.0:  # forward KL(p_m ‖ p_n)
            per_example = (log_q.exp() * (log_q - log_p)).sum(dim=1)
        elif beta == 1.0:  # reverse KL(p_n ‖ p_m)
            per_example = (log_p.exp() * (log_p - log_q)).sum(dim=1)
        elif beta == 0.5:
            log_mid = torch.logaddexp(log_p, log_q) - math.log(2.0)
            per_example = 0.5 * (
                (log_p.exp() * (log_p - log_mid)).sum(dim=1) + (log_q.exp() * (log_q - log_mid)).sum(dim=1)
            )
        else:
            log_mid = torch.logaddexp(log_q + math.log(beta), log_p + math.log1p(-beta))
            per_example = beta * (log_q.exp() * (log_q - log_mid)).sum(dim=1) + (1.0 - beta) * (
                log_p.exp() * (log_p - log_mid)
            ).sum(dim=1)
        return _reduce(per_example * (temperature * temperature), reduction)


def logit_mse(logits: torch.Tensor, target_logits: torch.Tensor, *, reduction: str = "mean") -> torch.Tensor:
    """Logit matching ‖o_n − o_m‖² / C per example, averaged over the batch ("mean").

    Plain (uncentred) logit MSE, the "L_MSE" of Kim et al. 2021 up to the factor 1/C.
    It is *not* the T → ∞ limit of KD: that limit, ``kl_div(..., temperature=math.inf)``,
    centres the logit difference first and equals ``logit_mse/2 − (Σ_j d_j)²/(2C²)``.
    """
    _checked_pair(logits, target_logits, reduction)
    with _full_precision(logits.device):
        o_n, o_m = _upcast(logits, target_logits)
        per_example = (o_n - o_m).square().sum(dim=1) / o_n.shape[1]
        return _reduce(per_example, reduction)


def dkd_loss(
    logits: torch.Tensor,
    target_logits: torch.Tensor,
    targets: torch.Tensor,
    *,
    alpha: float = 1.0,
    beta: float = 8.0,
    temperature: float = 4.0,
    reduction: str = "mean",
) -> torch.Tensor:
    """Decoupled KD (Zhao et al. 2022): α · TCKD + β · NCKD, each scaled by T².

    TCKD is the KL between the binary (target, non-target) distributions of teacher
    and student; NCKD the KL between their softmaxes over the non-target classes
    only. The non-target softmax is taken over the C − 1 gathered non-target logits
    (no −1000 masking), so C = 2 gives NCKD = 0 exactly and never inf/NaN.
    Inputs are (N, C); ``targets`` (N,) hold class indices (no ignore_index).
    """
    alpha = check_real("alpha", alpha, minimum=0.0)
    beta = check_real("beta", beta, minimum=0.0)
    temperature = check_real("temperature", temperature, strictly_positive=True)
    check_pair(logits, target_logits, min_classes=2)
    if logits.dim() != 2:
        raise ValueError(f"logits: expected shape (N, C) for dkd_loss, got shape {tuple(logits.shape)}")
    check_targets(targets, logits)
    check_reduction(reduction)
    if value_checks_active():
        check_pair_values(logits, target_logits, targets_check(targets, logits.shape[1], None))
    with _full_precision(logits.device):
        o_n, o_m = _upcast(logits, target_logits)
        n, c = o_n.shape
        is_target = F.one_hot(targets.long(), c).bool()
        z_n, z_m = o_n / temperature, o_m / temperature

        def binary_log_probs(z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
            lse_all = torch.logsumexp(z, dim=1)
            rest = z[~is_target].view(n, c - 1)
            log_p_target = z[is_target] - lse_all
            log_p_rest = torch.logsumexp(rest, dim=1) - lse_all
            return log_p_target, log_p_rest, rest

        lt_n, lr_n, rest_n = binary_log_probs(z_n)
        lt_m, lr_m, rest_m = binary_log_probs(z_m)
        tckd = lt_m.exp() * (lt_m - lt_n) + lr_m.exp() * (lr_m - lr_n)
        log_q_n = torch.log_softmax(rest_n, dim=1)
        log_q_m = torch.log_softmax(rest_m, dim=1)
        nckd = (log_q_m.exp() * (log_q_m - log_q_n)).sum(dim=1)
        per_example = (alpha * tckd + beta * nckd) * (temperature * temperature)
        return _reduce(per_example, reduction)
