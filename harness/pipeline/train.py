"""Stage 2, training: the backend runs the request while the harness watches from outside: every output
line (progress for the display, when the calibration and train.py's first line came) and the data feed
(the harness's clock, which kills a run far past its limits)."""

from __future__ import annotations

import dataclasses
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from harness import contract
from harness.backends.base import Backend, ProcessOutcome, RunRequest
from harness.backends.host import hooks
from harness.clock import ClockLimits, ClockVerdict, judge, kill_reason
from harness.feed import FeedServer
from harness.logparse import parse_progress
from harness.pipeline.request import Event, Prepared


class Watcher:
    """Sees every output line: forwards progress, and notes when training ended and the summary came."""

    def __init__(self, on_event: Event):
        self.on_event = on_event
        self.train_started_at: float | None = None  # first progress line's arrival minus its elapsed
        self.last_progress_at: float | None = None
        self.summary_at: float | None = None
        self.calibrated_at: float | None = None  # the calibration line came
        self.first_train_output_at: float | None = None

    def __call__(self, line: str) -> None:
        now = time.time()
        if line.startswith("calibration ") and self.calibrated_at is None and self.first_train_output_at is None:
            self.calibrated_at = now  # only fixed/calibrate.py's own line, before train.py said anything
        elif self.first_train_output_at is None:
            self.first_train_output_at = now
        if line.startswith("progress"):
            p = parse_progress(line)
            if p is not None:
                if self.train_started_at is None:
                    self.train_started_at = now - (p.elapsed or 0.0)
                self.last_progress_at = now
                self.on_event("progress", p)
                return
        if line.strip() == "---":
            self.summary_at = now
        self.on_event("line", line)


class ClockGuard:
    """Watches the feed while the run goes: kills it (through request.cancel) once it is far past the
    clock's limits, so an over-long run cannot keep the machine until its hard timeout."""

    def __init__(self, feed: FeedServer, limits: ClockLimits, request: RunRequest, watcher: Watcher,
                 t0: float, check_tail: bool, calibrated: bool, abort: threading.Event | None = None):
        self.feed, self.limits, self.request, self.watcher, self.t0 = feed, limits, request, watcher, t0
        self.check_tail, self.calibrated = check_tail, calibrated
        self.abort = abort  # a pool's stop (Ctrl-C reaches only the main thread, not the run's)
        self.killed: str | None = None
        self.aborted = False
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="harness-clock", daemon=True)

    def start_at(self) -> float:
        """Where the candidate's time starts: after the calibration, when one ran first (without one, a
        'calibration' line can only be train.py's own, and moves nothing)."""
        return (self.watcher.calibrated_at if self.calibrated else None) or self.t0

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(2)

    def _run(self) -> None:
        while not self._stop.wait(0.25):
            if self.abort is not None and self.abort.is_set() and self.request.cancel is not None:
                self.aborted = True
                self.request.cancel.set()
                return
            why = kill_reason(self.feed.stats(), self.start_at(), time.time(), self.limits, self.check_tail)
            if why and self.request.cancel is not None:
                self.killed = why
                self.request.cancel.set()
                return


@dataclass
class Trained:
    """What training left: the backend's outcome, what the watcher saw, and the clock's judgement."""
    outcome: ProcessOutcome
    watcher: Watcher
    clock: ClockVerdict
    killed_by_clock: str | None


def train(p: Prepared, backend: Backend, on_event: Event) -> Trained:
    limits = ClockLimits.of(p.budget_s, p.request.benchmark.clock)
    watcher = Watcher(on_event)
    t0 = time.time()
    p.feed.start()
    guard = ClockGuard(p.feed, limits, p.request, watcher, t0, check_tail=p.verified, calibrated=p.calibrate,
                       abort=p.abort)
    guard.start()
    executor = hooks(backend)
    try:
        executor.stage_in(p.request)  # the run folder to where the run happens (nothing to do on this host)
        try:
            outcome = backend.execute(p.request, watcher)
        finally:
            executor.stage_out(p.request)  # and back, whatever happened
    except KeyboardInterrupt:  # a backend should catch it itself; this is the safety net
        outcome = failed_outcome(backend, p.run_dir, t0, aborted=True)
    except Exception as e:  # noqa: BLE001 - whatever broke, the run still gets its record
        outcome = failed_outcome(backend, p.run_dir, t0, infra_error=f"{type(e).__name__}: {e}")
    finally:
        guard.stop()
        p.feed.stop()
    if guard.aborted and not outcome.aborted:  # cancelled because the pool was stopped: Ctrl-C, not a failure
        outcome = dataclasses.replace(outcome, aborted=True)
    clock = judge(p.feed.stats(), guard.start_at(), outcome.ended_at, limits, check_tail=p.verified)
    return Trained(outcome, watcher, clock, guard.killed)


def failed_outcome(backend: Backend, run_dir: Path, t0: float, aborted: bool = False,
                   infra_error: str | None = None) -> ProcessOutcome:
    log = run_dir / contract.RUN_LOG
    if not log.exists():
        log.write_text("")
    return ProcessOutcome(backend.name, getattr(backend, "isolated", backend.name != "local"), None, False, aborted,
                          False, infra_error, t0, None, time.time(), log, False)
