"""The run journal: a run whose harness died (kill -9, a lost node, a closed laptop) still gets its record.

When a run starts, the pipeline writes run_dir/journal.json: who is running it (host, pid and that
process's start time, so a reused pid is not mistaken for it) and the record to keep if it never
finishes (status `aborted`). A run of a multi-seed submission that has finished but waits for the
submission's decision is held: its finished record replaces the provisional one (`hold`). When the
record is written (once, at the end), the journal is removed.

The next harness command (or `harness janitor`) calls recover(): every journal whose harness is gone
becomes result.json (and a store record, when the run belonged to a store), and the run's leftover
containers are removed. Journals of runs on another host are left alone: only that host can tell.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harness import contract
from harness.record import UNDECIDED
from harness.atomic import write_json_atomic

JOURNAL = contract.RUN_JOURNAL
log = logging.getLogger(__name__)


def _proc_start(pid: int) -> str | None:
    """The process's start time in clock ticks since boot (/proc/PID/stat field 22), None if it is gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rsplit(")", 1)[1].split()[19]  # fields after "(comm)": state is field 3, starttime 22


def _me() -> dict[str, Any]:
    pid = os.getpid()
    return {"host": socket.gethostname(), "pid": pid, "proc_start": _proc_start(pid)}


def begin(run_dir: Path, provisional: dict[str, Any], results_dir: Path | None) -> Path:
    """Write the journal of a starting run: its owner and the record to keep if the owner dies."""
    doc = {**_me(), "written_at": time.time(), "results_dir": str(results_dir) if results_dir else None,
           "record": provisional}
    path = Path(run_dir) / JOURNAL
    write_json_atomic(path, doc)
    return path


def hold(run_dir: Path, record: dict[str, Any]) -> None:
    """The run has finished; its record waits for the submission's decision. Should the harness die
    first, recovery writes this record (its real status and score), not an aborted one."""
    path = Path(run_dir) / JOURNAL
    try:
        doc = json.loads(path.read_text())
    except (OSError, ValueError):
        doc = {**_me(), "written_at": time.time(), "results_dir": None}
    write_json_atomic(path, {**doc, "record": record, "finished": True})


def end(run_dir: Path) -> None:
    """The run's record is written: the journal is done."""
    try:
        (Path(run_dir) / JOURNAL).unlink()
    except FileNotFoundError:
        pass


def owner_alive(doc: dict[str, Any]) -> bool | None:
    """True or False on this host; None when the journal belongs to another host."""
    if doc.get("host") != socket.gethostname():
        return None
    pid = doc.get("pid")
    if not isinstance(pid, int):
        return False
    start = _proc_start(pid)
    return start is not None and start == doc.get("proc_start")


@dataclass
class Recovered:
    run_id: str
    run_dir: Path
    reason: str
    status: str = "aborted"  # the status it was recorded with (a held run keeps its own)


def recover(runs_dir: Path, remove_containers: bool = True) -> list[Recovered]:
    """Record every run of runs_dir whose harness died: result.json (status aborted, with why), the store
    record, the leftover containers removed. Returns what it recorded."""
    out: list[Recovered] = []
    for path in sorted(Path(runs_dir).glob(f"*/{JOURNAL}")):
        run_dir = path.parent
        try:
            doc = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        if not isinstance(doc, dict) or owner_alive(doc) is not False:
            continue
        if (run_dir / contract.RUN_RESULT).exists():  # it died after writing its record: only the journal is left
            try:
                _keep(run_dir, doc, json.loads((run_dir / contract.RUN_RESULT).read_text()), write=False)
            except (OSError, ValueError):
                end(run_dir)
            continue
        record = dict(doc.get("record") or {})
        if not record.get("run_id"):
            continue
        died = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        if doc.get("finished"):  # the run itself had ended: its record stands, without a decision
            reason = (f"the harness process (pid {doc.get('pid')} on {doc.get('host')}) died before the "
                      f"submission's decision; the run's own record was kept by a later harness command at {died}")
            # Never decided: flagged, so that one lucky seed of a cut-short submission reaches no leaderboard.
            record["flags"] = sorted(set(record.get("flags") or []) | {UNDECIDED})
            _keep(run_dir, doc, record)
            out.append(Recovered(record["run_id"], run_dir, reason, str(record.get("status"))))
            continue
        reason = (f"the harness process (pid {doc.get('pid')} on {doc.get('host')}) died during the run; "
                  f"recorded by a later harness command at {died}")
        record["reason"] = reason
        # When it died is unknown: its last sign of life (the latest write in its folder) stands for the end.
        record["timings"] = {**record.get("timings", {}), "ended_at": last_sign_of_life(run_dir)}
        record["timings"]["total_s"] = max(0.0, record["timings"]["ended_at"] - record["timings"]["started_at"])
        _keep(run_dir, doc, record)
        if remove_containers:
            _remove_containers(record["run_id"])
        out.append(Recovered(record["run_id"], run_dir, reason))
    return out


def _keep(run_dir: Path, doc: dict[str, Any], record: dict[str, Any], write: bool = True) -> None:
    """Write the record (result.json unless it is there already, and the store the run belonged to), then
    end the journal. A record the store refuses stays in result.json: `harness results` reads only the
    store, so the refusal is logged."""
    if write:
        write_json_atomic(run_dir / contract.RUN_RESULT, record)
    if doc.get("results_dir"):
        from harness.store import ResultStore

        try:
            ResultStore(doc["results_dir"]).put(record)
        except Exception as e:  # noqa: BLE001 - result.json holds it; one bad record must not stop recovery
            log.warning("run %s: the store %s refused its record (%s); it is in %s", record.get("run_id"),
                        doc["results_dir"], e, run_dir / contract.RUN_RESULT)
    end(run_dir)


def last_sign_of_life(run_dir: Path) -> float:
    """The latest modification time of anything in the run's folder (its log grows while it runs)."""
    latest = 0.0
    for p in [run_dir, *run_dir.rglob("*")]:
        try:
            latest = max(latest, p.lstat().st_mtime)
        except OSError:
            pass
    return latest or time.time()


def _remove_containers(run_id: str) -> None:
    try:
        from harness.backends.docker import client, janitor
    except ImportError:
        return
    if not client.docker_available(timeout=2):
        return
    for rid in (run_id, f"{run_id}-eval", f"{run_id}-model-a", f"{run_id}-model-b"):
        try:
            janitor(run_id=rid)
        except Exception:  # noqa: BLE001 - best effort: `harness janitor` removes the rest
            pass
