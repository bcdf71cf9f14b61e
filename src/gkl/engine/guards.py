"""Switch the losses' per-call value checks off on the training path.

``gkl.losses`` checks tensor *contents* (NaN/Inf logits, target range) on every
call; each check is a host synchronisation, and on the training path it would
report a divergence as bad user input. The engine instead checks the loss terms
once per step (:func:`gkl.engine.train_stats.first_non_finite`), so it runs
training inside :func:`loss_value_checks` ``(False)``.
"""

from __future__ import annotations

import contextlib
from typing import Iterator

from gkl.losses import set_value_checks


@contextlib.contextmanager
def loss_value_checks(enabled: bool) -> Iterator[None]:
    """Within the block the value checks of :mod:`gkl.losses` are ``enabled``; the previous setting
    is restored afterwards, also when the block raises."""
    previous = set_value_checks(enabled)
    try:
        yield
    finally:
        set_value_checks(previous)
