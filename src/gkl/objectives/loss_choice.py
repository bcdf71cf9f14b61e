"""A task's logit-pair loss, taken from the registry of :mod:`gkl.losses` by the name its settings hold.

The settings layer imports no loss code, so a name that is not one of a section's built-in
choices (``distill.method``, ``ssl.consistency``, ``segmentation.kd_term``,
``clip_distill.method``) is checked here, when the objective is built: an unknown name, a
``loss_params`` key the loss does not take or a temperature for a loss without one is a
one-line ConfigError naming the key.
"""

from __future__ import annotations

from typing import Any

from gkl.losses import LogitLoss, get_logit_loss, list_logit_losses
from gkl.settings.kl_family import kl_family_params
from gkl.settings.loss_choice import RegisteredLoss
from gkl.utils.errors import ConfigError
from gkl.utils.validation import fail

__all__ = ["resolve_logit_loss", "settings_logit_loss"]


def resolve_logit_loss(
    owner: str, key: str, name: str, *, params: dict[str, Any] | None = None, temperature: float | None = None
) -> LogitLoss:
    """The registered loss ``name`` (the value of ``<owner>.<key>``), with ``params`` and ``temperature`` checked."""
    try:
        entry = get_logit_loss(name)
    except ValueError:
        raise fail(
            owner, key, f"a registered logit loss ({', '.join(list_logit_losses())})", name, error=ConfigError
        ) from None
    unknown = sorted(set(params or {}) - set(entry.params))
    if unknown:
        raise fail(
            owner,
            "loss_params",
            f"parameters of loss {name!r} ({', '.join(entry.params) or 'none'})",
            unknown,
            error=ConfigError,
        )
    if temperature is not None and not entry.uses_temperature and temperature != 1.0:
        raise fail(owner, "temperature", f"1.0: loss {name!r} has no temperature", temperature, error=ConfigError)
    return entry


def settings_logit_loss(settings: Any, key: str) -> tuple[LogitLoss, dict[str, Any]]:
    """The registered loss named by ``settings.<key>`` and its own parameters from the settings
    (errors name ``<settings.section>.<key>``).

    The parameters are ``loss_params`` for a registered loss used by name
    (:class:`~gkl.settings.loss_choice.RegisteredLoss`), else the KL-family values the settings
    embed (α, β, τ_w, γ, normalize; none for ``kl``).
    """
    generic = isinstance(settings, RegisteredLoss)
    params = dict(settings.loss_params) if generic else kl_family_params(settings)
    entry = resolve_logit_loss(
        type(settings).section,
        key,
        getattr(settings, key),
        params=params,
        temperature=settings.temperature if generic else None,
    )
    return entry, params
