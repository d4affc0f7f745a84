"""A run's log: split into lines, capped on disk (head plus tail), every kept line queued for on_line.

A stdout flood cannot fill the disk or the harness's memory, the harness never stops reading (so
the run never blocks on a full pipe), and the summary block at the end survives a flood. Both
backends use it.
"""

from __future__ import annotations

import collections
import queue
import threading
import time
from pathlib import Path
from typing import Any

MAX_LINE_BYTES = 64 * 1024  # a longer line (or endless bytes without a newline) is split


class LogSink:
    """Splits the output into lines, keeps the log file capped, queues lines for on_line.

    Fed by the reader thread; the calling thread takes lines from `lines`. The file holds the
    head (up to cap - tail_cap bytes) and, when that overflows, a marker and then the last
    tail_cap bytes (written at the end). Memory stays bounded by the cap.
    """

    def __init__(self, path: Path, cap: int):
        self.path = path
        self.cap = max(int(cap), 0)
        self.tail_cap = min(self.cap // 4, 1 << 20)
        self.head_cap = self.cap - self.tail_cap
        self.file = open(path, "wb")
        self.lock = threading.Lock()
        self.lines: queue.SimpleQueue[str] = queue.SimpleQueue()
        self.head_bytes = 0
        self.truncated = False
        self.dropped_bytes = 0
        self.dropped_lines = 0
        self.tail: collections.deque[bytes] = collections.deque()
        self.tail_bytes = 0
        self.partial: dict[int, bytes] = {}
        self.first_output_at: float | None = None
        self.total_bytes = 0
        self.closed = False

    def feed(self, chunk: bytes, stream: int = 1) -> None:
        """Bytes from stdout (stream 1) or stderr (2); each stream has its own partial line, so
        an unbuffered print() (text and newline are two writes) never gets split by the other."""
        if not chunk:
            return
        with self.lock:
            if self.closed:
                return
            if self.first_output_at is None:
                self.first_output_at = time.time()
            self.total_bytes += len(chunk)
            parts = (self.partial.get(stream, b"") + chunk).split(b"\n")
            rest = parts.pop()
            for p in parts:
                self._split_line(p)
            while len(rest) > MAX_LINE_BYTES:
                self._line(rest[:MAX_LINE_BYTES] + b"\n")
                rest = rest[MAX_LINE_BYTES:]
            self.partial[stream] = rest
            self.file.flush()  # once per chunk read: the log file can be followed live

    def _split_line(self, p: bytes) -> None:
        for i in range(0, max(len(p), 1), MAX_LINE_BYTES):
            self._line(p[i:i + MAX_LINE_BYTES] + b"\n")

    def _line(self, line: bytes) -> None:
        # caller holds the lock
        if not self.truncated and self.head_bytes + len(line) <= self.head_cap:
            self.file.write(line)
            self.head_bytes += len(line)
            self.lines.put(_decode(line))
            return
        if not self.truncated:
            self.truncated = True
            note = (f"[harness] log cap of {self.cap} bytes reached: the middle of the output is dropped, "
                    f"the last {self.tail_cap} bytes follow at the end")
            self.file.write(note.encode() + b"\n")
            self.file.flush()
            self.lines.put(note)
        self.tail.append(line)
        self.tail_bytes += len(line)
        while self.tail_bytes > self.tail_cap and self.tail:
            old = self.tail.popleft()
            self.tail_bytes -= len(old)
            self.dropped_bytes += len(old)
            self.dropped_lines += 1

    def note(self, text: str) -> None:
        """A harness line (kill reasons): in the log and to on_line, never dropped."""
        with self.lock:
            if self.closed:
                return
            if self.truncated:  # delivered with the tail at the end
                self.tail.append(text.encode() + b"\n")
                self.tail_bytes += len(text) + 1
            else:
                self.file.write(text.encode() + b"\n")
                self.file.flush()
                self.lines.put(text)

    def close(self) -> None:
        with self.lock:
            if self.closed:
                return
            for stream in sorted(self.partial):
                if self.partial[stream]:
                    self._split_line(self.partial[stream])
            self.partial.clear()
            if self.truncated:
                note = (f"[harness] log truncated: {self.dropped_bytes} bytes ({self.dropped_lines} lines) "
                        f"dropped; the last {self.tail_bytes} bytes of the output follow")
                self.file.write(note.encode() + b"\n")
                self.lines.put(note)
                for line in self.tail:
                    self.file.write(line)
                    self.lines.put(_decode(line))
                self.tail.clear()
            self.file.close()
            self.closed = True


def _decode(line: bytes) -> str:
    return line.rstrip(b"\n").rstrip(b"\r").decode("utf-8", errors="replace")


def deliver_lines(sink: LogSink, on_line: Any, on_error: Any, final: bool = False) -> None:
    """Hand every queued line of the run to on_line (final: close the sink first, so its last lines are
    in). A display that breaks does not stop the run: on_error gets what it raised; Ctrl-C passes."""
    if final:
        sink.close()
    while True:
        try:
            line = sink.lines.get_nowait()
        except queue.Empty:
            return
        try:
            on_line(line)
        except KeyboardInterrupt:
            raise
        except Exception as e:  # noqa: BLE001 - the caller's display broke; the run goes on
            on_error(e)
