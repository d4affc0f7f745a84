"""The harness's clock: training data served from outside (harness/feed.py), the window judged from what
the feed saw (harness/clock.py). Real runs on the local backend (the clock does not depend on the
backend); each attack tries to train past the budget by another route and must end flagged or killed."""

from __future__ import annotations

import dataclasses

import pytest

from harness.clock import ClockLimits, judge
from harness.feed import FeedStats
from harness.pipeline import RunOptions, execute_run
from harness.submit import counted_runs
from tests.conftest import REPO

TOY = (REPO / "tests" / "cases" / "toy_train.py").read_text()
LIMITS = ClockLimits(budget_s=60, startup_s=20, warmup_s=2, overrun=0.05, export_s=15)


def stats(first, last, batches=10):
    return FeedStats(first, last, batches, batches * 16, batches * 16 * 128, 1)


def test_judge_names_each_limit():
    assert judge(stats(105, 105 + 60), 100, 105 + 60 + 5, LIMITS, check_tail=True).violations == []
    assert "first batch" in judge(stats(125, 180), 100, 185, LIMITS, True).violations[0]
    assert "batches were taken" in judge(stats(105, 105 + 66), 100, 175, LIMITS, True).violations[0]
    assert "after its last batch" in judge(stats(105, 160), 100, 160 + 16, LIMITS, True).violations[0]
    assert judge(stats(105, 160), 100, 160 + 16, LIMITS, check_tail=False).violations == []
    assert "no training batch" in judge(stats(None, None, 0), 100, 160, LIMITS, True).violations[0]
    # The most extra compute a run can get unflagged, as a share of the budget (docs/design.md).
    assert LIMITS.extra_share() == pytest.approx((20 + 2 + 3 + 15) / 60)


def run(tmp_path, tiny_bench, source, budget=2.0, verified=True, **clock):
    bench = dataclasses.replace(tiny_bench, clock={**tiny_bench.clock, **clock})
    path = tmp_path / "train.py"
    path.write_text(source)
    return execute_run(path, RunOptions(benchmark=bench, backend="local", budget_s=budget, runs_dir=tmp_path / "runs",
                                        calibrate=False, verified=verified))


@pytest.fixture
def env(tiny_cache, isolated_dirs, monkeypatch):
    monkeypatch.setenv("HARNESS_CACHE_DIR", str(tiny_cache.data_dir.parent))
    monkeypatch.setenv("HARNESS_BASELINES", str(isolated_dirs / "baselines.json"))
    return isolated_dirs


def test_an_honest_run_is_inside_the_clock(env, tiny_bench, tmp_path):
    r = run(tmp_path, tiny_bench, TOY)
    assert r.status == "ok" and "over_budget" not in r.flags, (r.reason, r.clock)
    assert r.clock["batches"] > 0 and r.clock["window_s"] <= r.clock["limits"]["window_s"]
    # Measured, not repeated: the record's training time is the feed's window, train.py's own is apart.
    assert r.metrics["training_seconds"] == r.clock["window_s"] and r.reported["num_steps"] > 0


PATCHED_CLOCK = '''
import time
_real = time.time
_t0 = _real()
time.time = lambda: _t0 + (_real() - _t0) / 4   # the candidate's clock runs 4x slow: 4x the budget
''' + TOY


def test_a_patched_time_module_does_not_stretch_the_window(env, tiny_bench, tmp_path):
    r = run(tmp_path, tiny_bench, PATCHED_CLOCK)
    assert "over_budget" in r.flags, (r.status, r.clock)
    assert any("batches were taken" in v for v in r.clock["violations"]) or "clock" in (r.reason or "")
    assert counted_runs([r], verified=True) == []


CACHES_THEN_TRAINS = TOY.replace(
    "loader = make_dataloader(tok, 16, 128, \"train\")",
    "import itertools\n_cached = list(itertools.islice(make_dataloader(tok, 16, 128, 'train'), 20))\n"
    "loader = itertools.cycle(_cached)\nimport time as _t\n_t.sleep(0)\n").replace(
    "while time.time() - t0 < TIME_BUDGET:", "while time.time() - t0 < TIME_BUDGET + 6:")


