"""Copying a run's /out out of its container, trusting nothing in it.

/out is a tmpfs of limits.output bytes inside the container (harness/backends/docker/spec.py). Once the
keeper has reported (no process of the run is left), `copy_out` runs `copy_command` in the container
with `docker exec` (as the run's user) and `extract_output` unpacks its tar stream into run_dir/out:
regular files and directories only, at most limits.output bytes and one entry per MIN_ENTRY_BYTES of
it, files owned by the invoking user. `dir_usage` measures what a folder occupies (the tests' view of
the host disk).
"""

from __future__ import annotations

import dataclasses
import os
import stat
import tarfile
from pathlib import Path, PurePosixPath
from typing import Any, Iterator

import docker.errors
import requests

from harness.backends.base import RunRequest
from harness.backends.docker.spec import MIN_ENTRY_BYTES, OUT_MOUNT, out_dir, out_max_entries
from harness.backends.logsink import LogSink
from harness.benchmarks import size_bytes


def copy_command(limit: int) -> list[str]:
    """Run in the container (as the run's user) once the keeper has reported: /out's free blocks and
    inodes on stderr, then /out as a tar stream on stdout, cut at `limit` bytes (so the exec always
    ends by itself, even when the harness stops reading early)."""
    return ["sh", "-c", f'stat -f -c "%S %b %f %c %d" {OUT_MOUNT} >&2 || exit 3; '
                        f'tar -C {OUT_MOUNT} --one-file-system -cf - . | head -c {int(limit)}']


@dataclasses.dataclass
class CopyReport:
    """What extract_output() wrote into run_dir/out and what it left out."""

    bytes: int = 0
    files: int = 0
    dirs: int = 0
    skipped: int = 0
    skipped_names: list[str] = dataclasses.field(default_factory=list)  # the first few
    over: str | None = None  # why the copy stopped early (the byte or entry cap)
    error: str | None = None  # a broken tar stream

    def skip(self, name: str, why: str) -> None:
        self.skipped += 1
        if len(self.skipped_names) < 5:
            self.skipped_names.append(f"{name[:100]!r} ({why})")


class TooMuch(Exception):
    pass


class ChunkStream:
    """A read()-able view of an exec's (stdout, stderr) chunks: stdout is the data, stderr is kept
    apart (its first 16 KiB); reading more than `limit` bytes of stdout raises TooMuch."""

    def __init__(self, chunks: Iterator[tuple[bytes | None, bytes | None]], limit: int):
        self.chunks = chunks
        self.limit = limit
        self.buf = bytearray()
        self.total = 0
        self.stderr = bytearray()
        self.eof = False

    def _pull(self) -> None:
        try:
            out, err = next(self.chunks)
        except StopIteration:
            self.eof = True
            return
        if err and len(self.stderr) < 16384:
            self.stderr += err[: 16384 - len(self.stderr)]
        if out:
            self.total += len(out)
            if self.total > self.limit:
                raise TooMuch(f"more than {self.limit} bytes of tar stream")
            self.buf += out

    def read(self, n: int = -1) -> bytes:
        while not self.eof and (n < 0 or len(self.buf) < n):
            self._pull()
        if n < 0:
            n = len(self.buf)
        data = bytes(self.buf[:n])
        del self.buf[:n]
        return data

    def drain(self) -> None:
        while not self.eof:
            self.buf.clear()
            self._pull()


def _member_parts(name: str) -> tuple[str, ...] | None:
    """The path of a tar member as parts under the destination; () for the root; None if unsafe."""
    if "\0" in name or name.startswith("/"):
        return None
    parts = tuple(x for x in PurePosixPath(name).parts if x != ".")
    if any(x == ".." for x in parts):
        return None
    return parts


def _real_dir(dest: Path, parts: tuple[str, ...]) -> Path | None:
    """dest/parts as real directories (created 0755 where missing); None if something else is in the way."""
    cur = dest
    for part in parts:
        cur = cur / part
        try:
            st = os.lstat(cur)
        except FileNotFoundError:
            os.mkdir(cur, 0o755)
            continue
        if not stat.S_ISDIR(st.st_mode):
            return None
    return cur


def _write_file(src: Any, target: Path, size: int) -> bool:
    try:
        st = os.lstat(target)
    except FileNotFoundError:
        st = None
    if st is not None:
        if stat.S_ISDIR(st.st_mode):
            return False
        os.unlink(target)  # a file or link from an earlier copy: replaced, never followed
    fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644)
    with os.fdopen(fd, "wb") as f:
        left = size
        while left > 0:
            chunk = src.read(min(left, 1 << 20))
            if not chunk:
                break
            f.write(chunk)
            left -= len(chunk)
    return True


