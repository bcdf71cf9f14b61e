"""Value checks: one host sync per loss call when on, none when off; a context manager that nests.

The NaN/Inf check takes one reduction and is still exact (overflowing sums fall back).
"""

from __future__ import annotations

import math
import threading

import pytest
import torch

from gkl.losses import (
    ClassPrior,
    GKLLoss,
    dkd_loss,
    dkl_loss,
    gkl_loss,
    js_div,
    kl_div,
    logit_loss,
    logit_mse,
    value_checks,
    value_checks_active,
)


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
    gkl_loss(big, big, weights=torch.full((4, 6), 3.0e38))  # weight rows summing to inf are finite weights


def test_checks_can_be_switched_off_and_the_context_nests_and_restores():
    logits = torch.tensor([[0.0, math.nan]])
    assert value_checks_active()
    with value_checks(False):
        assert torch.isnan(kl_div(logits, torch.zeros(1, 2)))  # no check: the result is simply NaN
        with value_checks(True):
            with pytest.raises(ValueError, match="logits"):
                kl_div(logits, torch.zeros(1, 2))
        assert not value_checks_active()
        with pytest.raises(RuntimeError, match="boom"):
            with value_checks(True):
                raise RuntimeError("boom")
        assert not value_checks_active()  # restored after the exception
    assert value_checks_active()
    with pytest.raises(ValueError, match="enabled: expected true or false"):
        with value_checks("no"):  # type: ignore[arg-type]
            pass


def test_the_setting_is_per_thread():
    seen = []
    with value_checks(False):
        worker = threading.Thread(target=lambda: seen.append(value_checks_active()))
        worker.start()
        worker.join()
    assert seen == [True]  # a new thread starts from the default


@pytest.mark.parametrize("old", ["set_value_checks", "value_checks_enabled", "KDLoss"])
def test_old_names_are_one_line_errors_naming_the_new_ones(old):
    with pytest.raises(ImportError, match=f"gkl.losses.{old}: renamed "):
        exec(f"from gkl.losses import {old}")


class SyncCounter:
    """Counts the host reads of tensor contents (``bool``, ``item``, ``float``, ``int``, ``tolist``)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.count = 0
        for name in ("__bool__", "item", "__float__", "__int__", "tolist"):
            original = getattr(torch.Tensor, name)

            def counted(tensor, *args, _original=original, **kwargs):
                self.count += 1
                return _original(tensor, *args, **kwargs)

            monkeypatch.setattr(torch.Tensor, name, counted)


def _calls():
    g = torch.Generator().manual_seed(0)
    s = torch.randn(6, 5, generator=g, requires_grad=True)
    t = torch.randn(6, 5, generator=g)
    y = torch.tensor([0, 1, 2, 3, 4, -100])
    dense_y = torch.randint(0, 5, (2, 3, 3), generator=g)
    dense = torch.randn(2, 5, 3, 3, generator=g)
    w = torch.softmax(torch.randn(6, 5, generator=g), 1)
    prior = ClassPrior(5)
    module = GKLLoss(5, class_wise=True, gamma=0.5).train()
    return {
        "kl_div": lambda: kl_div(s, t),
        "dkl_loss": lambda: dkl_loss(s, t, temperature=2.0),
        "js_div": lambda: js_div(s, t),
        "logit_mse": lambda: logit_mse(s, t),
        "dkd_loss": lambda: dkd_loss(s, t, y.clamp_min(0)),
        "gkl_loss weights+targets": lambda: gkl_loss(s, t, weights=w, targets=y, gamma=0.5),
        "gkl_loss dense": lambda: gkl_loss(dense, dense.flip(0), targets=dense_y),
        "GKLLoss class-wise train": lambda: module(s, t, y),
        "ClassPrior.update": lambda: prior.update(t, y),
        "ClassPrior()": lambda: prior(y),
        "registry soft_ce": lambda: logit_loss("soft_ce", s, t, temperature=2.0),
    }


def test_one_host_sync_per_loss_call_with_checks_on_and_none_with_checks_off(monkeypatch):
    calls = _calls()
    counter = SyncCounter(monkeypatch)
    for name, call in calls.items():
        for enabled, expected in ((True, 1), (False, 0)):
            counter.count = 0
            with value_checks(enabled):
                out = call()
            assert counter.count == expected, (name, enabled, counter.count)
            if isinstance(out, torch.Tensor) and out.requires_grad:
                counter.count = 0
                out.backward()
                assert counter.count == 0, (name, "backward")