def test_training_on_cached_batches_after_the_last_one_is_flagged(env, tiny_bench, tmp_path):
    r = run(tmp_path, tiny_bench, CACHES_THEN_TRAINS, export_s=3)
    assert "over_budget" in r.flags, (r.status, r.clock)
    assert any("after its last batch" in v for v in r.clock["violations"])


NEVER_ASKS = '''
import torch
from prepare import evaluate_bpb, Tokenizer, VOCAB_SIZE
class Uniform(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.w = torch.nn.Parameter(torch.zeros(VOCAB_SIZE))
    def forward(self, x, targets=None, reduction="mean"):
        return self.w.expand(*x.shape, VOCAB_SIZE)
m = Uniform()
bpb = evaluate_bpb(m, Tokenizer.from_directory(), 16)
print("---")
print(f"val_bpb: {bpb}")
'''


def test_a_run_that_never_takes_a_batch_has_no_window_and_is_flagged(env, tiny_bench, tmp_path):
    r = run(tmp_path, tiny_bench, NEVER_ASKS)
    assert r.clock["batches"] == 0 and "over_budget" in r.flags
    assert "no training batch" in r.clock["violations"][0]


SLOW_START = "import time\ntime.sleep(30)\n" + TOY


def test_training_before_the_first_batch_is_cut_short(env, tiny_bench, tmp_path):
    r = run(tmp_path, tiny_bench, SLOW_START, startup_s=2)
    assert r.status == "timeout" and "clock" in r.reason and "over_budget" in r.flags
    assert r.timings.total_s < 20  # killed at startup_s + grace, not at the hard timeout


def test_the_train_split_is_not_in_the_run(env, tiny_bench, tmp_path):
    probe = "import os\nprint('train visible:', os.path.exists(os.path.join(os.environ['HARNESS_DATA_DIR'], 'train')))\n"
    r = run(tmp_path, tiny_bench, probe + TOY)
    assert "train visible: False" in open(r.log_path).read()
    assert r.status == "ok"


FORGES_CALIBRATION = "import time\nfor _ in range(15):\n    print('calibration {}', flush=True)\n    time.sleep(1)\n" + TOY


def test_printing_calibration_lines_does_not_move_the_start(env, tiny_bench, tmp_path):
    r = run(tmp_path, tiny_bench, FORGES_CALIBRATION, startup_s=2)
    assert r.status == "timeout" and "over_budget" in r.flags, (r.status, r.reason, r.clock)


def test_the_feed_refuses_oversized_requests_and_extra_connections(tiny_cache, tmp_path):
    import socket
    import struct

    from harness.feed import MAX_CONNECTIONS, FeedServer

    with FeedServer(tiny_cache.data_dir, tiny_cache.manifest, tmp_path / "feed") as feed:
        def ask(B, T):
            s = socket.socket(socket.AF_UNIX)
            try:  # a refused connection may already be closed when the request goes out
                s.connect(str(feed.path))
                s.sendall(struct.pack("<III", B, T, 1000))
                s.settimeout(5)
                return s.recv(8)
            except (socket.timeout, OSError):
                return b""
            finally:
                s.close()
        assert len(ask(2, 16)) == 8
        assert ask(4096, 1 << 16) == b""  # 268 M tokens in one request: the connection is closed
        for _ in range(MAX_CONNECTIONS):
            ask(1, 8)
        assert ask(1, 8) == b""  # past the per-run connection cap
        assert feed.stats().tokens < 1 << 20


LATE_FORGED_CALIBRATION = "import time\ntime.sleep(10)\nprint('calibration {}', flush=True)\n" + TOY


def test_without_a_calibration_a_calibration_line_moves_nothing(env, tiny_bench, tmp_path):
    # No calibrate.py ran, so train.py's own first line must not become the start of its clock.
    r = run(tmp_path, tiny_bench, LATE_FORGED_CALIBRATION, startup_s=5)
    assert r.status == "timeout" and "over_budget" in r.flags, (r.status, r.reason, r.clock)
