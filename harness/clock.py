"""The harness's clock: a run's training window as the data feed saw it from outside (harness/feed.py).

Nothing the candidate prints or patches counts here. Three spans, each with its limit from the
benchmark's `clock:` settings (benchmarks.yaml):

    start ──startup── first batch ──window── last batch ──tail── end
            <= startup_s          <= budget*(1+overrun)+warmup_s    <= export_s (verified runs)

`start` is when the candidate's own code could begin (after the calibration, when one ran first).
A run past any limit is flagged over_budget and never counts; a run that took no batch at all has no
observable window and is flagged too. The run is also cut short (killed) once it is far past them.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from harness.feed import FeedStats

KILL_GRACE_S = 5.0  # past every limit by this much, the run is killed rather than waited for


@dataclass(frozen=True)
class ClockLimits:
    budget_s: float
    startup_s: float
    warmup_s: float
    overrun: float
    export_s: float

    @classmethod
    def of(cls, budget_s: float, clock: dict[str, float]) -> "ClockLimits":
        return cls(float(budget_s), float(clock["startup_s"]), float(clock["warmup_s"]), float(clock["overrun"]),
                   float(clock["export_s"]))

    @property
    def window_s(self) -> float:
        return self.budget_s * (1.0 + self.overrun) + self.warmup_s

    def extra_share(self) -> float:
        """The most compute beyond the budget a run can get unflagged, as a share of the budget: training on
        data it made itself before the first batch, the warm-up and overrun, and work after the last batch."""
        return (self.startup_s + self.warmup_s + self.overrun * self.budget_s + self.export_s) / self.budget_s


@dataclass(frozen=True)
class ClockVerdict:
    start_at: float
    first_batch_at: float | None
    last_batch_at: float | None
    ended_at: float
    startup_s: float | None
    window_s: float | None
    tail_s: float | None
    batches: int
    tokens: int
    limits: ClockLimits
    violations: list[str] = field(default_factory=list)

    @property
    def over_budget(self) -> bool:
        return bool(self.violations)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["limits"] = {**asdict(self.limits), "window_s": self.limits.window_s}
        return d


def judge(stats: FeedStats, start_at: float, ended_at: float, limits: ClockLimits, check_tail: bool) -> ClockVerdict:
    """The spans and every limit they passed (check_tail: verified runs, whose work after the last batch
    is only the export)."""
    first, last = stats.first_batch_at, stats.last_batch_at
    startup = first - start_at if first is not None else None
    window = last - first if first is not None and last is not None else None
    tail = ended_at - last if last is not None else None
    v: list[str] = []
    if first is None:
        v.append("no training batch was taken from the harness's feed: the training window cannot be observed")
    else:
        if startup is not None and startup > limits.startup_s:
            v.append(f"the first batch came {startup:.1f} s after the start (limit {limits.startup_s:g} s)")
        if window is not None and window > limits.window_s:
            v.append(f"batches were taken for {window:.1f} s (limit {limits.window_s:.1f} s: budget "
                     f"{limits.budget_s:g} s + {limits.overrun:.0%} + warm-up {limits.warmup_s:g} s)")
        if check_tail and tail is not None and tail > limits.export_s:
            v.append(f"the run went on {tail:.1f} s after its last batch (limit {limits.export_s:g} s for the export)")
    return ClockVerdict(start_at, first, last, ended_at, startup, window, tail, stats.batches, stats.tokens, limits, v)


def kill_reason(stats: FeedStats, start_at: float, now: float, limits: ClockLimits, check_tail: bool) -> str | None:
    """Why the run should be killed now (far past a limit), or None."""
    if stats.first_batch_at is None:
        if now > start_at + limits.startup_s + KILL_GRACE_S:
            return f"no training batch taken within {limits.startup_s:g} s of the start"
        return None
    end = stats.first_batch_at + limits.window_s + (limits.export_s if check_tail else limits.export_s * 4)
    if now > end + KILL_GRACE_S:
        return f"still running {now - stats.first_batch_at:.0f} s after its first batch (budget {limits.budget_s:g} s)"
    return None
