"""A candidate refused before any run (missing, binary, not UTF-8, too large, invalid to `harness validate`)
still gets a record: status invalid, the reason, and what it was, written once like every record."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from harness import contract, paths
from harness.benchmarks import Benchmark
from harness.data import CacheInfo
from harness.pipeline.finish import write_record
from harness.pipeline.request import new_run_id
from harness.provenance import build_provenance
from harness.record import Outcome, RunRecord, SubmissionDecision, Timings

REFUSED_BACKEND = "refused"  # no backend ran it


def refuse(content: bytes, reason: str, bench: Benchmark, cache: CacheInfo, *, runs_dir: Path | None,
           results_dir: Path | None, description: str = "", origin: dict[str, Any] | None = None) -> RunRecord:
    run_dir = Path(runs_dir or paths.runs_dir()) / new_run_id()
    run_dir.mkdir(parents=True)
    train_py = run_dir / contract.RUN_TRAIN_PY
    train_py.write_bytes(content)
    log = run_dir / contract.RUN_LOG
    log.write_text(f"[harness] refused before any run: {reason}\n")
    prov = build_provenance(train_py=train_py, description=description, bench=bench, cache=cache, seed=0,
                            backend=REFUSED_BACKEND, image=None, fixed_dir=paths.fixed_dir())
    if origin:
        prov["submission"]["git"] = dict(origin)
    now = time.time()
    outcome = Outcome(status="invalid", reason=reason, backend=REFUSED_BACKEND, isolated=False, log_path=str(log),
                      timings=Timings(now, None, now, None, None, None, 0.0))
    record = RunRecord(run_id=run_dir.name, budget_s=bench.time_budget_s, hard_timeout_s=bench.hard_timeout_s,
                       outcome=outcome, provenance=prov)
    return write_record(record, results_dir, store=True,
                        decision=SubmissionDecision(label="discard", reason=reason, seeds=0))
