"""Losses that an attack *maximises* over the input.

Each function maps the logits of the current adversarial images to one scalar
(a sum over the batch, so every example's input gradient is independent of the
batch size). Names:

- ``"ce"``: cross-entropy with the true labels (Madry et al. PGD).
- ``"kl"``: TRADES, KL(softmax(clean) || softmax(adv)) against the clean prediction
  (GKL paper Eq. 2 with o_m = clean logits, o_n = adversarial logits): the registry's ``kl``
  (:mod:`gkl.losses.registry`) at T = 1.
- ``"gkl"``: the registry's ``gkl`` of the adversarial logits against the clean logits
  (GKL paper Eq. 13), with class-wise weights when given.
- ``"cw"``: the Carlini-Wagner margin max_{j != y} z_j - z_y.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

import torch
import torch.nn.functional as F

from gkl.losses import logit_loss
from gkl.settings.adversarial import ATTACK_LOSSES
from gkl.utils.validation import check_choice, fail

AttackLossName = Literal["ce", "kl", "gkl", "cw"]
#: Losses that compare the adversarial prediction with the clean one.
NEEDS_CLEAN_LOGITS: frozenset[str] = frozenset({"kl", "gkl"})

#: Inner-attack GKL settings of the recipes (alpha = beta = gamma = T = 1).
DEFAULT_ATTACK_GKL_KWARGS: dict[str, Any] = {"alpha": 1.0, "beta": 1.0, "gamma": 1.0, "temperature": 1.0}


def check_attack_loss_name(loss: str) -> str:
    """Return ``loss`` if it names a known attack loss, else raise ValueError."""
    return check_choice("", "loss", loss, ATTACK_LOSSES)


def cross_entropy_attack_loss(adv_logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Summed cross-entropy of the adversarial logits with the true labels."""
    return F.cross_entropy(adv_logits, labels, reduction="sum")


def kl_attack_loss(adv_logits: torch.Tensor, clean_logits: torch.Tensor) -> torch.Tensor:
    """TRADES inner loss: sum over the batch of KL(softmax(clean) || softmax(adv)) (Eq. 2)."""
    return logit_loss("kl", adv_logits, clean_logits, reduction="sum")


def cw_margin_attack_loss(adv_logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Summed Carlini-Wagner margin: largest wrong logit minus the true logit."""
    true_logit = adv_logits.gather(1, labels[:, None]).squeeze(1)
    wrong = adv_logits.masked_fill(F.one_hot(labels, adv_logits.shape[1]).bool(), float("-inf"))
    return (wrong.amax(dim=1) - true_logit).sum()


def gkl_attack_loss(
    adv_logits: torch.Tensor,
    clean_logits: torch.Tensor,
    labels: torch.Tensor,
    *,
    class_weights: torch.Tensor | None = None,
    gkl_kwargs: Mapping[str, Any] | None = None,
) -> torch.Tensor:
    """GKL(adv, clean) (Eq. 13) scaled to a batch sum.

    ``class_weights`` is either the per-example (N, C) weights (``ClassPrior(labels)``)
    or the (C, C) prior matrix, indexed here by ``labels``; None gives sample-wise weights.
    """
    kwargs = dict(DEFAULT_ATTACK_GKL_KWARGS)
    kwargs.update(gkl_kwargs or {})
    weights = None
    if class_weights is not None:
        n, c = adv_logits.shape
        if class_weights.shape == (n, c):
            weights = class_weights
        elif class_weights.shape == (c, c):
            weights = class_weights[labels]
        else:
            raise fail("", "class_weights", f"shape (N, C) = {(n, c)} or (C, C) = {(c, c)}", tuple(class_weights.shape))
        weights = weights.detach().float()
    loss = logit_loss("gkl", adv_logits, clean_logits, weights=weights, **kwargs)
    return loss * adv_logits.shape[0]


def attack_loss(
    loss: str,
    adv_logits: torch.Tensor,
    labels: torch.Tensor,
    *,
    clean_logits: torch.Tensor | None = None,
    class_weights: torch.Tensor | None = None,
    gkl_kwargs: Mapping[str, Any] | None = None,
) -> torch.Tensor:
    """Dispatch to the attack loss named ``loss`` (see the module docstring)."""
    check_attack_loss_name(loss)
    if loss == "ce":
        return cross_entropy_attack_loss(adv_logits, labels)
    if loss == "cw":
        return cw_margin_attack_loss(adv_logits, labels)
    if clean_logits is None:  # the others are NEEDS_CLEAN_LOGITS
        raise fail("", "clean_logits", f"the clean prediction for attack loss {loss!r}", None)
    if loss == "kl":
        return kl_attack_loss(adv_logits, clean_logits)
    return gkl_attack_loss(adv_logits, clean_logits, labels, class_weights=class_weights, gkl_kwargs=gkl_kwargs)
