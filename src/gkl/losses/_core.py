"""Shared pieces of the functional losses: full-precision context, upcasting, reductions, row dot
products, the centred O(C) wMSE and the GKL terms with hand-written gradients (docs/losses.md)."""

from __future__ import annotations

import contextlib
from contextlib import AbstractContextManager

import torch

from ._validation import (
    check_pair,
    check_pair_values,
    check_reduction,
)

_NO_CONTEXT = contextlib.nullcontext()


def _full_precision(device: torch.device) -> AbstractContextManager[None]:
    """Disable autocast (if it is on) so the loss maths stays in float32/float64."""
    try:
        if torch.is_autocast_enabled(device.type):
            return torch.autocast(device_type=device.type, enabled=False)
    except RuntimeError:  # device type without autocast support
        pass
    return _NO_CONTEXT


def _upcast(a: torch.Tensor, b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Both in float64 if either is float64, else in float32 (half types are upcast)."""
    dtype = torch.float64 if torch.float64 in (a.dtype, b.dtype) else torch.float32
    return (a if a.dtype == dtype else a.to(dtype)), (b if b.dtype == dtype else b.to(dtype))


def _checked_pair(logits: torch.Tensor, target_logits: torch.Tensor, reduction: str, *, min_classes: int = 1) -> None:
    """Shape/dtype checks, the reduction's spelling, and the content checks (one host sync)."""
    check_pair(logits, target_logits, min_classes=min_classes)
    check_reduction(reduction)
    check_pair_values(logits, target_logits)


def _reduce(per_example: torch.Tensor, reduction: str) -> torch.Tensor:
    """ "mean" over examples (positions) of the per-example values (0 if there are none), "sum", "none"."""
    if reduction == "none":
        return per_example
    if reduction == "sum" or per_example.numel() == 0:
        return per_example.sum()
    return per_example.mean()


def _rowdot(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Σ_j a_ij b_ij over the class dim 1 (one call; einsum's batched matmul is several times slower on CPU)."""
    return torch.linalg.vecdot(a, b, dim=1)


def _per_class(x: torch.Tensor | float) -> torch.Tensor | float:
    """A per-example scale (N, d1, ...) made broadcastable over the class dim 1."""
    return x.unsqueeze(1) if isinstance(x, torch.Tensor) and x.dim() > 0 else x


def _centred_wmse(o_m: torch.Tensor, o_n: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """Per-example (1/4) Σ_j Σ_k w^j w^k ((o_m^j − o_m^k) − (o_n^j − o_n^k))², O(C) form.

    (docs/losses.md, the centred form): Σ_jk w^j w^k (d_j − d_k)² = 2 W Σ_j w^j (d_j − μ)², with
    d = o_m − o_n, W = Σ_j w^j, μ = Σ_j w^j d_j / W. The centred (weighted
    variance) form avoids the cancellation of 2WΣwd² − 2(Σwd)² at large logits.
    Reduces over dim 1; returns shape (N, d1, ...).
    """
    d = o_m - o_n
    total_weight = w.sum(dim=1, keepdim=True)
    r = d - _rowdot(w, d).unsqueeze(1) / total_weight
    return 0.5 * total_weight.squeeze(1) * _rowdot(w * r, r)


class _GKLTerms(torch.autograd.Function):
    """GKL value Σ_i (a_i mse_i + b_i ce_i) (or its per-example terms) with hand-written gradients.

    mse_i = ½ W_i Σ_j w^j (d_j − μ)² (the centred O(C) form, docs/losses.md), d = o_m − o_n:
        ∂mse_i/∂o_m = W w (d − μ) = −∂mse_i/∂o_n      (the ∂μ terms cancel: Σ_j w^j (d_j − μ) = 0)
    ce_i = −Σ_j p^j log softmax(o_n/T)^j with p = S(softmax(o_m/T)):
        ∂ce_i/∂o_n = (softmax(o_n/T) − p) / T,  ∂ce_i/∂o_m = 0 (stop-gradient).
    ``a``, ``b``: the constant scales of the reduction (floats, 0-dim or per-example tensors);
    ``reduce``: return the sum over examples (a, b scalars) instead of the (N, d1, ...) terms.
    Only the two gradient directions ∂/∂o_n and ∂/∂o_m are saved for backward (O(N·C) memory,
    instead of autograd's chain of intermediates). ``w`` (already raised to γ), its row sums
    ``total_weight`` (N, 1, d1, ...; the float 1.0 when known to be 1) and ``p`` (None: p = w)
    carry no gradient. Not twice differentiable: backward with ``create_graph=True`` raises.
    """

    @staticmethod
    def forward(
        ctx,
        o_n: torch.Tensor,
        o_m: torch.Tensor,
        w: torch.Tensor,
        total_weight: torch.Tensor | float,
        target_probs: torch.Tensor | None,
        temperature: float,
        a: torch.Tensor | float,
        b: torch.Tensor | float,
        reduce: bool,
    ) -> torch.Tensor:
        p = w if target_probs is None else target_probs  # p = w: not passed twice (Dynamo refuses that)
        r = o_m - o_n
        mu = _rowdot(w, r).unsqueeze(1)
        r.sub_(mu if isinstance(total_weight, float) else mu.div_(total_weight))
        direction_m = w * r  # becomes a W w (d − μ) = ∂(a mse)/∂o_m
        direction_m.mul_(total_weight * _per_class(a))
        log_q = torch.log_softmax(o_n / temperature if temperature != 1.0 else o_n, dim=1)
        if reduce:  # ½ Σ_i a_i W_i Σ_j w^j r_j² − Σ_i b_i Σ_j p^j log q^j, two dot products
            value = (
                torch.dot(direction_m.reshape(-1), r.reshape(-1))
                .mul_(0.5)
                .sub_(torch.dot(p.reshape(-1), log_q.reshape(-1)).mul_(b))
            )
        else:
            value = _rowdot(direction_m, r).mul_(0.5).sub_(_rowdot(p, log_q).mul_(b))
        need_n, need_m = ctx.needs_input_grad[:2]
        if need_n:
            b_over_t = b / temperature if temperature != 1.0 else b
            direction_n = log_q.exp_().sub_(p).mul_(_per_class(b_over_t)).sub_(direction_m)
        ctx.save_for_backward(direction_n if need_n else None, direction_m if need_m else None)
        ctx.reduce = reduce
        return value

    @staticmethod
    def backward(ctx, grad_value: torch.Tensor):
        if torch.is_grad_enabled():  # autograd enables grad mode in backward only for create_graph=True
            raise RuntimeError(
                "gkl_loss / ikl_loss are not twice differentiable (hand-written O(C) gradients): "
                "backward with create_graph=True (double backward, gradient penalties) is not supported"
            )
        direction_n, direction_m = ctx.saved_tensors
        g = grad_value if ctx.reduce else grad_value.unsqueeze(1)
        grad_o_n = None if direction_n is None else g * direction_n
        grad_o_m = None if direction_m is None else g * direction_m
        return grad_o_n, grad_o_m, None, None, None, None, None, None, None


def _gkl_terms_autograd(
    o_n: torch.Tensor,
    o_m: torch.Tensor,
    w: torch.Tensor,
    total_weight: torch.Tensor | float,
    target_probs: torch.Tensor,
    temperature: float,
    a: torch.Tensor | float,
    b: torch.Tensor | float,
    reduce: bool,
) -> torch.Tensor:
    """:class:`_GKLTerms` written for autograd, used under ``torch.compile``: same value, same gradients.

    μ is detached, which leaves the gradient a W w (d − μ) of the hand-written backward (the ∂μ
    terms are zero since Σ_j w^j (d_j − μ) = 0). The cross-entropy is written as
    −Σ_j p^j log q^j = lse(z_n) − Σ_j p^j z_n^j (z = o/T, Σ_j p^j = 1), whose gradient (q − p)/T is
    elementwise (log_softmax's backward needs a row sum). Traced as plain operations, the
    compiler (inductor) fuses them into row loops (two passes over (N, C) with class-wise
    weights) and one elementwise backward pass, recomputing instead of saving (N, C) tensors. Written
    for that fusion: the scales a, b multiply row sums (no reduction over the whole tensor,
    which needs a second loop over all of (N, C)), and the row maxima come first. When
    p is w (sample-wise weights at τ_w = T, γ = 1) Σ_j p^j z_n^j reuses w; otherwise
    p = e / Σ_j e^j with e = exp(z_m − max z_m), so no softmax of the targets is built.
    """
    z_n = o_n / temperature if temperature != 1.0 else o_n
    max_n = z_n.detach().amax(dim=1, keepdim=True)
    d = o_m - o_n
    mu = _rowdot(w, d.detach()).unsqueeze(1)
    mu = mu if isinstance(total_weight, float) else mu / total_weight
    if target_probs is w:
        cross_entropy = _logsumexp(z_n, max_n) - _rowdot(w, z_n)
    else:
        z_m = o_m.detach() / temperature if temperature != 1.0 else o_m.detach()
        e_m = torch.exp(z_m - z_m.amax(dim=1, keepdim=True))
        cross_entropy = _logsumexp(z_n, max_n) - _rowdot(e_m, z_n) / e_m.sum(dim=1)
    r = d - mu
    mse = _rowdot(w * r, r)  # Σ_j w^j r_j², times W below: 2 mse_i
    if not isinstance(total_weight, float):
        mse = mse * total_weight.squeeze(1)
    if reduce:
        return (0.5 * a) * mse.sum() + b * cross_entropy.sum()
    return (0.5 * a) * mse + b * cross_entropy


def _logsumexp(z: torch.Tensor, row_max: torch.Tensor) -> torch.Tensor:
    """log Σ_j exp(z_j) over dim 1 given the (detached) row maxima, shape (N, 1, d1, ...)."""
    return torch.log(torch.exp(z - row_max).sum(dim=1)) + row_max.squeeze(1)
