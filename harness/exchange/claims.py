"""`harness rescore-claims`: score another lab's exported models here, with this lab's verified evaluator on
this lab's val data, and say whether each claimed val_bpb holds.

A claim is `confirmed` when the local score is within the tolerance of the claimed one, else `disputed`
with both numbers (a model that fails here, the causality probe say, is disputed with the reason). Only a
run whose benchmark fingerprint is this lab's can be re-scored: another fingerprint means other val data,
fixed code or settings, and the two numbers would not measure the same thing.

The evaluation runs in a folder of its own under RESULTS/labs/LAB/rescored/RUN_ID/ (its logs stay there as
evidence), on the image this lab would use for a run of its own, never one a foreign record names.
"""

from __future__ import annotations

import shutil
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from harness import contract, paths
from harness.benchmarks import get_benchmark
from harness.data import cache_info
from harness.exchange.labs import LabStore, find_lab
from harness.fingerprint import local_fingerprint
from harness.record import RunRecord

# Two evaluations of one exported model on the same val data agree to float rounding on one device; across
# devices (CPU and GPU kernels, bf16) they differ by up to ~1e-3 bpb. Beyond this a claim is disputed.
DEFAULT_TOLERANCE = 2e-3


class ClaimError(RuntimeError):
    """A claim that cannot be checked here (no model, another fingerprint); the message says why."""


@dataclass
class Claim:
    lab: str
    run_id: str
    status: str  # confirmed | disputed | unchecked
    claimed: float | None
    local: float | None
    delta: float | None
    tolerance: float
    reason: str | None
    checked_at: str
    evidence: str | None = None  # the folder with the local evaluation's logs

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _scratch_run(store: LabStore, record: dict[str, Any]) -> Path:
    """A run folder the rescore stage can use: the train.py and the exported model (the record is passed)."""
    run_id = record["run_id"]
    models = store.model_dir(run_id)
    if not (models / contract.OUT_MODEL).is_file() or not (models / contract.OUT_EXPORT_INFO).is_file():
        raise ClaimError(f"run {run_id}: its bundle had no model (export with --with-models to have it re-scored)")
    run_dir = store.root / "rescored" / run_id
    shutil.rmtree(run_dir, ignore_errors=True)
    (run_dir / contract.RUN_OUT).mkdir(parents=True)
    for name in (contract.OUT_MODEL, contract.OUT_EXPORT_INFO):
        shutil.copyfile(models / name, run_dir / contract.RUN_OUT / name)
    source = store.source(record["provenance"]["submission"]["sha256"])
    shutil.copyfile(source, run_dir / contract.RUN_TRAIN_PY)
    return run_dir


def check_claim(results_dir: Path, lab: str, run_id: str, *, backend_name: str = "auto", runtime: str | None = None,
                tolerance: float = DEFAULT_TOLERANCE) -> Claim:
    """Re-score one imported run's model here and record the verdict in the lab's ledger."""
    from harness.pipeline.backend import backend_and_hardware
    from harness.pipeline.rescore import rescore

    store = find_lab(results_dir, lab)
    record = store.existing(run_id) if store else None
    if store is None or record is None or "unreadable" in record:
        raise ClaimError(f"no imported run {run_id} of lab {lab!r} in {results_dir}")
    bench = get_benchmark(record["provenance"]["benchmark"]["name"])
    theirs = record["provenance"]["benchmark"].get("fingerprint")
    mine = local_fingerprint(bench)
    if theirs != mine:
        raise ClaimError(f"run {run_id}: its benchmark fingerprint is not this lab's: a score here would measure "
                         "other data or settings (see harness import's incomparable label)")
    claimed = record["metrics"].get("val_bpb")
    run_dir = _scratch_run(store, record)
    backend, hw = backend_and_hardware(backend_name, None, runtime, bench)  # this lab's image and GPU
    new = rescore(run_dir, bench, backend, cache_info(bench).data_dir, paths.fixed_dir(), gpu_uuids=hw.gpu_uuids,
                  record=RunRecord.from_dict(record))
    now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    if new.status in ("infra_error", "aborted"):
        raise ClaimError(f"run {run_id}: the evaluator did not run here: {new.reason}")
    local = new.val_bpb if new.status == "ok" else None
    if local is None or claimed is None:
        claim = Claim(lab, run_id, "disputed", claimed, local, None, tolerance,
                      f"scored {new.status} here: {new.reason}", now, str(run_dir))
    else:
        delta = local - claimed
        ok = abs(delta) <= tolerance
        claim = Claim(lab, run_id, "confirmed" if ok else "disputed", claimed, local, delta, tolerance,
                      None if ok else f"claimed {claimed:.6f}, scored {local:.6f} here (Δ {delta:+.6f}, "
                                      f"tolerance {tolerance:g})", now, str(run_dir))
    store.set_claim(run_id, claim.to_dict())
    return claim


def claims_of(results_dir: Path, lab: str) -> list[str]:
    """The imported runs of a lab whose bundle carried a model."""
    store = find_lab(results_dir, lab)
    return sorted(r for r in store.runs() if (store.model_dir(r) / contract.OUT_MODEL).is_file()) if store else []
