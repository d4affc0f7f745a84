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

from harness.backends.base import LineCallback, ProcessOutcome, RunRequest, command_paths, visible_data_dir
from harness.backends.logsink import LogSink

MAX_LINE = 64 * 1024  # a line longer than this is split: one giant line must not eat the memory


def _kill_group(proc: subprocess.Popen) -> None:
    """Kill the whole process group, so children the candidate started die with it."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def _reader(stream, lines: queue.Queue) -> None:
    for raw in iter(lambda: stream.readline(MAX_LINE), b""):
        lines.put(raw.decode("utf-8", "replace").rstrip("\r\n"))
    lines.put(None)


class LocalBackend:
    name = "local"

    def __init__(self, python: str | None = None):
        self.python = python or sys.executable

    def execute(self, request: RunRequest, on_line: LineCallback) -> ProcessOutcome:
        work = request.run_dir / "work"  # a fresh, empty working directory
        work.mkdir(parents=True, exist_ok=True)
        (request.run_dir / "out").mkdir(exist_ok=True)
        data = visible_data_dir(request)
        env = {k: v for k, v in os.environ.items() if not k.startswith("HARNESS_")}
        env.update(request.env)
        env["HARNESS_DATA_DIR"] = str(data)
        env["PYTHONPATH"] = str(request.fixed_dir)
        env["PYTHONUNBUFFERED"] = "1"
        command = command_paths(request, python=self.python, fixed=str(request.fixed_dir), data=str(data),
                                out=str(request.run_dir / "out"), train_py=str(request.train_py),
                                mounts={k: str(v) for k, v in request.extra_mounts.items()})
        command = command or [self.python, "-u", str(request.train_py)]
        sink = LogSink(request.run_dir / "log.txt", request.log_cap_bytes)
        started = time.time()
        timed_out = aborted = False
        try:
            proc = subprocess.Popen(command, cwd=work, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                    stderr=subprocess.STDOUT, start_new_session=True)
        except OSError as e:
            sink.close()
            return ProcessOutcome("local", False, None, False, False, False, f"cannot start {command[0]}: {e}",
                                  started, None, time.time(), sink.path, False)
        lines: queue.Queue = queue.Queue(maxsize=10_000)
        reader = threading.Thread(target=_reader, args=(proc.stdout, lines), daemon=True)
        reader.start()
        deadline = started + request.hard_timeout_s
        try:
            while True:
                try:
                    line = lines.get(timeout=max(0.0, min(0.5, deadline - time.time())))
                except queue.Empty:
                    if proc.poll() is not None:  # exited; a leftover child may still hold the pipe open
                        break
                    line = ""
                if line is None:  # the output closed: the process (and its children) are done with it
                    break
                if line:
                    sink.write_line(line)
                    on_line(line)
                if time.time() >= deadline:  # the harness owns the clock
                    timed_out = True
                    _kill_group(proc)
                    break
        except KeyboardInterrupt:
            aborted = True
            _kill_group(proc)
        finally:
            _kill_group(proc)  # nothing the candidate started outlives the run
            try:
                exit_code = proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                exit_code = None
            ended = time.time()
            reader.join(timeout=2)  # the group is dead, so the pipe closes and the reader finishes
            while True:  # drain what is already read, without waiting
                try:
                    line = lines.get_nowait()
                except queue.Empty:
                    break
                if line:
                    sink.write_line(line)
            sink.close()
        return ProcessOutcome(
            backend="local", isolated=False, exit_code=exit_code, timed_out=timed_out, aborted=aborted,
            oom_killed=False, infra_error=None, started_at=started, first_output_at=sink.first_output_at,
            ended_at=ended, log_path=sink.path, log_truncated=sink.truncated)
