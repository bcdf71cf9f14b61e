"""A loss term chosen by the name of a registered logit loss (:mod:`gkl.losses.registry`).

Sections that select a logit-pair loss (``distill.method``, ``ssl.consistency``,
``segmentation.kd_term``, ``clip_distill.method``) keep a dedicated settings class for
their built-in choices and accept any other registered name through :class:`RegisteredLoss`:
its ``temperature`` and ``loss_params`` (the loss's own keyword parameters,
``LogitLoss.params``). The settings layer imports no loss code, so the name and the
parameter names are checked against the registry when the objective is built
(``gkl.objectives.loss_choice.resolve_logit_loss``), with the same one-line ConfigError.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from gkl.utils.errors import ConfigError
from gkl.utils.validation import check_number, fail

__all__ = ["RegisteredLoss", "check_registered_loss"]


@dataclass
class RegisteredLoss:
    """``temperature`` and own parameters of a registered logit loss used by name."""

    temperature: float = 1.0  #: T of the loss (the registry's convention: T² for divergences)
    loss_params: dict[str, Any] = field(default_factory=dict)  #: the loss's own parameters (LogitLoss.params)


def check_registered_loss(obj: RegisteredLoss, owner: str) -> None:
    """ConfigError naming the key for a bad temperature or a non-mapping ``loss_params``."""
    check_number(owner, "temperature", obj.temperature, minimum=0.0, strict=True, error=ConfigError)
    if not isinstance(obj.loss_params, dict) or not all(isinstance(k, str) for k in obj.loss_params):
        raise fail(owner, "loss_params", "a mapping of parameter names to values", obj.loss_params, error=ConfigError)
