"""Learning-rate schedules and the wall-clock budget (ssl_core/schedule.py): pure arithmetic, checked
against numbers worked out by hand."""

from __future__ import annotations

import pytest

from ssl_core.schedule import (SAFETY_SECONDS, SAFETY_SHARE, SKIP_STEPS, Schedule, TimeBudget, evaluation_seconds, fit_total_steps,
                               lr_factor, step_pace)


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


def test_a_schedule_with_no_room_for_decay_and_one_ended_at_once():
    assert lr_factor(5, 5, 5) == 1.0 and lr_factor(5, 5, 6) == 1.0 and lr_factor(6, 5, 6) == pytest.approx(0.0, abs=1e-12)
    plan = Schedule.make(0.0, 100)
    plan.refit(30, 30)  # "end now": the rest of the curve is played at once
    assert plan.position(30) == 100.0 and plan.factor(30) == pytest.approx(0.0, abs=1e-12) and plan.factor(31) == plan.factor(30)
    assert plan.to_dict() == {"nominal": 100, "warmup": 0, "total": 30, "anchor_step": 30, "anchor_position": 30.0}


def test_the_pace_is_the_slower_of_the_whole_run_and_its_last_steps():
    skip = [1.0, 2.0, 3.0]  # the first SKIP_STEPS steps, not paced
    assert SKIP_STEPS == 3
    slow_then_fast = skip + [3.0 + 0.25 * i for i in range(1, 61)] + [18.0 + 0.125 * i for i in range(1, 61)]
    assert step_pace(slow_then_fast) == (25.5 - 3.0) / 120  # got faster: the whole run's pace (0.1875)
    fast_then_slow = skip + [3.0 + 0.125 * i for i in range(1, 61)] + [10.5 + 0.25 * i for i in range(1, 61)]
    assert step_pace(fast_then_slow) == 0.25  # got slower: the last 50 steps' pace
    assert step_pace(skip + [3.5]) == 0.5 and step_pace(skip + [3.0]) == 1e-9  # one paced step; never zero
    with pytest.raises(ValueError, match=r"^need more than 3 step times to pace a run; got 3$"):
        step_pace(skip)


def test_the_evaluation_estimate_counts_its_forward_passes():
    # rotation: 4 turns of each test image; with labels, both encoders embed every image, plus the probes.
    assert evaluation_seconds("rotation", 100, 10, False, 0.5) == 1.0 + 40 * 0.5
    assert evaluation_seconds("rotation", 100, 10, True, 0.5) == 1.0 + (40 + 220 + 60) * 0.5
    assert evaluation_seconds("simclr", 100, 10, True, 0.5) == 1.0 + (220 + 60) * 0.5
    assert evaluation_seconds("siamese", 100, 10, False, 0.5) == 1.0


def test_the_budget_fits_at_its_times_and_keeps_the_evaluation_aside():
    """Steps every 0.125 s: the first fit after FIRST_FIT steps, then every REFIT_EVERY, or sooner
    when 5% of the budget passed since the last fit; a torchrun launch (timed=False) fits on the
    step count alone. Each fit is fit_total_steps to the step deadline, from where the run began."""
    def fits(budget: TimeBudget, steps: int) -> dict:
        out = {}
        for i in range(1, steps + 1):
            total = budget.record(0.125 * i)
            if total is not None:
                out[i] = total
                assert total == fit_total_steps(budget.ends, budget.step_deadline, budget.step0)
        return out

    assert list(fits(TimeBudget(1000.0), 60)) == [8, 25, 50]
    assert list(fits(TimeBudget(1000.0, timed=False), 60)) == [8, 25, 50]
    # 10 s less 3% and 3 s: a 6.7 s deadline, 0.125 s a step: 53 steps of a fresh run, at both fits
    assert fits(TimeBudget(10.0, timed=False), 30) == {8: 53, 25: 53}
    assert list(fits(TimeBudget(10.0), 30)) == [5, 8, 13, 18, 23, 25, 30]  # late: 0.5 s since the last fit
    resumed = TimeBudget(1000.0, step=100)
    assert min(fits(resumed, 8).values()) > 100 + 8  # counts the steps before the resume
    plain = TimeBudget(1000.0)
    assert plain.fit() is None  # nothing paced yet
    fits(plain, 10)
    assert plain.step_deadline == 1000.0 * (1 - SAFETY_SHARE) - SAFETY_SECONDS  # no evaluation estimate yet
    short = TimeBudget(1000.0)
    assert [short.record(0.125 * i) for i in range(1, SKIP_STEPS + 1)] == [None] * SKIP_STEPS
    assert short.fit() is None  # an epoch of SKIP_STEPS steps ends (the engine fits there): nothing paced yet, no error
