"""Several runs of one candidate with fresh harness-chosen seeds (submit, baseline, noise), on one device,
verified unless asked not; with the one fallback for a model that could not be exported: one
self-reported run, which never counts toward a verified decision. The runs are held (not yet written)
until the caller's decision: see harness/pipeline/finish.py."""

from __future__ import annotations

import dataclasses
import functools
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harness import contract, journal, paths
from harness.data import cache_info
from harness.backends.base import Backend
from harness.hw.context import HardwareContext
from harness.pipeline.backend import backend_and_hardware, hooks, is_remote
from harness.pipeline.finish import run_dir_of, write_record
from harness.pipeline.judge import compat_evaluation
from harness.pipeline.once import execute_run
from harness.pipeline.remote import seeds_remote
from harness.pipeline.request import Event, RunOptions, decide_budget
from harness.pool.parallel import DevicePool
from harness.pool.slots import Slot
from harness.record import COMPAT, SEEDS_FAILED, RunRecord, SubmissionDecision
from harness.sanitize import clean_text
from harness.store import ResultStore


@dataclass
class SeedOptions:
    """What a multi-seed command (submit, baseline, noise) asks of the pipeline."""
    benchmark: Any
    seeds: int | None = None  # None: the benchmark's significance.seeds
    description: str = ""
    backend: str = "auto"
    verified: bool = True  # False: compatibility mode (val mounted, train.py's own score, self-reported)
    budget_s: float | None = None
    results_dir: Path | None = None
    baselines_path: Path | None = None
    runs_dir: Path | None = None
    gpu: str | None = None
    calibrate: bool = True
    nvml_module: Any = None
    runtime: str | None = None  # the docker backend's OCI runtime (runsc: gVisor); None: the benchmark's
    origin: dict[str, Any] | None = None  # where the candidate came from (harness ci: repo, branch, commit ...)
    budget_plan: Any = None  # decided once for many candidates (a pool's, before any run starts); None: per candidate


def seed_backend(opts: SeedOptions, pool: DevicePool | None = None,
                 backend: Backend | None = None) -> tuple[Backend, HardwareContext | None]:
    """The backend a candidate's seeds run on and the hardware they get, decided once for all of them: a
    pool's class (every member is of one, harness/pool/slots.py), else probed by the backend where its runs
    happen; None for a remote backend, whose jobs probe their own nodes."""
    hw = pool.plan.slots[0].hardware if pool is not None else None
    if backend is None:  # the run image follows the hardware (CUDA for a GPU)
        return backend_and_hardware(opts.backend, None, opts.runtime, opts.benchmark, opts.gpu, opts.nvml_module, hw)
    if hw is None and not is_remote(backend):
        hw = hooks(backend).probe_hardware(opts.gpu, opts.nvml_module)
    return backend, hw


def run_seeds(train_py: Path, opts: SeedOptions, n: int, on_event: Event = lambda _k, _v: None,
              hw: HardwareContext | None = None, backend: Backend | None = None,
              pool: DevicePool | None = None) -> list[RunRecord]:
    """n runs of one candidate with fresh harness-chosen seeds, held until the caller decides.

    pool: run the seeds at once, each on a free member of the pool (harness/pool/), instead of one after
    another on the device `hw`."""
    bench = opts.benchmark
    cache = cache_info(bench)
    if backend is None or hw is None:
        backend, hw = seed_backend(opts, pool, backend)
    if is_remote(backend):  # every seed a job of one batch, run and recorded where it runs
        return seeds_remote(train_py, opts, n, backend, on_event)
    baselines_path = Path(opts.baselines_path or paths.baselines_file())
    store = ResultStore(opts.results_dir)
    if opts.runs_dir is not None:  # the CLI recovers the default runs folder; one given here is recovered here
        journal.recover(Path(opts.runs_dir))
    records: list[RunRecord] = []
    try:
        _seed_loop(train_py, opts, n, on_event, hw, backend, cache, baselines_path, store, records, pool)
    except BaseException as e:  # whatever stops the loop, the finished runs get their records
        salvage(records, store.root, f"the submission stopped before its decision ({type(e).__name__}: {e})")
        raise
    return records


