"""The reference submission learns on the CPU: it beats the unigram bar and never beats the floor."""

from __future__ import annotations

from pathlib import Path

import pytest

from harness.pipeline import RunOptions, execute_run
from harness.validate import validate_file
from tests.conftest import REPO

BASELINE = REPO / "submissions" / "baseline" / "train.py"


def test_baseline_is_valid_on_every_benchmark(tiny_bench):
    from harness.benchmarks import load_benchmarks

    for bench in load_benchmarks().values():
        report = validate_file(BASELINE, bench.allowed_imports)
        assert report.ok and not report.warnings, [f.format() for f in report.findings]


@pytest.mark.slow
def test_baseline_on_tiny_beats_unigram_and_stays_above_floor(tiny_bench, tiny_cache, tmp_path):
    opts = RunOptions(benchmark=tiny_bench, backend="local", budget_s=30, runs_dir=tmp_path / "runs",
                      data_dir=tiny_cache.data_dir, calibrate=False, baselines_path=tmp_path / "b.json")
    r = execute_run(BASELINE, opts)
    assert r.status == "ok", r.traceback_tail
    floor, unigram = tiny_cache.stats["entropy_floor_bpb"], tiny_cache.stats["unigram_bpb"]
    assert floor < r.val_bpb < unigram, (floor, r.val_bpb, unigram)
    m = r.metrics
    assert m["num_steps"] > 0 and m["depth"] == tiny_bench.model_hint["depth"]
    assert m["mfu_percent"] is None  # no peak FLOP/s for a CPU class: the run says unknown, never guesses
    assert r.metrics["training_seconds"] <= 30 + 15  # the schedule ends at the budget (one step may spill)
    log = Path(r.log_path).read_text()
    assert "progress step=" in log and "mfu_percent:      unknown" in log
