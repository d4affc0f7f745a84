"""autoresearch-compatible results.tsv: one row per submission (where it goes: harness/submit.py's tsv_target).

    commit<TAB>val_bpb<TAB>memory_gb<TAB>status<TAB>description

status is keep, discard or crash; crash rows carry 0.000000 and 0.0. val_bpb has 6 decimals, memory_gb
(peak_vram_mb / 1024) one. Every text field goes through harness.sanitize.clean_text: no tab, line break,
escape sequence or bidi control from a description can split a row or reach the terminal that shows it.
Each row is appended with a single write() on an O_APPEND descriptor, under an flock, so concurrent
processes neither interleave rows nor write the header twice.
"""

from __future__ import annotations

import fcntl
import hashlib
import math
import os
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harness.sanitize import clean_text

COLUMNS = ("commit", "val_bpb", "memory_gb", "status", "description")
HEADER = "\t".join(COLUMNS) + "\n"
STATUSES = ("keep", "discard", "crash")
TSV_NAME = "results.tsv"


@dataclass(frozen=True)
class TsvRow:
    commit: str
    val_bpb: float
    memory_gb: float
    status: str
    description: str


def clean_description(text: str | None) -> str:
    """Tabs and line breaks become single spaces, control and format characters go (harness.sanitize):
    a description stays one field of one line and shows as it is stored."""
    return clean_text(text).strip()


def memory_gb_of(peak_vram_mb: float | None) -> float:
    return 0.0 if peak_vram_mb is None else peak_vram_mb / 1024.0


def format_row(commit: str, val_bpb: float | None, memory_gb: float | None, status: str, description: str) -> str:
    if status not in STATUSES:
        raise ValueError(f"results.tsv status must be one of {', '.join(STATUSES)} (got {status!r})")
    commit = clean_description(commit)
    if not commit:
        raise ValueError("results.tsv needs a commit")
    if status == "crash":
        val_bpb, memory_gb = 0.0, 0.0
    if val_bpb is None or not math.isfinite(val_bpb):
        raise ValueError(f"a {status} row needs a finite val_bpb (got {val_bpb!r}); failed runs are 'crash' rows")
    memory_gb = 0.0 if memory_gb is None or not math.isfinite(memory_gb) else memory_gb
    return f"{commit}\t{val_bpb:.6f}\t{memory_gb:.1f}\t{status}\t{clean_description(description)}\n"


def append_row(tsv_path: Path | str, commit: str, val_bpb: float | None, memory_gb: float | None, status: str,
               description: str) -> str:
    """Append one row (and the header first when the file is new or empty); returns the line written."""
    line = format_row(commit, val_bpb, memory_gb, status, description)
    tsv_path = Path(tsv_path)
    tsv_path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(tsv_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)  # header decision and write as one step; released by close
        size = os.fstat(fd).st_size
        prefix = ""
        if size == 0:
            prefix = HEADER
        elif _last_byte(tsv_path, size) != b"\n":
            prefix = "\n"  # a torn last line (a writer that was not this module): start on a fresh line
        data = (prefix + line).encode("utf-8")
        written = os.write(fd, data)
        if written != len(data):  # regular files do not short-write short lines; say so if one ever does
            raise OSError(f"{tsv_path}: short write ({written} of {len(data)} bytes)")
    finally:
        os.close(fd)
    return line


def _last_byte(path: Path, size: int) -> bytes:
    with open(path, "rb") as f:
        f.seek(size - 1)
        return f.read(1)


def read_rows(tsv_path: Path | str) -> list[TsvRow]:
    """The rows of a results.tsv (header skipped); a file without the header is rejected."""
    lines = Path(tsv_path).read_text(encoding="utf-8").splitlines()
    if not lines or lines[0] != HEADER.rstrip("\n"):
        raise ValueError(f"{tsv_path}: not a results.tsv (the first line is not the header {HEADER.strip()!r})")
    out = []
    for n, line in enumerate(lines[1:], start=2):
        if not line:
            continue
        parts = line.split("\t")
        if len(parts) != len(COLUMNS):
            raise ValueError(f"{tsv_path}:{n}: {len(parts)} fields, expected {len(COLUMNS)}")
        out.append(TsvRow(parts[0], float(parts[1]), float(parts[2]), parts[3], parts[4]))
    return out


