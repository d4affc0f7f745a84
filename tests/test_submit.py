"""`harness submit` on the local backend: verified scoring, the keep/discard decision, the store.

The same flow on the docker backend (where hiding the val split is real containment) is in
tests/test_docker_verified.py; results.tsv in test_submit_tsv.py; seeds in test_submit_seeds.py.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import jsonschema
import pytest
from typer.testing import CliRunner

from harness.cli import app
from harness.store import ResultStore
from harness.submit import submit
from tests.submit_support import SCHEMA, TOY, env, opts, outcome_of  # noqa: F401 (env: a fixture)


def test_fake_printed_score_gets_its_true_verified_score(tiny_bench, env):
    liar = env / "liar.py"
    liar.write_text(TOY.read_text().replace('print(f"val_bpb:          {bpb:.6f}")',
                                            'print("val_bpb:          0.000100")'))
    report = submit(liar, opts(tiny_bench, env))
    r = report.results[0]
    assert r.status == "ok" and r.evaluation.mode == "verified"
    assert r.metrics["reported_val_bpb"] == pytest.approx(0.0001)
    floor = r.provenance["benchmark"]["entropy_floor_bpb"]
    assert r.val_bpb > floor and r.val_bpb == r.evaluation.evaluator["val_bpb"]
    assert r.evaluation.evaluator["causality_probe"]["ok"]
    assert r.trust == "unisolated"  # scored by fixed code, but local training could reach anything


def test_training_does_not_see_the_val_split(tiny_bench, env):
    probe = env / "probe.py"
    probe.write_text("import os\nimport prepare\nprint('entries', sorted(os.listdir(prepare.DATA_DIR)))\n"
                     "try:\n    prepare.make_dataloader(None, 1, 8, 'val')\n    next(prepare.make_dataloader(None, 1, 8, 'val'))\n"
                     "except RuntimeError as e:\n    print('val refused:', e)\n" + TOY.read_text())
    r = submit(probe, opts(tiny_bench, env)).results[0]
    log = Path(r.log_path).read_text()
    assert "entries ['manifest.json', 'tokenizer']" in log  # train rows come from the feed
    assert "val refused: the val split is not available in this run" in log


def test_non_causal_model_is_invalid(tiny_bench, env):
    cheat = env / "cheat.py"
    # Mix the next token's embedding into each position: the model sees the future.
    cheat.write_text(TOY.read_text().replace(
        "        logits = self.table(x)\n",
        "        logits = self.table(x)\n        logits = logits + 5.0 * torch.roll(self.table(x), -1, dims=1)\n"))
    r = submit(cheat, opts(tiny_bench, env)).results[0]
    assert r.status == "invalid" and "non-causal" in r.reason and r.val_bpb is None


def test_unexportable_model_falls_back_to_self_reported(tiny_bench, env):
    odd = env / "odd.py"
    odd.write_text(TOY.read_text().replace(
        "        logits = self.table(x)\n",
        "        logits = self.table(x)\n        if logits.sum().item() > 1e30:\n            logits = logits * 0\n"))
    report = submit(odd, opts(tiny_bench, env, seeds=3))
    assert len(report.results) == 1  # one informative self-reported run, then no more seeds spent
    r = report.results[0]
    assert r.status == "ok" and r.evaluation.mode == "compat"
    assert r.evaluation.export.error and r.trust == "unisolated"
    assert r.val_bpb is not None  # train.py's own score, labelled as such
    # ... which never decides: a candidate cannot opt out of verification by breaking its export.
    assert not report.decision.keep and "not verifiable" in report.decision.reason and report.scores == []


def test_decision_store_and_schema(tiny_bench, env, monkeypatch):
    import collections

    import harness.pipeline.finish as finish
    import harness.store

    writes = collections.Counter()
    real_write, real_put = finish.write_json_atomic, harness.store.ResultStore.put
    monkeypatch.setattr(finish, "write_json_atomic", lambda path, doc: (writes.update([str(path)]),
                                                                        real_write(path, doc))[1])
    monkeypatch.setattr(harness.store.ResultStore, "put", lambda self, doc: (writes.update(["put " + doc["run_id"]]),
                                                                             real_put(self, doc))[1])
    first = submit(TOY, opts(tiny_bench, env, seeds=2, description="toy"))
    assert first.decision.keep and "first scored submission" in first.decision.reason
    # A verified submit writes each run's record once, with its decision: result.json once, the store once.
    for r in first.results:
        assert writes[str(Path(r.log_path).parent / "result.json")] == 1 and writes["put " + r.run_id] == 1
        assert r.decision.label == "keep" and r.decision.seeds == 2
    worse = env / "worse.py"
    worse.write_text(TOY.read_text().replace("lr=0.05", "lr=0.0000001"))
    second = submit(worse, opts(tiny_bench, env, seeds=2, description="tiny lr"))
    assert not second.decision.keep and second.reference.kind == "best"
    assert second.decision.reason.startswith(("worse", "within noise"))
    store = ResultStore(env / "results")
    listing = store.list(include_unverified=True)
    assert len(listing.rows) == 4 and not listing.problems
    for row in listing.rows:
        jsonschema.validate(store.get(row.run_id), SCHEMA)
        assert row.decision in ("keep", "discard")


def test_results_tsv_inside_git(tiny_bench, env, monkeypatch):
    repo = env / "agent"
    repo.mkdir()
    subprocess.run(["git", "init", "-q", str(repo)], check=True)
    (repo / "train.py").write_text(TOY.read_text())
    subprocess.run(["git", "-C", str(repo), "add", "train.py"], check=True)
    subprocess.run(["git", "-C", str(repo), "-c", "user.email=a@b", "-c", "user.name=a", "commit", "-qm", "x"],
                   check=True)
    monkeypatch.chdir(repo)  # the row goes to the repository the submitter works in
    report = submit(repo / "train.py", opts(tiny_bench, env, description="first\ttry"))
    rows = (repo / "results.tsv").read_text().splitlines()
    assert rows[0].split("\t") == ["commit", "val_bpb", "memory_gb", "status", "description"]
    commit, bpb, mem, status, desc = rows[1].split("\t")
    assert len(commit) >= 7 and float(bpb) == pytest.approx(report.results[0].val_bpb, abs=1e-6)
    assert status == "keep" and desc == "first try"


def test_cli_submit_results_leaderboard_score(tiny_bench, env):
    runner = CliRunner()
    out = runner.invoke(app, ["submit", str(TOY), "--backend", "local", "--budget", "2", "--seeds", "1",
                              "--no-calibrate", "-m", "toy"])
    assert out.exit_code == 0, out.output
    assert "keep: first scored submission" in out.output and "val_bpb" in out.output
    listed = runner.invoke(app, ["results", "list", "--all", "--json"])
    rows = json.loads(listed.stdout)["rows"]
    assert len(rows) == 1 and rows[0]["description"] == "toy"
    board = runner.invoke(app, ["leaderboard", "--all", "--by", "gpu-class"])
    assert rows[0]["run_id"] in board.output
    shown = runner.invoke(app, ["results", "show", rows[0]["run_id"][:15]])
    assert shown.exit_code == 0 and rows[0]["run_id"] in shown.output
    run_dir = Path(json.loads(runner.invoke(app, ["results", "show", rows[0]["run_id"], "--json"]).stdout)
                   ["log_path"]).parent
    rescored = runner.invoke(app, ["score", str(run_dir), "--backend", "local", "--json"])
    assert rescored.exit_code == 0, rescored.output
    doc = json.loads(rescored.stdout)
    assert doc["metrics"]["val_bpb"] == pytest.approx(rows[0]["val_bpb"], rel=1e-9)
    assert doc["evaluation"]["rescored"] and doc["decision"]["label"] == "keep"


def test_cli_submit_refuses_invalid_file(env, tmp_path):
    bad = tmp_path / "train.py"
    bad.write_text("import socket\n")
    out = CliRunner().invoke(app, ["submit", str(bad), "--backend", "local"])
    assert out.exit_code == 1 and "train.py:1:8: error forbidden-import" in out.output


def test_score_below_the_entropy_floor_is_invalid(tmp_path):
    from harness.pipeline.judge import check_floor

    honest = check_floor(outcome_of(tmp_path, 1.95), 1.9)
    assert honest.status == "ok"
    leak = check_floor(outcome_of(tmp_path, 0.4), 1.9)
    assert leak.status == "invalid" and "leakage" in leak.reason


def test_training_past_budget_is_flagged_and_not_counted(tmp_path):
    """The harness's own clock (the feed's first and last batch, harness/clock.py), not what train.py prints."""
    from dataclasses import replace

    from harness.clock import ClockLimits, judge
    from harness.feed import FeedStats
    from harness.pipeline.judge import with_clock_flags
    from harness.record import VERIFIED, Evaluation, RunRecord
    from harness.submit import counted_runs

    limits = ClockLimits(60, 20, 2, 0.05, 15)
    scored = Evaluation(mode=VERIFIED, evaluator={"ok": True}, training_status="ok")

    def record(clock):
        outcome = with_clock_flags(replace(outcome_of(tmp_path), clock=clock.to_dict()), clock)
        return RunRecord(run_id="20261126-000000-abcdef", budget_s=60, hard_timeout_s=240, outcome=outcome,
                         provenance={"seed": 1}, evaluation=scored)

    slow = record(judge(FeedStats(1005.0, 1005.0 + limits.window_s + 1, 9, 9, 9, 1), 1000.0, 1075.0, limits, True))
    assert "over_budget" in slow.flags and slow.clock["window_s"] == pytest.approx(limits.window_s + 1)
    fine = record(judge(FeedStats(1005.0, 1065.0, 9, 9, 9, 1), 1000.0, 1070.0, limits, True))
    assert fine.flags == () and fine.clock["window_s"] == pytest.approx(60)
    assert counted_runs([slow, fine], verified=True) == [fine]


# --- where the results.tsv row goes -------------------------------------------------------------
