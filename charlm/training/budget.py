"""A run's budget: its step count and its time limit, and how far through them it is.

The time limit counts the whole run: the seconds earlier sessions trained (kept in the
checkpoint) plus this session's wall clock from the moment it started (``started``: the CLI
passes the time its process began, so importing TensorFlow and building the model count too).
The run ends when the next step would not finish before the limit, less a reserve for the
final validation and save, so the whole command ends close to the limit.

``progress`` feeds the ``budget`` learning-rate schedule: the fraction of the budget used when
a block of steps starts, and how much each step adds (from the measured seconds per step), so
the rate falls smoothly within a block and reaches zero as the budget ends.  Of the two limits,
the one that will end the run first sets it.
"""
from __future__ import annotations

import math
import time

from charlm.errors import CharlmError

# --auto-dropout: none while the run reads its training text up to FREE_PASSES times, then
# DROPOUT_PER_DOUBLING more for each doubling of the passes, up to MAX_DROPOUT (measured in
# benchmarks/README.md, "Quality per time").
FREE_PASSES = 8.0
DROPOUT_PER_DOUBLING = 0.2
MAX_DROPOUT = 0.5
# A step may run this much slower than the measured average (a validation's aftermath, another
# process on the cores): blocks and the stop keep that margin, so a run ends within its limit.
SLACK = 1.25


def dropout_for_passes(passes: float) -> float:
    """The dropout a run that reads its training text ``passes`` times gets from ``--auto-dropout``."""
    if passes <= FREE_PASSES:
        return 0.0
    return round(min(MAX_DROPOUT, DROPOUT_PER_DOUBLING * math.log2(passes / FREE_PASSES)), 2)


class Budget:
    def __init__(self, steps: int, time_limit: float = 0.0, used: float = 0.0,
                 started: float | None = None):
        self.steps = steps
        self.time_limit = time_limit
        self.used_before = used                 # seconds of earlier sessions
        self.started = time.perf_counter() if started is None else started
        self.seconds_per_step = None            # measured on blocks after the first (which compiles)
        self.bound = None                       # the first block's seconds per step: compile included,
                                                # so no step takes longer (until one is measured)
        self.ending = {"validation": 0.5, "save": 0.5}   # seconds the run's end takes, last measured
        self._blocks = 0
        self._given = (0.0, 0.0)                # the last block's progress: where it started, per step
        self._reached = 0.0                     # progress the steps so far have had: never goes back

    # -- time -------------------------------------------------------------------------------------
    def used(self) -> float:
        """Seconds the run has used, earlier sessions included."""
        return self.used_before + time.perf_counter() - self.started

    @property
    def reserve(self) -> float:
        """Seconds kept back for the run's end: its last validation and save, with a margin."""
        return 1.5 * sum(self.ending.values()) + 0.5

    def left(self) -> float:
        """Seconds left for training steps (``inf`` without a time limit)."""
        if not self.time_limit:
            return float("inf")
        return self.time_limit - self.reserve - self.used()

    def refuse_if_spent(self, run_dir):
        """A resumed run whose earlier sessions used its whole time limit stops with one line."""
        # spent: earlier sessions left (next to) no time for steps (a run stopped by its limit
        # ends a fraction of a step short of it)
        if self.time_limit and self.used_before and self.time_limit - self.reserve - self.used_before < 0.1:
            raise CharlmError(f"the run in {run_dir} has trained {self.used_before:.0f} s, its whole "
                              f"--time-limit of {self.time_limit:g} s; give a larger --time-limit to train on")

    def out_of_time(self) -> bool:
        if not self.time_limit:
            return False
        return self.left() < SLACK * (self.seconds_per_step or 0.0)

    def block(self, most: int) -> int:
        """How many of the next ``most`` steps fit in the time left (at least one).

        Under a time limit the first block is one step: its call traces and compiles, and until
        a step is timed nothing says how long ``most`` of them take (a bigram model with a large
        vocabulary: minutes).  Its seconds then bound the next block's steps, which measure the
        speed.  (A block of any length runs the one compiled program: charlm.training.trainer
        pads XLA's blocks to a fixed length.)
        """
        if not self.time_limit:
            return most
        per_step = self.seconds_per_step if self.seconds_per_step is not None else self.bound
        if per_step is None:
            return 1
        fit = int(self.left() / (SLACK * per_step))
        return max(1, min(most, fit))

    def record_block(self, steps: int, seconds: float):
        """A block's measured time: its seconds per step estimate the ones to come."""
        self._blocks += 1
        start, per_step = self._given
        self._reached = min(1.0, max(self._reached, start + steps * per_step))
        if self._blocks == 1 or steps == 0:       # the first call traces and compiles
            if steps:
                self.bound = seconds / steps if self.bound is None else min(self.bound, seconds / steps)
            return
        rate = seconds / steps
        self.seconds_per_step = rate if self.seconds_per_step is None else 0.7 * self.seconds_per_step + 0.3 * rate

    def recompiled(self):
        """The step was compiled again: its next block is not a measure either."""
        self._blocks = 0

    def record(self, what: str, seconds: float):
        """The time a validation or a save took: the run's end keeps that much in reserve."""
        self.ending[what] = seconds

    def steps_ahead(self, step: int) -> float:
        """The steps the run will have taken when its budget ends (``None`` before it can tell)."""
        if not self.time_limit:
            return self.steps
        if self.seconds_per_step is None:
            return None
        return min(self.steps, step + max(0.0, self.left()) / self.seconds_per_step)

    # -- the schedule -----------------------------------------------------------------------------
    def progress(self, step: int) -> tuple[float, float]:
        """``(fraction of the budget used now, fraction each further step uses)``."""
        by_steps = (step / self.steps, 1.0 / self.steps)
        if not self.time_limit:
            return by_steps
        span = max(self.time_limit - self.reserve, 1e-9)
        by_time = (min(1.0, max(self._reached, self.used() / span)), (self.seconds_per_step or 0.0) / span)
        self._given = max(by_steps, by_time)
        return self._given


def stop_reason(budget: Budget, step: int, signal) -> tuple[str, str] | None:
    """``None``, or ``(how a run stopped, the line that says so)``: its time limit ran out, or
    ``signal`` (a SIGINT or SIGTERM received, else None) arrived.  Both end in a save."""
    if budget.out_of_time():
        return "time-limit", (f"time limit of {budget.time_limit:g} s reached at step {step} (the run "
                              f"has trained {budget.used():.1f} s); saved")
    if signal is not None:
        return "interrupted", f"interrupted (signal {signal}) at step {step}; saved, continue with --resume"
    return None
