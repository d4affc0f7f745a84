"""Per-class baselines and noise: run a submission N times on this machine's class and record the spread.

`harness baseline` runs the reference submission and adds its scores to the class's baseline file;
`harness noise` measures any submission's run-to-run spread. Flagged runs (throttled, slow device, and
seed_ignored: runs that score the same whatever the seed, whose zero spread would fake a noiseless class)
are kept in the store but left out of baselines unless asked for.
"""

from __future__ import annotations

import socket
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from harness import paths
from harness.backends.base import Backend
from harness.pipeline.request import RunError
from harness.pipeline.finish import write_record
from harness.pipeline.seeds import run_seeds, salvage, seed_backend
from harness.pool.parallel import DevicePool
from harness.record import RunRecord
from harness.scoring.baselines import Baselines, add_sample, load_baselines, save_baselines
from harness.scoring.stats import Sample, summarize
from harness.submit import SubmitOptions, check_valid, classes_of, counted_runs, flag_seed_ignored

BASELINE_SUBMISSION = paths.REPO_ROOT / "submissions" / "baseline" / "train.py"
Event = Callable[[str, Any], None]


@dataclass
class SpreadReport:
    class_label: str
    results: list[RunRecord]
    used: list[RunRecord]  # the runs whose scores count (ok, and unflagged unless asked)
    summary: Sample | None
    baselines_file: Path | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "class": self.class_label,
            "runs": [{"run_id": r.run_id, "status": r.status, "val_bpb": r.val_bpb, "flags": list(r.flags),
                      "trust": r.trust, "seed": r.seed} for r in self.results],
            "used": [r.run_id for r in self.used],
            "summary": self.summary.to_dict() if self.summary else None,
            "baselines_file": str(self.baselines_file) if self.baselines_file else None,
        }


def _spread(train_py: Path, opts: SubmitOptions, runs: int, include_flagged: bool, on_event: Event,
            pool: DevicePool | None = None, backend: Backend | None = None) -> tuple[str, list[RunRecord], list[RunRecord]]:
    check_valid(train_py, opts.benchmark)
    backend, hw = seed_backend(opts, pool, backend)  # a pool runs them at once, one per member
    held = flag_seed_ignored(run_seeds(train_py, opts, runs, on_event, hw, backend, pool=pool))
    try:
        results = [write_record(r, opts.results_dir, store=True) for r in held]  # once each, with its flags
    except BaseException as e:
        salvage(held, opts.results_dir, f"stopped before every record was written ({type(e).__name__}: {e})")
        raise
    used = [r for r in counted_runs(results, opts.verified) if include_flagged or not r.flags]
    if hw is not None:
        return hw.cls.label, results, used
    # Run on remote nodes (Slurm): the class each node probed; a baseline of one class only.
    classes = classes_of(results)
    if len(classes) > 1:
        raise RunError(f"the runs ran on different classes ({', '.join(classes)}): pin the jobs to one class "
                       "(e.g. --sbatch=--constraint=...) and measure each class apart")
    return (classes[0] if classes else "unknown"), results, used


def measure_noise(train_py: Path, opts: SubmitOptions, runs: int, include_flagged: bool = False,
                  on_event: Event = lambda _k, _v: None, pool: DevicePool | None = None,
                  backend: Backend | None = None) -> SpreadReport:
    label, results, used = _spread(Path(train_py), opts, runs, include_flagged, on_event, pool, backend)
    return SpreadReport(label, results, used, summarize([r.val_bpb for r in used]) if used else None)


def run_baseline(opts: SubmitOptions, runs: int, include_flagged: bool = False,
                 on_event: Event = lambda _k, _v: None, train_py: Path = BASELINE_SUBMISSION,
                 pool: DevicePool | None = None, backend: Backend | None = None) -> SpreadReport:
    """Run the reference submission `runs` times and add the scores to this class's baseline file. A pool
    of GPUs runs them at once; a pool that shares one CPU host cannot measure a baseline (its runs are
    flagged shared_host: each slows the others)."""
    if pool is not None and pool.plan.shared_host:
        raise RunError("a baseline cannot be measured on a shared CPU host: runs of a CPU pool slow each "
                       "other down and are flagged shared_host; run harness baseline without --parallel")
    label, results, used = _spread(Path(train_py), opts, runs, include_flagged, on_event, pool, backend)
    path = Path(opts.baselines_path or paths.baselines_file())
    baselines = load_baselines(path) if path.exists() else Baselines()
    for r in used:
        add_sample(baselines, opts.benchmark.name, label, val_bpb=r.val_bpb,
                   tokens=(r.metrics.get("total_tokens_M") or 0.0) * 1e6, run_id=r.run_id,
                   seed=r.seed, host=(r.provenance.get("placement") or {}).get("node") or socket.gethostname())
    save_baselines(baselines, path)
    stats = baselines.stats(opts.benchmark.name, label)
    summary = Sample(stats.mean, stats.std, stats.n, None) if stats else None
    return SpreadReport(label, results, used, summary, path)
