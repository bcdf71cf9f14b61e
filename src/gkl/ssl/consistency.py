"""Consistency losses between the strong and the weak view of unlabelled images.

One function serves every row of the GKL paper's semi-supervised table (appendix,
Table XX): FixMatch with hard CE / soft KL / soft GKL pseudo-labels, Mean-Teacher with
softmax MSE / GKL. Semantics follow USB (microsoft/Semi-supervised-learning): the
per-example loss is multiplied by ``mask`` and averaged over **all** B unlabelled
examples, the masked-out ones included (they count in the mean as zeros), so the
loss shrinks when few pseudo-labels pass the confidence threshold.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from gkl.losses import gkl_loss, ikl_loss

CONSISTENCY_LOSSES: tuple[str, ...] = ("ce", "soft_ce", "kl", "mse", "gkl", "ikl")


def _check_inputs(logits_strong: Any, logits_weak: Any, mask: Any) -> None:
    for name, value in (("logits_strong", logits_strong), ("logits_weak", logits_weak)):
        if not isinstance(value, torch.Tensor) or not value.is_floating_point() or value.dim() != 2:
            raise ValueError(f"{name}: expected a floating-point tensor of shape (B, C), got "
                             f"{type(value).__name__}{tuple(value.shape) if isinstance(value, torch.Tensor) else ''}")
    if logits_strong.shape != logits_weak.shape:
        raise ValueError(f"logits_weak: expected the shape of logits_strong {tuple(logits_strong.shape)}, "
                         f"got {tuple(logits_weak.shape)}")
    if mask is not None:
        if not isinstance(mask, torch.Tensor) or mask.shape != logits_strong.shape[:1]:
            raise ValueError(f"mask: expected a tensor of shape ({logits_strong.shape[0]},) or None, got "
                             f"{tuple(mask.shape) if isinstance(mask, torch.Tensor) else type(mask).__name__}")


def consistency_loss(logits_strong: torch.Tensor, logits_weak: torch.Tensor, *, loss: str,
                     mask: torch.Tensor | None = None, temperature: float = 1.0,
                     detach_weak: bool = False, **gkl_kwargs: Any) -> torch.Tensor:
    """Masked consistency loss, mean over all B unlabelled examples (USB's semantics).

    Args:
        logits_strong: student logits on the strongly augmented view, (B, C); receives gradient.
        logits_weak: logits on the weak view (the same model for FixMatch, the EMA teacher for
            Mean-Teacher), (B, C).
        loss: one of :data:`CONSISTENCY_LOSSES`, per example i with p = softmax(weak_i / T):

            - ``"ce"``: CE(strong_i, argmax weak_i) (hard pseudo-label; T unused);
            - ``"soft_ce"``: −Σ_j p_j log softmax(strong_i)_j;
            - ``"kl"``: Σ_j p_j (log p_j − log softmax(strong_i)_j);
            - ``"mse"``: mean_j (softmax(strong_i)_j − p_j)² (Mean-Teacher; USB averages over classes);
            - ``"gkl"`` / ``"ikl"``: the per-example values of :func:`gkl.losses.gkl_loss` /
              :func:`gkl.losses.ikl_loss` (``reduction="none"``) with o_n = strong, o_m = weak,
              sample-wise weights softmax(weak / weight_temperature) (no class label exists for
              unlabelled data), CE temperature T. Their mean equals the unmasked loss.

            For the first four the target is computed without gradient. For GKL/IKL the CE target
            is detached as well, while the wMSE term sends gradient into the weak view unless
            ``detach_weak`` — the authors' fork of USB does not detach it, hence the default False.
        mask: per-example factor (B,): 0/1 confidence mask or a float weight; None = all ones.
        temperature: T of the soft target (FixMatch soft pseudo-labels use 0.5).
        detach_weak: stop the gradient into ``logits_weak`` for GKL/IKL (no effect on the others).
        **gkl_kwargs: ``alpha``, ``beta``, ``gamma`` (GKL only), ``weight_temperature``,
            ``normalize`` (GKL only) of the loss; refused for the other losses.

    Returns:
        Scalar ``(mask * per_example).sum() / B``, float32 (float64 for float64 inputs).
    """
    if loss not in CONSISTENCY_LOSSES:
        raise ValueError(f"loss: expected one of {list(CONSISTENCY_LOSSES)}, got {loss!r}")
    if gkl_kwargs and loss not in ("gkl", "ikl"):
        raise ValueError(f"loss {loss!r} takes no GKL parameters, got {sorted(gkl_kwargs)}")
    if not isinstance(temperature, (int, float)) or isinstance(temperature, bool) or not temperature > 0:
        raise ValueError(f"temperature: expected a number > 0, got {temperature!r}")
    _check_inputs(logits_strong, logits_weak, mask)
    dtype = torch.float64 if torch.float64 in (logits_strong.dtype, logits_weak.dtype) else torch.float32
    strong = logits_strong.to(dtype)
    if loss in ("gkl", "ikl"):
        weak = logits_weak.detach() if detach_weak else logits_weak
        fn = gkl_loss if loss == "gkl" else ikl_loss
        per_example = fn(strong, weak.to(dtype), temperature=temperature, reduction="none", **gkl_kwargs)
    else:
        weak = logits_weak.detach().to(dtype)
        if loss == "ce":
            per_example = F.cross_entropy(strong, weak.argmax(dim=1), reduction="none")
        else:
            target = torch.softmax(weak / temperature, dim=1)
            log_q = torch.log_softmax(strong, dim=1)
            if loss == "soft_ce":
                per_example = -(target * log_q).sum(dim=1)
            elif loss == "kl":
                per_example = (torch.xlogy(target, target) - target * log_q).sum(dim=1)
            else:  # mse
                per_example = (log_q.exp() - target).square().mean(dim=1)
    if mask is not None:
        per_example = per_example * mask.to(dtype)
    return per_example.sum() / per_example.shape[0]
