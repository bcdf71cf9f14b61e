"""LRSchedule: values at chosen steps (by hand), USB's LambdaLR, unit=epoch equals the per-epoch schedule."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from gkl.engine.schedules import EpochLRSchedule, LRSchedule, learning_rate_at
from gkl.settings.optim import ScheduleSettings
from gkl.utils.errors import InputError


def _opt(*scales):
    params = [nn.Parameter(torch.zeros(1)) for _ in scales]
    groups = [{"params": [p], "lr_scale": s} for p, s in zip(params, scales)]
    return torch.optim.SGD(groups, lr=1.0)


def _schedule(total, *, spe=1, base=0.1, scales=(1.0,), **kw):
    settings = ScheduleSettings(**kw)
    return LRSchedule(_opt(*scales), base_lr=base, steps_per_epoch=spe, total_steps=total, settings=settings)


@pytest.mark.parametrize("step, expected", [(1, 0.1), (6, 0.025), (10, 0.001)])
def test_poly_by_hand(step, expected):
    # k = step - 1 of T = 10: 0.1 * (1 - k/10)^2
    sched = _schedule(10, kind="poly", unit="step", power=2.0)
    assert sched.lr_at(step) == pytest.approx(expected, rel=1e-12)


def test_poly_default_power():
    sched = _schedule(10, kind="poly", unit="step")
    assert sched.settings.power == 0.9
    assert sched.lr_at(6) == pytest.approx(0.1 * 0.5**0.9, rel=1e-12)


@pytest.mark.parametrize(
    "step, expected",
    [
        (1, 0.0),
        (3, 0.05),
        (5, 0.1),
        (9, 0.05),
        (12, 0.1 * 0.5 * (1 + math.cos(7 * math.pi / 8))),
    ],
)
def test_cosine_with_step_warmup_by_hand(step, expected):
    # W = 4, T = 12: warm-up k/4 for k < 4, then ½(1 + cos(π (k - 4) / 8))
    sched = _schedule(12, kind="cosine", unit="step", warmup_steps=4)
    assert sched.lr_at(step) == pytest.approx(expected, rel=1e-12, abs=1e-15)


@pytest.mark.parametrize("step, expected", [(1, 0.0), (2, 0.05), (3, 0.1), (7, 0.1 * math.sqrt(0.5))])
def test_usb_cosine_by_hand(step, expected):
    # W = 2, T = 9, span 7, num_cycles 7/16: cos(7π/16 · t/7) = cos(π t / 16); t = 4 -> cos(π/4)
    sched = _schedule(9, kind="usb_cosine", unit="step", warmup_steps=2)
    assert sched.settings.num_cycles == 7 / 16
    assert sched.lr_at(step) == pytest.approx(expected, rel=1e-12, abs=1e-15)


def test_usb_cosine_equals_usb_lambdalr_per_optimizer_step():
    """USB steps a LambdaLR after each optimizer step; the LR the s-th step uses must equal lr_at(s)."""
    total, warmup, base = 50, 7, 0.03

    def usb_lambda(current_step):  # USB's get_cosine_schedule_with_warmup, written out
        if current_step < warmup:
            return float(current_step) / float(max(1, warmup))
        progress = float(current_step - warmup) / float(max(1, total - warmup))
        return max(0.0, math.cos(math.pi * 7.0 / 16.0 * progress))

    opt = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=base)
    reference = torch.optim.lr_scheduler.LambdaLR(opt, usb_lambda)
    sched = _schedule(total, base=base, kind="usb_cosine", unit="step", warmup_steps=warmup)
    for step in range(1, total + 1):
        assert sched.apply(step) == pytest.approx(opt.param_groups[0]["lr"], rel=1e-12, abs=1e-18)
        opt.step()
        reference.step()


def test_multistep_and_constant_in_steps():
    sched = _schedule(8, kind="multistep", unit="step", milestones=[3, 5], gamma=0.1)
    assert [sched.lr_at(s) for s in (1, 3, 4, 5, 6, 8)] == pytest.approx([0.1, 0.1, 0.01, 0.01, 0.001, 0.001])
    const = _schedule(8, kind="constant", unit="step", warmup_steps=4)
    assert [const.lr_at(s) for s in (1, 2, 5, 8)] == pytest.approx([0.0, 0.025, 0.1, 0.1])


@pytest.mark.parametrize(
    "kind, extra",
    [
        ("multistep", {"milestones": [2, 4]}),
        ("cosine", {}),
        ("cosine_at", {}),
        ("constant", {}),
        ("poly", {}),
        ("usb_cosine", {}),
        ("cosine", {"warmup_epochs": 2}),
        ("multistep", {"warmup_epochs": 1}),
    ],
)
def test_epoch_unit_equals_per_epoch_schedule(kind, extra):
    epochs, spe = 6, 3
    settings = ScheduleSettings(kind=kind, unit="epoch", **extra)
    sched = LRSchedule(_opt(1.0), base_lr=0.2, steps_per_epoch=spe, total_steps=epochs * spe, settings=settings)
    old_opt = _opt(1.0)
    old = EpochLRSchedule(old_opt, base_lr=0.2, epochs=epochs, settings=settings)
    for epoch in range(1, epochs + 1):
        expected = old.start_epoch(epoch)
        assert expected == learning_rate_at(epoch, base_lr=0.2, epochs=epochs, settings=settings)
        for step in range((epoch - 1) * spe + 1, epoch * spe + 1):
            assert sched.apply(step) == expected  # identical values, constant within the epoch
            assert sched.optimizer.param_groups[0]["lr"] == old_opt.param_groups[0]["lr"]


def test_epoch_unit_new_kinds_by_hand():
    poly = ScheduleSettings(kind="poly", power=2.0)
    assert learning_rate_at(3, base_lr=1.0, epochs=4, settings=poly) == pytest.approx(0.25)
    usb = ScheduleSettings(kind="usb_cosine", num_cycles=0.5)
    assert learning_rate_at(2, base_lr=1.0, epochs=3, settings=usb) == pytest.approx(math.cos(math.pi / 6))


def test_apply_scales_every_group():
    sched = _schedule(10, kind="poly", unit="step", power=1.0, scales=(1.0, 0.5, 0.125))
    lr = sched.apply(3)
    assert lr == pytest.approx(0.08)
    assert [g["lr"] for g in sched.optimizer.param_groups] == pytest.approx([0.08, 0.04, 0.01])
    plain = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=1.0)  # no lr_scale key: scale 1
    LRSchedule(plain, base_lr=0.1, steps_per_epoch=2, total_steps=4, settings=ScheduleSettings()).apply(4)
    assert plain.param_groups[0]["lr"] == 0.1


def test_state_dict_round_trip_and_mismatch():
    sched = _schedule(20, spe=5, kind="cosine", unit="step", warmup_steps=3)
    sched.apply(7)
    state = sched.state_dict()
    other = _schedule(20, spe=5, base=0.3, kind="cosine", unit="step", warmup_steps=3)
    other.load_state_dict(state)
    assert other.last_step == 7
    with pytest.raises(ValueError, match="total_steps"):
        _schedule(30, spe=5, kind="cosine", unit="step").load_state_dict(state)
    with pytest.raises(ValueError, match="unit"):
        _schedule(20, spe=5, kind="cosine").load_state_dict(state)
    # epoch unit: a different number of steps per epoch (world size changed) is fine
    epoch_state = _schedule(20, spe=5, kind="cosine").state_dict()
    _schedule(40, spe=10, kind="cosine").load_state_dict(epoch_state)


@pytest.mark.parametrize(
    "make, key",
    [
        (lambda: ScheduleSettings(warmup_steps=5), "schedule.warmup_steps"),
        (lambda: ScheduleSettings(unit="step", warmup_epochs=1), "schedule.warmup_epochs"),
        (lambda: ScheduleSettings(unit="step", kind="cosine_at"), "schedule.kind"),
        (lambda: ScheduleSettings(unit="iteration"), "schedule.unit"),
        (lambda: ScheduleSettings(kind="poly", power=0.0), "schedule.power"),
        (lambda: ScheduleSettings(kind="usb_cosine", num_cycles=-1.0), "schedule.num_cycles"),
        (lambda: _schedule(10, kind="cosine", unit="step", warmup_steps=10), "schedule.warmup_steps"),
        (lambda: _schedule(6, spe=3, kind="cosine", warmup_epochs=3), "schedule.warmup_epochs"),
        (lambda: _schedule(6, kind="cosine", unit="step").lr_at(7), "step"),
    ],
)
def test_bad_settings_name_the_key(make, key):
    with pytest.raises(ValueError, match=key):
        make()
    if key.startswith("schedule.warmup") and "_schedule" in make.__code__.co_names:
        with pytest.raises(InputError, match=key):
            make()
