"""Input checks shared by the loss functions (docs/losses.md, "Precision and input checks").

Shape, dtype and hyperparameter checks are free (no device synchronisation).
*Value* checks -- NaN/Inf logits, targets out of range, negative weights --
must look at tensor contents: each costs one reduction plus one host sync
(``.item()``), which stalls the CUDA stream. They are on by default; turn them
off for speed-critical runs with :func:`set_value_checks` ``(False)``.
"""

from __future__ import annotations

import math
from typing import Iterable

import torch

_VALUE_CHECKS = True


def set_value_checks(enabled: bool) -> bool:
    """Switch the content checks (NaN/Inf, target range, weight sign) on or off.

    Returns the previous setting so callers can restore it.
    """
    global _VALUE_CHECKS
    previous = _VALUE_CHECKS
    _VALUE_CHECKS = bool(enabled)
    return previous


def value_checks_enabled() -> bool:
    """Whether the content checks of :func:`set_value_checks` are active."""
    return _VALUE_CHECKS


def check_real(name: str, value: object, *, minimum: float | None = None,
               strictly_positive: bool = False) -> float:
    """Return ``value`` as a finite float, or raise a ValueError naming ``name``."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        if isinstance(value, torch.Tensor) and value.numel() == 1:
            value = float(value.item())
        else:
            raise ValueError(f"{name} must be a real number, got {value!r}")
    value = float(value)
    if not math.isfinite(value):
        raise ValueError(f"{name} must be a finite real number, got {value!r}")
    if strictly_positive and value <= 0.0:
        raise ValueError(f"{name} must be a positive real number (> 0), got {value!r}")
    if minimum is not None and value < minimum:
        raise ValueError(f"{name} must be a real number >= {minimum}, got {value!r}")
    return value


def check_choice(name: str, value: object, choices: Iterable[str]) -> str:
    """Raise a ValueError naming ``name`` unless ``value`` is one of ``choices``."""
    choices = tuple(choices)
    if value not in choices:
        raise ValueError(f"{name} must be one of {choices}, got {value!r}")
    return value  # type: ignore[return-value]


def check_int(name: str, value: object) -> int:
    """Return ``value`` as an int (bools rejected), or raise a ValueError naming ``name``."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"{name} must be an int, got {value!r}")
    return value


def check_logits(name: str, logits: object, *, min_classes: int = 1) -> torch.Tensor:
    """Check that ``logits`` is a floating tensor of shape (N, C) or (N, C, d1, ...)."""
    if not isinstance(logits, torch.Tensor):
        raise ValueError(f"{name} must be a torch.Tensor of shape (N, C) or (N, C, d1, ...), "
                         f"got {type(logits).__name__}")
    if not logits.is_floating_point():
        raise ValueError(f"{name} must be a floating-point tensor (float16/bfloat16/float32/float64), "
                         f"got dtype {logits.dtype}")
    if logits.dim() < 2:
        raise ValueError(f"{name} must have shape (N, C) or (N, C, d1, ...), got shape {tuple(logits.shape)}")
    if logits.shape[1] < min_classes:
        raise ValueError(f"{name} must have at least {min_classes} classes in dim 1 (shape (N, C, ...)), "
                         f"got shape {tuple(logits.shape)}")
    if _VALUE_CHECKS and not bool(torch.isfinite(logits).all()):
        raise ValueError(f"{name} must contain only finite values (found NaN or Inf)")
    return logits


def check_pair(logits: object, target_logits: object, *, min_classes: int = 1) -> None:
    """Check both logit tensors and that their shapes match."""
    check_logits("logits", logits, min_classes=min_classes)
    check_logits("target_logits", target_logits, min_classes=min_classes)
    assert isinstance(logits, torch.Tensor) and isinstance(target_logits, torch.Tensor)
    if logits.shape != target_logits.shape:
        raise ValueError(f"target_logits must have the same shape as logits {tuple(logits.shape)}, "
                         f"got {tuple(target_logits.shape)}")
    if logits.device != target_logits.device:
        raise ValueError(f"target_logits must be on the same device as logits ({logits.device}), "
                         f"got {target_logits.device}")


def check_targets(targets: object, logits: torch.Tensor, ignore_index: int | None,
                  *, name: str = "targets") -> torch.Tensor:
    """Check integer class targets of shape (N,) or (N, d1, ...) matching ``logits``.

    ``ignore_index=None`` means every target must be a class index.
    """
    expected = (logits.shape[0],) + tuple(logits.shape[2:])
    num_classes = logits.shape[1]
    if not isinstance(targets, torch.Tensor):
        raise ValueError(f"{name} must be an integer torch.Tensor of shape {expected}, "
                         f"got {type(targets).__name__}")
    if targets.is_floating_point() or targets.is_complex() or targets.dtype == torch.bool:
        raise ValueError(f"{name} must be an integer tensor of class indices, got dtype {targets.dtype}")
    if tuple(targets.shape) != expected:
        raise ValueError(f"{name} must have shape {expected} (logits shape without dim 1), "
                         f"got {tuple(targets.shape)}")
    if targets.device != logits.device:
        raise ValueError(f"{name} must be on the same device as logits ({logits.device}), got {targets.device}")
    if _VALUE_CHECKS and targets.numel() > 0:
        bad = (targets < 0) | (targets >= num_classes)
        if ignore_index is not None:
            bad &= targets != ignore_index
        if bool(bad.any()):
            allowed = "" if ignore_index is None else f" or ignore_index={ignore_index}"
            raise ValueError(f"{name} must hold class indices in [0, {num_classes - 1}]{allowed}; "
                             f"found {targets[bad].flatten()[0].item()}")
    return targets


def check_weights(weights: object, logits: torch.Tensor) -> torch.Tensor:
    """Check a non-negative weight tensor of exactly the logits' shape."""
    if not isinstance(weights, torch.Tensor):
        raise ValueError(f"weights must be a tensor of shape {tuple(logits.shape)} (like logits) or None, "
                         f"got {type(weights).__name__}")
    if not weights.is_floating_point():
        raise ValueError(f"weights must be a floating-point tensor, got dtype {weights.dtype}")
    if weights.shape != logits.shape:
        raise ValueError(f"weights must have the shape of logits {tuple(logits.shape)} "
                         f"((N, C) or (N, C, d1, ...)), got {tuple(weights.shape)}")
    if weights.device != logits.device:
        raise ValueError(f"weights must be on the same device as logits ({logits.device}), got {weights.device}")
    if _VALUE_CHECKS:
        ok = torch.isfinite(weights).all() & (weights >= 0).all() & (weights.sum(dim=1) > 0).all()
        if not bool(ok):
            raise ValueError("weights must be finite, non-negative, with a positive sum over the class dim 1 "
                             "for every example (e.g. rows of a probability matrix)")
    return weights
