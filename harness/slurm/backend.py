"""The submitting side of Slurm runs: one job per run, all of a call's runs as one job array (submitit),
waited for, and each run's record read back from the shared folder.

    backend = SlurmBackend(options=load_slurm_options(shared_dir="/shared/harness", partition="gpu"))
    records = backend.run_many([RemoteRun(train_py, bench, budget_s=15), ...], on_event)

A job's run executes the whole pipeline on its node (harness/slurm/node.py), so its record says what that
node's hardware and NVML said, and where it ran (provenance.placement: node, job id). Here:

    COMPLETED with result.json      the node's record, as it wrote it (checked against the schema and
                                    against what this host asked for)
    CANCELLED (scancel, Ctrl-C)     aborted: the node's own aborted record when it wrote one
    NODE_FAIL, PREEMPTED, BOOT_FAIL,
    TIMEOUT, OUT_OF_MEMORY, FAILED  infra_error with Slurm's state and reason; with requeue a lost or
                                    preempted run is submitted once more (the lost attempt keeps its record)

Every record is held (harness/pipeline/finish.py) for the caller's decision, like a local seed's.
"""

from __future__ import annotations

import json
import math
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any, Callable

from harness import contract, paths
from harness.data import cache_info
from harness.fixedcode import file_sha256
from harness.pipeline import finish
from harness.pipeline.remote import RemoteRun
from harness.pipeline.request import RunError, new_run_id
from harness.provenance import build_provenance
from harness.record import Outcome, RunRecord, Timings
from harness.slurm.config import SlurmOptions, sbatch_parameters
from harness.slurm.node import SETTLED

Event = Callable[[str, Any], None]
JOB_NAME = "harness"  # every job the harness submits is named so: `harness slurm status` finds them
LOST = ("NODE_FAIL", "PREEMPTED", "BOOT_FAIL")  # the run's machine went away: retried once with requeue
FINAL = ("COMPLETED", "CANCELLED", "FAILED", "TIMEOUT", "OUT_OF_MEMORY", "DEADLINE", *LOST)
ABORT_GRACE_S = 20.0  # a cancelled job's harness writes its aborted record before Slurm's KillWait ends
CANCEL_GRACE_S = 120.0  # after Ctrl-C: how long to wait for cancelled jobs to write their aborted records


class SlurmError(RunError):
    """Slurm cannot be used as set up (no sbatch, no shared folder): the message says what to fix."""


