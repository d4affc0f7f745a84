"""The result store: one JSON file per run (the truth) plus a SQLite index that can always be rebuilt from them.

Layout of a results directory (default ``harness.paths.results_dir()``)::

    <root>/runs/<run_id>.json   one result record each, written atomically (temp file, fsync, rename)
    <root>/index.sqlite         WAL-mode index of the records' headline fields (a cache: delete it at will)
    <root>/.index.lock          serialises the creation of the index between processes

Sidecar files (log, telemetry series) stay in the run's own folder; the record points at them.

Writes: ``put`` validates the record against ``harness/schemas/result.schema.json``, writes the file, then
upserts the index row in one short transaction. If the index write fails, the file still stands and the
next listing puts the row back. Reads: every listing reconciles the index with the files (new, changed or
deleted files, by inode, mtime and size), so the index never hides a record. A file that does not parse or
validate is reported in ``Listing.problems`` and skipped. Stray ``*.tmp`` files (a writer killed between
write and rename) are never read, and ``rebuild_index`` removes them.
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import json
import logging
import math
import os
import re
import sqlite3
import time
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any, Iterable, Iterator, NamedTuple

import jsonschema

from harness import paths
from harness.atomic import write_json_atomic
from harness.scoring.leaderboard import Row, best_by_mean, rank, samples_of, sort_key

log = logging.getLogger(__name__)

# Bump when the index table or what it caches changes: an index of another version is rebuilt. 2: trust is
# re-derived from each record's parts (harness.record.decide_trust).
INDEX_VERSION = 3
BUSY_TIMEOUT_S = 15.0
TMP_MAX_AGE_S = 60.0  # rebuild_index leaves younger temp files alone: a live writer may own them
_RUN_ID_PREFIX = re.compile(r"^[0-9a-f-]+$")


class StoreError(Exception):
    """A store operation failed (unknown or ambiguous run id, unreadable record)."""


class RunNotFound(StoreError):
    pass


class AmbiguousRunId(StoreError):
    pass


class RecordError(StoreError, ValueError):
    """A record does not match the result schema; the message names the field and what is wrong."""


# --- validation -------------------------------------------------------------------------------

@functools.lru_cache(maxsize=1)
def _validator() -> jsonschema.Draft202012Validator:
    schema = json.loads(resources.files("harness").joinpath("schemas/result.schema.json").read_text())
    jsonschema.Draft202012Validator.check_schema(schema)
    return jsonschema.Draft202012Validator(schema)


def _field(parts: Iterable[Any]) -> str:
    out = ""
    for p in parts:
        out += f"[{p}]" if isinstance(p, int) else (f".{p}" if out else str(p))
    return out


def _describe(error: jsonschema.ValidationError) -> str:
    while error.context:  # combinators: descend to the error that names the deepest field
        error = max(error.context, key=lambda e: len(e.absolute_path))
    where = list(error.absolute_path)
    if error.validator == "required":
        missing = re.match(r"^'([^']*)' is a required property", error.message)
        if missing:
            return f"result field '{_field(where + [missing.group(1)])}': missing (required)"
    return f"result field '{_field(where) or '(top level)'}': {error.message}"


def _non_finite(doc: Any, where: list[Any]) -> Iterator[str]:
    if isinstance(doc, float) and not math.isfinite(doc):
        yield f"result field '{_field(where) or '(top level)'}': {doc!r} is not a finite number (store null instead)"
    elif isinstance(doc, dict):
        for k, v in doc.items():
            yield from _non_finite(v, where + [k])
    elif isinstance(doc, (list, tuple)):
        for i, v in enumerate(doc):
            yield from _non_finite(v, where + [i])


def validate_record(doc: Any) -> None:
    """Raise RecordError unless doc is a valid result record (schema, plus JSON's finite numbers)."""
    if not isinstance(doc, dict):
        raise RecordError(f"a result record must be a JSON object, not {type(doc).__name__}")
    errors = sorted(_validator().iter_errors(doc), key=lambda e: [str(p) for p in e.absolute_path])
    lines = [_describe(e) for e in errors] + list(_non_finite(doc, []))
    if lines:
        raise RecordError("; ".join(lines))


def current_record(doc: Any) -> dict[str, Any]:
    """A stored document as a current (version 2) record: a version 1 record is migrated, the result is
    validated, and its trust is derived again from its parts (harness.record.decide_trust): a label edited
    into a file is never believed. Raises RecordError naming what is wrong."""
    from harness.record import RecordError as BadRecord, RunRecord, migrate_v1

    if isinstance(doc, dict) and doc.get("schema_version") == 1:
        try:
            doc = migrate_v1(doc)
        except (ValueError, TypeError, AttributeError) as e:
            raise RecordError(f"a version 1 record that cannot be read: {e}") from None
    validate_record(doc)
    try:
        return RunRecord.from_dict(doc).to_dict()
    except BadRecord as e:
        raise RecordError(str(e)) from None


# --- rows -------------------------------------------------------------------------------------

class Problem(NamedTuple):
    path: Path
    reason: str


@dataclass
class Listing:
    rows: list[Row]
    problems: list[Problem]
    hidden: int = 0  # rows that matched the other filters but were hidden as flagged or unverified

    def to_dict(self) -> dict[str, Any]:
        return {"rows": [r.to_dict() for r in self.rows],
                "problems": [{"path": str(p.path), "reason": p.reason} for p in self.problems],
                "hidden": self.hidden}


@dataclass
class RebuildReport:
    indexed: int
    problems: list[Problem]
    removed_tmp: list[Path]


def gpu_class_of(record: dict[str, Any]) -> str | None:
    """record["hardware"]["class"]: a label, or a GpuClass dict whose label is taken."""
    hw = record.get("hardware")
    if not isinstance(hw, dict):
        return None
    cls = hw.get("class")
    if isinstance(cls, dict):
        cls = cls.get("label")
    return None if cls is None else str(cls)


def decision_of(record: dict[str, Any]) -> str | None:
    """keep, discard or aborted: the decision of the submission the run belonged to (None: not decided)."""
    d = record.get("decision")
    return d.get("label") if isinstance(d, dict) else None


def row_of(record: dict[str, Any], path: Path) -> Row:
    prov = record["provenance"]
    return Row(
        run_id=record["run_id"], created_at=prov["created_at"], benchmark=prov["benchmark"]["name"],
        submission_sha256=prov["submission"]["sha256"], description=prov["submission"]["description"],
        status=record["status"], trust=record["trust"], val_bpb=record["metrics"].get("val_bpb"),
        gpu_class=gpu_class_of(record), flags=list(record.get("flags") or []), seed=prov["seed"],
        backend=record["backend"], decision=decision_of(record), path=path, reason=record.get("reason"),
        fingerprint=prov["benchmark"].get("fingerprint"))


_COLUMNS = ("run_id", "created_at", "benchmark", "submission_sha256", "description", "status", "trust", "val_bpb",
            "gpu_class", "flags", "seed", "backend", "decision", "reason", "fingerprint", "file_ino", "file_mtime_ns", "file_size")

_CREATE = ("""
CREATE TABLE runs (
    run_id TEXT PRIMARY KEY,
    created_at TEXT NOT NULL,
    benchmark TEXT NOT NULL,
    submission_sha256 TEXT,
    description TEXT NOT NULL,
    status TEXT NOT NULL,
    trust TEXT NOT NULL,
    val_bpb REAL,
    gpu_class TEXT,
    flags TEXT NOT NULL,          -- JSON list
    seed INTEGER,
    backend TEXT NOT NULL,
    decision TEXT,
    reason TEXT,
    fingerprint TEXT,             -- harness/fingerprint.py: which results compare (None: recorded before)
    file_ino INTEGER NOT NULL,    -- the file's identity when indexed: a changed file is re-read
    file_mtime_ns INTEGER NOT NULL,
    file_size INTEGER NOT NULL
)""",
           "CREATE INDEX runs_benchmark ON runs (benchmark, status)",
           "CREATE INDEX runs_submission ON runs (benchmark, submission_sha256)")


def _stamp(st: os.stat_result) -> tuple[int, int, int]:
    return (st.st_ino, st.st_mtime_ns, st.st_size)


def _db_value(row: Row, stamp: tuple[int, int, int]) -> tuple[Any, ...]:
    seed = row.seed if row.seed is None or -2**63 <= row.seed < 2**63 else str(row.seed)
    return (row.run_id, row.created_at, row.benchmark, row.submission_sha256, row.description, row.status, row.trust,
            row.val_bpb, row.gpu_class, json.dumps(row.flags), seed, row.backend, row.decision, row.reason,
            row.fingerprint, *stamp)


def _is_corrupt(e: sqlite3.DatabaseError) -> bool:
    name = getattr(e, "sqlite_errorname", "")
    if name in ("SQLITE_NOTADB", "SQLITE_CORRUPT"):
        return True
    text = str(e).lower()
    return type(e) is sqlite3.DatabaseError and ("not a database" in text or "malformed" in text)


# --- the store --------------------------------------------------------------------------------

class ResultStore:
    """A results directory: JSON records (the truth) and a rebuildable SQLite index. No global state."""

    def __init__(self, root: Path | str | None = None):
        self.root = Path(root) if root is not None else paths.results_dir()
        self.runs_dir = self.root / "runs"
        self.index_path = self.root / "index.sqlite"

    def __repr__(self) -> str:
        return f"ResultStore({str(self.root)!r})"

    def path_for(self, run_id: str) -> Path:
        return self.runs_dir / f"{run_id}.json"

    # -- writing --

    def put(self, record: dict[str, Any]) -> Path:
        """Validate and write one record (a new run, or an update of the same run id); returns the file.

        The file is written first and is the truth: an index failure is logged, never raised.
        """
        record = current_record(record)
        path = self.path_for(record["run_id"])
        write_json_atomic(path, record)
        try:
            stamp = _stamp(path.stat())
            with self._connection() as con:
                con.execute("BEGIN IMMEDIATE")
                try:
                    self._upsert(con, [(row_of(record, path), stamp)])
                    con.execute("COMMIT")
                except BaseException:
                    con.execute("ROLLBACK")
                    raise
        except Exception as e:  # noqa: BLE001 - the file is written; the next listing repairs the index
            log.warning("result %s written, but the index was not updated (%s: %s); it will be reconciled",
                        path, type(e).__name__, e)
        return path

    # -- reading --

    def get(self, run_id: str) -> dict[str, Any]:
        """The record of run_id, or of the one run whose id starts with run_id."""
        path = self.path_for(run_id)
        if not (_RUN_ID_PREFIX.match(run_id) and path.is_file()):
            path = self._resolve_prefix(run_id)
        record, problem = self._load(path)
        if problem is not None:
            raise StoreError(f"{path}: {problem}")
        return record

    def _resolve_prefix(self, prefix: str) -> Path:
        if not prefix or not _RUN_ID_PREFIX.match(prefix):
            raise RunNotFound(f"no run {prefix!r} in {self.root} (a run id looks like 20260101-120000-abcdef)")
        found = sorted(self.runs_dir.glob(f"{prefix}*.json")) if self.runs_dir.is_dir() else []
        if not found:
            raise RunNotFound(f"no run {prefix!r} in {self.root}")
        if len(found) > 1:
            names = ", ".join(p.stem for p in found[:5]) + (" ..." if len(found) > 5 else "")
            raise AmbiguousRunId(f"run id prefix {prefix!r} matches {len(found)} runs: {names}")
        return found[0]

    def list(self, benchmark: str | None = None, status: str | None = None, gpu_class: str | None = None,
             include_flagged: bool = False, include_unverified: bool = False,
             limit: int | None = None) -> Listing:
        """Runs, newest first, with the files that could not be read reported in problems."""
        rows, problems = self._all_rows()
        picked, hidden = [], 0
        for row in rows:
            if benchmark is not None and row.benchmark != benchmark:
                continue
            if status is not None and row.status != status:
                continue
            if gpu_class is not None and row.gpu_class != gpu_class:
                continue
            if (row.flagged and not include_flagged) or (not row.verified and not include_unverified):
                hidden += 1
                continue
            picked.append(row)
        picked.sort(key=sort_key, reverse=True)
        if limit is not None:
            picked = picked[:max(0, limit)]
        return Listing(rows=picked, problems=problems, hidden=hidden)

    def _scored(self, benchmark: str, gpu_class: str | None, include_flagged: bool,
                include_unverified: bool) -> list[Row]:
        """ok runs of one benchmark (and class), filtered as asked; the leaderboard module ranks them."""
        return self.list(benchmark=benchmark, status="ok", gpu_class=gpu_class, include_flagged=include_flagged,
                         include_unverified=include_unverified).rows

    def leaderboard(self, benchmark: str, by_gpu_class: bool = False, include_flagged: bool = False,
                    include_unverified: bool = False) -> list[Row]:
        """The best ok run of each submission (per GPU class with by_gpu_class), lowest val_bpb first.

        Each row's samples hold all val_bpbs of its group (see :func:`harness.scoring.leaderboard.rank`).
        """
        return rank(self._scored(benchmark, None, include_flagged, include_unverified), by_gpu_class)

    def samples(self, benchmark: str, submission_sha256: str, gpu_class: str | None = None,
                include_flagged: bool = True, include_unverified: bool = True) -> list[float]:
        """val_bpb of every ok run of one submission, oldest first: the input of a significance test."""
        return samples_of(self._scored(benchmark, gpu_class, include_flagged, include_unverified), submission_sha256)

    def best(self, benchmark: str, gpu_class: str | None = None, include_flagged: bool = False,
             include_unverified: bool = False) -> Row | None:
        """The submission with the lowest MEAN val_bpb (ok, and by default verified and unflagged runs only).

        Returns its best run, with samples holding all its val_bpbs.
        """
        return best_by_mean(self._scored(benchmark, gpu_class, include_flagged, include_unverified))

    # -- the index --

    def rebuild_index(self, tmp_max_age_s: float = TMP_MAX_AGE_S) -> RebuildReport:
        """Rebuild index.sqlite from the files (creating it, or replacing a corrupt or outdated one).

        Also removes stray temp files older than tmp_max_age_s (left by writers killed mid-write).
        """
        removed = self._clean_tmp(tmp_max_age_s)
        parsed, problems = [], []
        for run_id, (path, st) in self._scan().items():
            row, problem = self._parse(run_id, path)
            if problem is not None:
                problems.append(Problem(path, problem))
            else:
                parsed.append((row, _stamp(st)))
        with self._connection() as con:
            con.execute("BEGIN IMMEDIATE")
            try:
                con.execute("DELETE FROM runs")
                self._upsert(con, parsed)
                con.execute("COMMIT")
            except BaseException:
                con.execute("ROLLBACK")
                raise
        return RebuildReport(indexed=len(parsed), problems=problems, removed_tmp=removed)

    def _clean_tmp(self, max_age_s: float) -> list[Path]:
        removed = []
        if not self.runs_dir.is_dir():
            return removed
        now = time.time()
        for tmp in self.runs_dir.glob(".*.tmp"):
            try:
                if now - tmp.stat().st_mtime >= max_age_s:
                    tmp.unlink()
                    removed.append(tmp)
            except FileNotFoundError:
                pass
        return removed

    @contextlib.contextmanager
    def _init_lock(self) -> Iterator[None]:
        self.root.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.root / ".index.lock", os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)

    def _open(self) -> sqlite3.Connection:
        if not self.index_path.exists():
            # A -wal left beside a deleted database would be replayed into the new one: drop it.
            for suffix in ("-wal", "-shm"):
                Path(f"{self.index_path}{suffix}").unlink(missing_ok=True)
        con = sqlite3.connect(self.index_path, timeout=BUSY_TIMEOUT_S, isolation_level=None)
        try:
            con.execute(f"PRAGMA busy_timeout = {int(BUSY_TIMEOUT_S * 1000)}")
            con.execute("PRAGMA journal_mode = WAL")
            con.execute("PRAGMA synchronous = NORMAL")
            if con.execute("PRAGMA user_version").fetchone()[0] != INDEX_VERSION:
                con.execute("BEGIN IMMEDIATE")
                try:
                    if con.execute("PRAGMA user_version").fetchone()[0] != INDEX_VERSION:
                        con.execute("DROP TABLE IF EXISTS runs")
                        for statement in _CREATE:
                            con.execute(statement)
                        con.execute(f"PRAGMA user_version = {INDEX_VERSION}")
                    con.execute("COMMIT")
                except BaseException:
                    if con.in_transaction:
                        con.execute("ROLLBACK")
                    raise
        except BaseException:
            con.close()
            raise
        return con

    @contextlib.contextmanager
    def _connection(self) -> Iterator[sqlite3.Connection]:
        with self._init_lock():
            try:
                con = self._open()
            except sqlite3.DatabaseError as e:
                if not _is_corrupt(e):
                    raise
                log.warning("index %s is corrupt (%s): recreating it from the files", self.index_path, e)
                self._drop_index_files()
                con = self._open()
        try:
            yield con
        finally:
            con.close()

    def _drop_index_files(self) -> None:
        for suffix in ("", "-wal", "-shm"):
            Path(f"{self.index_path}{suffix}").unlink(missing_ok=True)

    @staticmethod
    def _upsert(con: sqlite3.Connection, rows: list[tuple[Row, tuple[int, int, int]]]) -> None:
        marks = ", ".join("?" for _ in _COLUMNS)
        con.executemany(f"INSERT OR REPLACE INTO runs ({', '.join(_COLUMNS)}) VALUES ({marks})",
                        [_db_value(r, s) for r, s in rows])

    def _row_from_db(self, values: sqlite3.Row | tuple[Any, ...]) -> tuple[Row, tuple[int, int, int]]:
        d = dict(zip(_COLUMNS, values))
        seed = d["seed"]
        row = Row(run_id=d["run_id"], created_at=d["created_at"], benchmark=d["benchmark"],
                  submission_sha256=d["submission_sha256"], description=d["description"], status=d["status"],
                  trust=d["trust"], val_bpb=d["val_bpb"], gpu_class=d["gpu_class"], flags=json.loads(d["flags"]),
                  seed=None if seed is None else int(seed), backend=d["backend"], decision=d["decision"],
                  path=self.path_for(d["run_id"]), reason=d["reason"], fingerprint=d["fingerprint"])
        return row, (d["file_ino"], d["file_mtime_ns"], d["file_size"])

    # -- files --

    def _scan(self) -> dict[str, tuple[Path, os.stat_result]]:
        """The record files now present: run_id -> (path, stat). Temp files are never seen."""
        out: dict[str, tuple[Path, os.stat_result]] = {}
        if not self.runs_dir.is_dir():
            return out
        with os.scandir(self.runs_dir) as it:
            for entry in it:
                if entry.name.startswith(".") or not entry.name.endswith(".json"):
                    continue
                try:
                    if entry.is_file():
                        out[entry.name[:-len(".json")]] = (Path(entry.path), entry.stat())
                except FileNotFoundError:
                    pass
        return out

    @staticmethod
    def _load(path: Path) -> tuple[dict[str, Any] | None, str | None]:
        try:
            text = path.read_text()
        except FileNotFoundError:
            return None, "the file disappeared"
        except (OSError, UnicodeDecodeError) as e:
            return None, f"cannot read: {e}"
        try:
            doc = json.loads(text)
        except json.JSONDecodeError as e:
            return None, f"not valid JSON ({e})" if text.strip() else "empty file"
        try:
            doc = current_record(doc)
        except RecordError as e:
            return None, f"not a valid result record: {e}"
        if path.stem != doc["run_id"]:
            return None, f"holds run {doc['run_id']!r}, but the file is named for {path.stem!r}"
        return doc, None

    def _parse(self, run_id: str, path: Path) -> tuple[Row | None, str | None]:
        doc, problem = self._load(path)
        if problem is not None:
            return None, problem
        return row_of(doc, path), None

    def _all_rows(self) -> tuple[list[Row], list[Problem]]:
        """Every readable record's row, the index brought up to date with the files on the way."""
        try:
            return self._reconcile()
        except (sqlite3.Error, OSError, OverflowError, ValueError) as e:
            log.warning("index %s unusable (%s: %s): reading the files directly", self.index_path,
                        type(e).__name__, e)
        rows, problems = [], []
        for run_id, (path, _st) in self._scan().items():
            row, problem = self._parse(run_id, path)
            if problem is not None:
                problems.append(Problem(path, problem))
            else:
                rows.append(row)
        return rows, problems

    def _reconcile(self) -> tuple[list[Row], list[Problem]]:
        if not self.runs_dir.is_dir() and not self.index_path.exists():
            return [], []
        with self._connection() as con:
            try:
                indexed = dict(
                    (row.run_id, (row, stamp))
                    for row, stamp in map(self._row_from_db, con.execute(f"SELECT {', '.join(_COLUMNS)} FROM runs")))
            except sqlite3.DatabaseError as e:
                if _is_corrupt(e):
                    self._drop_index_files()
                raise
            files = self._scan()  # after reading the index: a row without a file is a deleted file
            rows, problems, fresh, stale = [], [], [], []
            for run_id, (path, st) in files.items():
                known = indexed.get(run_id)
                if known is not None and known[1] == _stamp(st):
                    rows.append(known[0])
                    continue
                row, problem = self._parse(run_id, path)
                if problem is not None:
                    problems.append(Problem(path, problem))
                    if known is not None:
                        stale.append(run_id)
                else:
                    rows.append(row)
                    fresh.append((row, _stamp(st)))
            stale += [run_id for run_id in indexed if run_id not in files]
            if fresh or stale:
                try:
                    con.execute("BEGIN IMMEDIATE")
                    try:
                        self._upsert(con, fresh)
                        con.executemany("DELETE FROM runs WHERE run_id = ?", [(r,) for r in stale])
                        con.execute("COMMIT")
                    except BaseException:
                        con.execute("ROLLBACK")
                        raise
                except sqlite3.Error as e:  # the listing is right regardless; the index catches up next time
                    log.warning("could not update index %s (%s)", self.index_path, e)
        problems.sort(key=lambda p: str(p.path))
        return rows, problems

