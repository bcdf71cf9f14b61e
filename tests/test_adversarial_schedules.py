"""eps schedules and attack budgets, exactly."""

from __future__ import annotations

import pytest

from gkl.objectives.epsilon_schedule import attack_budget, attack_plan, scheduled_eps

EPS = 8 / 255


def test_fixed_and_linear_eps():
    assert [scheduled_eps(EPS, e, 4, "fixed") for e in (1, 2, 3, 4)] == [EPS] * 4
    assert [scheduled_eps(EPS, e, 4, "linear") for e in (1, 2, 3, 4)] == [EPS * e / 4 for e in (1, 2, 3, 4)]
    assert scheduled_eps(EPS, 200, 200, "linear") == EPS


def test_low_budget_is_two_steps_of_eps_t():
    for epoch in (1, 77, 200):
        eps_t = scheduled_eps(EPS, epoch, 200, "linear")
        assert attack_budget("low", eps_t, epoch, 200) == (2, eps_t)


def test_high_budget_by_quarter_200_epochs():
    expected = {
        1: (2, 1.0),
        50: (2, 1.0),
        51: (3, 2 / 3),
        100: (3, 2 / 3),
        101: (4, 0.5),
        150: (4, 0.5),
        151: (5, 0.5),
        200: (5, 0.5),
    }
    for epoch, (steps, fraction) in expected.items():
        eps_t = scheduled_eps(EPS, epoch, 200, "linear")
        n, size = attack_budget("high", eps_t, epoch, 200)
        assert n == steps, epoch
        assert size == pytest.approx(fraction * eps_t, rel=1e-15), epoch


def test_high_budget_quarters_with_uneven_epochs():
    # 10 epochs: quarters end at 2.5, 5, 7.5 -> epochs 1-2, 3-5, 6-7, 8-10
    steps = [attack_budget("high", 1.0, e, 10)[0] for e in range(1, 11)]
    assert steps == [2, 2, 3, 3, 3, 4, 4, 5, 5, 5]


def test_high_as_released_is_five_half_steps_every_epoch():
    for epoch in (1, 50, 51, 120, 200):
        eps_t = scheduled_eps(EPS, epoch, 200, "linear")
        assert attack_budget("high-as-released", eps_t, epoch, 200) == (5, eps_t / 2)


def test_fixed_budget_and_plan():
    assert attack_budget("fixed", 0.01, 3, 5, steps=7, step_size=0.5) == (7, 0.5)
    plan = attack_plan(eps=EPS, epoch=100, epochs=200, eps_schedule="linear", budget="high")
    assert (plan.eps, plan.steps, plan.step_size) == (EPS / 2, 3, 2 * (EPS / 2) / 3)


@pytest.mark.parametrize(
    "call, word",
    [
        (lambda: scheduled_eps(EPS, 0, 10), "epoch"),
        (lambda: scheduled_eps(EPS, 11, 10), "epoch"),
        (lambda: scheduled_eps(EPS, 1, 0), "epochs"),
        (lambda: scheduled_eps(-1.0, 1, 10), "eps"),
        (lambda: scheduled_eps(EPS, 1, 10, "cosine"), "schedule"),
        (lambda: attack_budget("medium", EPS, 1, 10), "budget"),
        (lambda: attack_budget("fixed", EPS, 1, 10, steps=-2), "steps"),
    ],
)
def test_bad_schedule_arguments_raise(call, word):
    with pytest.raises(ValueError, match=word):
        call()
