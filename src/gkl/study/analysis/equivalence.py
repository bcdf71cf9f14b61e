"""Numerical check of Theorem 1 (KL ≡ DKL in gradients) and the GKL terms; backs ``gkl check``."""

from __future__ import annotations

import torch

from gkl.losses import dkl_loss, gkl_loss

__all__ = ["equivalence_check", "equivalence_report"]


def _kl(logits: torch.Tensor, target_logits: torch.Tensor) -> torch.Tensor:
    """KL(s_m ‖ s_n), batchmean, written directly (Eq. 2), independent of gkl.losses."""
    log_p_m = torch.log_softmax(target_logits, dim=1)
    log_p_n = torch.log_softmax(logits, dim=1)
    return (log_p_m.exp() * (log_p_m - log_p_n)).sum() / logits.shape[0]


def equivalence_report(num_classes: int = 10, batch: int = 8, seed: int = 0) -> str:
    """The text of :func:`equivalence_check`."""
    return equivalence_check(num_classes, batch, seed)[0]


def equivalence_check(num_classes: int = 10, batch: int = 8, seed: int = 0) -> tuple[str, bool]:
    """Build random float64 logits and report, as text (and whether the gradients agree to < 1e-10):

    * max |∂KL/∂o − ∂DKL/∂o| for both inputs (o_n = logits, o_m = target_logits),
      Theorem 1 / Eq. 5 with α = β = 1 (expected ~1e-16);
    * the GKL terms (wMSE, CE, total; α = β = 1, T = τ_w = 1) for γ in {0, 0.5, 1}.
    """
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 2:
        raise ValueError(f"num_classes must be an int >= 2, got {num_classes!r}")
    if isinstance(batch, bool) or not isinstance(batch, int) or batch < 1:
        raise ValueError(f"batch must be a positive int, got {batch!r}")
    generator = torch.Generator().manual_seed(int(seed))
    o_n = (2.0 * torch.randn(batch, num_classes, generator=generator, dtype=torch.float64)).requires_grad_()
    o_m = (2.0 * torch.randn(batch, num_classes, generator=generator, dtype=torch.float64)).requires_grad_()

    grads_kl = torch.autograd.grad(_kl(o_n, o_m), (o_n, o_m))
    grads_dkl = torch.autograd.grad(dkl_loss(o_n, o_m, alpha=1.0, beta=1.0), (o_n, o_m))
    diff_n = (grads_kl[0] - grads_dkl[0]).abs().max().item()
    diff_m = (grads_kl[1] - grads_dkl[1]).abs().max().item()

    lines = [
        f"KL vs DKL (Theorem 1, alpha = beta = 1), float64, N={batch}, C={num_classes}, seed={seed}",
        f"  max |dKL/d logits        - dDKL/d logits       | = {diff_n:.3e}",
        f"  max |dKL/d target_logits - dDKL/d target_logits| = {diff_m:.3e}",
        "GKL terms (alpha = beta = 1, T = tau_w = 1, normalize='weights'):",
        f"  {'gamma':>6} {'wMSE':>14} {'CE':>14} {'total':>14}",
    ]
    with torch.no_grad():
        for gamma in (0.0, 0.5, 1.0):
            wmse = gkl_loss(o_n, o_m, alpha=1.0, beta=0.0, gamma=gamma).item()
            ce = gkl_loss(o_n, o_m, alpha=0.0, beta=1.0, gamma=gamma).item()
            total = gkl_loss(o_n, o_m, alpha=1.0, beta=1.0, gamma=gamma).item()
            lines.append(f"  {gamma:>6.2f} {wmse:>14.6f} {ce:>14.6f} {total:>14.6f}")
    ok = max(diff_n, diff_m) < 1e-10
    lines.append(
        "OK: gradients of KL and DKL agree to < 1e-10" if ok else "MISMATCH: gradients of KL and DKL differ by >= 1e-10"
    )
    return "\n".join(lines), ok
