"""The one argument-validation helper of gkl: checks that raise in one message format.

Format: ``<owner>.<name>: expected <what>, got <value>``. ``owner`` is the config
section (``distill``, ``train.optim``) for settings, empty for a plain argument name
(then the message starts with ``<name>:``). Every check raises ``error`` (default
``ValueError``; settings pass :class:`~gkl.utils.errors.ConfigError`) and returns the
checked value, so ``x = check_number("", "x", x, minimum=0)`` reads naturally.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

__all__ = ["check_bool", "check_choice", "check_int", "check_number", "fail", "qualified"]


def qualified(owner: str, name: str) -> str:
    """``owner.name``, or ``name`` when there is no owner."""
    return f"{owner}.{name}" if owner else name


def fail(
    owner: str, name: str, expected: str, value: Any, *, error: type[Exception] = ValueError, show_value: bool = True
) -> Exception:
    """The error of the common format (returned, so callers write ``raise fail(...)``)."""
    got = f", got {value!r}" if show_value else (f", got {value}" if value is not None else "")
    return error(f"{qualified(owner, name)}: expected {expected}{got}")


def check_choice(
    owner: str, name: str, value: Any, choices: Iterable[Any], *, error: type[Exception] = ValueError
) -> Any:
    """``value`` if it is one of ``choices``."""
    choices = tuple(choices)
    if value not in choices:
        raise fail(owner, name, f"one of {list(choices)}", value, error=error)
    return value


def check_bool(owner: str, name: str, value: Any, *, error: type[Exception] = ValueError) -> bool:
    """``value`` if it is a bool."""
    if not isinstance(value, bool):
        raise fail(owner, name, "true or false", value, error=error)
    return value


def check_int(
    owner: str, name: str, value: Any, *, minimum: int | None = None, error: type[Exception] = ValueError
) -> int:
    """``value`` if it is an int (bools rejected), at least ``minimum`` when given."""
    return check_number(owner, name, value, minimum=minimum, integer=True, error=error)


def check_number(
    owner: str,
    name: str,
    value: Any,
    *,
    minimum: float | None = None,
    strict: bool = False,
    integer: bool = False,
    allow_inf: bool = False,
    error: type[Exception] = ValueError,
) -> Any:
    """``value`` if it is a finite real number (ints accepted; bools, NaN, ±inf rejected).

    minimum / strict: ``value >= minimum`` (``> minimum`` when strict).
    integer: only ints. allow_inf: ``+inf`` is accepted too (never NaN or -inf).
    """
    kinds = (int,) if integer else (int, float)
    if isinstance(value, bool) or not isinstance(value, kinds):
        kind = "an integer" if integer else "a real number"
        raise fail(owner, name, kind, value, error=error)
    if math.isnan(value) or (math.isinf(value) and not (allow_inf and value > 0)):
        raise fail(owner, name, "a finite number" + (" or +inf" if allow_inf else ""), value, error=error)
    if minimum is not None and (value <= minimum if strict else value < minimum):
        relation = ">" if strict else ">="
        raise fail(owner, name, f"a value {relation} {minimum}", value, error=error)
    return value
