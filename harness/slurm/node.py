"""What a Slurm job runs on its compute node (called by submitit there, with the submitting host's
interpreter and checkout, which a shared filesystem makes the same path on every node).

The job runs the very pipeline a local submit runs: the run folder in the shared folder, the node's own
hardware probed and its NVML sampled there, the candidate in a container (the docker backend) or, when
asked, as a process (local: unisolated). It writes the run's record to run_dir/result.json (never to a
store: the submitting host reads it and decides), and returns a short summary.

scancel (or the submitting harness's Ctrl-C) sends SIGTERM: submitit would ignore it, so the job turns it
into KeyboardInterrupt, which kills the run and records it aborted.
"""

from __future__ import annotations

import os
import signal
import socket
from pathlib import Path
from typing import Any


# Written by the submitting host into a run folder once it has recorded the run itself (a lost node, a
# cancel): a job that goes on running afterwards must not replace that record with its own.
SETTLED = "settled"


def job_id() -> str | None:
    """This job's id as Slurm names it: ARRAYJOB_TASK for an array's task, else the job id."""
    array, task = os.environ.get("SLURM_ARRAY_JOB_ID"), os.environ.get("SLURM_ARRAY_TASK_ID")
    return f"{array}_{task}" if array and task else os.environ.get("SLURM_JOB_ID")


def job_cpus() -> str | None:
    """The CPUs Slurm bound this job to (task/affinity or task/cgroup), when fewer than the node's: the run's
    containers are pinned to them too (dockerd starts containers outside the job, so they would not
    inherit the binding and would take CPUs other jobs were given). None: not bound."""
    mine = sorted(os.sched_getaffinity(0))
    return ",".join(map(str, mine)) if len(mine) < (os.cpu_count() or len(mine)) else None


def job_gpu() -> str | None:
    """The GPU Slurm gave this job (SLURM_JOB_GPUS: node-wide indices), the first when it has several (a
    run uses one); None without one, and the pipeline takes the node's first. dockerd starts containers
    outside the job's cgroup, so the run is given this GPU by its UUID explicitly."""
    gpus = [g for g in os.environ.get("SLURM_JOB_GPUS", "").split(",") if g.strip()]
    return gpus[0].strip() if gpus else None


def _interrupt(_signum: int, _frame: Any) -> None:
    raise KeyboardInterrupt


def run_on_node(spec: dict[str, Any]) -> dict[str, Any]:
    """One run of the pipeline on this node, as `spec` (harness/slurm/backend.py: node_spec) says."""
    from harness.benchmarks import get_benchmark
    from harness.pipeline import RunOptions, execute_run, finish

    signal.signal(signal.SIGTERM, _interrupt)
    bench = get_benchmark(spec["benchmark"], spec.get("benchmarks_file"))
    opts = RunOptions(benchmark=bench, backend=spec["backend"], budget_s=spec.get("budget_s"), seed=spec.get("seed"),
                      description=spec.get("description", ""), runs_dir=Path(spec["runs_dir"]),
                      data_dir=Path(spec["data_dir"]) if spec.get("data_dir") else None,
                      calibrate=spec.get("calibrate", True), verified=spec.get("verified", True),
                      runtime=spec.get("runtime"), origin=spec.get("origin"), run_id=spec["run_id"],
                      scheduler={"name": "slurm", "job_id": job_id() or ""}, cpuset=job_cpus(), gpu=job_gpu())
    record = execute_run(Path(spec["train_py"]), opts, write=False)
    run_dir = Path(record.log_path).parent
    if not (run_dir / SETTLED).exists():  # run_dir/result.json (never a store here: the submitter decides)
        finish.write_record(record)
    return {"run_id": record.run_id, "status": record.status, "node": socket.gethostname(), "job_id": job_id()}
