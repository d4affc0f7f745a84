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
from harness.hw.context import detect_hardware
from harness.scoring.baselines import Baselines, add_sample, load_baselines, save_baselines
from harness.result import RunResult, write_json_atomic
from harness.scoring.stats import Sample, summarize
from harness.store import ResultStore
from harness.submit import SubmitOptions, check_valid, counted_runs, flag_seed_ignored, run_seeds

BASELINE_SUBMISSION = paths.REPO_ROOT / "submissions" / "baseline" / "train.py"
Event = Callable[[str, Any], None]


@dataclass
class SpreadReport:
    class_label: str
    results: list[RunResult]
    used: list[RunResult]  # the runs whose scores count (ok, and unflagged unless asked)
    summary: Sample | None
    baselines_file: Path | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "class": self.class_label,
            "runs": [{"run_id": r.run_id, "status": r.status, "val_bpb": r.val_bpb, "flags": r.flags,
                      "trust": r.trust, "seed": r.provenance["seed"]} for r in self.results],
            "used": [r.run_id for r in self.used],
            "summary": self.summary.to_dict() if self.summary else None,
            "baselines_file": str(self.baselines_file) if self.baselines_file else None,
        }


def _spread(train_py: Path, opts: SubmitOptions, runs: int, include_flagged: bool,
            on_event: Event) -> tuple[str, list[RunResult], list[RunResult]]:
    check_valid(train_py, opts.benchmark)
    hw = detect_hardware(opts.gpu, opts.nvml_module)
    results = run_seeds(train_py, opts, runs, on_event, hw)  # each run is stored as it ends
    store = ResultStore(opts.results_dir)
    for r in flag_seed_ignored(results):  # stored again with the flag
        write_json_atomic(Path(r.log_path).parent / "result.json", r.to_dict())
        store.put(r.to_dict())
    used = [r for r in counted_runs(results, opts.verified) if include_flagged or not r.flags]
    return hw.cls.label, results, used


def measure_noise(train_py: Path, opts: SubmitOptions, runs: int, include_flagged: bool = False,
                  on_event: Event = lambda _k, _v: None) -> SpreadReport:
    label, results, used = _spread(Path(train_py), opts, runs, include_flagged, on_event)
    return SpreadReport(label, results, used, summarize([r.val_bpb for r in used]) if used else None)


def run_baseline(opts: SubmitOptions, runs: int, include_flagged: bool = False,
                 on_event: Event = lambda _k, _v: None, train_py: Path = BASELINE_SUBMISSION) -> SpreadReport:
    """Run the reference submission `runs` times and add the scores to this class's baseline file."""
    label, results, used = _spread(Path(train_py), opts, runs, include_flagged, on_event)
    path = Path(opts.baselines_path or paths.baselines_file())
    baselines = load_baselines(path) if path.exists() else Baselines()
    for r in used:
        add_sample(baselines, opts.benchmark.name, label, val_bpb=r.val_bpb,
                   tokens=(r.metrics.get("total_tokens_M") or 0.0) * 1e6, run_id=r.run_id,
                   seed=r.provenance["seed"], host=socket.gethostname())
    save_baselines(baselines, path)
    stats = baselines.stats(opts.benchmark.name, label)
    summary = Sample(stats.mean, stats.std, stats.n, None) if stats else None
    return SpreadReport(label, results, used, summary, path)
