"""Adversarial attacks: PGD (l-inf / l2; CE, TRADES-KL, GKL and CW losses) and AutoAttack."""

from gkl.attacks.attack_losses import ATTACK_LOSSES, DEFAULT_ATTACK_GKL_KWARGS, attack_loss
from gkl.attacks.autoattack import AUTOATTACK_VERSIONS, AutoAttackResult, autoattack
from gkl.attacks.pgd import PGD, Attack, attack_mode, pgd, project

__all__ = [
    "ATTACK_LOSSES", "AUTOATTACK_VERSIONS", "Attack", "AutoAttackResult", "DEFAULT_ATTACK_GKL_KWARGS",
    "PGD", "attack_loss", "attack_mode", "autoattack", "pgd", "project",
]
