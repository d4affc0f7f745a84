"""What every backend takes (RunRequest) and returns (ProcessOutcome).

A backend runs one candidate train.py to completion, enforces the hard timeout itself,
streams every output line to a callback and saves the log. It never raises for what the
candidate did (crash, timeout, Ctrl-C): that is all in the outcome. Deciding the run's
status from the outcome and the log is harness/pipeline/judge.py's job, not the backend's.
"""

from __future__ import annotations

import shlex
import threading

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Protocol

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
    # What to run: by default train.py. The verified evaluator reuses the backends with its own command,
    # whose items may hold {python}, {fixed}, {data}, {out}, {train_py} and {<name>} for each extra mount
    # (and {<key>_q}, the same shell-quoted, for an sh -c line): every
    # backend fills them with the paths as the run sees them (host paths locally, mount points in a container).
    command: list[str] | None = None
    # Read-only extra inputs, by name (the evaluator gets the exported model folder this way).
    extra_mounts: dict[str, Path] = field(default_factory=dict)
    # Writable folders shared with other runs, by name, always bind-mounted (never a private tmpfs): the
    # verified scorer's socket folder, which the model servers get read-only through extra_mounts.
    rw_mounts: dict[str, Path] = field(default_factory=dict)
    # Only these top-level entries of data_dir are visible (verified training hides "val"); None: all.
    data_entries: list[str] | None = None
    mount_train_py: bool = True  # the evaluator needs no candidate code
    # Set by the caller to end the run early (the model server once the scorer is done): the backend
    # kills it and reports kill_reason "cancelled". Never set by anything the run controls.
    cancel: threading.Event | None = field(default=None, compare=False, repr=False)
    # The CPUs the run is pinned to ("0,1"), a member of a CPU pool (harness/pool/); None: not pinned.
    cpuset: str | None = None


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
    # Why the run was ended early: "timeout", "cancelled", or "output_limit" (docker: its /out, a tmpfs
    # capped at limits.output, was found full when copied out: writes past the cap had failed with ENOSPC).
    kill_reason: str | None = None
    runtime: str | None = None  # docker: the OCI runtime the container ran under ("runc", "runsc", ...)
    runtime_version: str | None = None  # docker: that runtime's version line ("runsc version 0.0~20221219.0")
    output_bytes: int | None = None  # docker: bytes copied from the container's /out to run_dir/out; None: not copied
    # Where the run executed, as the executing side saw it: the node's host name and the scheduler's job id
    # (Slurm's SLURM_JOB_ID, a Kubernetes Job's namespace/name); None for a run on this host without one.
    node: str | None = None
    job_id: str | None = None


def visible_data_dir(request: RunRequest) -> Path:
    """The data folder a local run sees: the cache itself, or a view of symlinks to data_entries only."""
    if request.data_entries is None:
        return request.data_dir
    view = request.run_dir / "data_view"
    view.mkdir(exist_ok=True)
    for entry in request.data_entries:
        link = view / entry
        if not link.exists():
            link.symlink_to(request.data_dir / entry)
    return view


def command_paths(request: RunRequest, *, python: str, fixed: str, data: str, out: str, train_py: str,
                  mounts: dict[str, str]) -> list[str] | None:
    """request.command with its {placeholders} filled in with what the run sees ({python}: its interpreter)."""
    if request.command is None:
        return None
    values = {"python": python, "fixed": fixed, "data": data, "out": out, "train_py": train_py, **mounts}
    values.update({f"{k}_q": shlex.quote(v) for k, v in list(values.items())})  # {name_q}: for sh -c
    return [part.format(**values) for part in request.command]


class Backend(Protocol):
    """What the pipeline needs of a backend. The executor hooks (probe_hardware ... cancel) have this
    host's defaults in harness/backends/host.py (OnThisHost); a remote backend overrides them."""
    name: str
    isolated: bool  # False: a process on the host (every result of it says "unisolated")

    def execute(self, request: RunRequest, on_line: LineCallback) -> ProcessOutcome: ...

    # -- the executor hooks: where the run happens, the hardware is probed and sampled --
    def probe_hardware(self, gpu: str | None = None, nvml_module: Any = None) -> Any: ...

    def start_telemetry(self, gpu_uuid: str | None, series_path: Path,
                        nvml_module: Any = None) -> tuple[Any, str | None]: ...

    def stage_in(self, request: RunRequest) -> None: ...

    def stage_out(self, request: RunRequest) -> None: ...

    def cancel(self, request: RunRequest) -> None: ...
