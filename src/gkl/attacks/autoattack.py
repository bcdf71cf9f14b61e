"""AutoAttack (Croce & Hein 2020) through the ``pyautoattack`` package.

Versions:

- ``"standard"``: APGD-CE, APGD-T (9 target classes), FAB-T (9 targets), Square
  (5000 queries), the RobustBench protocol. Slow on CPU.
- ``"fast"``: APGD-CE and APGD-T only (same settings). A documented shortcut for
  small CPU demos; it is not the standard protocol and can only overestimate
  robustness relative to ``"standard"``.

With fewer than 10 classes the number of target classes is C - 1.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Literal

import torch
from torch import nn

from gkl.attacks.pgd import attack_mode
from gkl.settings.adversarial import NORMS
from gkl.utils.validation import check_choice

AutoAttackVersion = Literal["standard", "fast"]
AUTOATTACK_VERSIONS: tuple[str, ...] = ("standard", "fast")
_NORM_NAMES = {"linf": "Linf", "l2": "L2"}


@dataclass
class AutoAttackResult:
    """Adversarial images and, per example, whether the model still predicts the label."""

    adversarial: torch.Tensor
    robust: torch.Tensor  # (N,) bool


def autoattack(
    model: nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor,
    *,
    eps: float,
    norm: str = "linf",
    version: str = "standard",
    seed: int = 0,
    batch_size: int = 250,
) -> AutoAttackResult:
    """Run AutoAttack on a [0, 1] batch (model in eval mode, autocast off; modes restored after)."""
    try:
        from pyautoattack import AutoAttack
    except ImportError as error:  # pragma: no cover - the package is an optional extra
        raise ImportError("AutoAttack needs the 'pyautoattack' package: pip install 'gkl[eval]'") from error
    check_choice("", "version", version, AUTOATTACK_VERSIONS)
    check_choice("", "norm", norm, NORMS)
    with attack_mode(model):
        return _run_autoattack(
            AutoAttack, model, images, labels, eps=eps, norm=norm, version=version, seed=seed, batch_size=batch_size
        )


def _run_autoattack(
    AutoAttack,
    model: nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor,
    *,
    eps: float,
    norm: str,
    version: str,
    seed: int,
    batch_size: int,
) -> AutoAttackResult:
    device = images.device
    with torch.no_grad():
        num_classes = model(images[:1]).shape[1]
    n_targets = max(1, min(9, num_classes - 1))
    aa_logger = logging.getLogger("auto-attack")
    if version == "standard" and n_targets == 9:
        adversary = AutoAttack(
            model, device=device, eps=float(eps), norm=_NORM_NAMES[norm], seed=seed, version="standard"
        )
    else:
        attacks = ["apgd-ce", "apgd-t"] if version == "fast" else ["apgd-ce", "apgd-t", "fab-t", "square"]
        adversary = AutoAttack(
            model, device=device, eps=float(eps), norm=_NORM_NAMES[norm], seed=seed, version="custom", attacks=attacks
        )
        adversary.apgd.n_restarts = 1
        adversary.apgd_targeted.n_restarts = 1
        adversary.fab.n_restarts = 1
        adversary.square.n_queries = 5000
    adversary.apgd_targeted.n_target_classes = n_targets
    adversary.fab.n_target_classes = n_targets
    adversary.verbose = aa_logger.isEnabledFor(logging.DEBUG)
    adv, predicted = adversary.run_standard_evaluation(images, labels, batch_size=batch_size)
    return AutoAttackResult(adversarial=adv.detach(), robust=predicted.eq(labels))
