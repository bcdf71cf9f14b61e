"""The one argument-validation helper of gkl: checks that raise ``ValueError`` in one format.

Format: ``<owner>.<name>: expected <what>, got <value>`` (``owner`` is the config section,
e.g. ``optim``; empty for a plain argument name).
"""

from __future__ import annotations

import math
from typing import Any


def check_choice(owner: str, name: str, value: Any, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ValueError(f"{owner}.{name}: expected one of {list(choices)}, got {value!r}")


def check_number(owner: str, name: str, value: Any, *, minimum: float | None = None,
                  strict: bool = False, integer: bool = False) -> None:
    kinds = (int,) if integer else (int, float)
    if isinstance(value, bool) or not isinstance(value, kinds) or not math.isfinite(value):
        kind = "an integer" if integer else "a finite number"
        raise ValueError(f"{owner}.{name}: expected {kind}, got {value!r}")
    if minimum is not None and (value <= minimum if strict else value < minimum):
        relation = ">" if strict else ">="
        raise ValueError(f"{owner}.{name}: expected a value {relation} {minimum}, got {value!r}")
