"""Functional forms of the KL loss family (Cui et al.: DKL, IKL, GKL) and related KD losses.

Conventions (docs/losses.md):

* ``logits`` are o_n (student / adversarial image), ``target_logits`` are o_m
  (teacher / clean image). Shapes (N, C) or dense (N, C, d1, ...); dim 1 is the
  class dim and every other position is one example.
* float16/bfloat16 inputs are computed in float32 (float64 stays float64), with
  autocast disabled inside the loss; the result is float32 (or float64).
* Gradients flow into ``target_logits`` unless the caller detaches them (detach
  the teacher in KD; keep the clean logits attached in adversarial training).
* Reductions: ``"none"`` returns one value per example, shape (N,) or (N, d1, ...),
  whose mean is the ``"mean"``/``"batchmean"`` result; ``"sum"`` is their sum.
"""

from __future__ import annotations

import contextlib
import math
from typing import Iterator

import torch
import torch.nn.functional as F

from ._validation import (check_choice, check_int, check_logits, check_pair, check_real,
                          check_targets, check_weights)

__all__ = ["kl_div", "dkl_loss", "gkl_loss", "ikl_loss", "js_div", "logit_mse", "dkd_loss"]

_BATCH_REDUCTIONS = ("batchmean", "sum", "none")
_MEAN_REDUCTIONS = ("mean", "sum", "none")


# ----------------------------------------------------------------------------- helpers

@contextlib.contextmanager
def _full_precision(device: torch.device) -> Iterator[None]:
    """Disable autocast so the loss maths stays in float32/float64."""
    try:
        ctx = torch.autocast(device_type=device.type, enabled=False)
    except RuntimeError:  # device type without autocast support
        ctx = contextlib.nullcontext()
    with ctx:
        yield


def _compute_dtype(*tensors: torch.Tensor) -> torch.dtype:
    """float64 if any input is float64, else float32 (half types are upcast)."""
    return torch.float64 if any(t.dtype == torch.float64 for t in tensors) else torch.float32


def _upcast(*tensors: torch.Tensor) -> tuple[torch.Tensor, ...]:
    dtype = _compute_dtype(*tensors)
    return tuple(t.to(dtype) for t in tensors)


def _batch_reduce(per_example: torch.Tensor, reduction: str) -> torch.Tensor:
    """Reduce per-example values: "batchmean" = sum / number of examples (positions)."""
    if reduction == "none":
        return per_example
    total = per_example.sum()
    if reduction == "sum":
        return total
    return total / max(per_example.numel(), 1)


