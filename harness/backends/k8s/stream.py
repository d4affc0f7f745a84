"""What comes out of a run's pod: its log, read while it runs, and its /out, copied out once it has ended.

LogReader (a thread) follows the run container's log through the API server (`kubectl logs -f`) into the
LogSink (harness/backends/logsink.py), which caps the file and queues the lines for on_line. The API gives
stdout and stderr as one stream, so the keeper's last line (harness/backends/docker/keeper.py) comes twice;
KeeperFilter takes every copy out and keeps the first as the result (exit code, reason, /out seen full).
Only output the kubelet still holds can be read: it rotates a container's log file at its
containerLogMaxSize (10 MiB by default), so a run that floods faster than the harness reads may lose a
middle part (the log is capped here anyway), and a stream the API server closes early is not resumed
(the outcome still comes from the pod's status).

copy_out runs docker's copy_command (harness/backends/docker/output.py: /out's free space on stderr, then
/out as a tar cut at a byte limit) in the pod's collect container, which sees the same /out read-only and
lives on after the run container ended, and unpacks the stream with docker's extract_output, which trusts
nothing in it: regular files and directories only, at most limits.output bytes and one entry per 4 KiB.
"""

from __future__ import annotations

import re
import threading
from typing import Any

from harness.backends.base import RunRequest
from harness.backends.docker.keeper import KEEPER_MARK
from harness.backends.docker.output import CopyOut, copy_command, read_copy
from harness.backends.docker.spec import out_dir, out_max_entries
from harness.backends.logsink import LogSink
from harness.benchmarks import size_bytes

class KeeperFilter:
    """Takes the keeper's lines ("\\x1e<token> exit=N reason=R full=F\\n") out of a merged output stream.

    feed() returns the bytes to log. A tail that could be the start of the line is held back until the
    next chunk. Without the token (only the pod spec, the keeper's memory and this process have it) no
    output of the run can pass for the line.
    """

    MAX_LINE = 256

    def __init__(self, token: str):
        self.mark = KEEPER_MARK + token.encode() + b" "
        self.held = b""
        self.result: tuple[int | None, str, bool] | None = None  # (exit code, reason, /out seen full)

    def feed(self, data: bytes) -> bytes:
        data = self.held + data
        self.held = b""
        out = []
        while True:
            i = data.find(self.mark)
            if i < 0:
                break
            out.append(data[:i])
            j = data.find(b"\n", i)
            if j < 0:
                if len(data) - i <= self.MAX_LINE:
                    self.held = data[i:]
                    return b"".join(out)
                j = i + self.MAX_LINE - 1  # garbled: drop what could be its line
            self._parse(data[i + len(self.mark):j + 1])
            data = data[j + 1:]
        k = data.rfind(KEEPER_MARK, max(0, len(data) - len(self.mark) + 1))
        if k >= 0 and self.mark.startswith(data[k:]):
            self.held = data[k:]
            data = data[:k]
        out.append(data)
        return b"".join(out)

    def flush(self) -> bytes:
        """At the end of the stream: what was held back and is not the keeper's line."""
        held, self.held = self.held, b""
        if held.startswith(self.mark):
            self._parse(held[len(self.mark):])
            return b""
        return held

    def _parse(self, rest: bytes) -> None:
        if self.result is not None:
            return
        m = re.match(rb"exit=(-?\d+) reason=([a-z]+) full=([01])\n?$", rest)
        self.result = (int(m.group(1)), m.group(2).decode(), m.group(3) == b"1") if m else (None, "garbled", False)


class LogReader(threading.Thread):
    """Follows the run container's log into the sink until it ends (the container ended, or the pod went)."""

    def __init__(self, core: Any, pod: str, namespace: str, container: str, sink: LogSink, token: str):
        super().__init__(name="harness-k8s-log", daemon=True)
        self.core = core
        self.pod = pod
        self.namespace = namespace
        self.container = container
        self.sink = sink
        self.keeper = KeeperFilter(token)
        self.error: BaseException | None = None
        self.response: Any = None

    def run(self) -> None:
        try:
            self.response = self.core.read_namespaced_pod_log(name=self.pod, namespace=self.namespace,
                                                              container=self.container, follow=True,
                                                              _preload_content=False)
            for chunk in self.response.stream(amt=None, decode_content=False):  # as the client's watch reads
                passed = self.keeper.feed(chunk)
                if passed:
                    self.sink.feed(passed, 1)
        except BaseException as e:  # noqa: BLE001 - a broken stream ends the reading, nothing else
            self.error = e
        finally:
            rest = self.keeper.flush()
            if rest:
                self.sink.feed(rest, 1)
            self.close()

    def close(self) -> None:
        """Ends a stream that still waits (the pod is being deleted); safe to call twice."""
        resp = self.response
        if resp is not None:
            for name in ("close", "release_conn"):
                try:
                    getattr(resp, name, lambda: None)()
                except Exception:  # noqa: BLE001
                    pass


def copy_out(api: Any, pod: str, namespace: str, container: str, request: RunRequest, sink: LogSink,
             seen_full: bool = False) -> CopyOut:
    """/out of the (ended) run, through the collect container, into run_dir/out; notes in the log.
    API trouble raises (the caller records it)."""
    limits = request.benchmark.limits
    limit = size_bytes(limits.output) + (out_max_entries(limits) + 8) * 1536 + (1 << 20)  # as docker's copy_out
    chunks = api.exec_stream(pod, namespace, container, copy_command(limit))
    rep, errors, full = read_copy(chunks, limit, out_dir(request), limits, sink, seen_full)
    if errors and rep.over is None:
        sink.note(f"[harness] copying /out: {' / '.join(errors)[:300]}")
    return CopyOut(bytes=rep.bytes, limit_reached=bool(rep.over or full))
