"""Consistency losses between the strong and the weak view of unlabelled images.

One function serves every row of the GKL paper's semi-supervised table (appendix,
Table XX): FixMatch with hard CE / soft KL / soft GKL pseudo-labels, Mean-Teacher with
softmax MSE / GKL. Every loss is a logit loss of the registry of :mod:`gkl.losses` by name
(``hard_ce``, ``soft_ce``, ``kl``, ``softmax_mse``, ``gkl``, ``ikl``, or any other registered one).
Semantics follow USB (microsoft/Semi-supervised-learning): the per-example loss is
multiplied by ``mask`` and averaged over **all** B unlabelled examples, the masked-out ones
included (they count in the mean as zeros), so the loss shrinks when few pseudo-labels pass the confidence threshold.
"""

from __future__ import annotations

from typing import Any

import torch

from gkl.losses import get_logit_loss

#: the built-in consistency losses: names of the logit-loss registry (:mod:`gkl.losses.registry`);
#: any other registered logit loss is accepted by name too.
CONSISTENCY_LOSSES: tuple[str, ...] = ("hard_ce", "soft_ce", "kl", "softmax_mse", "gkl", "ikl")
#: SSL spellings before the registry names (the registry's ``mse`` is logit MSE, not softmax MSE).
RENAMED_CONSISTENCY_LOSSES: dict[str, str] = {"ce": "hard_ce", "mse": "softmax_mse"}
#: losses whose ``temperature`` sharpens the pseudo-label: the registry loss at T = 1 on (strong, weak / T).
_SHARPENED = ("soft_ce", "kl", "softmax_mse")


def _check_inputs(logits_strong: Any, logits_weak: Any, mask: Any) -> None:
    for name, value in (("logits_strong", logits_strong), ("logits_weak", logits_weak)):
        if not isinstance(value, torch.Tensor) or not value.is_floating_point() or value.dim() != 2:
            raise ValueError(
                f"{name}: expected a floating-point tensor of shape (B, C), got "
                f"{type(value).__name__}{tuple(value.shape) if isinstance(value, torch.Tensor) else ''}"
            )
    if logits_strong.shape != logits_weak.shape:
        raise ValueError(
            f"logits_weak: expected the shape of logits_strong {tuple(logits_strong.shape)}, "
            f"got {tuple(logits_weak.shape)}"
        )
    if mask is not None:
        if not isinstance(mask, torch.Tensor) or mask.shape != logits_strong.shape[:1]:
            raise ValueError(
                f"mask: expected a tensor of shape ({logits_strong.shape[0]},) or None, got "
                f"{tuple(mask.shape) if isinstance(mask, torch.Tensor) else type(mask).__name__}"
            )


def consistency_loss(
    logits_strong: torch.Tensor,
    logits_weak: torch.Tensor,
    *,
    loss: str,
    mask: torch.Tensor | None = None,
    temperature: float = 1.0,
    detach_weak: bool = False,
    **loss_params: Any,
) -> torch.Tensor:
    """Masked consistency loss, mean over all B unlabelled examples (USB's semantics).

    Args:
        logits_strong: student logits on the strongly augmented view, (B, C); receives gradient.
        logits_weak: logits on the weak view (the same model for FixMatch, the EMA teacher for
            Mean-Teacher), (B, C).
        loss: a registered logit loss (:mod:`gkl.losses.registry`), per example i with the
            per-example values of the registry (``reduction="none"``), o_n = strong, o_m = weak:

            - ``"hard_ce"``: CE(strong_i, argmax weak_i) (hard pseudo-label; T unused);
            - ``"soft_ce"``, ``"kl"``, ``"softmax_mse"``: the loss at T = 1 between strong_i and
              weak_i / T, i.e. the target softmax(weak_i / T) is sharpened by T and the student's
              softmax is taken at T = 1 (``kl`` = Σ_j p_j (log p_j − log softmax(strong_i)_j);
              ``softmax_mse`` = mean_j (softmax(strong_i)_j − p_j)², Mean-Teacher as in USB);
            - ``"gkl"`` / ``"ikl"``: the loss at CE temperature T with sample-wise weights
              softmax(weak / weight_temperature) (no class label exists for unlabelled data);
            - any other registered loss: at its own ``temperature`` T (the registry's meaning),
              with ``targets`` = argmax weak when it uses targets.

            The target is computed without gradient, except for GKL/IKL, whose wMSE term sends
            gradient into the weak view unless ``detach_weak`` (the authors' fork of USB does not
            detach it, hence the default False); their CE target is detached as well.
            ``"ce"`` and ``"mse"`` (the names before the registry) are errors naming the new name.
        mask: per-example factor (B,): 0/1 confidence mask or a float weight; None = all ones.
        temperature: T (see above; FixMatch soft pseudo-labels use 0.5).
        detach_weak: stop the gradient into ``logits_weak`` for GKL/IKL (no effect on the others).
        **loss_params: the loss's own parameters (``LogitLoss.params``: α, β, γ, τ_w, normalize of
            GKL/IKL); a name the loss does not take is a ValueError.

    Returns:
        Scalar ``(mask * per_example).sum() / B``, float32 (float64 for float64 inputs).
    """
    if loss in RENAMED_CONSISTENCY_LOSSES:
        raise ValueError(
            f"loss: {loss!r} is now {RENAMED_CONSISTENCY_LOSSES[loss]!r} (the registry's name; its 'mse' is logit MSE)"
        )
    entry = get_logit_loss(loss)
    unknown = sorted(set(loss_params) - set(entry.params))
    if unknown:
        raise ValueError(
            f"loss_params: expected parameters of loss {loss!r} ({', '.join(entry.params) or 'none'}), got {unknown}"
        )
    if not isinstance(temperature, (int, float)) or isinstance(temperature, bool) or not temperature > 0:
        raise ValueError(f"temperature: expected a number > 0, got {temperature!r}")
    _check_inputs(logits_strong, logits_weak, mask)
    dtype = torch.float64 if torch.float64 in (logits_strong.dtype, logits_weak.dtype) else torch.float32
    strong = logits_strong.to(dtype)
    if loss in ("gkl", "ikl"):
        weak = logits_weak.detach() if detach_weak else logits_weak
        per_example = entry(strong, weak.to(dtype), temperature=temperature, reduction="none", **loss_params)
    else:
        weak = logits_weak.detach().to(dtype)
        if loss == "hard_ce":
            per_example = entry(strong, weak, reduction="none")
        elif loss in _SHARPENED:
            per_example = entry(strong, weak / temperature, temperature=1.0, reduction="none")
        else:
            targets = weak.argmax(dim=1) if entry.uses_targets else None
            per_example = entry(strong, weak, temperature=temperature, reduction="none", targets=targets, **loss_params)
    if mask is not None:
        per_example = per_example * mask.to(dtype)
    return per_example.sum() / per_example.shape[0]