def _centred_wmse(o_m: torch.Tensor, o_n: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """Per-example (1/4) Σ_j Σ_k w^j w^k ((o_m^j − o_m^k) − (o_n^j − o_n^k))², O(C) form.

    (docs/losses.md, the centred form): Σ_jk w^j w^k (d_j − d_k)² = 2 W Σ_j w^j (d_j − μ)², with
    d = o_m − o_n, W = Σ_j w^j, μ = Σ_j w^j d_j / W. The centred (weighted
    variance) form avoids the cancellation of 2WΣwd² − 2(Σwd)² at large logits.
    Reduces over dim 1; returns shape (N, d1, ...).
    """
    d = o_m - o_n
    total_weight = w.sum(dim=1, keepdim=True)
    mu = (w * d).sum(dim=1, keepdim=True) / total_weight
    r = d - mu
    return 0.5 * total_weight.squeeze(1) * (w * r * r).sum(dim=1)


def _soft_cross_entropy(o_n: torch.Tensor, o_m: torch.Tensor, temperature: float) -> torch.Tensor:
    """Per-example − Σ_j S(softmax(o_m/T))^j log softmax(o_n/T)^j (no T² factor)."""
    target_probs = torch.softmax(o_m.detach() / temperature, dim=1)
    return -(target_probs * torch.log_softmax(o_n / temperature, dim=1)).sum(dim=1)


def _rowdot(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Σ_j a_ij b_ij per row of two (N, C) tensors (any trailing dims are summed the same way)."""
    if a.dim() == 2:
        return torch.einsum("ij,ij->i", a, b)
    return (a * b).sum(dim=1)


class _GKLTerms(torch.autograd.Function):
    """Per-example GKL terms (mse_i, ce_i) with hand-written gradients (O(N·C) memory).

    mse_i = ½ W Σ_j w^j (d_j − μ)² (the centred O(C) form, docs/losses.md), d = o_m − o_n:
        ∂mse_i/∂o_m = W w (d − μ) = −∂mse_i/∂o_n      (the ∂μ terms cancel: Σ_j w^j (d_j − μ) = 0)
    ce_i = −Σ_j p^j log softmax(o_n/T)^j with p = S(softmax(o_m/T)):
        ∂ce_i/∂o_n = (softmax(o_n/T) − p) / T,  ∂ce_i/∂o_m = 0 (stop-gradient).
    Only these two direction tensors are saved for backward, instead of autograd's
    chain of intermediates. ``w`` (already raised to γ) and ``p`` carry no gradient.
    Not twice differentiable: backward with ``create_graph=True`` raises a RuntimeError.
    """

    @staticmethod
    def forward(ctx, o_n: torch.Tensor, o_m: torch.Tensor, w: torch.Tensor,  # type: ignore[override]
                target_probs: torch.Tensor, temperature: float) -> tuple[torch.Tensor, torch.Tensor]:
        # row-wise dot products as einsum (a batched matmul: no (N, C) product tensor, one pass)
        total_weight = w.sum(dim=1, keepdim=True)
        r = o_m - o_n
        r.sub_(_rowdot(w, r).unsqueeze(1).div_(total_weight))
        wr = w * r
        mse = 0.5 * total_weight.squeeze(1) * _rowdot(wr, r)
        log_q = torch.log_softmax(o_n / temperature if temperature != 1.0 else o_n, dim=1)
        ce = -_rowdot(target_probs, log_q)
        if any(ctx.needs_input_grad[:2]):
            mse_direction = wr.mul_(total_weight)
            ce_direction = log_q.exp_().sub_(target_probs)
            if temperature != 1.0:
                ce_direction.div_(temperature)
            ctx.save_for_backward(mse_direction, ce_direction)
        return mse, ce

    @staticmethod
    def backward(ctx, grad_mse: torch.Tensor, grad_ce: torch.Tensor):  # type: ignore[override]
        if torch.is_grad_enabled():  # autograd enables grad mode in backward only for create_graph=True
            raise RuntimeError(
                "gkl_loss / ikl_loss are not twice differentiable (hand-written O(C) gradients): "
                "backward with create_graph=True (double backward, gradient penalties) is not supported")
        mse_direction, ce_direction = ctx.saved_tensors
        g_mse = grad_mse.unsqueeze(1)
        grad_o_n = grad_o_m = None
        if ctx.needs_input_grad[0]:  # g_ce·ce_direction − g_mse·mse_direction in two passes
            grad_o_n = torch.addcmul(grad_ce.unsqueeze(1) * ce_direction, g_mse, mse_direction, value=-1)
        if ctx.needs_input_grad[1]:
            grad_o_m = g_mse * mse_direction
        return grad_o_n, grad_o_m, None, None, None


# ----------------------------------------------------------------------------- KL family

def kl_div(logits: torch.Tensor, target_logits: torch.Tensor, *, temperature: float = 1.0,
           reduction: str = "batchmean") -> torch.Tensor:
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
        reduction: "batchmean" (sum over classes, mean over examples/positions),
            "sum", or "none" (per-example values).
    """
    check_pair(logits, target_logits)
    if not (isinstance(temperature, float) and temperature == math.inf):
        temperature = check_real("temperature", temperature, strictly_positive=True)
    check_choice("reduction", reduction, _BATCH_REDUCTIONS)
    with _full_precision(logits.device):
        o_n, o_m = _upcast(logits, target_logits)
        if temperature == math.inf:
            d = o_n - o_m
            centred = d - d.mean(dim=1, keepdim=True)
            per_example = centred.square().sum(dim=1) / (2.0 * o_n.shape[1])
            return _batch_reduce(per_example, reduction)
        log_p_n = torch.log_softmax(o_n / temperature, dim=1)
        log_p_m = torch.log_softmax(o_m / temperature, dim=1)
        per_example = (log_p_m.exp() * (log_p_m - log_p_n)).sum(dim=1) * (temperature * temperature)
        return _batch_reduce(per_example, reduction)


def dkl_loss(logits: torch.Tensor, target_logits: torch.Tensor, *, alpha: float = 1.0,
             beta: float = 1.0, reduction: str = "batchmean") -> torch.Tensor:
    """Decoupled KL loss, Theorem 1 / Eq. 5 of Cui et al.

    L = (α/4) Σ_jk S(w^jk)(Δm_jk − S(Δn_jk))² − β Σ_j S(s_m^j) log s_n^j, w^jk = s_m^j s_m^k.
    The wMSE term sends gradient only to ``target_logits`` (o_m), the soft-label
    cross-entropy only to ``logits`` (o_n). With α = β = 1 the gradients w.r.t.
    both inputs equal those of KL(s_m ‖ s_n) (Eqs. 3-4); the values differ.
    Computed in the O(C) centred form (docs/losses.md).
    """
    check_pair(logits, target_logits)
    alpha = check_real("alpha", alpha, minimum=0.0)
    beta = check_real("beta", beta, minimum=0.0)
    check_choice("reduction", reduction, _BATCH_REDUCTIONS)
    with _full_precision(logits.device):
        o_n, o_m = _upcast(logits, target_logits)
        w = torch.softmax(o_m.detach(), dim=1)
        wmse = _centred_wmse(o_m, o_n.detach(), w)
        ce = _soft_cross_entropy(o_n, o_m, 1.0)
        return _batch_reduce(alpha * wmse + beta * ce, reduction)


def gkl_loss(logits: torch.Tensor, target_logits: torch.Tensor, *,
             weights: torch.Tensor | None = None, alpha: float = 1.0, beta: float = 1.0,
             gamma: float = 1.0, temperature: float = 1.0, weight_temperature: float = 1.0,
             normalize: str = "weights", targets: torch.Tensor | None = None,
             ignore_index: int = -100, reduction: str = "mean") -> torch.Tensor:
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
    """
    check_pair(logits, target_logits)
    if not (isinstance(alpha, torch.Tensor) and alpha.dim() == 0):  # a 0-dim tensor is used as is (no sync)
        alpha = check_real("alpha", alpha, minimum=0.0)
    beta = check_real("beta", beta, minimum=0.0)
    gamma = check_real("gamma", gamma, minimum=0.0)
    temperature = check_real("temperature", temperature, strictly_positive=True)
    check_choice("normalize", normalize, ("weights", "batch"))
    check_choice("reduction", reduction, _MEAN_REDUCTIONS)
    ignore_index = check_int("ignore_index", ignore_index)
    if weights is None:
        weight_temperature = check_real("weight_temperature", weight_temperature, strictly_positive=True)
    else:
        check_weights(weights, logits)
    valid = None
    if targets is not None:
        check_targets(targets, logits, ignore_index)
        valid = targets != ignore_index

    with _full_precision(logits.device):
        o_n, o_m = _upcast(logits, target_logits)
        dtype = o_n.dtype
        target_probs = None
        if weights is None:
            w = torch.softmax(o_m.detach() / weight_temperature, dim=1)
            if weight_temperature == temperature:
                target_probs = w  # reuse for the cross-entropy term
        else:
            w = weights.detach().to(dtype)
        if gamma == 0.0:
            w = torch.ones_like(w)
        elif gamma != 1.0:
            w = w.pow(gamma)
        if target_probs is None:
            target_probs = torch.softmax(o_m.detach() / temperature, dim=1)
        mse, ce = _GKLTerms.apply(o_n, o_m, w, target_probs, temperature)

        if valid is None:
            n_valid = torch.tensor(float(max(mse.numel(), 1)), dtype=dtype, device=mse.device)
        else:
            zero = mse.new_zeros(())
            mse = torch.where(valid, mse, zero)
            ce = torch.where(valid, ce, zero)
            n_valid = valid.sum().to(dtype).clamp_min(1.0)
        if normalize == "batch":
            denom = n_valid
        else:
            w_mass = w.sum(dim=1).square()
            if valid is not None:
                w_mass = torch.where(valid, w_mass, w_mass.new_zeros(()))
            denom = w_mass.sum().clamp_min(torch.finfo(dtype).tiny)

        if reduction == "none":
            per_example = (alpha * (n_valid / denom)) * mse + beta * ce
            return per_example
        mean = alpha * mse.sum() / denom + beta * ce.sum() / n_valid
        return mean if reduction == "mean" else mean * n_valid


def ikl_loss(logits: torch.Tensor, target_logits: torch.Tensor, *,
             weights: torch.Tensor | None = None, alpha: float = 1.0, beta: float = 1.0,
             temperature: float = 1.0, weight_temperature: float = 1.0,
             targets: torch.Tensor | None = None, ignore_index: int = -100,
             reduction: str = "mean") -> torch.Tensor:
    """Improved KL loss (IKL, conference version): :func:`gkl_loss` with γ = 1, normalize="batch".

    The IKL paper's AT optimum is α = 20 (α/4 = 5), β = 5, class-wise weights, τ_w = 4.
    """
    return gkl_loss(logits, target_logits, weights=weights, alpha=alpha, beta=beta, gamma=1.0,
                    temperature=temperature, weight_temperature=weight_temperature,
                    normalize="batch", targets=targets, ignore_index=ignore_index,
                    reduction=reduction)


# ----------------------------------------------------------------------------- other KD losses

def js_div(logits: torch.Tensor, target_logits: torch.Tensor, *, temperature: float = 1.0,
           reduction: str = "batchmean") -> torch.Tensor:
    """Jensen-Shannon divergence between softmax(o_n/T) and softmax(o_m/T), times T².

    JS(p, q) = ½ KL(p ‖ m) + ½ KL(q ‖ m), m = (p + q)/2 (GKL Appendix 6.5), computed
    from log-probabilities (log m = logaddexp(log p, log q) − log 2). Symmetric in its
    two arguments; T² keeps gradients comparable with :func:`kl_div` (T = 1: plain JS).
    """
    check_pair(logits, target_logits)
    temperature = check_real("temperature", temperature, strictly_positive=True)
    check_choice("reduction", reduction, _BATCH_REDUCTIONS)
    with _full_precision(logits.device):
        o_n, o_m = _upcast(logits, target_logits)
        log_p = torch.log_softmax(o_n / temperature, dim=1)
        log_q = torch.log_softmax(o_m / temperature, dim=1)
        log_mid = torch.logaddexp(log_p, log_q) - math.log(2.0)
        per_example = 0.5 * ((log_p.exp() * (log_p - log_mid)).sum(dim=1)
                             + (log_q.exp() * (log_q - log_mid)).sum(dim=1))
        return _batch_reduce(per_example * (temperature * temperature), reduction)


def logit_mse(logits: torch.Tensor, target_logits: torch.Tensor, *,
              reduction: str = "batchmean") -> torch.Tensor:
    """Logit matching ‖o_n − o_m‖² / C per example, averaged over the batch ("batchmean").

    Plain (uncentred) logit MSE, the "L_MSE" of Kim et al. 2021 up to the factor 1/C.
    It is *not* the T → ∞ limit of KD: that limit, ``kl_div(..., temperature=math.inf)``,
    centres the logit difference first and equals ``logit_mse/2 − (Σ_j d_j)²/(2C²)``.
    """
    check_pair(logits, target_logits)
    check_choice("reduction", reduction, _BATCH_REDUCTIONS)
    with _full_precision(logits.device):
        o_n, o_m = _upcast(logits, target_logits)
        per_example = (o_n - o_m).square().sum(dim=1) / o_n.shape[1]
        return _batch_reduce(per_example, reduction)


def dkd_loss(logits: torch.Tensor, target_logits: torch.Tensor, targets: torch.Tensor, *,
             alpha: float = 1.0, beta: float = 8.0, temperature: float = 4.0,
             reduction: str = "batchmean") -> torch.Tensor:
    """Decoupled KD (Zhao et al. 2022): α · TCKD + β · NCKD, each scaled by T².

    TCKD is the KL between the binary (target, non-target) distributions of teacher
    and student; NCKD the KL between their softmaxes over the non-target classes
    only. The non-target softmax is taken over the C − 1 gathered non-target logits
    (no −1000 masking), so C = 2 gives NCKD = 0 exactly and never inf/NaN.
    Inputs are (N, C); ``targets`` (N,) hold class indices (no ignore_index).
    """
    check_pair(logits, target_logits, min_classes=2)
    if logits.dim() != 2:
        raise ValueError(f"logits must have shape (N, C) for dkd_loss, got {tuple(logits.shape)}")
    check_targets(targets, logits, ignore_index=None)
    alpha = check_real("alpha", alpha, minimum=0.0)
    beta = check_real("beta", beta, minimum=0.0)
    temperature = check_real("temperature", temperature, strictly_positive=True)
    check_choice("reduction", reduction, _BATCH_REDUCTIONS)
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
        return _batch_reduce(per_example, reduction)
