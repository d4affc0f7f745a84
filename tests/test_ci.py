"""`harness ci score` and `ci status` on real git repositories made here with the git CLI, on tiny with one
seed and a 2 s budget (local backend: the walk, not containment, is what is tested; the docker path of
a run is tested elsewhere)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import jsonschema
import pytest
from junitparser import JUnitXml
from typer.testing import CliRunner

from harness.cli import app
from harness.store import ResultStore
from tests.conftest import REPO

# A fixed number of steps, not the wall clock: on a busy 2-core machine a time-bounded toy's steps (and so its
# score) vary several-fold from run to run, which would drown the difference the test relies on.
TOY = (REPO / "tests" / "cases" / "toy_train.py").read_text().replace(
    "while time.time() - t0 < TIME_BUDGET:", "while step < 20:")
SCHEMA = json.loads((REPO / "harness" / "schemas" / "result.schema.json").read_text())
FAST = ["--seeds", "1", "--budget", "5", "--backend", "local", "--no-calibrate", "-b", "tiny"]
runner = CliRunner()


def git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True, text=True).stdout.strip()


def commit(repo: Path, message: str, files: dict[str, str | bytes]) -> str:
    for name, text in files.items():
        (repo / name).write_bytes(text.encode() if isinstance(text, str) else text)
    git(repo, "add", "-A")
    git(repo, "-c", "user.email=agent@lab", "-c", "user.name=agent", "commit", "-q", "-m", message)
    return git(repo, "rev-parse", "HEAD")


@pytest.fixture(scope="module")
def lab(tmp_path_factory, tiny_cache):
    """A repository: main holds the toy candidate; agent branches improve it, crash, fake a score, refuse."""
    root = tmp_path_factory.mktemp("ci")
    repo = root / "agents"
    repo.mkdir()
    git(repo, "init", "-q", "-b", "main")
    shas = {"base": commit(repo, "baseline", {"train.py": TOY})}
    git(repo, "checkout", "-q", "-b", "agent/good")
    better = TOY.replace("lr=0.05", "lr=0.2")  # 4x the learning rate: far lower bpb in 2 s (checked below)
    shas["good1"] = commit(repo, "higher lr", {"train.py": better})
    shas["docs"] = commit(repo, "docs only", {"NOTES.md": "no change to train.py\n"})
    fake = better.replace('print(f"val_bpb:          {bpb:.6f}")', 'print("val_bpb:          0.010000")')
    shas["fake"] = commit(repo, "prints a fake score", {"train.py": fake})
    git(repo, "checkout", "-q", "main")
    git(repo, "checkout", "-q", "-b", "agent/bad")
    shas["refused"] = commit(repo, "uses sockets", {"train.py": "import socket\n" + TOY})
    shas["binary"] = commit(repo, "binary file", {"train.py": b"\x00\x01\x02"})
    shas["crash"] = commit(repo, "crash at the end", {"train.py": TOY + "raise SystemExit(3)\n"})
    git(repo, "checkout", "-q", "main")
    git(repo, "checkout", "-q", "-b", "agent/idle")
    commit(repo, "notes", {"NOTES.md": "nothing\n"})
    git(repo, "checkout", "-q", "main")
    env = {"HARNESS_CACHE_DIR": str(tiny_cache.data_dir.parent), "HARNESS_RUNS_DIR": str(root / "runs"),
           "HARNESS_RESULTS": str(root / "results"), "HARNESS_BASELINES": str(root / "baselines.json")}
    return repo, root, shas, env


@pytest.fixture
def lab_env(lab, monkeypatch):
    for k, v in lab[3].items():
        monkeypatch.setenv(k, v)
    return lab


@pytest.fixture(scope="module")
def walked(lab):
    """The class's seed noise in the baselines file, then one walk of every agent branch.

    The noise is given, not measured: two samples 0.02 bpb apart (std 0.014, about what two 20-step toy runs
    differ by here). Measuring it is `harness baseline`'s job, tested in test_baseline.py; here it only has to
    be known so that a one-seed commit can be judged at all."""
    repo, root, shas, env = lab
    mp = pytest.MonkeyPatch()
    for k, v in env.items():
        mp.setenv(k, v)
    try:
        from harness.hw.context import detect_hardware
        from harness.scoring.baselines import Baselines, add_sample, save_baselines

        cls = detect_hardware(probe_docker=False).cls.label
        noise = Baselines()
        add_sample(noise, "tiny", cls, val_bpb=3.00, run_id="noise-1")
        add_sample(noise, "tiny", cls, val_bpb=3.02, run_id="noise-2")
        save_baselines(noise, root / "baselines.json")
        out = runner.invoke(app, ["ci", "score", "--repo", str(repo), "--branches", "agent/*", "--base", "main",
                                  *FAST, "--junit", str(root / "out.xml"), "--summary", str(root / "out.md"),
                                  "--json"])
    finally:
        mp.undo()
    return out, json.loads(out.stdout)


def _branch(doc, name):
    return next(b for b in doc["branches"] if b["name"] == name)


def test_each_changed_commit_is_scored_and_decided_against_the_last_kept(lab, walked):
    repo, root, shas, _ = lab
    out, doc = walked
    assert out.exit_code == 1, out.output  # agent/bad's head crashed
    good, bad, idle = _branch(doc, "agent/good"), _branch(doc, "agent/bad"), _branch(doc, "agent/idle")
    assert [c["sha"] for c in good["commits"]] == [shas["good1"], shas["fake"]]  # docs-only commit: nothing to score
    first, fake = good["commits"]
    assert first["how"] == "scored" and first["decision"] == "keep", first
    assert first["val_bpb"] < good["base_val_bpb"] - 0.05  # the margin the test relies on, measured here
    assert good["best"]["sha"] == shas["good1"] and good["delta_vs_base"] < 0
    # The printed 0.01 is ignored: the verified score is the model's, above the floor.
    assert fake["val_bpb"] > 1.5 and fake["how"] == "scored"
    assert [(c["sha"], c["how"], c["decision"], c["status"]) for c in bad["commits"]] == [
        (shas["refused"], "refused", "failed", "invalid"), (shas["binary"], "refused", "failed", "invalid"),
        (shas["crash"], "scored", "failed", "crash")]
    assert "forbidden-import" in bad["commits"][0]["reason"] and "binary" in bad["commits"][1]["reason"]
    assert bad["commits"][2]["is_head"] and "exit code 3" in bad["commits"][2]["reason"]
    assert idle["commits"] == []
    # Every run's record carries where it came from, and is a valid record.
    store = ResultStore(root / "results")
    for row in store.list(include_flagged=True, include_unverified=True).rows:
        rec = store.get(row.run_id)
        jsonschema.validate(rec, SCHEMA)
        origin = rec["provenance"]["submission"]["git"]
        if origin and origin.get("branch") == "agent/good" and origin["commit"] == shas["good1"]:
            assert origin["subject"] == "higher lr" and origin["repo"] == "agents" and origin["author_time"] > 0
            assert rec["trust"] == "unisolated" and rec["decision"]["label"] == "keep"


def test_junit_and_markdown_are_what_ci_systems_read(lab, walked):
    root = lab[1]
    suites = {s.name: s for s in JUnitXml.fromfile(str(root / "out.xml"))}
    assert (suites["agent/good"].tests, suites["agent/good"].failures) == (2, 0)
    assert (suites["agent/bad"].tests, suites["agent/bad"].failures) == (3, 3)
    md = (root / "out.md").read_text()
    assert md.count("### agent/") == 3 and "higher lr" in md and "★" in md


def test_a_second_walk_scores_nothing(lab, walked, lab_env):
    repo, root, shas, _ = lab
    runs_before = set((root / "runs").iterdir())
    out = runner.invoke(app, ["ci", "score", "--repo", str(repo), "--branches", "agent/*", "--base", "main", *FAST,
                              "--json"])
    doc = json.loads(out.stdout)
    hows = [c["how"] for b in doc["branches"] for c in b["commits"]]
    assert hows and set(hows) <= {"cached"}, hows
    assert set((root / "runs").iterdir()) == runs_before  # not one new run
    assert _branch(doc, "agent/good")["commits"][0]["decision"] == "keep"  # decided again from stored scores


def test_status_from_the_store_alone(lab, walked, lab_env):
    repo, root, shas, _ = lab
    out = runner.invoke(app, ["ci", "status", "--json", "--repo", str(repo), "--base", "main"])
    rows = {r["branch"]: r for r in json.loads(out.stdout)}
    assert rows["agent/good"]["best_commit"] == shas["good1"] and rows["agent/good"]["pending"] == 0
    assert rows["agent/good"]["scored"] == 2 and rows["agent/bad"]["best_val_bpb"] is None


def test_dry_run_and_bad_input(lab, lab_env, tmp_path):
    repo = lab[0]
    out = runner.invoke(app, ["ci", "score", "--repo", str(repo), "--branches", "agent/good", "--base", "main", *FAST,
                              "--dry-run", "--results", str(tmp_path / "empty"), "--json"])
    doc = json.loads(out.stdout)
    assert out.exit_code == 0 and doc["dry_run"]
    assert [c["how"] for c in doc["branches"][0]["commits"]] == ["planned", "planned"]
    assert not (tmp_path / "empty" / "runs").exists() or not any((tmp_path / "empty" / "runs").iterdir())
    nothing = runner.invoke(app, ["ci", "score", "--repo", str(repo), "--branches", "nobody/*", *FAST])
    assert nothing.exit_code == 2 and "no branch" in nothing.output and "nobody/*" in nothing.output
    notrepo = runner.invoke(app, ["ci", "score", "--repo", str(tmp_path), *FAST])
    assert notrepo.exit_code == 2 and "not a git repository" in notrepo.output


def test_a_shallow_clone_says_to_fetch_the_history(lab, lab_env, tmp_path):
    repo = lab[0]
    shallow = tmp_path / "shallow"
    subprocess.run(["git", "clone", "-q", "--depth", "1", "--no-single-branch", f"file://{repo}", str(shallow)],
                   check=True)
    out = runner.invoke(app, ["ci", "score", "--repo", str(shallow), "--branches", "agent/good", "--base",
                              "origin/main", *FAST])
    assert out.exit_code == 2, out.output
    assert "shallow" in out.output and "fetch-depth: 0" in out.output


def test_two_concurrent_walks_score_a_commit_once(lab, walked, lab_env):
    repo, root, shas, env = lab
    git(repo, "checkout", "-q", "-b", "agent/race", "main")
    sha = commit(repo, "a new idea", {"train.py": TOY.replace("lr=0.05", "lr=0.07")})
    git(repo, "checkout", "-q", "main")
    cmd = [sys.executable, "-m", "harness", "ci", "score", "--repo", str(repo), "--branches", "agent/race",
           "--base", "main", *FAST, "--json"]
    procs = [subprocess.Popen(cmd, env={**os.environ, **env}, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                              text=True) for _ in range(2)]
    docs = [json.loads(p.communicate(timeout=300)[0]) for p in procs]
    hows = sorted(d["branches"][0]["commits"][0]["how"] for d in docs)
    assert hows == ["cached", "scored"], hows  # one ran it; the other waited for its lock and reused it
    store = ResultStore(root / "results")
    mine = [r for r in store.list(include_flagged=True, include_unverified=True).rows
            if (store.get(r.run_id)["provenance"]["submission"]["git"] or {}).get("commit") == sha]
    assert len(mine) == 1


def test_a_force_pushed_branch_reports_its_gone_commits(lab, walked, lab_env):
    repo, root, shas, _ = lab
    git(repo, "branch", "-q", "-f", "agent/good", shas["good1"])  # the fake-score commit is rewritten away
    out = runner.invoke(app, ["ci", "score", "--repo", str(repo), "--branches", "agent/good", "--base", "main",
                              *FAST, "--json"])
    doc = json.loads(out.stdout)
    assert doc["branches"][0]["gone"] == [shas["fake"]]
    assert [c["how"] for c in doc["branches"][0]["commits"]] == ["cached"]
    assert any((ResultStore(root / "results").get(r.run_id)["provenance"]["submission"]["git"] or {}).get("commit")
               == shas["fake"] for r in ResultStore(root / "results").list(include_flagged=True,
                                                                          include_unverified=True).rows)


def test_bad_candidates_are_refused_with_the_reason(tmp_path):
    """Missing, too large, binary, not UTF-8: read with git and refused before anything runs."""
    from types import SimpleNamespace

    from harness.ci import gitwalk, walk

    repo = tmp_path / "r"
    repo.mkdir()
    git(repo, "init", "-q", "-b", "main")
    cases = {"missing": {"other.py": "x = 1\n"}, "latin1": {"train.py": "caf\xe9 = 1\n".encode("latin-1")},
             "nul": {"train.py": b"a\x00b"}, "big": {"train.py": "#" * (walk.DEFAULT_MAX_BYTES + 1)},
             "fine": {"train.py": "print('hi')\n"}}
    fake = SimpleNamespace(top=repo, opts=SimpleNamespace(path="train.py"))
    reasons = {}
    for name, files in cases.items():
        if name != "missing":
            (repo / "other.py").unlink(missing_ok=True)
        sha = commit(repo, name, files)
        if name != "missing":
            git(repo, "rm", "-q", "--cached", "--ignore-unmatch", "other.py")
        content, problem = walk._read(fake, gitwalk.blob_at(repo, sha, "train.py"))
        reasons[name] = problem
    assert "missing" in reasons["missing"] and "not UTF-8" in reasons["latin1"]
    assert "binary" in reasons["nul"] and "larger than" in reasons["big"] and reasons["fine"] is None


def test_a_score_is_reused_only_for_the_same_executor_and_enough_seeds(lab, walked, lab_env):
    """The cache never stands an unisolated (local) score in for a container's, nor one seed for two."""
    repo = lab[0]

    def hows(*extra):
        out = runner.invoke(app, ["ci", "score", "--repo", str(repo), "--branches", "agent/good", "--base", "main",
                                  *FAST, *extra, "--dry-run", "--json"])
        return [c["how"] for c in json.loads(out.stdout)["branches"][0]["commits"]]

    scored = hows()
    assert scored and set(scored) == {"cached"}
    assert hows("--backend", "docker") == ["planned"] * len(scored)  # the last --backend wins
    assert hows("--seeds", "2") == ["planned"] * len(scored)  # the last --seeds wins
