"""LR schedules reproduce the recipes' learning rates; settings reject bad values by field name."""

from __future__ import annotations

import math

import pytest
import torch

from gkl.engine import (
    EMASettings,
    EpochLRSchedule,
    OptimSettings,
    ScheduleSettings,
    TrainSettings,
    learning_rate_at,
    scaled_base_lr,
)


def lrs(kind: str, epochs: int, base: float = 0.05, **kw) -> list[float]:
    settings = ScheduleSettings(kind=kind, **kw)
    return [learning_rate_at(e, base_lr=base, epochs=epochs, settings=settings) for e in range(1, epochs + 1)]


def test_multistep_matches_mdistiller_cifar_recipe():
    # mdistiller: lr * 0.1 ** #{m : epoch > m}, epochs from 1, milestones 150/180/210
    values = lrs("multistep", 240, milestones=[150, 180, 210], gamma=0.1)
    expected = {1: 0.05, 150: 0.05, 151: 0.005, 180: 0.005, 181: 0.0005, 210: 0.0005, 211: 0.00005, 240: 0.00005}
    for epoch, lr in expected.items():
        assert values[epoch - 1] == pytest.approx(lr, rel=1e-12), epoch
    assert len(set(round(v, 12) for v in values)) == 4


def test_imagenet_multistep():
    values = lrs("multistep", 100, base=0.2, milestones=[30, 60, 90], gamma=0.1)
    assert values[29] == pytest.approx(0.2) and values[30] == pytest.approx(0.02)
    assert values[60] == pytest.approx(0.002) and values[99] == pytest.approx(0.0002)


def test_cosine_at_is_the_at_recipe_formula():
    epochs, base = 200, 0.2
    values = lrs("cosine_at", epochs, base=base)
    for epoch in (1, 50, 100, 199, 200):
        assert values[epoch - 1] == pytest.approx(base * 0.5 * (1 + math.cos(math.pi * epoch / (epochs + 1))))
    assert values[-1] > 0
    assert all(a > b for a, b in zip(values, values[1:]))


def test_cosine_starts_at_base_and_decreases():
    values = lrs("cosine", 10, base=0.1)
    assert values[0] == pytest.approx(0.1)
    assert values[5] == pytest.approx(0.1 * 0.5 * (1 + math.cos(math.pi * 5 / 10)))
    assert all(a > b for a, b in zip(values, values[1:])) and values[-1] > 0


def test_linear_warmup_then_schedule():
    values = lrs("multistep", 20, base=0.1, milestones=[10], gamma=0.1, warmup_epochs=4)
    assert values[:4] == pytest.approx([0.025, 0.05, 0.075, 0.1])
    assert values[4] == pytest.approx(0.1) and values[10] == pytest.approx(0.01)
    cos = lrs("cosine", 12, base=0.1, warmup_epochs=2)
    assert cos[:3] == pytest.approx([0.05, 0.1, 0.1])  # cosine restarts from the full lr after warm-up


def test_constant_and_epoch_range():
    assert lrs("constant", 5, base=0.3) == pytest.approx([0.3] * 5)
    with pytest.raises(ValueError, match="epoch"):
        learning_rate_at(0, base_lr=0.1, epochs=5, settings=ScheduleSettings(kind="constant"))
    with pytest.raises(ValueError, match="epoch"):
        learning_rate_at(6, base_lr=0.1, epochs=5, settings=ScheduleSettings(kind="constant"))


