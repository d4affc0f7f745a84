"""Stage 1, the request: the run folder, the candidate's copy, the seed, the environment, the data feed,
and the journal entry that makes a run whose harness dies recoverable."""

from __future__ import annotations

import json
import secrets
import shutil
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from harness import contract, journal, paths
from harness.backends.base import DEFAULT_LOG_CAP_BYTES, Backend, RunRequest
from harness.benchmarks import Benchmark
from harness.budget import BudgetError, BudgetPlan, calibrated_flops, plan_budget
from harness.data import CacheInfo
from harness.feed import FeedServer
from harness.hw.context import HardwareContext
from harness.provenance import build_provenance
from harness.record import Outcome, RunRecord, Timings

Event = Callable[[str, Any], None]

# What training sees of the data cache: never the train shards (the harness's feed serves them, see
# harness/feed.py); in verified mode never the val split either; compat mode scores itself on val.
TRAINING_ENTRIES = ["manifest.json", "tokenizer"]
COMPAT_ENTRIES = ["manifest.json", "tokenizer", "val"]
EXPORT_ENV = {contract.ENV_EVAL_MODE: contract.EVAL_MODE_EXPORT}

# Calibration runs first, in the run's own container (or process space), so it measures the very
# device and limits the candidate gets; then train.py replaces the shell.
CALIBRATED_COMMAND = ["sh", "-c", "{python_q} {fixed_q}/calibrate.py --max-seconds 5; exec {python_q} -u {train_py_q}"]


class RunError(RuntimeError):
    """The run could not be set up (bad file, unprepared benchmark, unknown backend)."""


@dataclass
class RunOptions:
    benchmark: Benchmark
    backend: str = "auto"  # a registered backend name (harness.backends), or "auto"
    budget_s: float | None = None  # overrides the benchmark's budget (quick checks, tests); recorded
    hard_timeout_s: float | None = None
    seed: int | None = None  # None: the harness draws one
    description: str = ""
    runs_dir: Path | None = None
    data_dir: Path | None = None
    gpu_uuids: list[str] = field(default_factory=list)
    peak_flops: float | None = None
    image: str | None = None
    log_cap_bytes: int = DEFAULT_LOG_CAP_BYTES
    extra_env: dict[str, str] = field(default_factory=dict)
    gpu: str | None = None  # GPU index or UUID; None: the first runnable one (or the CPU)
    calibrate: bool = True  # run fixed/calibrate.py in the run's own process space before train.py
    hardware: HardwareContext | None = None  # decided once by the caller (baseline, seeds) or here
    baselines_path: Path | None = None  # per-class baselines for normalization
    nvml_module: Any = None  # tests pass a fake pynvml; None: the real one
    verified: bool = False  # train without val, export the model, score it with fixed code elsewhere
    results_dir: Path | None = None  # the store the record goes to (a recovered run is recorded there too)
    runtime: str | None = None  # the docker backend's OCI runtime (runsc: gVisor); None: the benchmark's
    origin: dict[str, Any] | None = None  # where the candidate came from (its git commit, branch ...): provenance
    budget_plan: BudgetPlan | None = None  # decided once by the caller (seeds) or here (harness/budget.py)
    cpuset: str | None = None  # pin the run to these CPUs ("0,1"): a member of a CPU pool (harness/pool/)
    shared_host: bool = False  # other runs share this host at the same time: the record is flagged shared_host
    abort: threading.Event | None = None  # set by a pool on Ctrl-C: the run is killed and recorded aborted
    scheduler: dict[str, str] | None = None  # run inside a scheduler's job: {"name": "slurm", "job_id": "42"}
    run_id: str | None = None  # chosen by the caller (a Slurm job's run, whose folder the submitter must know)
    leased: bool = False  # the caller holds the device's lease (a pool member); else the run takes it itself


def new_run_id() -> str:
    return time.strftime("%Y%m%d-%H%M%S", time.gmtime()) + "-" + secrets.token_hex(3)


def choose_seed(seed: int | None) -> int:
    """The harness, not train.py, chooses the seed: fresh per run unless one is asked for."""
    return seed if seed is not None else secrets.randbelow(2**31 - 1)


def run_env(bench: Benchmark, data_dir: Path, run_dir: Path, budget_s: float, seed: int,
            peak_flops: float | str | None) -> dict[str, str]:
    """The environment contract (harness/contract.py): what fixed/prepare.py reads."""
    return {
        contract.ENV_BENCHMARK: bench.name,
        contract.ENV_DATA_DIR: str(data_dir),
        contract.ENV_TIME_BUDGET: repr(float(budget_s)),
        contract.ENV_SEED: str(seed),
        contract.ENV_PEAK_FLOPS: str(peak_flops) if peak_flops else "unknown",
        contract.ENV_MODEL_HINT: json.dumps(bench.model_hint, sort_keys=True),
        contract.ENV_OUT_DIR: str(run_dir / contract.RUN_OUT),
    }


