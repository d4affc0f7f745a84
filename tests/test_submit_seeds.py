"""`harness submit` and the seeds: candidates that ignore them, crash on some, or are stopped mid-way."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from harness.store import ResultStore
from harness.submit import submit
from tests.submit_support import TOY, env, opts, outcome_of  # noqa: F401 (env: a fixture)


# --- seeds the candidate ignores, and the spread floor ------------------------------------------

def test_runs_with_equal_scores_across_seeds_are_flagged_seed_ignored(tmp_path):
    from dataclasses import replace

    from harness.record import RunRecord
    from harness.submit import flag_seed_ignored

    ids = iter(range(100))

    def run(seed, bpb, status="ok", flags=()):
        outcome = replace(outcome_of(tmp_path, bpb), status=status, flags=tuple(flags))
        return RunRecord(run_id=f"20261126-000000-{next(ids):06x}", budget_s=60, hard_timeout_s=240,
                         outcome=outcome, provenance={"benchmark": {"entropy_floor_bpb": 1.9}, "seed": seed})

    def flags(records):
        return [list(r.flags) for r in records]

    a, b, c = run(1, 2.0123, flags=["throttled"]), run(2, 2.0123), run(3, 2.0456)
    crashed = run(4, 2.0123, status="crash")
    out = flag_seed_ignored([a, b, c, crashed])
    assert flags(out) == [["seed_ignored", "throttled"], ["seed_ignored"], [], []]
    assert flags(flag_seed_ignored(out[:2])) == [["seed_ignored", "throttled"], ["seed_ignored"]]  # sorted, unique
    same_seed = [run(7, 2.0), run(7, 2.0)]  # one seed run twice: equal scores say nothing
    assert flags(flag_seed_ignored(same_seed)) == [[], []]
    honest = [run(1, 2.0123001), run(2, 2.0123)]  # 1e-7 apart: two seeds that happened to land close
    assert flags(flag_seed_ignored(honest)) == [[], []]


def test_class_noise_comes_from_the_baselines_file(tmp_path):
    from harness.scoring.baselines import Baselines, add_sample, save_baselines
    from harness.submit import Reference, class_noise_std, decide_keep

    path = tmp_path / "baselines.json"
    assert class_noise_std(path, "tiny", "CPU-x") is None
    b = Baselines()
    add_sample(b, "tiny", "CPU-x", val_bpb=2.00, run_id="r1")
    save_baselines(b, path)
    assert class_noise_std(path, "tiny", "CPU-x") is None  # one run is no spread
    add_sample(b, "tiny", "CPU-x", val_bpb=2.01, run_id="r2")
    add_sample(b, "tiny", "CPU-y", val_bpb=3.0, run_id="r3")
    save_baselines(b, path)
    noise = class_noise_std(path, "tiny", "CPU-x")
    assert noise == pytest.approx(0.01 / 2 ** 0.5)
    ref = Reference("best", "best so far", [2.000, 2.0001, 1.9999])
    cand = [1.995, 1.995, 1.995]  # a hard-coded seed: three copies of one run
    assert decide_keep(cand, ref, 0.05).keep  # taken at face value, 0.005 better looks certain
    floored = decide_keep(cand, ref, 0.05, noise)
    assert not floored.keep and "class's seed noise" in floored.reason


# One thread: the same seed gives the same floats however loaded the machine is; 10 steps stay inside
# the clock's window on a busy 2-core machine.
FIXED_SEED = TOY.read_text().replace("torch.manual_seed(SEED)", "torch.manual_seed(0)\ntorch.set_num_threads(1)").replace(
    "while time.time() - t0 < TIME_BUDGET:", "while step < 10:")


def test_a_candidate_that_fixes_its_own_seed_is_flagged_and_still_counts(tiny_bench, env):
    from harness.baseline import measure_noise

    fixed = env / "fixed_seed.py"
    fixed.write_text(FIXED_SEED)
    report = submit(fixed, opts(tiny_bench, env, seeds=2))
    seeds = {r.provenance["seed"] for r in report.results}
    assert len(seeds) == 2 and report.results[0].val_bpb == report.results[1].val_bpb
    assert all("seed_ignored" in r.flags for r in report.results)
    assert len(report.scores) == 2  # they count; the spread floor is what keeps them honest
    store = ResultStore(env / "results")
    for r in report.results:
        assert "seed_ignored" in store.get(r.run_id)["flags"]
        assert "seed_ignored" in json.loads((Path(r.log_path).parent / "result.json").read_text())["flags"]
    # A noise measurement of such a candidate measures nothing: no zero-spread "class noise".
    noise = measure_noise(fixed, opts(tiny_bench, env), runs=2)
    assert noise.used == [] and noise.summary is None
    assert all("seed_ignored" in store.get(r.run_id)["flags"] for r in noise.results)


UNLUCKY_SEEDS_CRASH = '''import os
if int(os.environ["HARNESS_SEED"]) % 2:  # an agent that gives up on the seeds it finds unlucky
    raise SystemExit("unlucky seed")
'''


def test_crashing_on_unlucky_seeds_cannot_choose_the_lucky_ones(tiny_bench, env, monkeypatch):
    import harness.pipeline.request

    seeds = iter([2, 3])
    monkeypatch.setattr(harness.pipeline.request, "choose_seed", lambda asked: next(seeds))
    picker = env / "picker.py"
    picker.write_text(UNLUCKY_SEEDS_CRASH + TOY.read_text())
    report = submit(picker, opts(tiny_bench, env, seeds=2))
    lucky, unlucky = report.results
    assert (lucky.status, lucky.evaluation.mode, unlucky.status) == ("ok", "verified", "crash")
    # Alone, the lucky seed would be the first scored submission on this class, so kept; it is not.
    assert not report.decision.keep
    assert "1 of 2 seed(s) did not count (seed 2: crash" in report.decision.reason
    store = ResultStore(env / "results")
    assert store.get(lucky.run_id)["flags"] == ["seeds_failed"]
    assert store.get(lucky.run_id)["decision"]["label"] == "discard"
    # Nothing of it on a leaderboard (the local backend's runs are unisolated: asked for explicitly here).
    assert store.leaderboard(tiny_bench.name, include_unverified=True) == []
    assert store.best(tiny_bench.name, include_unverified=True) is None


def test_a_submit_stopped_before_its_decision_still_writes_every_run(tiny_bench, env, monkeypatch):
    """Ctrl-C (or a corrupt store) after the seeds: each finished run gets its record, decision aborted,
    its score flagged, so a cut-short submission's lucky seed reaches no leaderboard."""
    import harness.submit

    def interrupted(*_a, **_k):
        raise KeyboardInterrupt

    monkeypatch.setattr(harness.submit, "choose_reference", interrupted)
    with pytest.raises(KeyboardInterrupt):
        submit(TOY, opts(tiny_bench, env, seeds=1))
    store = ResultStore(env / "results")
    [row] = store.list(include_flagged=True, include_unverified=True).rows
    doc = store.get(row.run_id)
    assert doc["status"] == "ok" and doc["decision"]["label"] == "aborted" and "seeds_failed" in doc["flags"]
    run_dir = Path(doc["log_path"]).parent
    assert json.loads((run_dir / "result.json").read_text()) == doc and not (run_dir / "journal.json").exists()
    assert store.leaderboard(tiny_bench.name, include_unverified=True) == []
