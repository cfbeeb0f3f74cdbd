"""How much separator work ``rtsep process`` may spend on one file: the adaptation's step count and the speed
ensemble's size, derived from a time budget that follows the file's duration and the seconds this machine takes.

A fixed step count costs the same minutes on a 30 s clip as on an hour and ignores how loaded the machine is. Here
the adaptation gets ``rtf`` seconds per second of the file (capped at ``max_s``); the first steps are timed (the
first one, which may include torch.compile or warm-up, counts against the budget but not in the per-step estimate),
and the step count is planned from what is left. The cosine learning-rate decay runs over the planned count. While
training, the loss is watched: when its running mean has not improved for ``patience_steps`` steps the adaptation
ends early. The ensemble gets its own budget: the first (reference) pass is timed and as many passes as fit are
added. Pure arithmetic, no clock of its own: the caller passes measured seconds, so the tests use a fake clock.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from rtsep.errors import ConfigError


@dataclass(frozen=True)
class StepBudget:
    """The adaptation's time budget for one file (seconds of wall time on this machine, compile included)."""

    budget_s: float  # what the whole adaptation may take
    max_steps: int  # never more steps than this (the fixed recipe's count)
    min_steps: int = 0  # when the budget affords fewer steps, adapting is not worth it: skip
    calibration_steps: int = 3  # steps timed before planning (the first one is not counted per step)

    def __post_init__(self) -> None:
        if not self.budget_s >= 0:
            raise ConfigError(f"adaptation budget must be >= 0 s, got {self.budget_s!r}")
        if self.max_steps < 0 or self.min_steps < 0:
            raise ConfigError("adaptation max_steps and min_steps must be >= 0")
        if self.calibration_steps < 2:
            raise ConfigError("the adaptation needs >= 2 calibration steps (the first one is not representative)")

    def plan(self, elapsed_s: float, step_seconds: list[float]) -> int:
        """The total step count (those done included) given the seconds spent so far and the durations of the steps
        done (the first one excluded from the per-step estimate unless it is the only one): as many as fit in the
        rest of the budget, at most ``max_steps``, at least those done. 0 when fewer than ``min_steps`` fit (or
        than ``max_steps``, when that is the smaller)."""
        done = len(step_seconds)
        if done == 0:
            raise ValueError("plan() needs at least one timed step")
        timed = step_seconds[1:] or step_seconds
        per_step_s = sorted(timed)[len(timed) // 2]  # the median: one slow step (a page fault, GC) does not decide
        more = int(max(0.0, self.budget_s - elapsed_s) / max(per_step_s, 1e-9))
        total = min(self.max_steps, done + more)
        return 0 if total < min(self.min_steps, self.max_steps) else total


def budget_seconds(duration_s: float, rtf: float, max_s: float) -> float:
    """``rtf`` seconds per second of a ``duration_s`` file, at most ``max_s`` (0: no cap)."""
    if duration_s < 0 or rtf < 0 or max_s < 0:
        raise ValueError("duration, rtf and max_s must be >= 0")
    seconds = duration_s * rtf
    return min(seconds, max_s) if max_s > 0 else seconds


class Plateau:
    """Early stopping on a noisy training curve: each step's loss (higher is better here: SI-SNR in dB) feeds an
    exponential running mean (``smoothing_steps`` its time constant); the curve has plateaued when that mean has
    not risen by ``min_delta_db`` above its best for ``patience_steps`` steps. ``patience_steps`` 0: never."""

    def __init__(self, patience_steps: int, min_delta_db: float = 0.05, smoothing_steps: int = 20) -> None:
        if patience_steps < 0 or smoothing_steps < 1 or min_delta_db < 0:
            raise ConfigError("early stopping needs patience_steps >= 0, smoothing_steps >= 1, min_delta_db >= 0")
        self.patience_steps = patience_steps
        self.min_delta_db = min_delta_db
        self.alpha = 1.0 / smoothing_steps
        self.mean: float | None = None
        self.best = -math.inf
        self.since_best = 0
        self.seen = 0

    def update(self, value_db: float) -> bool:
        """Record one step's value; True when training should stop."""
        self.seen += 1
        self.mean = value_db if self.mean is None else self.mean + self.alpha * (value_db - self.mean)
        if self.mean > self.best + self.min_delta_db:
            self.best, self.since_best = self.mean, 0
        else:
            self.since_best += 1
        warmed = self.seen >= int(1.0 / self.alpha)  # the running mean means little before one time constant
        return self.patience_steps > 0 and warmed and self.since_best >= self.patience_steps


def odd_members(max_members: int, budget_s: float, reference_pass_s: float) -> int:
    """The ensemble size that fits ``budget_s`` of passes of ``reference_pass_s`` each: the largest odd count
    (odd counts keep speed 1, the reference pass already run, as a member) at most ``max_members``, at least 1."""
    if max_members < 1:
        raise ValueError("an ensemble needs at least one member")
    fits = int(budget_s / max(reference_pass_s, 1e-9)) if budget_s > 0 else 1
    members = max(1, min(max_members, fits))
    return members if members % 2 else members - 1


@dataclass(frozen=True)
class FileBudget:
    """The separator's budgets for one file, per second of it ([offline] settings; rtsep.offline.OfflineConfig).
    ``adapt_rtf`` 0: the fixed step count; ``ensemble_rtf`` 0: the fixed ensemble size."""

    adapt_rtf: float = 0.0  # adaptation seconds per second of the file
    adapt_max_s: float = 0.0  # and at most this many (0: no cap)
    min_steps: int = 0  # fewer steps than this fit: no adaptation
    ensemble_rtf: float = 0.0  # separation passes' seconds per second of the file

    def __post_init__(self) -> None:
        if not (self.adapt_rtf >= 0 and self.adapt_max_s >= 0 and self.ensemble_rtf >= 0 and self.min_steps >= 0):
            raise ConfigError(f"separator budgets must be >= 0, got {self!r}")

    def steps(self, duration_s: float, max_steps: int, calibration_steps: int = 3) -> StepBudget | None:
        """The adaptation's StepBudget for a ``duration_s`` file (None: no time budget, run ``max_steps``)."""
        if self.adapt_rtf <= 0:
            return None
        return StepBudget(budget_seconds(duration_s, self.adapt_rtf, self.adapt_max_s), max_steps, self.min_steps,
                          calibration_steps)

    def ensemble_s(self, duration_s: float) -> float | None:
        """Seconds the ensemble's passes may take on a ``duration_s`` file (None: the fixed size)."""
        return duration_s * self.ensemble_rtf if self.ensemble_rtf > 0 else None
