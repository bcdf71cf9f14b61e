"""Input checks shared by the loss functions (docs/losses.md, "Precision and input checks").

Shape, dtype and hyperparameter checks are free (no device synchronisation) and always on.
*Value* checks -- NaN/Inf logits, targets out of range, negative weights -- read tensor
contents. A loss call gathers all of them into one boolean and reads it with one host
sync (:func:`run_value_checks`); only when that says "bad" are the exact checks run one by
one to name the argument. They are on by default, off inside ``with value_checks(False):``
(the training engine checks the loss once per step instead) and always skipped while
``torch.compile`` traces (no data-dependent branch in a graph).
Messages follow gkl's one format, ``<argument>: expected ..., got ...``
(:mod:`gkl.utils.validation`).
"""

from __future__ import annotations

import contextlib
import contextvars
import math
from collections.abc import Callable, Iterable, Iterator

import torch

from gkl.utils.validation import check_choice as _check_choice
from gkl.utils.validation import check_int as _check_int
from gkl.utils.validation import check_number, fail

REDUCTIONS = ("mean", "sum", "none")

_VALUE_CHECKS: contextvars.ContextVar[bool] = contextvars.ContextVar("gkl_losses_value_checks", default=True)


@contextlib.contextmanager
def value_checks(enabled: bool) -> Iterator[None]:
    """Within the block the losses' content checks are ``enabled``; the previous setting is
    restored on exit, also when the block raises. Blocks nest; the setting is per thread/context."""
    if not isinstance(enabled, bool):
        raise fail("", "enabled", "true or false", enabled)
    token = _VALUE_CHECKS.set(enabled)
    try:
        yield
    finally:
        _VALUE_CHECKS.reset(token)


def value_checks_active() -> bool:
    """Whether content checks run here: inside ``value_checks(True)`` (the default) and not
    while ``torch.compile`` traces."""
    return not torch.compiler.is_compiling() and _VALUE_CHECKS.get()


# A value check: a 0-dim float tensor, built without a sync, that is finite when the inputs are
# surely fine (a non-finite one may be a false alarm), and the exact check to run (with its own
# syncs) only then. Adding the terms of all checks gives one number to read: one host sync.
ValueCheck = tuple[torch.Tensor, Callable[[], None]]


def run_value_checks(*checks: ValueCheck) -> None:
    """Read the sum of the checks' terms with one host sync; if it is not finite, run the exact checks."""
    if not checks:
        return
    total = checks[0][0]
    for term, _ in checks[1:]:
        total = total + term
    if not bool(total.abs() < math.inf):  # the one host sync of a loss call (NaN < inf is False)
        for _, exact in checks:
            exact()


def finite_check(*named: tuple[str, torch.Tensor]) -> ValueCheck:
    """No NaN/Inf in the tensors: their sum (a NaN/Inf makes it non-finite, so a finite sum proves
    every entry finite; an overflowing sum falls back to the exact test)."""
    total = named[0][1].detach().sum()
    for _, x in named[1:]:
        total = total + x.detach().sum()

    def exact() -> None:
        for name, x in named:
            if not bool(torch.isfinite(x).all()):
                raise fail("", name, "only finite values", "NaN or Inf", show_value=False)

    return total, exact


def targets_check(
    targets: torch.Tensor, num_classes: int, ignore_index: int | None, name: str = "targets"
) -> ValueCheck:
    """Class indices in [0, num_classes) (or ``ignore_index``); the term is log(1) or log(0) = −inf."""
    good = (targets >= 0) & (targets < num_classes)
    if ignore_index is not None:
        good |= targets == ignore_index
    all_good = good.all()

    def exact() -> None:
        if not bool(all_good):
            allowed = "" if ignore_index is None else f" or ignore_index={ignore_index}"
            raise fail("", name, f"class indices in [0, {num_classes - 1}]{allowed}", targets[~good][0].item())

    return all_good.float().log(), exact


def weights_check(weights: torch.Tensor) -> ValueCheck:
    """Finite, non-negative weights with a positive sum over dim 1 for every example.

    The term Σ w + log(min_i Σ_j w_ij) + sqrt(min w) is finite exactly when the entries are finite
    (or the sum overflows: a false alarm), the smallest row sum is > 0 and the smallest entry ≥ 0.
    """
    w = weights.detach()
    if w.numel() == 0:
        term = torch.zeros((), dtype=w.dtype, device=w.device)
    else:
        row_sums = w.sum(dim=1)
        term = row_sums.sum() + row_sums.amin().log() + w.amin().sqrt()

    def exact() -> None:
        if not bool(torch.isfinite(w).all() & (w >= 0).all() & (w.sum(dim=1) > 0).all()):
            raise fail(
                "",
                "weights",
                "finite, non-negative values with a positive sum over the class dim 1 "
                "for every example (e.g. rows of a probability matrix)",
                "other values",
                show_value=False,
            )

    return term, exact


def check_real(
    name: str, value: object, *, minimum: float | None = None, strictly_positive: bool = False, allow_inf: bool = False
) -> float:
    """Return ``value`` as a float, or raise a ValueError naming ``name``.

    Finite unless ``allow_inf`` (then ``+inf`` passes too); a one-element tensor is read
    with ``.item()`` (a host synchronisation). Not checked while ``torch.compile`` traces (a
    float argument may then be symbolic, and a check would need a guard per value).
    """
    if torch.compiler.is_compiling():
        return value  # type: ignore[return-value]
    if isinstance(value, torch.Tensor) and value.numel() == 1 and not isinstance(value, bool):
        value = float(value.item())
    if strictly_positive:
        check_number("", name, value, minimum=0.0, strict=True, allow_inf=allow_inf)
    else:
        check_number("", name, value, minimum=minimum, allow_inf=allow_inf)
    return float(value)  # type: ignore[arg-type]