class SlurmBackend:
    """Registered as the "slurm" backend; it runs whole pipelines remotely (run_many), not processes."""
    name = "slurm"

    def __init__(self, image: str | None = None, runtime: str | None = None, options: SlurmOptions | None = None):
        self.image = None  # the node's pipeline chooses its image for the node's hardware
        self.runtime = runtime
        if options is None:  # the [slurm] section of the default config file, when there is one
            from harness.slurm.config import load_slurm_options

            options = load_slurm_options()
        self.options = options
        self.isolated = self.options.node_backend != "local"
        self._sent: dict[str, str] = {}  # run id -> sha256 of the train.py its job was given

    # -- set-up -------------------------------------------------------------------------------------
    def check(self) -> Path:
        """The shared folder, checked at start: given, a folder, writable; sbatch on PATH."""
        if shutil.which("sbatch") is None:
            raise SlurmError("sbatch is not on PATH: run on a Slurm login node (or start the test cluster: "
                             ".ci/slurm-up)")
        shared = self.options.shared_dir
        if shared is None:
            raise SlurmError("the slurm backend needs a folder every node sees at the same path: pass "
                             "--shared-dir DIR or set shared_dir in the [slurm] section of the config file")
        shared = Path(shared).absolute()
        if not shared.is_dir():
            raise SlurmError(f"--shared-dir {shared}: no such folder (create it on the shared filesystem)")
        probe = shared / f".harness-write-check-{new_run_id()}"
        try:
            probe.write_text("ok")
            probe.unlink()
        except OSError as e:
            raise SlurmError(f"--shared-dir {shared}: not writable here ({e.strerror or e})") from None
        return shared

    def executor(self, shared: Path, runs: list[RemoteRun]) -> Any:
        import submitit

        o = self.options
        longest = max(_hard_timeout(r) + r.benchmark.eval_timeout_s for r in runs)
        ex = submitit.SlurmExecutor(folder=str(shared / "slurm" / "%j"))
        params: dict[str, Any] = dict(job_name=JOB_NAME, time=max(1, math.ceil((longest + o.time_margin_s) / 60)),
                                      array_parallelism=len(runs), signal_delay_s=30)
        for key in ("partition", "account", "qos", "gres", "cpus_per_task", "mem"):
            if getattr(o, key) is not None:
                params[key] = getattr(o, key)
        wanted = [math.ceil(r.benchmark.limits.cpus) for r in runs if r.benchmark.limits.cpus]
        if o.cpus_per_task is None and wanted:  # the CPUs a run's container may use (benchmarks.yaml limits.cpus)
            params["cpus_per_task"] = max(wanted)
        if o.gpus:
            params["gpus_per_node"] = o.gpus
        if o.setup:
            params["setup"] = list(o.setup)
        # Never Slurm's own requeue: a rerun of the same spec would find its run folder taken; the harness
        # retries a lost run itself (requeue), under a new run id, and the lost attempt keeps its record.
        params["additional_parameters"] = {"no_requeue": True, **sbatch_parameters(o.sbatch)}
        ex.update_parameters(**params)
        return ex

    # -- runs ---------------------------------------------------------------------------------------
    def run_many(self, runs: list[RemoteRun], on_event: Event = lambda _k, _v: None) -> list[RunRecord]:
        """Every run as a task of one job array; their records, held for the caller, in the runs' order.
        Ctrl-C cancels every job (scancel) and still returns a record for each."""
        shared = self.check()
        ex = self.executor(shared, runs)
        specs = [self._spec(shared, r) for r in runs]
        jobs = self._submit(ex, specs)
        for r, job in zip(runs, jobs):
            on_event("note", f"run {r.run_id}: Slurm job {job.job_id} submitted ({r.train_py.name})")
        records: list[RunRecord | None] = [None] * len(runs)
        retried: set[int] = set()
        pending = dict(enumerate(jobs))
        cancelled_at: float | None = None
        interrupts = 0
        while pending:
            try:
                states = _states(list(pending.values()))
                for i, job in list(pending.items()):
                    state = states.get(str(job.job_id), "UNKNOWN")
                    late = cancelled_at is not None and time.time() - cancelled_at > CANCEL_GRACE_S
                    if state not in FINAL and not late:
                        continue
                    if state in LOST and self.options.requeue and i not in retried and cancelled_at is None:
                        retried.add(i)
                        self._keep_lost(shared, runs[i], job, state)
                        runs[i] = RemoteRun(**{**runs[i].__dict__, "run_id": new_run_id()})
                        pending[i] = self._submit(ex, [self._spec(shared, runs[i])])[0]
                        on_event("note", f"run {runs[i].run_id}: requeued as Slurm job {pending[i].job_id} "
                                         f"after {state}")
                        continue
                    records[i] = self._record(shared, runs[i], job, state, cancelled_at)
                    finish.hold(records[i])
                    del pending[i]  # only now: a second Ctrl-C before this still finds the run pending
                    on_event("end", records[i])
                if pending:
                    time.sleep(self.options.poll_s)
            except KeyboardInterrupt:  # stop everything; each job still ends with its record
                interrupts += 1
                if interrupts >= 3:  # the user insists: what is recorded stands, the jobs are cancelled
                    raise
                if cancelled_at is None:
                    cancelled_at = time.time()
                    on_event("note", f"cancelling {len(pending)} Slurm job(s)")
                    for job in pending.values():
                        job.cancel(check=False)
        return [r for r in records if r is not None]

    @staticmethod
    def _submit(ex: Any, specs: list[dict[str, Any]]) -> list[Any]:
        """One job array of the specs; SlurmError with sbatch's own words when Slurm refuses it."""
        from harness.slurm.node import run_on_node

        try:
            with ex.batch():
                jobs = [ex.submit(run_on_node, s) for s in specs]
        except Exception as e:  # noqa: BLE001 - submitit's FailedJobError, or sbatch missing
            raise SlurmError(f"sbatch refused the job(s): {str(e).strip()}") from None
        return jobs

    def _spec(self, shared: Path, run: RemoteRun) -> dict[str, Any]:
        inputs = shared / "inputs" / run.run_id
        inputs.mkdir(parents=True, exist_ok=True)
        candidate = inputs / contract.RUN_TRAIN_PY
        shutil.copyfile(run.train_py, candidate)  # the job reads this copy: the original may change meanwhile
        self._sent[run.run_id] = file_sha256(candidate)  # what the job's record must name
        return {"benchmark": run.benchmark.name, "benchmarks_file": str(paths.benchmarks_file()),
                "data_dir": str(cache_info(run.benchmark).data_dir), "train_py": str(candidate),
                "runs_dir": str(shared / "runs"), "run_id": run.run_id, "backend": self.options.node_backend,
                "budget_s": run.budget_s, "seed": run.seed, "verified": run.verified, "calibrate": run.calibrate,
                "description": run.description, "origin": run.origin, "runtime": self.runtime}

    def _record(self, shared: Path, run: RemoteRun, job: Any, state: str, cancelled_at: float | None) -> RunRecord:
        run_dir = shared / "runs" / run.run_id
        result = run_dir / contract.RUN_RESULT
        cancelled = cancelled_at is not None
        if state == "CANCELLED" or cancelled:  # the job's harness records its run aborted within KillWait
            deadline = (cancelled_at or time.time()) + ABORT_GRACE_S  # one grace for all: Ctrl-C stays quick
            while not result.is_file() and time.time() < deadline:
                time.sleep(0.5)
        # Only a job that ended by itself, or was cancelled, can have written its record: a result.json
        # beside a FAILED or lost job is not the job's word (its harness never got that far), whoever wrote it.
        if state in ("COMPLETED", "CANCELLED") and result.is_file():
            try:
                record = RunRecord.from_dict(_checked(json.loads(result.read_text())))
                self._cross_check(record, run, shared)
                return record
            except (OSError, ValueError) as e:
                return self._failed(shared, run, job, "infra_error", f"the job's record cannot be trusted: {e}")
        if state == "CANCELLED" or cancelled:
            return self._failed(shared, run, job, "aborted", f"Slurm job {job.job_id} was cancelled ({state})")
        why = slurm_reason(job.job_id) or "no reason given"
        if state == "FAILED":  # the job's harness itself failed: its exception says why
            why = _job_error(job) or why
        return self._failed(shared, run, job, "infra_error", f"Slurm job {job.job_id} ended {state}: {why}")

    def _cross_check(self, record: RunRecord, run: RemoteRun, shared: Path) -> None:
        """The record the job wrote must be the run this host asked for, made the way it asked: ValueError
        otherwise (a record is believed only for what the submitting host can check)."""
        expected = {
            "run_id": run.run_id,
            "submission sha256": self._sent.get(run.run_id),
            "benchmark": run.benchmark.name,
            "backend": self.options.node_backend,
            "isolated": self.options.node_backend != "local",
            "scheduler": "slurm",
        }
        found = {
            "run_id": record.run_id,
            "submission sha256": record.provenance.get("submission", {}).get("sha256"),
            "benchmark": record.provenance.get("benchmark", {}).get("name"),
            "backend": record.backend,
            "isolated": record.isolated,
            "scheduler": (record.provenance.get("placement") or {}).get("scheduler"),
        }
        wrong = [f"{k} {found[k]!r}, not {v!r}" for k, v in expected.items() if found[k] != v]
        if run.budget_s is not None and abs(record.budget_s - run.budget_s) > 1e-6:
            wrong.append(f"budget {record.budget_s:g} s, not {run.budget_s:g} s")
        if wrong:
            raise ValueError("; ".join(wrong))

    def _keep_lost(self, shared: Path, run: RemoteRun, job: Any, state: str) -> None:
        """The attempt a requeue replaces keeps its own record in the store (nothing is lost)."""
        record = self._failed(shared, run, job, "infra_error", f"Slurm job {job.job_id} ended {state}: "
                                                               f"{slurm_reason(job.job_id) or 'no reason given'}; "
                                                               "requeued once")
        finish.write_record(record, run.results_dir, store=True)

    def _failed(self, shared: Path, run: RemoteRun, job: Any, status: str, reason: str) -> RunRecord:
        """The record of a run that ended without its own: the node's provisional one (its journal) when
        the run had started there, else one made here; status and reason from what Slurm said."""
        run_dir = shared / "runs" / run.run_id
        journal = run_dir / contract.RUN_JOURNAL
        try:
            doc = json.loads(journal.read_text())["record"]
            record = RunRecord.from_dict(doc)
        except (OSError, ValueError, KeyError, TypeError):
            record = self._unstarted(run, run_dir)
        now = time.time()
        timings = Timings(**{**record.outcome.timings.__dict__, "ended_at": now,
                             "total_s": max(0.0, now - record.outcome.timings.started_at)})
        record = record.with_outcome(status=status, reason=reason, timings=timings)
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / SETTLED).write_text(f"{status}: {reason}\n")  # a job still running there keeps out
        prov = dict(record.provenance)
        prov["placement"] = {**(prov.get("placement") or {"node": "unknown"}), "scheduler": "slurm",
                             "job_id": str(job.job_id)}
        return RunRecord(**{**record.__dict__, "provenance": prov})

    def _unstarted(self, run: RemoteRun, run_dir: Path) -> RunRecord:
        run_dir.mkdir(parents=True, exist_ok=True)
        log = run_dir / contract.RUN_LOG
        if not log.exists():
            log.write_text("[harness] the Slurm job ended before the run started on its node\n")
        bench = run.benchmark
        prov = build_provenance(train_py=run.train_py, description=run.description, bench=bench,
                                cache=cache_info(bench), seed=run.seed or 0, backend=self.name, image=None,
                                fixed_dir=paths.fixed_dir())
        if run.origin:
            prov["submission"]["git"] = dict(run.origin)
        now = time.time()
        outcome = Outcome(status="infra_error", reason=None, backend=self.name, isolated=self.isolated,
                          log_path=str(log), timings=Timings(now, None, now, None, None, None, 0.0))
        budget = run.budget_s or bench.time_budget_s
        return RunRecord(run_id=run.run_id, budget_s=budget, hard_timeout_s=_hard_timeout(run), outcome=outcome,
                         provenance=prov)


