"""Runs a remote backend makes whole (Slurm: harness/slurm/backend.py): the pipeline runs where the run
happens, its hardware probed and its record made there; here each run is described, handed over in one
batch (a job array), and comes back as a held record for the caller's decision."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness.benchmarks import Benchmark
from harness.pipeline.request import Event, new_run_id
from harness.record import RunRecord


@dataclass
class RemoteRun:
    """One run for a remote backend: the candidate and what the pipeline's RunOptions would say."""
    train_py: Path
    benchmark: Benchmark
    budget_s: float | None = None
    verified: bool = True
    calibrate: bool = True
    description: str = ""
    origin: dict[str, Any] | None = None
    runtime: str | None = None
    seed: int | None = None
    results_dir: Path | None = None  # the store a record written early goes to (a lost attempt's)
    run_id: str = field(default_factory=new_run_id)


def run_remote(backend: Any, runs: list[RemoteRun], on_event: Event) -> list[RunRecord]:
    """The runs on the remote backend, their records held (harness/pipeline/finish.py), in the runs' order."""
    return backend.run_many(runs, on_event)


def seeds_remote(train_py: Path, opts: Any, n: int, backend: Any, on_event: Event) -> list[RunRecord]:
    """n seeds of one candidate (opts: SeedOptions) as one batch of remote runs."""
    return run_remote(backend, [remote_run(train_py, opts) for _ in range(n)], on_event)


def remote_run(train_py: Path, opts: Any) -> RemoteRun:
    """The RemoteRun of a SeedOptions or RunOptions."""
    return RemoteRun(train_py=Path(train_py), benchmark=opts.benchmark, budget_s=opts.budget_s,
                     verified=opts.verified, calibrate=opts.calibrate, description=opts.description,
                     origin=opts.origin, runtime=opts.runtime, seed=getattr(opts, "seed", None),
                     results_dir=opts.results_dir)