def status_for(record: dict[str, Any], keep: bool) -> str:
    """crash for any run that did not finish ok; else keep or discard as the significance decision said."""
    if record.get("status") != "ok" or record.get("metrics", {}).get("val_bpb") is None:
        return "crash"
    return "keep" if keep else "discard"


def append_record(tsv_path: Path | str, record: dict[str, Any], keep: bool, commit: str,
                  description: str | None = None) -> str:
    """Append the row of one result record (val_bpb, peak VRAM and the submission's description from it)."""
    metrics = record.get("metrics") or {}
    if description is None:
        description = record.get("provenance", {}).get("submission", {}).get("description", "")
    return append_row(tsv_path, commit, metrics.get("val_bpb"), memory_gb_of(metrics.get("peak_vram_mb")),
                      status_for(record, keep), description)


def _git_out(path: Path, *args: str) -> bytes | None:
    """stdout of one git command run in the repository holding path; None when git fails or is missing.

    Only plumbing that starts no configured program (rev-parse, cat-file without --filters): the
    repository may be the candidate's, and its config (core.fsmonitor, diff drivers, clean filters) could
    otherwise run code on this host.
    """
    where = path if path.is_dir() else path.parent
    try:
        proc = subprocess.run(["git", "-C", str(where), *args], capture_output=True, timeout=10,
                              env={**os.environ, "GIT_OPTIONAL_LOCKS": "0"})
    except (OSError, subprocess.SubprocessError):
        return None
    return proc.stdout if proc.returncode == 0 else None


def _git(path: Path, *args: str) -> str | None:
    out = _git_out(path, *args)
    text = out.decode("utf-8", errors="replace").strip() if out is not None else ""
    return text or None


def git_commit_of(path: Path | str) -> str | None:
    """Short hash of HEAD of the git repository holding path; None outside git (or before the first commit)."""
    return _git(Path(path).resolve(), "rev-parse", "--short", "HEAD")


def git_root_of(path: Path | str) -> Path | None:
    top = _git(Path(path).resolve(), "rev-parse", "--show-toplevel")
    return Path(top) if top else None


def default_tsv_path(train_py: Path | str) -> Path | None:
    """<repository root>/results.tsv for a path inside a git repository (as in autoresearch); else None."""
    root = git_root_of(train_py)
    return root / TSV_NAME if root else None


def cwd_tsv_path(cwd: Path | str | None = None) -> Path | None:
    """<root of the git repository holding the current directory>/results.tsv; None outside git.

    The repository the submitter works in, never the one that happens to hold train.py: a candidate
    path must not choose which repository's history gets a row."""
    return default_tsv_path(Path(cwd) if cwd is not None else Path.cwd())


def submission_commit(train_py: Path | str, sha256: str | None = None) -> str:
    """The commit a results.tsv row names for train.py: HEAD's short hash of the repository holding it when
    HEAD tracks the file; with "-dirty" when HEAD's copy is not what ran (sha256 of the submitted file, or
    the file as it is now); "unknown" when untracked, outside git or before the first commit."""
    path = Path(train_py).resolve()
    head, root = git_commit_of(path), git_root_of(path)
    if head is None or root is None:
        return "unknown"
    try:
        rel = path.relative_to(root.resolve()).as_posix()
    except ValueError:
        return "unknown"
    blob = _git_out(path, "cat-file", "blob", f"HEAD:{rel}")
    if blob is None:
        return "unknown"  # not in HEAD: untracked, ignored, or only staged
    if sha256 is None:
        try:
            sha256 = hashlib.sha256(path.read_bytes()).hexdigest()
        except OSError:
            return "unknown"
    return head if hashlib.sha256(blob).hexdigest() == sha256 else f"{head}-dirty"