def test_epoch_schedule_sets_optimizer_lr_and_round_trips():
    param = torch.nn.Parameter(torch.zeros(2))
    opt = torch.optim.SGD([param], lr=1.0)
    sched = EpochLRSchedule(opt, base_lr=0.05, epochs=240, settings=ScheduleSettings(milestones=[150, 180, 210]))
    assert sched.start_epoch(151) == pytest.approx(0.005)
    assert opt.param_groups[0]["lr"] == pytest.approx(0.005)
    other = EpochLRSchedule(opt, base_lr=0.05, epochs=240, settings=ScheduleSettings(milestones=[150, 180, 210]))
    other.load_state_dict(sched.state_dict())
    assert other.last_epoch == 151
    wrong = EpochLRSchedule(opt, base_lr=0.05, epochs=100, settings=ScheduleSettings(milestones=[30]))
    with pytest.raises(ValueError, match="epochs"):
        wrong.load_state_dict(sched.state_dict())


def test_lr_scaling_rule():
    assert scaled_base_lr(0.1, global_batch_size=512, reference_batch_size=256) == pytest.approx(0.2)
    assert scaled_base_lr(0.1, global_batch_size=64, reference_batch_size=None) == 0.1


@pytest.mark.parametrize(
    "build, field",
    [
        (lambda: OptimSettings(lr=0.0), "optim.lr"),
        (lambda: OptimSettings(momentum=1.5), "optim.momentum"),
        (lambda: OptimSettings(momentum=0.0, nesterov=True), "optim.nesterov"),
        (lambda: OptimSettings(reference_batch_size=0), "optim.reference_batch_size"),
        (lambda: ScheduleSettings(kind="step"), "schedule.kind"),
        (lambda: ScheduleSettings(milestones=[180, 150]), "schedule.milestones"),
        (lambda: ScheduleSettings(warmup_epochs=-1), "schedule.warmup_epochs"),
        (lambda: EMASettings(decay=1.0), "ema.decay"),
        (lambda: EMASettings(evaluate="ema"), "ema.evaluate"),
        (lambda: TrainSettings(epochs=0), "train.epochs"),
        (lambda: TrainSettings(amp="fp8"), "train.amp"),
        (lambda: TrainSettings(device="gpu"), "train.device"),
        (lambda: TrainSettings(clip_grad_norm=-1.0), "train.clip_grad_norm"),
        (lambda: TrainSettings(eval_every=0), "train.eval_every"),
        (lambda: TrainSettings(epochs=5, schedule=ScheduleSettings(warmup_epochs=6)), "schedule.warmup_epochs"),
    ],
)
def test_settings_errors_name_the_field(build, field):
    with pytest.raises(ValueError, match=field.replace(".", r"\.")):
        build()


def test_settings_defaults_follow_cifar_kd_recipe_and_accept_nested_dicts():
    s = TrainSettings(optim={"lr": 0.2}, schedule={"kind": "cosine_at"}, ema={"decay": 0.9})
    assert isinstance(s.optim, OptimSettings) and s.optim.lr == 0.2 and s.optim.momentum == 0.9
    assert s.schedule.kind == "cosine_at" and s.ema.decay == 0.9
    d = TrainSettings()
    assert (d.epochs, d.optim.lr, d.optim.weight_decay, d.schedule.milestones) == (240, 0.05, 5e-4, [150, 180, 210])
    assert TrainSettings(**d.to_dict()) == d


def test_cosine_at_after_a_warmup_is_the_authors_imagenet_lt_schedule():
    # imagenetlt_distill_dkl.py (epochs counted from 0 there): lr / w * (e0 + 1) for e0 < w, then
    # lr * ½(1 + cos(π (e0 - w + 1) / (E - w + 1))); our epoch e = e0 + 1
    epochs, base, warmup = 90, 0.05, 10
    values = lrs("cosine_at", epochs, base=base, warmup_epochs=warmup)
    for e0 in range(epochs):
        if e0 < warmup:
            expected = base / warmup * (e0 + 1)
        else:
            expected = base * 0.5 * (1.0 + math.cos(math.pi * (e0 - warmup + 1) / (epochs - warmup + 1)))
        assert values[e0] == pytest.approx(expected, rel=1e-12)
    assert lrs("cosine_at", 200, base=0.2) == lrs("cosine_at", 200, base=0.2, warmup_epochs=0)