def extract_output(fileobj: Any, dest: Path, cap: int, max_entries: int) -> CopyReport:
    """Unpack a tar stream of /out into dest, trusting nothing in it.

    Only regular files and directories are written (files 0644, directories 0755, owned by whoever
    runs the harness); symlinks, hard links, devices, FIFOs, absolute names and names with '..' are
    skipped. It stops at `cap` bytes of file data or `max_entries` entries (report.over says which).
    Existing entries of dest are replaced, never followed.
    """
    rep = CopyReport()
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    if not stat.S_ISDIR(os.lstat(dest).st_mode):
        rep.error = f"{dest} is not a directory"
        return rep
    data_filter = getattr(tarfile, "data_filter", None)
    entries = 0
    try:
        with tarfile.open(fileobj=fileobj, mode="r|") as tf:
            for m in tf:
                parts = _member_parts(m.name)
                if parts == ():
                    continue  # /out itself
                if parts is None:
                    rep.skip(m.name, "unsafe name")
                    continue
                entries += 1
                if entries > max_entries:
                    rep.over = f"more than {max_entries} entries"
                    break
                if not (m.isdir() or m.isreg()):
                    kind = ("symlink" if m.issym() else "hard link" if m.islnk() else "device" if m.isdev()
                            else "fifo" if m.isfifo() else "special file")
                    rep.skip(m.name, kind)
                    continue
                if data_filter is not None:
                    try:
                        data_filter(m, str(dest))
                    except tarfile.FilterError as e:
                        rep.skip(m.name, str(e))
                        continue
                if m.isdir():
                    if _real_dir(dest, parts) is None:
                        rep.skip(m.name, "not a directory on the host")
                    else:
                        rep.dirs += 1
                    continue
                if rep.bytes + m.size > cap:
                    rep.over = f"more than {cap} bytes"
                    break
                parent = _real_dir(dest, parts[:-1])
                if parent is None or not _write_file(tf.extractfile(m), parent / parts[-1], m.size):
                    rep.skip(m.name, "not a directory on the host")
                    continue
                rep.bytes += m.size
                rep.files += 1
    except TooMuch as e:
        rep.over = str(e)
    except (tarfile.TarError, EOFError) as e:
        rep.error = f"bad tar stream: {e}"
    return rep


def dir_usage(path: Path, stop_above: int | None = None) -> int:
    """Bytes the files under `path` occupy on disk (each entry at least MIN_ENTRY_BYTES).

    Symlinks are not followed. The walk stops early once the total passes `stop_above`.
    """
    total = 0
    stack = [str(path)]
    while stack:
        try:
            it = os.scandir(stack.pop())
        except OSError:
            continue
        with it:
            for entry in it:
                try:
                    st = entry.stat(follow_symlinks=False)
                except OSError:
                    continue
                total += max(st.st_blocks * 512, MIN_ENTRY_BYTES)
                if stat.S_ISDIR(st.st_mode):
                    stack.append(entry.path)
                if stop_above is not None and total > stop_above:
                    return total
    return total


def read_copy(chunks: Any, limit: int, out: Path, limits: Any, sink: LogSink,
              seen_full: bool) -> tuple[Any, list[str], bool]:
    """Unpack a copy_command's stream (demuxed (stdout, stderr) chunks) into `out`, checked, capped and
    noted in the log; (the extract report, tar's other error lines, whether /out was full). Shared by
    every backend that copies /out out of a container (docker's exec, a Kubernetes pod's)."""
    cap, max_entries = size_bytes(limits.output), out_max_entries(limits)
    src = ChunkStream(iter(chunks), limit=limit)
    out.mkdir(parents=True, exist_ok=True)
    rep = extract_output(src, out, cap, max_entries)
    try:
        src.drain()  # to the end (at most `limit` bytes): the exec ends, tar's last words are in
    except TooMuch as e:
        rep.over = rep.over or str(e)
    errors = bytes(src.stderr).decode("utf-8", "replace").splitlines()
    full = seen_full  # the keeper saw it full during the run
    fields = errors[0].split() if errors else []
    if len(fields) == 5 and all(f.isdigit() for f in fields):
        _bsize, blocks, bfree, files, ffree = map(int, fields)
        full = full or (blocks > 0 and bfree == 0) or (files > 0 and ffree == 0)
        errors = errors[1:]
    if rep.over or full:
        sink.note(f"[harness] the output directory reached its limit of {limits.output} "
                  f"(writes past it failed with ENOSPC{'; copy stopped: ' + rep.over if rep.over else ''}); "
                  f"{rep.bytes} bytes in {rep.files} files copied to {out}")
    if rep.skipped:
        sink.note(f"[harness] copying /out: skipped {rep.skipped} entries that are not plain files or "
                  f"directories: {', '.join(rep.skipped_names)}")
    if rep.error:
        sink.note(f"[harness] copying /out: {rep.error}")
    return rep, errors, full


@dataclasses.dataclass
class CopyOut:
    """What copy_out() did: bytes copied to run_dir/out, and whether /out reached its limit."""

    bytes: int
    limit_reached: bool


def copy_out(request: RunRequest, client: Any, container: Any, uid: int, sink: LogSink,
             seen_full: bool = False) -> CopyOut:
    """Stream /out out of the (still running, keeper-only) container into run_dir/out; notes in the log.

    seen_full: the keeper saw /out full during the run. Docker trouble raises (DockerException,
    RequestException): the caller records it."""
    limits = request.benchmark.limits
    cap = size_bytes(limits.output)
    max_entries = out_max_entries(limits)
    # The tar stream: the data, a 512-byte header per entry (two for long names), 10 KiB records.
    limit = cap + (max_entries + 8) * 1536 + (1 << 20)
    exec_id = client.api.exec_create(container.id, copy_command(limit), user=f"{uid}:{uid}", stdout=True,
                                     stderr=True, workdir="/")["Id"]
    chunks = client.api.exec_start(exec_id, stream=True, demux=True)
    rep, errors, full = read_copy(chunks, limit, out_dir(request), limits, sink, seen_full)
    if errors and rep.over is None:
        try:
            code = client.api.exec_inspect(exec_id).get("ExitCode")
        except (docker.errors.DockerException, requests.exceptions.RequestException):
            code = None
        if code not in (0, None):
            sink.note(f"[harness] copying /out: tar exited {code}: {' / '.join(errors)[:300]}")
    return CopyOut(bytes=rep.bytes, limit_reached=bool(rep.over or full))
