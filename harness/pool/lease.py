"""A lease on one device: an exclusive file lock (filelock: flock on Linux) held while a run uses it.

The kernel drops the lock when the holding process ends, however it ends (an exception, Ctrl-C, kill -9),
so a crashed harness never leaves a device taken. Every harness process of a machine uses one lock
folder (harness.paths.state_dir()/leases), so two of them never run on the same GPU or CPU set at once.
flock conflicts between two open files even within one process, so threads of one harness are kept
apart by the same locks.
"""

from __future__ import annotations

import re
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from filelock import FileLock, Timeout

POLL_S = 0.2  # how often a waiting run tries the members again


class LeaseAborted(RuntimeError):
    """Waiting for a free device was stopped (Ctrl-C or SIGTERM on the pool)."""


def lock_path(folder: Path, key: str) -> Path:
    """The lock file of a device key (a GPU UUID, 'cpu-0-3'): letters, digits, '.', '_' and '-' only."""
    return folder / (re.sub(r"[^A-Za-z0-9._-]", "_", key) + ".lock")


@dataclass
class Lease:
    key: str
    lock: FileLock

    def release(self) -> None:
        self.lock.release(force=True)


def try_lease(key: str, folder: Path) -> Lease | None:
    """The lease on `key` if no one holds it now, else None (never waits). Never a soft lock: a lock file
    that outlives a killed process would keep the device taken."""
    folder.mkdir(parents=True, exist_ok=True)
    lock = FileLock(str(lock_path(folder, key)), thread_local=False, is_singleton=False, fallback_to_soft=False,
                    preserve_lock_file=True)
    try:
        lock.acquire(timeout=0)
    except Timeout:
        return None
    return Lease(key, lock)


def lease_any(keys: Sequence[str], folder: Path, stop: threading.Event | None = None) -> Lease:
    """The first free device of `keys`, waiting until one is; LeaseAborted once `stop` is set."""
    stop = stop or threading.Event()
    while not stop.is_set():
        for key in keys:
            lease = try_lease(key, folder)
            if lease is not None:
                return lease
        stop.wait(POLL_S)
    raise LeaseAborted("stopped while waiting for a free device")
