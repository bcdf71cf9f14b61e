"""Adversarial attacks: PGD (l-inf / l2; CE, TRADES-KL, GKL and CW losses) and AutoAttack.

The names of the choices (``ATTACK_LOSSES``, ``NORMS``, ``RANDOM_STARTS``) live in the
config layer, :mod:`gkl.settings.adversarial`.
"""

from gkl.attacks.attack_losses import DEFAULT_ATTACK_GKL_KWARGS, attack_loss
from gkl.attacks.autoattack import AUTOATTACK_VERSIONS, AutoAttackResult, autoattack
from gkl.attacks.pgd import PGD, Attack, attack_mode, pgd, project

__all__ = [
    "AUTOATTACK_VERSIONS",
    "Attack",
    "AutoAttackResult",
    "DEFAULT_ATTACK_GKL_KWARGS",
    "PGD",
    "attack_loss",
    "attack_mode",
    "autoattack",
    "pgd",
    "project",
]
