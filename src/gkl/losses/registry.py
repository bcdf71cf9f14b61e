"""One registry of logit losses: a name -> a function with one signature.

Every task (distillation, SSL consistency, pixel-wise segmentation KD, CLIP distillation,
the attack losses) takes its logit-pair loss from here by name, so a name means the same
thing everywhere and a new loss is one function plus one :func:`register_logit_loss` call.

The one signature::

    fn(logits, target_logits, *, temperature=1.0, reduction="mean",
       targets=None, weights=None, **params) -> Tensor

* ``logits`` o_n (student / adversarial / strong view, receives gradient) and
  ``target_logits`` o_m (teacher / clean / weak view); (N, C) or dense (N, C, d1, ...),
  class dim 1, every other position one example. Detaching o_m is the caller's choice.
* ``reduction``: ``"mean"`` (mean over examples of the per-example value), ``"sum"``,
  ``"none"`` (one value per example).
* ``targets``: class indices (N,) / (N, d1, ...), for losses that use them (DKD, class-wise GKL
  masks ``ignore_index``); ``weights``: a class-weight tensor of the logits' shape (GKL/IKL
  class-wise weights); losses that do not use them reject non-None values.
* **The T² convention, once:** divergences between two softened distributions
  (``kl``, ``reverse_kl``, ``jsd``, ``soft_ce``, ``dkd``) are multiplied by T² (Hinton), so
  their gradients keep their scale as T changes; the decoupled family has no T² factor (the
  papers' convention: their α, β absorb it): ``ikl`` and ``gkl`` apply T to their
  cross-entropy term only, ``dkl`` is DKL of the logits divided by T (its gradients are
  those of ``kl`` / T²); ``softmax_mse`` compares the softmaxes at T without a factor;
  ``mse`` and ``hard_ce`` have no temperature.

Third parties add a loss with :func:`register_logit_loss` (also usable as a decorator).
"""

from __future__ import annotations

import difflib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch

__all__ = [
    "LogitLoss",
    "register_logit_loss",
    "unregister_logit_loss",
    "get_logit_loss",
    "logit_loss",
    "list_logit_losses",
]


@dataclass(frozen=True)
class LogitLoss:
    """A registered logit loss: its name, function, own parameters and what it needs.

    ``params``: the names of the loss's own keyword parameters (besides ``temperature``,
    ``reduction``, ``targets``, ``weights``), with their defaults; a settings class of a
    task may expose exactly these. ``uses_targets``: the loss needs ``targets``;
    ``uses_temperature``: ``temperature`` has an effect; ``uses_weights``: accepts ``weights``.
    """

    name: str
    fn: Callable[..., torch.Tensor]
    params: dict[str, Any] = field(default_factory=dict)
    uses_targets: bool = False
    uses_temperature: bool = True
    uses_weights: bool = False
    description: str = ""

    def __call__(self, logits: torch.Tensor, target_logits: torch.Tensor, **kwargs: Any) -> torch.Tensor:
        return self.fn(logits, target_logits, **kwargs)


_REGISTRY: dict[str, LogitLoss] = {}


def register_logit_loss(
    name: str,
    fn: Callable[..., torch.Tensor] | None = None,
    *,
    params: dict[str, Any] | None = None,
    uses_targets: bool = False,
    uses_temperature: bool = True,
    uses_weights: bool = False,
    description: str = "",
    overwrite: bool = False,
) -> Any:
    """Register ``fn`` under ``name`` (one signature, see the module docstring).

    Usable directly, ``register_logit_loss("my_kl", my_kl)``, or as a decorator,
    ``@register_logit_loss("my_kl")``. A name already taken is a ValueError unless
    ``overwrite=True``. Returns ``fn`` (so the decorator leaves the function unchanged).
    """
    if not isinstance(name, str) or not name.isidentifier():
        raise ValueError(f"name: expected an identifier-like string, got {name!r}")

    def add(function: Callable[..., torch.Tensor]) -> Callable[..., torch.Tensor]:
        if name in _REGISTRY and not overwrite:
            raise ValueError(f"name: logit loss {name!r} is already registered (pass overwrite=True to replace it)")
        _REGISTRY[name] = LogitLoss(
            name, function, dict(params or {}), uses_targets, uses_temperature, uses_weights, description
        )
        return function

    return add if fn is None else add(fn)


def unregister_logit_loss(name: str) -> None:
    """Remove ``name`` (tests and plug-ins that registered a loss temporarily)."""
    _REGISTRY.pop(name, None)


def list_logit_losses() -> list[str]:
    """The registered names, in registration order."""
    return list(_REGISTRY)


def get_logit_loss(name: str) -> LogitLoss:
    """The registered loss ``name``; an unknown name is a ValueError with the close matches."""
    try:
        return _REGISTRY[name]
    except (KeyError, TypeError):
        close = difflib.get_close_matches(str(name), list(_REGISTRY), n=3)
        hint = f" (did you mean {', '.join(close)}?)" if close else ""
        raise ValueError(
            f"loss: expected a registered logit loss ({', '.join(_REGISTRY)}), got {name!r}{hint}"
        ) from None


def logit_loss(name: str, logits: torch.Tensor, target_logits: torch.Tensor, **kwargs: Any) -> torch.Tensor:
    """Compute the registered loss ``name``: ``get_logit_loss(name)(logits, target_logits, **kwargs)``."""
    return get_logit_loss(name)(logits, target_logits, **kwargs)