@dataclass
class Prepared:
    """A request ready to hand to a backend, with what the later stages need to know about it."""
    request: RunRequest
    feed: FeedServer
    cache: CacheInfo
    hardware: HardwareContext
    budget_s: float
    budget_plan: BudgetPlan
    seed: int
    original: Path  # the candidate's own path (its provenance); the run sees request.train_py, a copy
    description: str
    verified: bool
    calibrate: bool
    abort: threading.Event | None = None  # the pool's stop (Ctrl-C): see harness/pool/parallel.py

    @property
    def run_dir(self) -> Path:
        return self.request.run_dir


def decide_budget(opts: RunOptions, hw: HardwareContext) -> BudgetPlan:
    """The run's budget plan (harness/budget.py); a class without a table peak is measured only when the
    benchmark scales by compute and calibration is on. BudgetError says what to do otherwise."""
    measure = calibrated_flops if opts.calibrate else None
    try:
        return plan_budget(opts.benchmark, hw.cls, override_s=opts.budget_s, measured_flops=measure)
    except BudgetError as e:
        raise RunError(str(e)) from None


def prepare_request(train_py: Path, opts: RunOptions, cache: CacheInfo, hw: HardwareContext,
                    backend: Backend) -> Prepared:
    bench = opts.benchmark
    seed = choose_seed(opts.seed)
    plan = opts.budget_plan or decide_budget(opts, hw)
    budget = plan.seconds
    # A shorter budget shortens the hard timeout with it, keeping the benchmark's margin for startup and eval.
    hard_timeout = opts.hard_timeout_s or (bench.hard_timeout_s - bench.time_budget_s + budget)
    run_id = opts.run_id or new_run_id()
    run_dir = Path(opts.runs_dir or paths.runs_dir()) / run_id
    run_dir.mkdir(parents=True)
    (run_dir / contract.RUN_OUT).mkdir()
    shutil.copyfile(train_py, run_dir / contract.RUN_TRAIN_PY)  # the run sees a copy: the original cannot change
    # The train split is served by the harness from outside (harness/feed.py), never mounted.
    feed = FeedServer(cache.data_dir, cache.manifest, run_dir / contract.RUN_FEED)
    request = RunRequest(
        run_id=run_id, train_py=run_dir / contract.RUN_TRAIN_PY, benchmark=bench, data_dir=cache.data_dir,
        fixed_dir=paths.fixed_dir(), run_dir=run_dir,
        env={**run_env(bench, cache.data_dir, run_dir, budget, seed, hw.peak_flops_env),
             contract.ENV_FEED: str(feed.sock_dir), **(EXPORT_ENV if opts.verified else {}), **opts.extra_env},
        hard_timeout_s=hard_timeout, gpu_uuids=hw.gpu_uuids, log_cap_bytes=opts.log_cap_bytes,
        command=list(CALIBRATED_COMMAND) if opts.calibrate else None,
        extra_mounts={"feed": feed.sock_dir},
        data_entries=list(TRAINING_ENTRIES if opts.verified else COMPAT_ENTRIES), cancel=threading.Event(),
        cpuset=opts.cpuset)
    prepared = Prepared(request, feed, cache, hw, budget, plan, seed, Path(train_py), opts.description, opts.verified,
                        opts.calibrate, opts.abort)
    # Written before anything runs: if this process dies, the next harness command records the run.
    journal.begin(run_dir, provisional_record(prepared, backend).to_dict(), opts.results_dir)
    return prepared


def provisional_record(p: Prepared, backend: Backend) -> RunRecord:
    """The record a run keeps if its harness dies before writing the real one (harness/journal.py)."""
    now = time.time()
    prov = build_provenance(train_py=p.original, description=p.description, bench=p.request.benchmark,
                            cache=p.cache, seed=p.seed, backend=backend.name, image=None,
                            fixed_dir=p.request.fixed_dir, budget=p.budget_plan)
    timings = Timings(started_at=now, first_output_at=None, ended_at=now, startup_s=None, training_s=None,
                      eval_s=None, total_s=0.0)
    outcome = Outcome(status="aborted", reason="the harness process died during the run", backend=backend.name,
                      isolated=backend.isolated, log_path=str(p.run_dir / contract.RUN_LOG), timings=timings)
    return RunRecord(run_id=p.request.run_id, budget_s=p.budget_s, hard_timeout_s=p.request.hard_timeout_s,
                     outcome=outcome, provenance=prov)