def _seed_loop(train_py: Path, opts: SeedOptions, n: int, on_event: Event, hw: HardwareContext, backend: Backend,
               cache: Any, baselines_path: Path, store: ResultStore, records: list[RunRecord],
               pool: DevicePool | None) -> None:
    bench = opts.benchmark
    # One budget for every seed (a class without a table peak is calibrated once, not per seed), decided
    # before any seed runs, so a calibration never shares the machine with this submission's own runs.
    plan = opts.budget_plan or decide_budget(RunOptions(benchmark=bench, budget_s=opts.budget_s,
                                                        calibrate=opts.calibrate), hw)
    base = RunOptions(benchmark=bench, backend=backend.name, budget_s=opts.budget_s,
                      description=clean_text(opts.description).strip(), runs_dir=opts.runs_dir, hardware=hw,
                      calibrate=opts.calibrate, baselines_path=baselines_path, verified=opts.verified,
                      nvml_module=opts.nvml_module, results_dir=store.root, origin=opts.origin, budget_plan=plan)
    stop = threading.Event()  # the candidate proved unexportable: no further seed is worth running

    def one(i: int, run_opts: RunOptions) -> RunRecord | None:
        if stop.is_set():
            return None
        on_event("seed", {"index": i + 1, "of": n})
        record = execute_run(train_py, run_opts, on_event=on_event, cache=cache, backend=backend, write=False)
        export = record.evaluation.export if record.evaluation else None
        if opts.verified and record.status == "ok" and export is not None and not export.ok:
            # The model could not be exported: score it the autoresearch way, labelled self-reported.
            on_event("fallback", {"run_id": record.run_id, "error": export.error})
            compat = RunOptions(**{**run_opts.__dict__, "verified": False, "seed": record.seed})
            fallback = compat_evaluation("export failed; train.py's own score, self-reported", export)
            finish_unscored(record)
            record = execute_run(train_py, compat, on_event=on_event, cache=cache, backend=backend, write=False,
                                 evaluation=fallback)
        records.append(record)
        if record.evaluation is not None and record.evaluation.mode == COMPAT and opts.verified:
            stop.set()  # unexportable: every seed would be too, and a self-reported score never counts
        return record

    if pool is not None:  # at once, each seed on a member of the pool; decided after all are in
        pool.map([functools.partial(_on_member, one, i, base, pool) for i in range(n)])
        return
    for i in range(n):
        record = one(i, base)
        if record is None or record.status == "aborted":  # Ctrl-C or SIGTERM ends the submission, not one seed
            break


def _on_member(one: Any, i: int, base: RunOptions, pool: DevicePool, slot: Slot) -> RunRecord | None:
    """One seed on the pool member `slot`: its device, its CPUs, and the pool's stop for Ctrl-C."""
    return one(i, dataclasses.replace(base, hardware=slot.hardware, cpuset=slot.cpuset,
                                      shared_host=pool.plan.shared_host, abort=pool.stop, leased=True))


def pool_budget(opts: SeedOptions, pool: DevicePool) -> SeedOptions:
    """opts with the budget decided once for every candidate of a pool, before any of them runs: a class
    without a table peak is calibrated on an idle machine, not beside the pool's runs."""
    plan = decide_budget(RunOptions(benchmark=opts.benchmark, budget_s=opts.budget_s, calibrate=opts.calibrate),
                         pool.plan.slots[0].hardware)
    return dataclasses.replace(opts, budget_plan=plan)


def salvage(records: list[RunRecord], results_dir: Path | None, why: str) -> None:
    """Write the record of every run still held (its journal open) of a submission that stopped before its
    decision: decision `aborted`, and its scored runs flagged seeds_failed (a cut-short submission's lucky
    seed reaches no leaderboard). Runs already written keep their records. Never raises: the journal still
    holds what could not be written, for the next harness command."""
    decision = SubmissionDecision(label="aborted", reason=why, seeds=len(records))
    for r in records:
        if not (run_dir_of(r) / contract.RUN_JOURNAL).exists():
            continue
        if r.status == "ok":
            r = r.with_outcome(flags=(*r.flags, SEEDS_FAILED))
        try:
            write_record(r, results_dir, store=True, decision=decision)
        except Exception:  # noqa: BLE001 - recovery picks it up from its journal
            pass


def finish_unscored(record: RunRecord) -> None:
    """The verified run whose export failed is replaced by its compat run: its folder keeps its record."""
    write_record(record)


def scored_by_fixed_code(record: RunRecord) -> bool:
    """An ok run whose score the fixed evaluator computed (not train.py's own print): the same test trust
    makes (harness.record.Evaluation.scored)."""
    return (record.status == "ok" and record.val_bpb is not None and record.evaluation is not None
            and record.evaluation.scored)
