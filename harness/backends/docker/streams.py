"""The two threads that watch a running container for the backend (harness/backends/docker/backend.py).

Reader drains the container's attached stdout/stderr all the time (also past the log cap: a flood only
slows the candidate to the reader's pace) into the LogSink, and takes the keeper's line out of both
streams (KeeperLine): it gives the exit code and says the run is over. Waiter blocks on
`container.wait()` and notes when, and how, the container ended.
"""

from __future__ import annotations

import threading
import time
from typing import Any

from harness.backends.docker.keeper import KeeperLine
from harness.backends.logsink import LogSink


class Reader(threading.Thread):
    def __init__(self, stream: Any, sink: LogSink, token: str):
        super().__init__(name="harness-docker-reader", daemon=True)
        self.stream = stream
        self.sink = sink
        self.error: BaseException | None = None
        self.lines = {1: KeeperLine(token), 2: KeeperLine(token)}
        self.keeper = threading.Event()  # the keeper's line came on one stream
        self.both = threading.Event()  # ... and on the other: every output of the run is in
        self.keeper_at: float | None = None
        self.result: tuple[int | None, str, bool] | None = None

    def run(self) -> None:
        try:
            for out, err in self.stream:  # attach(demux=True): (stdout bytes, None) or (None, stderr bytes)
                for fd, chunk in ((1, out), (2, err)):
                    if chunk:
                        self._feed(fd, chunk)
        except BaseException as e:  # noqa: BLE001 - a broken stream ends the reading, nothing else
            self.error = e
        finally:
            for fd, line in self.lines.items():
                held = line.flush()
                if held and not line.found:
                    self.sink.feed(held, fd)

    def _feed(self, fd: int, chunk: bytes) -> None:
        line = self.lines[fd]
        was = line.result
        passed = line.feed(chunk)
        if passed:
            self.sink.feed(passed, fd)
        if was is None and line.result is not None:
            if self.result is None:
                self.keeper_at = time.time()
                self.result = line.result
                self.keeper.set()
            if all(x.result is not None for x in self.lines.values()):
                self.both.set()


class Waiter(threading.Thread):
    def __init__(self, container: Any):
        super().__init__(name="harness-docker-waiter", daemon=True)
        self.container = container
        self.done = threading.Event()
        self.status: int | None = None
        self.ended_at: float | None = None
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            result = self.container.wait()  # no HTTP timeout: the harness's clock is elsewhere
            self.status = result.get("StatusCode")
        except BaseException as e:  # noqa: BLE001
            self.error = e
        finally:
            self.ended_at = time.time()
            self.done.set()

