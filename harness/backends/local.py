"""The local backend: the candidate runs in a subprocess on this machine, UNISOLATED.

Good for laptops and quick checks; it enforces the hard timeout and the log cap, but nothing stops
the candidate from reading or writing what this user can. Every output of it says 'unisolated'.
"""

from __future__ import annotations

import os
import queue
import signal
import subprocess
import sys
import threading
import time

from harness import contract
from harness.backends.base import LineCallback, ProcessOutcome, RunRequest, command_paths, visible_data_dir
from harness.backends.host import OnThisHost
from harness.backends.logsink import LogSink

def _kill_group(proc: subprocess.Popen) -> None:
    """Kill the whole process group, so children the candidate started die with it."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def _reader(fd: int, sink: LogSink) -> None:
    """Read raw bytes until the pipe closes; the sink splits, caps and queues them."""
    while chunk := os.read(fd, 1 << 16):
        sink.feed(chunk, 1)


class LocalBackend(OnThisHost):
    name = "local"
    isolated = False  # a plain process with this user's rights: every result of it says "unisolated"

    def __init__(self, python: str | None = None):
        self.python = python or sys.executable

    def execute(self, request: RunRequest, on_line: LineCallback) -> ProcessOutcome:
        work = request.run_dir / "work"  # a fresh, empty working directory
        work.mkdir(parents=True, exist_ok=True)
        (request.run_dir / "out").mkdir(exist_ok=True)
        data = visible_data_dir(request)
        env = {k: v for k, v in os.environ.items() if not k.startswith("HARNESS_")}
        env.update(request.env)
        env[contract.ENV_DATA_DIR] = str(data)
        env["PYTHONPATH"] = str(request.fixed_dir)
        env["PYTHONUNBUFFERED"] = "1"
        env["TMPDIR"] = str(work)  # its own temp folder, as a container's: processes of two runs share no file
        # The GPU the run was given (a pool member's, a Slurm job's), by UUID, as docker's device request
        # does; without one, none: a CPU run must not pick up a GPU the harness did not lease for it.
        env["CUDA_VISIBLE_DEVICES"] = ",".join(request.gpu_uuids)
        command = command_paths(request, python=self.python, fixed=str(request.fixed_dir), data=str(data),
                                out=str(request.run_dir / "out"), train_py=str(request.train_py),
                                mounts={k: str(v) for k, v in {**request.extra_mounts, **request.rw_mounts}.items()})
        command = command or [self.python, "-u", str(request.train_py)]
        sink = LogSink(request.run_dir / contract.RUN_LOG, request.log_cap_bytes)
        started = time.time()
        timed_out = aborted = cancelled = False
        try:
            proc = subprocess.Popen(command, cwd=work, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                    stderr=subprocess.STDOUT, start_new_session=True)
        except OSError as e:
            sink.close()
            return ProcessOutcome("local", False, None, False, False, False, f"cannot start {command[0]}: {e}",
                                  started, None, time.time(), sink.path, False)
        if request.cpuset:  # a CPU pool's member: train.py and what it starts later stay on these CPUs
            try:
                os.sched_setaffinity(proc.pid, {int(c) for c in request.cpuset.split(",")})
            except OSError as e:
                sink.note(f"[harness] could not pin the run to CPUs {request.cpuset}: {e}")
        reader = threading.Thread(target=_reader, args=(proc.stdout.fileno(), sink), daemon=True)
        reader.start()
        deadline = started + request.hard_timeout_s

        def deliver(block: float, most: int | None = 2000) -> None:
            """Hand queued lines to on_line: at most `most` per call, so a flood cannot delay the clock."""
            try:
                on_line(sink.lines.get(timeout=block) if block else sink.lines.get_nowait())
            except queue.Empty:
                return
            n = 1
            while most is None or n < most:
                try:
                    on_line(sink.lines.get_nowait())
                except queue.Empty:
                    return
                n += 1

        try:
            while reader.is_alive():
                deliver(max(0.0, min(0.25, deadline - time.time())))
                if request.cancel is not None and request.cancel.is_set():
                    cancelled = True
                    sink.note("[harness] cancelled by the harness: killed")
                    break
                if time.time() >= deadline:  # the harness owns the clock
                    timed_out = True
                    sink.note(f"[harness] hard timeout: killed after {request.hard_timeout_s:g} s")
                    break
                if proc.poll() is not None and sink.lines.empty():
                    reader.join(timeout=0.5)  # exited; a leftover child may still hold the pipe open
                    break
        except KeyboardInterrupt:
            aborted = True
        finally:
            _kill_group(proc)  # nothing the candidate started outlives the run
            try:
                exit_code = proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                exit_code = None
            ended = time.time()
            reader.join(timeout=2)  # the group is dead, so the pipe closes and the reader finishes
            sink.close()
            deliver(0, most=None)  # lines read at the end, and the tail of a capped log
            if not reader.is_alive():  # a process that escaped the group may still hold the pipe:
                proc.stdout.close()    # then the reader keeps its descriptor until that process exits
        return ProcessOutcome(
            backend="local", isolated=False, exit_code=exit_code, timed_out=timed_out, aborted=aborted,
            oom_killed=False, infra_error=None, started_at=started, first_output_at=sink.first_output_at,
            ended_at=ended, log_path=sink.path, log_truncated=sink.truncated,
            kill_reason="timeout" if timed_out else ("cancelled" if cancelled else None))
