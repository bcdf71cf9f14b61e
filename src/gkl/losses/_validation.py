"""Input checks shared by the loss functions (docs/losses.md, "Precision and input checks").

Shape, dtype and hyperparameter checks are free (no device synchronisation).
*Value* checks -- NaN/Inf logits, targets out of range, negative weights --
must look at tensor contents: each costs one reduction plus one host sync
(``.item()``), which stalls the CUDA stream and breaks a ``torch.compile`` graph.
They are on by default; turn them off for speed-critical or compiled runs with
:func:`set_value_checks` ``(False)`` (the training engine checks the loss once per step).
Messages follow gkl's one format, ``<argument>: expected ..., got ...``
(:mod:`gkl.utils.validation`).
"""

from __future__ import annotations

from typing import Iterable

import torch

from gkl.utils.validation import check_choice as _check_choice, check_int as _check_int, check_number, fail

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
               strictly_positive: bool = False, allow_inf: bool = False) -> float:
    """Return ``value`` as a float, or raise a ValueError naming ``name``.

    Finite unless ``allow_inf`` (then ``+inf`` passes too); a one-element tensor is read
    with ``.item()`` (a host synchronisation).
    """
    if isinstance(value, torch.Tensor) and value.numel() == 1 and not isinstance(value, bool):
        value = float(value.item())
    if strictly_positive:
        check_number("", name, value, minimum=0.0, strict=True, allow_inf=allow_inf)
    if minimum is not None:
        check_number("", name, value, minimum=minimum, allow_inf=allow_inf)
    check_number("", name, value, allow_inf=allow_inf)
    return float(value)  # type: ignore[arg-type]


def check_choice(name: str, value: object, choices: Iterable[str]) -> str:
    """Raise a ValueError naming ``name`` unless ``value`` is one of ``choices``."""
    return _check_choice("", name, value, choices)


def check_int(name: str, value: object) -> int:
    """Return ``value`` as an int (bools rejected), or raise a ValueError naming ``name``."""
    return _check_int("", name, value)


def check_logits(name: str, logits: object, *, min_classes: int = 1) -> torch.Tensor:
    """Check that ``logits`` is a floating tensor of shape (N, C) or (N, C, d1, ...)."""
    if not isinstance(logits, torch.Tensor):
        raise fail("", name, "a torch.Tensor of shape (N, C) or (N, C, d1, ...)", type(logits).__name__,
                   show_value=False)
    if not logits.is_floating_point():
        raise fail("", name, "a floating-point tensor (float16/bfloat16/float32/float64)",
                   f"dtype {logits.dtype}", show_value=False)
    if logits.dim() < 2:
        raise fail("", name, "shape (N, C) or (N, C, d1, ...)", f"shape {tuple(logits.shape)}", show_value=False)
    if logits.shape[1] < min_classes:
        raise fail("", name, f"at least {min_classes} classes in dim 1 (shape (N, C, ...))",
                   f"shape {tuple(logits.shape)}", show_value=False)
    if _VALUE_CHECKS and not _all_finite(logits):
        raise fail("", name, "only finite values", "NaN or Inf", show_value=False)
    return logits


def _all_finite(x: torch.Tensor) -> bool:
    """Whether every entry is finite, with one reduction and no mask in the common case.

    Any NaN or ±Inf makes the sum NaN or ±Inf, so a finite sum proves all entries finite; a
    non-finite sum (a NaN/Inf, or an overflow of large finite values) falls back to the exact test.
    """
    with torch.no_grad():
        if bool(torch.isfinite(x.detach().sum())):
            return True
        return bool(torch.isfinite(x).all())


def check_pair(logits: object, target_logits: object, *, min_classes: int = 1) -> None:
    """Check both logit tensors and that their shapes match."""
    check_logits("logits", logits, min_classes=min_classes)
    check_logits("target_logits", target_logits, min_classes=min_classes)
    assert isinstance(logits, torch.Tensor) and isinstance(target_logits, torch.Tensor)
    if logits.shape != target_logits.shape:
        raise fail("", "target_logits", f"the shape of logits {tuple(logits.shape)}",
                   f"shape {tuple(target_logits.shape)}", show_value=False)
    if logits.device != target_logits.device:
        raise fail("", "target_logits", f"the device of logits ({logits.device})", target_logits.device,
                   show_value=False)


def check_targets(targets: object, logits: torch.Tensor, ignore_index: int | None,
                  *, name: str = "targets") -> torch.Tensor:
    """Check integer class targets of shape (N,) or (N, d1, ...) matching ``logits``.

    ``ignore_index=None`` means every target must be a class index.
    """
    expected = (logits.shape[0],) + tuple(logits.shape[2:])
    num_classes = logits.shape[1]
    if not isinstance(targets, torch.Tensor):
        raise fail("", name, f"an integer torch.Tensor of shape {expected}", type(targets).__name__,
                   show_value=False)
    if targets.is_floating_point() or targets.is_complex() or targets.dtype == torch.bool:
        raise fail("", name, "an integer tensor of class indices", f"dtype {targets.dtype}", show_value=False)
    if tuple(targets.shape) != expected:
        raise fail("", name, f"shape {expected} (the logits' shape without dim 1)",
                   f"shape {tuple(targets.shape)}", show_value=False)
    if targets.device != logits.device:
        raise fail("", name, f"the device of logits ({logits.device})", targets.device, show_value=False)
    if _VALUE_CHECKS and targets.numel() > 0:
        bad = (targets < 0) | (targets >= num_classes)
        if ignore_index is not None:
            bad &= targets != ignore_index
        if bool(bad.any()):
            allowed = "" if ignore_index is None else f" or ignore_index={ignore_index}"
            raise fail("", name, f"class indices in [0, {num_classes - 1}]{allowed}",
                       targets[bad].flatten()[0].item())
    return targets


def check_weights(weights: object, logits: torch.Tensor) -> torch.Tensor:
    """Check a non-negative weight tensor of exactly the logits' shape."""
    if not isinstance(weights, torch.Tensor):
        raise fail("", "weights", f"None or a tensor of the logits' shape {tuple(logits.shape)}",
                   type(weights).__name__, show_value=False)
    if not weights.is_floating_point():
        raise fail("", "weights", "a floating-point tensor", f"dtype {weights.dtype}", show_value=False)
    if weights.shape != logits.shape:
        raise fail("", "weights", f"the shape of logits {tuple(logits.shape)} ((N, C) or (N, C, d1, ...))",
                   f"shape {tuple(weights.shape)}", show_value=False)
    if weights.device != logits.device:
        raise fail("", "weights", f"the device of logits ({logits.device})", weights.device, show_value=False)
    if _VALUE_CHECKS:
        ok = torch.isfinite(weights).all() & (weights >= 0).all() & (weights.sum(dim=1) > 0).all()
        if not bool(ok):
            raise fail("", "weights", "finite, non-negative values with a positive sum over the class dim 1 "
                       "for every example (e.g. rows of a probability matrix)",
                       "other values", show_value=False)
    return weights
