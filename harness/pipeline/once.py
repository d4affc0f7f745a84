"""One run of one candidate, through every stage in order: request -> train -> evaluate -> judge ->
hardware and normalization -> record. Whatever happens (a crash, a timeout, Ctrl-C) the run gets a record
with its status."""

from __future__ import annotations

import socket
from dataclasses import replace
from pathlib import Path
from typing import Any

from harness.backends.base import Backend, ProcessOutcome
from harness.hw.context import HardwareContext
from harness.data import CacheInfo, cache_info
import harness.pipeline.finish as finish
import harness.pipeline.judge as judge
from harness import contract
from harness.pipeline.backend import backend_and_hardware, hooks, is_remote
from harness.pipeline.remote import remote_run, run_remote
from harness.pool.parallel import run_lease
from harness.pipeline.evaluate import export_info, run_evaluator
from harness.pipeline.hardware import hardware_part, normalization
from harness.pipeline.request import Event, RunError, RunOptions, prepare_request
from harness.pipeline.train import train
from harness.provenance import build_provenance
from harness.record import SHARED_HOST, Evaluation, RunRecord


def placement(po: ProcessOutcome, opts: RunOptions, hw: HardwareContext) -> dict[str, Any]:
    """Where the run executed: the backend's node and job (a remote backend), else this host and the
    scheduler's job this harness runs in (a Slurm job running the pipeline on its node)."""
    sched = opts.scheduler or {}
    return {"node": po.node or socket.gethostname(), "scheduler": po.backend if po.job_id else sched.get("name"),
            "job_id": po.job_id or sched.get("job_id"), "gpu_uuid": hw.gpu.uuid if hw.gpu else None,
            "cpuset": opts.cpuset, "shared_host": opts.shared_host}


def execute_run(train_py: Path, opts: RunOptions, on_event: Event = lambda _k, _v: None,
                cache: CacheInfo | None = None, backend: Backend | None = None, write: bool = True,
                evaluation: Evaluation | None = None) -> RunRecord:
    """Run train.py once on opts.benchmark and return its record.

    write: write the record now (run_dir/result.json; the store too when opts.results_dir is set). A
    multi-seed submission passes False: each run is held until the decision, then written once.
    evaluation: how a compat run is labelled (harness/pipeline/seeds.py's export fallback says why).
    """
    bench = opts.benchmark
    train_py = Path(train_py)
    if not train_py.is_file():
        raise RunError(f"{train_py}: no such file")
    cache = cache or cache_info(bench, opts.data_dir)
    hw = None
    if backend is None:
        backend, hw = backend_and_hardware(opts.backend, opts.image, opts.runtime, bench, opts.gpu, opts.nvml_module,
                                           opts.hardware)
    if is_remote(backend):  # the whole pipeline runs where the run happens (a Slurm job on its node)
        held = run_remote(backend, [remote_run(train_py, opts)], on_event)
        if not held:
            raise RunError("the remote run returned no record")
        return finish.write_record(held[0], opts.results_dir, store=opts.results_dir is not None) if write else held[0]
    if hw is None:  # probed by the backend, where its runs happen
        hw = opts.hardware or hooks(backend).probe_hardware(opts.gpu, opts.nvml_module)
    if opts.leased:  # a pool's member: its lease is held already
        return _execute(train_py, opts, on_event, cache, backend, hw, write, evaluation)
    # Its device's lease (harness/pool/): no other harness process of this machine runs on it meanwhile.
    with run_lease(hw, opts.cpuset, lambda msg: on_event("note", msg), opts.abort):
        return _execute(train_py, opts, on_event, cache, backend, hw, write, evaluation)


def _execute(train_py: Path, opts: RunOptions, on_event: Event, cache: CacheInfo, backend: Backend,
             hw: HardwareContext, write: bool, evaluation: Evaluation | None) -> RunRecord:
    bench = opts.benchmark
    p = prepare_request(train_py, opts, cache, hw, backend)                       # 1. request
    on_event("start", {"run_id": p.request.run_id, "run_dir": p.run_dir, "backend": backend.name,
                       "budget_s": p.budget_s, "seed": p.seed, "isolated": backend.isolated,
                       "hardware": hw.cls.label})
    # Sampled by the backend where the run happens, by UUID, never inside the container; the series goes
    # beside the record, out of the run's reach.
    sampler, no_telemetry = hooks(backend).start_telemetry(hw.gpu.uuid if hw.gpu else None,
                                                           p.run_dir / contract.RUN_TELEMETRY, opts.nvml_module)
    try:
        trained = train(p, backend, on_event)                                     # 2. train
    finally:
        if sampler is not None:
            sampler.stop()
    outcome = judge.judge_training(trained, p.request.hard_timeout_s, score_deferred=opts.verified)
    if opts.verified:                                                            # 3. evaluate
        export = export_info(p.run_dir)
        verdict = None
        if outcome.status == "ok" and export is not None and export.ok:
            on_event("evaluate", {"run_id": p.request.run_id})
            verdict = run_evaluator(p.request, bench, backend, abort=opts.abort)
        outcome, evaluation = judge.judge_verified(outcome, export, verdict)      # 4. judge
    elif evaluation is None:
        evaluation = judge.compat_evaluation()
    po = trained.outcome
    image = {"id": po.image, "tag": po.image_tag} if po.image or po.image_tag else None
    prov = build_provenance(train_py=train_py, description=opts.description, bench=bench, cache=cache, seed=p.seed,
                            backend=po.backend, image=image, fixed_dir=p.request.fixed_dir, budget=p.budget_plan)
    if opts.origin:  # read from a commit (harness ci): the commit, not the temporary copy's folder
        prov["submission"]["git"] = dict(opts.origin)
    prov["placement"] = placement(po, opts, hw)
    if po.runtime:  # the container runtime (runc, runsc) and its version, as the backend found them
        prov["runtime"] = {"name": po.runtime, "version": po.runtime_version}
    outcome = judge.check_floor(outcome, prov["benchmark"].get("entropy_floor_bpb"))
    hardware, flags = hardware_part(outcome, hw, bench, sampler, no_telemetry, trained.watcher, p.run_dir,
                                    calibrated=opts.calibrate)                    # 5. hardware, normalization
    outcome = outcome.with_flags(*flags, *((SHARED_HOST,) if opts.shared_host else ()))
    if opts.verified:
        outcome = judge.measured_metrics(outcome, hardware.telemetry)
    hardware = replace(hardware, normalization=normalization(outcome, hardware, hw, bench, opts.baselines_path))
    record = RunRecord(run_id=p.request.run_id, budget_s=p.budget_s, hard_timeout_s=p.request.hard_timeout_s,
                       outcome=outcome, provenance=prov, evaluation=evaluation, hardware=hardware)
    if write:                                                                    # 6. record
        record = finish.write_record(record, opts.results_dir, store=opts.results_dir is not None)
    else:
        finish.hold(record)
    on_event("end", record)
    return record
