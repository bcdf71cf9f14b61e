"""Training objectives: what one step of training optimises (see :mod:`gkl.objectives.base`).

One class per method: :mod:`~gkl.objectives.supervised` (CE), :mod:`~gkl.objectives.distill`
(KD, DKD, DKL, IKL, GKL, MSE, JSD) and :mod:`~gkl.objectives.adversarial` (TRADES, GKL-AT, PGD-AT).
"""

from gkl.objectives.base import Objective, StepOutput

__all__ = ["Objective", "StepOutput"]