def _hard_timeout(run: RemoteRun) -> float:
    b = run.benchmark
    return b.hard_timeout_s - b.time_budget_s + (run.budget_s or b.time_budget_s)


def _checked(doc: dict[str, Any]) -> dict[str, Any]:
    """A record read from the shared folder, checked against the result schema before it is believed."""
    from harness.store import validate_record

    validate_record(doc)  # RecordError (a ValueError) names the field
    return doc


def _job_error(job: Any) -> str | None:
    """The last lines of what the job's harness raised (submitit keeps it), or None."""
    try:
        e = job.exception()
    except Exception:  # noqa: BLE001 - submitit raises when the job left no result at all
        return None
    return " ".join(str(e).strip().splitlines()[-3:])[-500:] if e is not None else None


def _states(jobs: list[Any]) -> dict[str, str]:
    """Each job's Slurm state now, by job id, word one ("CANCELLED by 0" -> "CANCELLED"): one sacct call for
    all (forced: submitit asks less and less often as a job ages), scontrol for a job sacct does not know
    yet or at all (no accounting); UNKNOWN while Slurm is unsure."""
    out: dict[str, str] = {}
    if jobs:
        try:
            jobs[0].watcher.update()  # one sacct for every job registered with this watcher
        except Exception:  # noqa: BLE001 - a slow or restarting slurmctld: ask again at the next poll
            pass
    for job in jobs:
        try:
            state = job.get_info(mode="cache").get("State")
        except Exception:  # noqa: BLE001
            state = None
        if not state or str(state).upper().startswith("UNKNOWN"):
            state = _scontrol_state(str(job.job_id))
        out[str(job.job_id)] = str(state).split()[0].upper() if state else "UNKNOWN"
    return out


def _scontrol_state(job_id: str) -> str | None:
    try:
        out = subprocess.run(["scontrol", "-o", "show", "job", job_id], capture_output=True, text=True,
                             timeout=10).stdout
    except (OSError, subprocess.TimeoutExpired):
        return None
    for word in out.split():
        if word.startswith("JobState="):
            return word.split("=", 1)[1]
    return None


def slurm_reason(job_id: str) -> str | None:
    """Slurm's own words on why a job ended (scontrol's Reason, else sacct's), or None."""
    for cmd in (["scontrol", "show", "job", str(job_id)],
                ["sacct", "-n", "-X", "-P", "-o", "State,Reason,ExitCode,NodeList", "-j", str(job_id)]):
        try:
            out = subprocess.run(cmd, capture_output=True, text=True, timeout=10).stdout
        except (OSError, subprocess.TimeoutExpired):
            continue
        if cmd[0] == "scontrol":
            for word in out.split():
                if word.startswith("Reason=") and word != "Reason=None":
                    return word.split("=", 1)[1]
        elif out.strip():
            return out.strip().splitlines()[0].replace("|", " ")
    return None
