"""What every backend takes (RunRequest) and returns (ProcessOutcome).

A backend runs one candidate train.py to completion, enforces the hard timeout itself,
streams every output line to a callback and saves the log. It never raises for what the
candidate did (crash, timeout, Ctrl-C): that is all in the outcome. Deciding the run's
status from the outcome and the log is harness/outcome.py's job, not the backend's.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Protocol

from harness.benchmarks import Benchmark

# Logs are capped so that a stdout flood cannot fill the disk; the tail is what matters
# for a crash, so the head is kept up to the cap and a marker says what was dropped.
DEFAULT_LOG_CAP_BYTES = 8 * 1024 * 1024

LineCallback = Callable[[str], None]


@dataclass
class RunRequest:
    run_id: str
    train_py: Path  # the candidate; copied into run_dir before the start
    benchmark: Benchmark
    data_dir: Path  # the benchmark's data cache (read-only for the run)
    fixed_dir: Path  # fixed/ (read-only for the run)
    run_dir: Path  # the per-run output directory, the only writable place
    env: dict[str, str] = field(default_factory=dict)  # the HARNESS_* variables
    hard_timeout_s: float = 600.0
    gpu_uuids: list[str] = field(default_factory=list)
    log_cap_bytes: int = DEFAULT_LOG_CAP_BYTES
    # What to run inside the run: by default train.py; the verified evaluator reuses backends.
    command: list[str] | None = None


@dataclass
class ProcessOutcome:
    backend: str  # "local" | "docker"
    isolated: bool  # False for local: every output says "unisolated"
    exit_code: int | None
    timed_out: bool
    aborted: bool
    oom_killed: bool
    infra_error: str | None
    started_at: float  # epoch seconds, as observed by the harness
    first_output_at: float | None
    ended_at: float
    log_path: Path
    log_truncated: bool
    image: str | None = None  # image id (docker)
    image_tag: str | None = None


class Backend(Protocol):
    name: str

    def execute(self, request: RunRequest, on_line: LineCallback) -> ProcessOutcome: ...