def check_choice(name: str, value: object, choices: Iterable[str]) -> str:
    """Raise a ValueError naming ``name`` unless ``value`` is one of ``choices``."""
    return _check_choice("", name, value, choices)


def check_reduction(reduction: object) -> str:
    """One of "mean", "sum", "none"; the old spelling "batchmean" is an error naming "mean"."""
    if reduction in REDUCTIONS:
        return reduction
    if reduction == "batchmean":
        raise fail("", "reduction", f'one of {list(REDUCTIONS)} ("batchmean" is now "mean")', reduction)
    return _check_choice("", "reduction", reduction, REDUCTIONS)


def check_int(name: str, value: object) -> int:
    """Return ``value`` as an int (bools rejected), or raise a ValueError naming ``name`` (not while compiling)."""
    if torch.compiler.is_compiling():
        return value  # type: ignore[return-value]
    return _check_int("", name, value)


def check_logits(name: str, logits: object, *, min_classes: int = 1) -> torch.Tensor:
    """Check that ``logits`` is a floating tensor of shape (N, C) or (N, C, d1, ...) (no content check)."""
    if not isinstance(logits, torch.Tensor):
        raise fail(
            "", name, "a torch.Tensor of shape (N, C) or (N, C, d1, ...)", type(logits).__name__, show_value=False
        )
    if not logits.is_floating_point():
        raise fail(
            "",
            name,
            "a floating-point tensor (float16/bfloat16/float32/float64)",
            f"dtype {logits.dtype}",
            show_value=False,
        )
    if logits.dim() < 2:
        raise fail("", name, "shape (N, C) or (N, C, d1, ...)", f"shape {tuple(logits.shape)}", show_value=False)
    if logits.shape[1] < min_classes:
        raise fail(
            "",
            name,
            f"at least {min_classes} classes in dim 1 (shape (N, C, ...))",
            f"shape {tuple(logits.shape)}",
            show_value=False,
        )
    return logits


def check_pair(logits: object, target_logits: object, *, min_classes: int = 1) -> None:
    """Check both logit tensors and that their shapes match (no content check)."""
    check_logits("logits", logits, min_classes=min_classes)
    check_logits("target_logits", target_logits, min_classes=min_classes)
    assert isinstance(logits, torch.Tensor) and isinstance(target_logits, torch.Tensor)
    if logits.shape != target_logits.shape:
        raise fail(
            "",
            "target_logits",
            f"the shape of logits {tuple(logits.shape)}",
            f"shape {tuple(target_logits.shape)}",
            show_value=False,
        )
    if logits.device != target_logits.device:
        raise fail(
            "", "target_logits", f"the device of logits ({logits.device})", target_logits.device, show_value=False
        )


def check_pair_values(logits: torch.Tensor, target_logits: torch.Tensor, *extra: ValueCheck) -> None:
    """The content checks of a logit pair (and ``extra`` ones) with one host sync, if active."""
    if value_checks_active():
        run_value_checks(finite_check(("logits", logits), ("target_logits", target_logits)), *extra)


def check_targets(targets: object, logits: torch.Tensor, *, name: str = "targets") -> torch.Tensor:
    """Check integer class targets of shape (N,) or (N, d1, ...) matching ``logits`` (no content check)."""
    expected = (logits.shape[0],) + tuple(logits.shape[2:])
    if not isinstance(targets, torch.Tensor):
        raise fail("", name, f"an integer torch.Tensor of shape {expected}", type(targets).__name__, show_value=False)
    if targets.is_floating_point() or targets.is_complex() or targets.dtype == torch.bool:
        raise fail("", name, "an integer tensor of class indices", f"dtype {targets.dtype}", show_value=False)
    if tuple(targets.shape) != expected:
        raise fail(
            "",
            name,
            f"shape {expected} (the logits' shape without dim 1)",
            f"shape {tuple(targets.shape)}",
            show_value=False,
        )
    if targets.device != logits.device:
        raise fail("", name, f"the device of logits ({logits.device})", targets.device, show_value=False)
    return targets


def check_weights(weights: object, logits: torch.Tensor) -> torch.Tensor:
    """Check a floating weight tensor of exactly the logits' shape (no content check)."""
    if not isinstance(weights, torch.Tensor):
        raise fail(
            "",
            "weights",
            f"None or a tensor of the logits' shape {tuple(logits.shape)}",
            type(weights).__name__,
            show_value=False,
        )
    if not weights.is_floating_point():
        raise fail("", "weights", "a floating-point tensor", f"dtype {weights.dtype}", show_value=False)
    if weights.shape != logits.shape:
        raise fail(
            "",
            "weights",
            f"the shape of logits {tuple(logits.shape)} ((N, C) or (N, C, d1, ...))",
            f"shape {tuple(weights.shape)}",
            show_value=False,
        )
    if weights.device != logits.device:
        raise fail("", "weights", f"the device of logits ({logits.device})", weights.device, show_value=False)
    return weights
