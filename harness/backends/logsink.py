"""A run's log file, capped: a stdout flood cannot fill the disk, and the harness never stops reading."""

from __future__ import annotations

import time
from pathlib import Path


class LogSink:
    def __init__(self, path: Path, cap_bytes: int):
        self.path = path
        self.cap = cap_bytes
        self.written = 0
        self.dropped = 0
        self.first_output_at: float | None = None
        self._f = open(path, "w", encoding="utf-8", errors="replace")

    @property
    def truncated(self) -> bool:
        return self.dropped > 0

    def write_line(self, line: str) -> bool:
        """Append one line (without its newline); False when it was dropped by the cap."""
        if self.first_output_at is None:
            self.first_output_at = time.time()
        size = len(line.encode("utf-8", "replace")) + 1
        if self.written + size > self.cap:
            self.dropped += size
            return False
        self._f.write(line + "\n")
        self._f.flush()
        self.written += size
        return True

    def close(self) -> None:
        if self.dropped:
            self._f.write(f"[harness] log capped at {self.cap} bytes: {self.dropped} more bytes were dropped\n")
        self._f.close()
