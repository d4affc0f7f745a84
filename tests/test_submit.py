"""`harness submit` on the local backend: verified scoring, the keep/discard decision, the store, results.tsv.

The same flow on the docker backend (where hiding the val split is real containment) is in
tests/test_docker_verified.py.
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
from harness.submit import SubmitOptions, submit
from tests.conftest import REPO

TOY = REPO / "tests" / "cases" / "toy_train.py"
SCHEMA = json.loads((REPO / "harness" / "schemas" / "result.schema.json").read_text())


@pytest.fixture
def env(tiny_cache, isolated_dirs, monkeypatch):
    monkeypatch.setenv("HARNESS_CACHE_DIR", str(tiny_cache.data_dir.parent))
    monkeypatch.setenv("HARNESS_BASELINES", str(isolated_dirs / "baselines.json"))
    monkeypatch.chdir(isolated_dirs)  # outside any git repository: no results.tsv row unless a test asks
    return isolated_dirs


def opts(bench, tmp, **kw):
    kw.setdefault("seeds", 1)
    return SubmitOptions(benchmark=bench, backend="local", budget_s=2, results_dir=tmp / "results",
                         calibrate=False, **kw)


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


def _outcome(tmp_path, val_bpb=2.0):
    from harness.record import Outcome, Timings

    return Outcome(status="ok", reason=None, backend="docker", isolated=True, log_path=str(tmp_path / "log.txt"),
                   timings=Timings(0, 1, 100, 1, 60, 5, 100), metrics={"val_bpb": val_bpb})


def test_score_below_the_entropy_floor_is_invalid(tmp_path):
    from harness.pipeline.judge import check_floor

    honest = check_floor(_outcome(tmp_path, 1.95), 1.9)
    assert honest.status == "ok"
    leak = check_floor(_outcome(tmp_path, 0.4), 1.9)
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
        outcome = with_clock_flags(replace(_outcome(tmp_path), clock=clock.to_dict()), clock)
        return RunRecord(run_id="20261126-000000-abcdef", budget_s=60, hard_timeout_s=240, outcome=outcome,
                         provenance={"seed": 1}, evaluation=scored)

    slow = record(judge(FeedStats(1005.0, 1005.0 + limits.window_s + 1, 9, 9, 9, 1), 1000.0, 1075.0, limits, True))
    assert "over_budget" in slow.flags and slow.clock["window_s"] == pytest.approx(limits.window_s + 1)
    fine = record(judge(FeedStats(1005.0, 1065.0, 9, 9, 9, 1), 1000.0, 1070.0, limits, True))
    assert fine.flags == () and fine.clock["window_s"] == pytest.approx(60)
    assert counted_runs([slow, fine], verified=True) == [fine]


# --- where the results.tsv row goes -------------------------------------------------------------

def _repo(path: Path, files: dict[str, str]) -> str:
    """A real git repository holding files in one commit; returns HEAD's short hash."""
    path.mkdir(parents=True)
    for name, text in files.items():
        (path / name).write_text(text)
    subprocess.run(["git", "init", "-q", str(path)], check=True)
    subprocess.run(["git", "-C", str(path), "add", "."], check=True)
    subprocess.run(["git", "-C", str(path), "-c", "user.email=a@b", "-c", "user.name=a", "commit", "-qm", "x"],
                   check=True)
    return subprocess.run(["git", "-C", str(path), "rev-parse", "--short", "HEAD"], capture_output=True,
                          text=True, check=True).stdout.strip()


def test_tsv_row_goes_to_the_current_directorys_repository_not_train_pys(tiny_bench, env, monkeypatch):
    from harness.tsv import read_rows

    head_a = _repo(env / "a", {"train.py": TOY.read_text()})
    _repo(env / "b", {"notes.md": "the agent's own repository\n"})
    (env / "b" / "deep").mkdir()
    monkeypatch.chdir(env / "b" / "deep")
    report = submit(env / "a" / "train.py", opts(tiny_bench, env, description="run from b"))
    assert report.tsv_path == (env / "b").resolve() / "results.tsv"
    assert not (env / "a" / "results.tsv").exists()  # never the repository that merely holds train.py
    [row] = read_rows(report.tsv_path)
    assert row.commit == head_a and row.description == "run from b"  # the commit of train.py's repository
    assert row.val_bpb == pytest.approx(report.results[0].val_bpb, abs=1e-6)


def test_no_tsv_row_outside_git(tiny_bench, env):
    from harness.tsv import cwd_tsv_path

    _repo(env / "a", {"train.py": TOY.read_text()})
    assert cwd_tsv_path() is None  # the fixture's cwd is in no repository
    report = submit(env / "a" / "train.py", opts(tiny_bench, env))
    assert report.tsv_path is None and "not in a git repository" in report.tsv_note and "--tsv" in report.tsv_note
    assert list(env.rglob("results.tsv")) == [] and report.to_dict()["tsv"] is None


EVIL = "wider\x1b[2J\x1b]0;pwned\x07 MLP\rkeep\u202eesrever\u202c\u2066x\u2069\x08\x7f\x9b31m\tand\nmore\u200b"
EVIL_SHOWN = "wider MLP keepesreverx and more"


def _assert_inert(text: str) -> None:
    import unicodedata

    bad = [hex(ord(c)) for c in text if c != "\n" and unicodedata.category(c) in ("Cc", "Cf")]
    assert not bad, bad


def test_cli_submit_tsv_option_and_a_hostile_description(tiny_bench, env, monkeypatch):
    from harness.tsv import read_rows

    _repo(env / "b", {"notes.md": "x\n"})
    monkeypatch.chdir(env / "b")
    target = env / "elsewhere" / "mine.tsv"
    runner = CliRunner()
    out = runner.invoke(app, ["submit", str(TOY), "--backend", "local", "--budget", "2", "--seeds", "1",
                              "--no-calibrate", "-m", EVIL, "--tsv", str(target)])
    assert out.exit_code == 0, out.output
    assert f"results.tsv row: {target}" in out.output
    _assert_inert(out.output)
    assert not (env / "b" / "results.tsv").exists()  # --tsv, and nowhere else
    [row] = read_rows(target)
    assert row.status == "keep" and row.description == EVIL_SHOWN
    _assert_inert(target.read_text().replace("\t", " "))  # tabs only as the separators read_rows split on
    stored = json.loads(runner.invoke(app, ["results", "list", "--all", "--json"]).stdout)["rows"]
    assert [r["description"] for r in stored] == [EVIL_SHOWN]  # cleaned before it was stored
    listed = runner.invoke(app, ["results", "list", "--all"])
    assert listed.exit_code == 0 and "pwned" not in listed.output
    _assert_inert(listed.output)


def test_cli_submit_refuses_a_directory_as_tsv(env):
    out = CliRunner().invoke(app, ["submit", str(TOY), "--backend", "local", "--tsv", str(env)])
    assert out.exit_code == 2 and "is a directory" in out.output


# --- seeds the candidate ignores, and the spread floor ------------------------------------------

def test_runs_with_equal_scores_across_seeds_are_flagged_seed_ignored(tmp_path):
    from dataclasses import replace

    from harness.record import RunRecord
    from harness.submit import flag_seed_ignored

    ids = iter(range(100))

    def run(seed, bpb, status="ok", flags=()):
        outcome = replace(_outcome(tmp_path, bpb), status=status, flags=tuple(flags))
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
