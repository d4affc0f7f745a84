"""The training data feed: the harness serves the train split to a run over a Unix socket, from outside it.

The train shards are not mounted in the run; fixed/prepare.py's make_dataloader asks this server for
each batch of rows. Whatever the candidate patches inside its process (its clock, the loader, `time`
itself), the harness sees here, with its own clock, when the first batch was taken, when the last one
was, and how many rows and tokens went out. harness/clock.py turns that into the training window.

    with FeedServer(data_dir, manifest, sock_dir) as feed:   # one per run
        ... run ...
        feed.stats()  -> FeedStats

Wire (little-endian): the client sends u32 B, u32 T, u32 buffer_size; the server answers u32 B, u32 T
and then B*(T+1) uint16 token ids, packed best-fit exactly as prepare._RowStream packs them locally.
Each connection is one dataloader with its own stream, as make_dataloader is locally.
"""

from __future__ import annotations

import socket
import struct
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from harness import contract
from harness.fixedcode import load_fixed_module

REQUEST = struct.Struct("<III")
ANSWER = struct.Struct("<II")
SOCKET_NAME = contract.FEED_SOCKET
MAX_ROWS = 1 << 12  # rows per request
MAX_T = 1 << 16
MAX_TOKENS = 1 << 24  # per request: 16 M tokens (a climbmix batch is 64 x 2048 = 131 k)
MAX_BUFFER = 1 << 16  # best-fit buffer size (autoresearch uses 1000)
MAX_CONNECTIONS = 4  # dataloaders per run; more are refused (each holds a stream in the harness)


@dataclass(frozen=True)
class FeedStats:
    """What left the feed, timed by the harness."""
    first_batch_at: float | None
    last_batch_at: float | None
    batches: int
    rows: int
    tokens: int  # target tokens: rows * T
    connections: int

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class FeedServer:
    def __init__(self, data_dir: Path, manifest: dict[str, Any], sock_dir: Path):
        self.data_dir = Path(data_dir)
        self.shards = manifest["splits"]["train"]
        self.sock_dir = Path(sock_dir)
        self.path = self.sock_dir / SOCKET_NAME
        self._prepare = load_fixed_module("prepare")
        self._lock = threading.Lock()
        self._first: float | None = None
        self._last: float | None = None
        self._batches = self._rows = self._tokens = self._connections = 0
        self._stop = threading.Event()
        self._listener: socket.socket | None = None
        self._threads: list[threading.Thread] = []

    # -- life ------------------------------------------------------------------------------------

    def start(self) -> "FeedServer":
        self.sock_dir.mkdir(parents=True, exist_ok=True)
        # The scorer's socket helper: binds from the socket's folder (an address holds 108 bytes) and
        # opens the socket to the run's user (the folder itself is read-only for the run).
        listener = load_fixed_module("wire").listen(str(self.path), backlog=8)
        listener.settimeout(0.2)
        self._listener = listener
        t = threading.Thread(target=self._accept, name="harness-feed", daemon=True)
        t.start()
        self._threads.append(t)
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._listener is not None:
            self._listener.close()
        for t in self._threads:
            t.join(2)
        try:
            self.path.unlink()
        except OSError:
            pass

    def __enter__(self) -> "FeedServer":
        return self.start()

    def __exit__(self, *_exc: Any) -> None:
        self.stop()

    def stats(self) -> FeedStats:
        with self._lock:
            return FeedStats(self._first, self._last, self._batches, self._rows, self._tokens, self._connections)

    # -- serving ---------------------------------------------------------------------------------

    def _accept(self) -> None:
        assert self._listener is not None
        while not self._stop.is_set():
            try:
                conn, _ = self._listener.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            with self._lock:
                self._connections += 1
                refused = self._connections > MAX_CONNECTIONS
            if refused:
                conn.close()
                continue
            t = threading.Thread(target=self._serve, args=(conn,), name="harness-feed-conn", daemon=True)
            t.start()
            self._threads.append(t)

    def _recv(self, conn: socket.socket, n: int) -> bytes | None:
        buf = b""
        while len(buf) < n:
            if self._stop.is_set():
                return None
            try:
                chunk = conn.recv(n - len(buf))
            except socket.timeout:
                continue
            except OSError:
                return None
            if not chunk:
                return None
            buf += chunk
        return buf

    def _serve(self, conn: socket.socket) -> None:
        conn.settimeout(0.5)
        stream, stream_key = None, None
        try:
            while True:
                head = self._recv(conn, REQUEST.size)
                if head is None:
                    return
                B, T, buffer_size = REQUEST.unpack(head)
                if not (1 <= B <= MAX_ROWS and 1 <= T <= MAX_T and B * T <= MAX_TOKENS
                        and 1 <= buffer_size <= MAX_BUFFER):
                    return  # a malformed or oversized request ends this connection, nothing else
                if stream is None:
                    stream = self._prepare._RowStream(self.data_dir, self.shards, buffer_size)
                    stream_key = (T, buffer_size)
                elif stream_key != (T, buffer_size):
                    return  # one dataloader per connection, as locally
                rows = stream.next_rows(B, T).astype(self._prepare.TOKEN_DTYPE)
                now = time.time()
                with self._lock:
                    self._first = self._first if self._first is not None else now
                    self._last = now
                    self._batches += 1
                    self._rows += B
                    self._tokens += B * T
                conn.sendall(ANSWER.pack(B, T) + rows.tobytes())
        except OSError:
            return
        finally:
            conn.close()
