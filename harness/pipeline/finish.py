"""Stage 6, the record: written once, at the end, by this module alone: run_dir/result.json (atomically),
the store when the run belongs to one, and the journal is ended. A run of a multi-seed submission is
held (its finished record kept in its journal, so nothing is lost if the harness dies) until the
submission's decision is known, then written once with it."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from harness import contract, journal
from harness.atomic import write_json_atomic
from harness.record import SubmissionDecision, RunRecord


def run_dir_of(record: RunRecord) -> Path:
    return Path(record.log_path).parent


def hold(record: RunRecord) -> None:
    """Finished, waiting for the decision: recoverable with its real status meanwhile."""
    journal.hold(run_dir_of(record), record.to_dict())


def write_record(record: RunRecord, results_dir: Path | None = None, store: bool = False,
                 decision: SubmissionDecision | None = None) -> RunRecord:
    """The one writer of a run's record. store: also put it in the result store at results_dir (or the
    default store when results_dir is None). Returns the record as written."""
    if decision is not None:
        record = replace(record, decision=decision)
    run_dir = run_dir_of(record)
    doc = record.to_dict()
    if store:  # the store first: should this process die before result.json, recovery writes both again
        from harness.store import ResultStore

        ResultStore(results_dir).put(doc)
    write_json_atomic(run_dir / contract.RUN_RESULT, doc)
    journal.end(run_dir)
    return record
