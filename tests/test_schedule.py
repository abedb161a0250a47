"""Learning-rate schedules and the wall-clock budget (ssl_core/schedule.py): pure arithmetic, checked
against numbers worked out by hand."""

from __future__ import annotations

import pytest

from ssl_core.schedule import SAFETY_SECONDS, SAFETY_SHARE, SKIP_STEPS, Schedule, TimeBudget, fit_total_steps, lr_factor


def test_learning_rate_warms_up_then_decays_to_zero():
    factors = [lr_factor(s, 10, 100) for s in range(101)]
    assert factors[0] == pytest.approx(0.1) and factors[9] == pytest.approx(1.0)
    assert factors[10] == pytest.approx(1.0) and factors[100] == pytest.approx(0.0, abs=1e-12)
    assert all(a >= b for a, b in zip(factors[10:], factors[11:]))  # monotone decay after warm-up
    assert lr_factor(0, 0, 100) == 1.0  # no warm-up: full rate at once (the digits recipe)


def test_fitting_the_total_steps_to_the_budget() -> None:
    # Three slow first steps (1 s each), then 0.1 s a step: 10 s of budget, 4 s used after 13 steps.
    ends = [1.0, 2.0, 3.0] + [3.0 + 0.1 * i for i in range(1, 11)]
    assert fit_total_steps(ends, 10.0) == 13 + 60  # 6 s left at 0.1 s a step; the slow start is not paced
    assert fit_total_steps(ends, 10.0, steps_before=100) == 173  # a resumed run counts its earlier steps
    # A machine that got busier: the last steps' pace (0.3 s) wins over the whole run's.
    slower = ends + [ends[-1] + 0.3 * i for i in range(1, 61)]  # 73 steps, 22 s
    assert fit_total_steps(slower, 40.1) == 73 + 60
    assert fit_total_steps(slower, 10.0) == 73  # over budget: the schedule ends now
    with pytest.raises(ValueError):
        fit_total_steps(ends[:SKIP_STEPS], 10.0)


def test_the_evaluation_reserve_grows_when_the_machine_gets_busier() -> None:
    budget = TimeBudget(100.0)
    for t in [1.0, 2.0, 3.0] + [3.0 + 0.1 * i for i in range(1, 6)]:
        budget.record(t)
    budget.set_reserve(20.0)  # the evaluation, timed at 0.1 s a step
    assert budget.step_deadline == pytest.approx(100 * (1 - SAFETY_SHARE) - SAFETY_SECONDS - 20.0)
    for i in range(1, 51):
        budget.record(3.5 + 0.2 * i)  # twice as slow now: the evaluation will be too
    assert budget.step_deadline == pytest.approx(100 * (1 - SAFETY_SHARE) - SAFETY_SECONDS - 40.0)


def test_a_refitted_schedule_stays_continuous_and_ends_at_zero() -> None:
    plan = Schedule.make(0.1, 100)
    assert [plan.factor(s) for s in range(101)] == [lr_factor(s, 10, 100) for s in range(101)]
    before = plan.factor(30)
    plan.refit(30, 50)  # the budget allows only 50 steps in all
    assert plan.factor(30) == pytest.approx(before) and plan.factor(50) == pytest.approx(0.0, abs=1e-12)
    factors = [plan.factor(s) for s in range(30, 51)]
    assert all(a >= b for a, b in zip(factors, factors[1:]))
    plan.refit(40, 400)  # then more than expected
    assert plan.factor(40) == pytest.approx(factors[10]) and plan.factor(400) == pytest.approx(0.0, abs=1e-12)
    assert plan.factor(200) > 0.01
