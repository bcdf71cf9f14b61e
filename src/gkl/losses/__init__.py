"""The Kullback-Leibler loss family of Cui et al. (KL, DKL, IKL, GKL) and related KD losses.

Pure tensor maths; imports only torch. docs/losses.md gives the formulas (with the
papers' equation numbers), the conventions and usage.
"""

from ._validation import set_value_checks, value_checks_enabled
from .functional import dkd_loss, dkl_loss, gkl_loss, ikl_loss, js_div, kl_div, logit_mse
from .modules import DKDLoss, DKLLoss, GKLLoss, IKLLoss, JSDivLoss, KDLoss, LogitMSELoss
from .prior import ClassPrior
from .registry import (LogitLoss, get_logit_loss, list_logit_losses, logit_loss, register_logit_loss,
                       unregister_logit_loss)
from . import builtin as _builtin  # noqa: F401  (registers the built-in logit losses)

__all__ = [
    "kl_div", "dkl_loss", "gkl_loss", "ikl_loss", "js_div", "logit_mse", "dkd_loss",
    "ClassPrior", "GKLLoss", "IKLLoss", "KDLoss", "DKLLoss", "DKDLoss", "JSDivLoss", "LogitMSELoss",
    "set_value_checks", "value_checks_enabled",
    "LogitLoss", "register_logit_loss", "unregister_logit_loss", "get_logit_loss", "logit_loss", "list_logit_losses",
]
