"""The Kullback-Leibler loss family of Cui et al. (KL, DKL, IKL, GKL) and related KD losses.

Pure tensor maths; imports only torch. docs/losses.md gives the formulas (with the
papers' equation numbers), the conventions and usage.
"""

from . import builtin as _builtin  # noqa: F401  (registers the built-in logit losses)
from ._validation import value_checks, value_checks_active
from .functional import dkd_loss, dkl_loss, gkl_loss, ikl_loss, js_div, kl_div, logit_mse
from .modules import DKDLoss, DKLLoss, GKLLoss, IKLLoss, JSDivLoss, KLDivLoss, LogitMSELoss
from .prior import ClassPrior
from .registry import (
    LogitLoss,
    get_logit_loss,
    list_logit_losses,
    logit_loss,
    register_logit_loss,
    unregister_logit_loss,
)

__all__ = [
    "kl_div",
    "dkl_loss",
    "gkl_loss",
    "ikl_loss",
    "js_div",
    "logit_mse",
    "dkd_loss",
    "ClassPrior",
    "GKLLoss",
    "IKLLoss",
    "KLDivLoss",
    "DKLLoss",
    "DKDLoss",
    "JSDivLoss",
    "LogitMSELoss",
    "value_checks",
    "value_checks_active",
    "LogitLoss",
    "register_logit_loss",
    "unregister_logit_loss",
    "get_logit_loss",
    "logit_loss",
    "list_logit_losses",
]

_RENAMED = {
    "KDLoss": "KLDivLoss",
    "set_value_checks": "value_checks (a context manager)",
    "value_checks_enabled": "value_checks_active",
}


def __getattr__(name: str) -> object:
    if name in _RENAMED:  # ImportError (not AttributeError), so `from gkl.losses import ...` shows it
        raise ImportError(f"gkl.losses.{name}: renamed {_RENAMED[name]}")
    raise AttributeError(f"module 'gkl.losses' has no attribute {name!r}")
