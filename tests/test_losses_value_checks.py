"""The losses' NaN/Inf check takes one reduction, and is still exact (overflowing sums fall back)."""

from __future__ import annotations

import math

import pytest
import torch

from gkl.losses import gkl_loss, kl_div, set_value_checks


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_any_non_finite_entry_is_refused(bad):
    logits = torch.randn(5, 7, dtype=torch.float64)
    logits[3, 2] = bad
    with pytest.raises(ValueError, match="logits: expected only finite values"):
        gkl_loss(logits, torch.randn(5, 7, dtype=torch.float64))
    with pytest.raises(ValueError, match="target_logits: expected only finite values"):
        kl_div(torch.randn(5, 7, dtype=torch.float64), logits)


def test_finite_values_whose_sum_overflows_are_accepted():
    big = torch.full((4, 6), 3.0e38)  # float32: the sum overflows to inf, every entry is finite
    assert not torch.isfinite(big.sum())
    kl_div(big, big.flip(1))  # no error: the exact per-entry test decides
    half = torch.full((2, 3), 6.0e4, dtype=torch.float16)
    kl_div(half, half)


def test_checks_can_be_switched_off():
    logits = torch.tensor([[0.0, math.nan]])
    previous = set_value_checks(False)
    try:
        kl_div(logits, torch.zeros(1, 2))  # no check: the result is simply NaN
    finally:
        set_value_checks(previous)
