"""Score a finished verified run again from its exported model, with today's fixed evaluator
(`harness score`): the evaluate and judge stages once more, on the run's own backend kind and image."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

from harness import contract, paths
from harness.backends.base import Backend, RunRequest
from harness.benchmarks import Benchmark, get_benchmark
from harness.data import cache_info
import harness.pipeline.finish as finish
import harness.pipeline.judge as judge
from harness.pipeline.backend import backend_and_hardware
from harness.pipeline.evaluate import export_info, run_evaluator
from harness.record import RecordError, RunRecord


class RescoreError(RuntimeError):
    """The run folder cannot be re-scored."""


def read_record(run_dir: Path) -> RunRecord:
    """The run's record as the store would read it: migrated, checked against the schema, trust re-derived."""
    from harness.store import RecordError as InvalidRecord, current_record

    try:
        return RunRecord.from_dict(current_record(json.loads((Path(run_dir) / contract.RUN_RESULT).read_text())))
    except (OSError, ValueError, RecordError, InvalidRecord) as e:
        raise RescoreError(f"{run_dir}: no readable {contract.RUN_RESULT} ({e})") from None


def rescore(run_dir: Path, bench: Benchmark, backend: Backend, data_dir: Path, fixed_dir: Path,
            gpu_uuids: list[str] | None = None, record: RunRecord | None = None) -> RunRecord:
    """The run's record with a fresh verdict of the fixed evaluator (not written: see rescore_run).
    gpu_uuids: the GPU to evaluate on (default: the one the run recorded; another lab's run: this lab's).
    record: the run's record when it is not the folder's result.json (an imported run's, for a claim)."""
    run_dir = Path(run_dir)
    record = record or read_record(run_dir)
    export = export_info(run_dir)
    if export is None:
        raise RescoreError(f"{run_dir}: no exported model (out/export.json): only verified runs can be re-scored")
    # Only a run whose training ended ok was (or should have been) decided by the evaluator.
    if record.evaluation is None or record.evaluation.training_status != "ok":
        raise RescoreError(f"{run_dir}: the run ended with status {record.status} ({record.reason}): nothing to score")
    gpu = (record.hardware.machine or {}).get("gpu") or {}
    train = RunRequest(run_id=record.run_id, train_py=run_dir / contract.RUN_TRAIN_PY, benchmark=bench,
                       data_dir=data_dir, fixed_dir=fixed_dir, run_dir=run_dir,
                       env={contract.ENV_BENCHMARK: bench.name, contract.ENV_DATA_DIR: str(data_dir),
                            contract.ENV_SEED: str(record.seed), contract.ENV_OUT_DIR: str(run_dir / contract.RUN_OUT)},
                       gpu_uuids=gpu_uuids if gpu_uuids is not None else ([gpu["uuid"]] if gpu.get("uuid") else []))
    # Back to where training left it: ok, with the score train.py printed (reported, never counted).
    metrics = {**record.metrics, "val_bpb": record.metrics.get("reported_val_bpb")}
    trained = replace(record.outcome, status="ok", reason=None, metrics=metrics)
    verdict = run_evaluator(train, bench, backend) if export.ok else None
    outcome, evaluation = judge.judge_verified(trained, export, verdict, rescored=True)
    # judge_verified starts from the training figures: the measured ones the record had stay.
    outcome = replace(outcome, metrics={**record.metrics, "val_bpb": outcome.metrics.get("val_bpb")})
    # The floor of the data just scored on (this machine's cache), never the one a record states: an
    # imported record is another lab's text, and a floor edited down in it would let a leaking model pass.
    floor = cache_info(bench, data_dir, verify=False).stats.get("entropy_floor_bpb")
    outcome = judge.check_floor(outcome, floor)
    return replace(record, outcome=outcome, evaluation=evaluation)


def rescore_run(run_dir: Path, backend_name: str = "auto", runtime: str | None = None,
                results_dir: Path | None = None) -> RunRecord:
    """`harness score`: re-score with the image the run used, under the runtime it recorded (or the one
    asked for), and write the record once more (result.json and the store). A re-score that could not
    run (infra_error, aborted) raises and leaves the record as it was."""
    record = read_record(run_dir)
    bench = get_benchmark(record.provenance["benchmark"]["name"])
    # The image the run used (a GPU run's exported program needs the CUDA image), on the GPU it used.
    image = (record.provenance.get("image") or {}).get("tag")
    gpu = ((record.hardware.machine or {}).get("gpu") or {}).get("uuid")
    recorded = (record.provenance.get("runtime") or {}).get("name")
    runtime = runtime or (None if recorded == "runc" else recorded)  # runc: the daemon's default, as it was
    backend, _hw = backend_and_hardware(backend_name, image, runtime, bench, gpu)
    new = rescore(run_dir, bench, backend, cache_info(bench).data_dir, paths.fixed_dir())
    if new.status in ("infra_error", "aborted"):  # the evaluator never ran: keep the record as it was
        raise RescoreError(f"re-scoring did not run: {new.reason}")
    return finish.write_record(new, results_dir, store=True)
