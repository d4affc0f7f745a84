"""`harness slurm status`: the harness's jobs as Slurm sees them (squeue for queued and running ones,
sacct for finished ones when accounting is on), by the job name every harness job carries."""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import asdict, dataclass

from harness.slurm.backend import JOB_NAME

FIELDS = ("job_id", "state", "elapsed", "node", "reason")


@dataclass(frozen=True)
class Job:
    job_id: str
    state: str
    elapsed: str
    node: str
    reason: str

    def to_dict(self) -> dict[str, str]:
        return asdict(self)


class SlurmUnavailable(RuntimeError):
    pass


def _run(cmd: list[str]) -> str:
    if shutil.which(cmd[0]) is None:
        raise SlurmUnavailable(f"{cmd[0]} is not on PATH: run on a Slurm login node (or .ci/slurm-up)")
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=30)
    if proc.returncode != 0:
        raise SlurmUnavailable(f"{' '.join(cmd[:2])}: {proc.stderr.strip() or proc.stdout.strip()}")
    return proc.stdout


def harness_jobs(include_finished: bool = True) -> list[Job]:
    """Queued and running jobs (squeue), then finished ones (sacct, when accounting answers)."""
    jobs: dict[str, Job] = {}
    for line in _run(["squeue", "-h", "--name", JOB_NAME, "-o", "%i|%T|%M|%N|%r"]).splitlines():
        parts = (line.split("|") + [""] * 5)[:5]
        jobs[parts[0]] = Job(*parts)
    if include_finished:
        try:
            out = _run(["sacct", "-n", "-X", "-P", "--name", JOB_NAME, "-o", "JobID,State,Elapsed,NodeList,Reason"])
        except SlurmUnavailable:
            out = ""
        for line in out.splitlines():
            parts = (line.split("|") + [""] * 5)[:5]
            jobs.setdefault(parts[0], Job(*parts))
    return sorted(jobs.values(), key=lambda j: j.job_id)
