"""The learning-rate schedule (linear warm-up, then cosine decay to zero) and fitting it to a
wall-clock budget (`TrainConfig.minutes`).

A budgeted run cannot know its length in steps before it has run some: it starts on a provisional
length, paces its first steps, and re-fits the length as it goes. A re-fit only ever stretches or
shrinks the steps still to come (`Schedule.refit`), so the rate never jumps and still reaches zero
at the last step, inside the budget. The final evaluation (probes on every image, for the trained
and the random-init encoder) costs tens of seconds on CIFAR-10, so its estimate is set aside first.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Optional, Sequence

SKIP_STEPS = 3  # the first steps are slow (allocator, oneDNN/cuDNN kernel choice): not paced
FIRST_FIT = SKIP_STEPS + 5  # steps paced before the first fit
REFIT_EVERY = 25  # steps between fits (and at every epoch end): follows a machine that gets busier
REFIT_SHARE = 0.05  # ...or this share of the budget, whichever comes first: slow steps on a busy machine
RECENT_STEPS = 50  # the pace is the slower of the whole run's and this many last steps'
# Seconds kept back from the budget beyond the evaluation estimate: the last epoch's probe, the
# final checkpoint write, and the estimate's own error.
SAFETY_SECONDS = 3.0
SAFETY_SHARE = 0.03
# The kNN and linear probes cost, per training image and encoder, about this many image forwards
# (measured on CIFAR-10, 50,000 x 128 features: ~19 s of the 118 s evaluation on 2 CPU cores).
PROBE_FORWARDS_PER_IMAGE = 0.3


def lr_factor(step: float, warmup_steps: int, total_steps: int) -> float:
    """Linear warm-up to the peak rate, then cosine decay to zero: the last epochs settle instead of
    bouncing around at full rate, and BatchNorm nets survive a high peak rate at the start."""
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    decay = max(1, total_steps - warmup_steps)
    return 0.5 * (1 + math.cos(math.pi * min(step - warmup_steps, decay) / decay))


@dataclass
class Schedule:
    """`lr_factor` over a curve drawn for `nominal` steps, played over `total` real steps.

    Until a re-fit the two are equal and this is exactly `lr_factor(step, warmup, total)`. A re-fit
    at step s keeps the curve's position at s and spreads the rest of the curve over the new
    number of remaining steps (a time warp): continuous, and zero at the new end.
    """

    nominal: int  # steps the curve (warm-up and decay) was drawn for
    warmup: int  # warm-up steps of that curve
    total: int  # steps the run takes now; the rate reaches zero here
    anchor_step: int = 0  # the last re-fit happened at this real step...
    anchor_position: float = 0.0  # ...where the curve was at this (nominal) position

    @classmethod
    def make(cls, warmup_share: float, total: int) -> "Schedule":
        return cls(nominal=total, warmup=int(warmup_share * total), total=total)

    def position(self, step: int) -> float:
        if self.total <= self.anchor_step:
            return float(self.nominal)
        rate = (self.nominal - self.anchor_position) / (self.total - self.anchor_step)
        return min(float(self.nominal), self.anchor_position + (step - self.anchor_step) * rate)

    def factor(self, step: int) -> float:
        return lr_factor(self.position(step), self.warmup, self.nominal)

    def refit(self, step: int, total: int) -> None:
        """From `step` on, finish the curve at `total` (`step` itself: end now)."""
        self.anchor_position, self.anchor_step = self.position(step), step
        self.total = max(int(total), step)

    def to_dict(self) -> dict:
        return asdict(self)


def step_pace(step_ends: Sequence[float]) -> float:
    """Seconds a step, from when each step ended: the first SKIP_STEPS are not paced, and the pace
    is the slower of the whole run's and the last RECENT_STEPS' (a machine that got busier)."""
    done = len(step_ends)
    if done <= SKIP_STEPS:
        raise ValueError(f"need more than {SKIP_STEPS} step times to pace a run; got {done}")
    overall = (step_ends[-1] - step_ends[SKIP_STEPS - 1]) / (done - SKIP_STEPS)
    first = max(SKIP_STEPS, done - RECENT_STEPS)
    recent = (step_ends[-1] - step_ends[first - 1]) / (done - first)
    return max(overall, recent, 1e-9)


def fit_total_steps(step_ends: Sequence[float], seconds: float, steps_before: int = 0) -> int:
    """How many steps a run should take in all to end them by `seconds` (since its start).

    `step_ends[i]` is when (seconds since the start) the i-th step paced so far ended; the run had
    taken `steps_before` steps before those (a resumed run). Past the deadline the run ends now
    (no more steps): its rate jumps to zero, but the budget holds.
    """
    pace = step_pace(step_ends)
    return steps_before + len(step_ends) + max(0, int((seconds - step_ends[-1]) / pace))


def evaluation_seconds(task: str, train_images: int, test_images: int, labeled: bool, forward_s: float) -> float:
    """The final `evaluate.evaluate`'s cost, from one image's forward time `forward_s` on this
    machine: rotation accuracy sees each test image in 4 turns; with labels, the trained and the
    random-init encoders each embed every image and fit a kNN and a linear probe."""
    forwards = 4 * test_images if task == "rotation" else 0
    if labeled:
        forwards += 2 * (train_images + test_images) + 2 * PROBE_FORWARDS_PER_IMAGE * train_images
    return 1.0 + forwards * forward_s


class TimeBudget:
    """Paces a budgeted run's steps and says, when a fit is due, how many steps it should take in all.

    `seconds` is the whole budget from the first step (a resumed run counts its earlier time);
    `step` is where a resumed run starts.
    """

    def __init__(self, seconds: float, step: int = 0, timed: bool = True) -> None:
        # `timed=False` fits on the step count alone: the processes of a torchrun launch must all
        # fit at the same steps (they agree on the total with an all-reduce).
        self.seconds, self.step0, self.timed = seconds, step, timed
        self.last_fit = 0.0
        self.ends: list[float] = []  # when each step since the start (or the resume) ended
        self.reserve = 0.0  # the final evaluation's estimated seconds, once a forward was timed...
        self.reserve_pace = 0.0  # ...at this step pace: a machine that gets busier slows both alike

    def set_reserve(self, seconds: float) -> None:
        self.reserve, self.reserve_pace = seconds, step_pace(self.ends)

    @property
    def step_deadline(self) -> float:
        """Seconds (since the run's start) by which the last step should end."""
        busier = step_pace(self.ends) / self.reserve_pace if self.reserve_pace else 1.0
        return self.seconds * (1 - SAFETY_SHARE) - SAFETY_SECONDS - self.reserve * max(1.0, busier)

    def record(self, elapsed: float) -> Optional[int]:
        """Note that a step ended at `elapsed`; returns the new total steps when a fit is due, else None."""
        self.ends.append(elapsed)
        n = len(self.ends)
        late = self.timed and n > SKIP_STEPS and elapsed - self.last_fit > REFIT_SHARE * self.seconds
        if late or n == FIRST_FIT or (n > FIRST_FIT and n % REFIT_EVERY == 0):
            return self.fit()
        return None

    def fit(self) -> Optional[int]:
        """The total steps that fit, or None before enough steps were paced."""
        if len(self.ends) <= SKIP_STEPS:
            return None
        self.last_fit = self.ends[-1]
        return fit_total_steps(self.ends, self.step_deadline, self.step0)
