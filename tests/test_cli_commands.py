"""Every command of the CLI driven once through typer's CliRunner, its --json checked against what it
claims, and its exit code against the README's convention: 0 success, 1 the thing checked or run failed,
2 usage or set-up errors.

The 19 entry points: benchmarks, prepare, validate, run, submit, score, leaderboard, noise, baseline,
baselines-merge, hw, doctor, janitor, results list|show|reindex, image build|ensure|show. One submit
(local backend, 1 seed, budget 2 s, module-scoped) is shared by the store commands and score. The
docker-marked tests need a daemon and harness-cpu:latest (skip without one, fail under CI=true).
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml
from typer.testing import CliRunner

from harness.cli import app
from tests.conftest import REPO

sys.path.insert(0, str(Path(__file__).parent))
from docker_support import IMAGE, SESSION_PREFIX, docker_client  # noqa: E402,F401

TOY = REPO / "tests" / "cases" / "toy_train.py"
BASELINE = REPO / "submissions" / "baseline" / "train.py"
SCHEMA = json.loads((REPO / "harness" / "schemas" / "result.schema.json").read_text())
FAST_RUN = ["--backend", "local", "--budget", "2", "--no-calibrate"]  # what every run here uses

runner = CliRunner()


def invoke(*args: str):
    return runner.invoke(app, [str(a) for a in args])


def assert_usage_error(out, *words: str) -> None:
    """Exit 2, one `error:` line naming what was wrong, no traceback."""
    assert out.exit_code == 2, (out.exit_code, out.output)
    assert out.exception is None or isinstance(out.exception, SystemExit), out.exception
    for w in words:
        assert w in out.output, (w, out.output)


@pytest.fixture(autouse=True)
def scratch(tmp_path, monkeypatch):
    """Runs, results and baselines go to temp folders (journal recovery never sees the repo's runs/), and
    the current directory is outside any git repository (no results.tsv row)."""
    monkeypatch.setenv("HARNESS_RUNS_DIR", str(tmp_path / "runs"))
    monkeypatch.setenv("HARNESS_RESULTS", str(tmp_path / "results"))
    monkeypatch.setenv("HARNESS_BASELINES", str(tmp_path / "baselines.json"))
    monkeypatch.chdir(tmp_path)
    return tmp_path


@pytest.fixture
def cache(tiny_cache, monkeypatch):
    monkeypatch.setenv("HARNESS_CACHE_DIR", str(tiny_cache.data_dir.parent))
    return tiny_cache


@pytest.fixture
def empty_cache(tmp_path, monkeypatch):
    """HARNESS_CACHE_DIR at an empty folder: no benchmark is prepared."""
    empty = tmp_path / "empty-cache"
    empty.mkdir()
    monkeypatch.setenv("HARNESS_CACHE_DIR", str(empty))
    return empty


@dataclass
class Submitted:
    root: Path
    results: Path
    runs: Path
    exit_code: int
    output: str
    doc: dict[str, Any]
    env: dict[str, str]


@pytest.fixture(scope="module")
def submitted(tmp_path_factory, tiny_cache) -> Submitted:
    """One `harness submit --json` of the toy candidate, shared by the tests that read the store."""
    root = tmp_path_factory.mktemp("submitted")
    env = {"HARNESS_RUNS_DIR": str(root / "runs"), "HARNESS_RESULTS": str(root / "results"),
           "HARNESS_BASELINES": str(root / "baselines.json"),
           "HARNESS_CACHE_DIR": str(tiny_cache.data_dir.parent)}
    with pytest.MonkeyPatch.context() as mp:
        for k, v in env.items():
            mp.setenv(k, v)
        mp.chdir(root)
        out = invoke("submit", TOY, *FAST_RUN, "--seeds", "1", "-m", "toy", "--json")
    assert out.exit_code in (0, 1), out.output
    return Submitted(root, root / "results", root / "runs", out.exit_code, out.output, json.loads(out.stdout), env)


@pytest.fixture
def in_store(submitted, monkeypatch) -> Submitted:
    """The environment of the shared submission (its store, runs and cache)."""
    for k, v in submitted.env.items():
        monkeypatch.setenv(k, v)
    return submitted


def stored_records(results: Path) -> dict[str, dict[str, Any]]:
    return {p.stem: json.loads(p.read_text()) for p in sorted((results / "runs").glob("*.json"))}


# --- benchmarks, prepare, validate ------------------------------------------------------------------

def test_benchmarks_json_matches_benchmarks_yaml():
    out = invoke("benchmarks", "--json")
    assert out.exit_code == 0, out.output
    listed = {b["name"]: b for b in json.loads(out.stdout)}
    declared = yaml.safe_load((REPO / "benchmarks.yaml").read_text())["benchmarks"]
    assert set(listed) == set(declared) >= {"tiny", "climbmix"}
    for name, spec in declared.items():
        assert listed[name]["time_budget_s"] == spec["time_budget_s"], name
        assert listed[name]["hard_timeout_s"] == spec["hard_timeout_s"], name
    text = invoke("benchmarks")
    assert text.exit_code == 0 and "tiny" in text.stdout and "budget 60s" in text.stdout


def test_benchmarks_with_a_broken_benchmarks_file_is_a_setup_error(tmp_path, monkeypatch):
    bad = tmp_path / "benchmarks.yaml"
    bad.write_text("schema_version: 1\nbenchmarks:\n  tiny: {time_budget_s: -1}\n")
    monkeypatch.setenv("HARNESS_BENCHMARKS", str(bad))
    assert_usage_error(invoke("benchmarks", "--json"), "tiny")


def test_prepare_reuses_the_cache_and_refuses_an_unknown_benchmark(cache):
    out = invoke("prepare", "-b", "tiny", "--json")
    assert out.exit_code == 0, out.output
    doc = json.loads(out.stdout)
    assert doc["benchmark"] == "tiny" and Path(doc["data_dir"]) == cache.data_dir
    assert doc["manifest_sha256"] == cache.manifest_sha256
    assert_usage_error(invoke("prepare", "-b", "nosuch"), "nosuch")


def test_validate_exit_codes_and_json(tmp_path):
    out = invoke("validate", BASELINE, "--json")
    assert out.exit_code == 0, out.output
    doc = json.loads(out.stdout)
    assert doc["ok"] and doc["error_count"] == 0 and doc["path"] == str(BASELINE)
    bad = tmp_path / "train.py"
    bad.write_text("import torch\nimport socket\n")
    out = invoke("validate", bad, "--json")
    doc = json.loads(out.stdout)
    errors = [(f["line"], f["code"]) for f in doc["findings"] if f["severity"] == "error"]
    assert out.exit_code == 1 and not doc["ok"] and doc["error_count"] == len(errors)
    assert errors[0] == (2, "forbidden-import")
    assert_usage_error(invoke("validate", tmp_path / "nope.py"), "nope.py")
    assert_usage_error(invoke("validate", BASELINE, "-b", "nosuch"), "nosuch")


# --- run, submit, score -----------------------------------------------------------------------------

def test_run_json_is_a_schema_valid_record_and_the_exit_code_follows_its_status(cache, scratch):
    out = invoke("run", TOY, *FAST_RUN, "--seed", "7", "--json")
    doc = json.loads(out.stdout)
    assert doc["schema_version"] == 2
    jsonschema.validate(doc, SCHEMA)
    assert out.exit_code == (0 if doc["status"] == "ok" else 1), (out.exit_code, doc["status"], doc["reason"])
    assert doc["status"] == "ok", doc["reason"]
    assert doc["provenance"]["seed"] == 7 and doc["budget_s"] == 2 and doc["backend"] == "local"
    assert doc["trust"] == "unisolated"  # the local backend says so, always
    run_dir = Path(doc["log_path"]).parent
    assert run_dir.parent == scratch / "runs" and json.loads((run_dir / "result.json").read_text()) == doc
    assert not (scratch / "results").exists()  # run stores nothing


def test_run_setup_errors_exit_2(cache, tmp_path):
    assert_usage_error(invoke("run", TOY, "--backend", "nosuch"), "nosuch", "local", "docker")
    assert_usage_error(invoke("run", TOY, "-b", "nosuch", "--backend", "local"), "nosuch")
    assert_usage_error(invoke("run", tmp_path / "missing.py", "--backend", "local"), "missing.py")
    assert not (tmp_path / "runs").exists()  # nothing started


def test_unprepared_benchmark_is_a_setup_error_for_every_run_command(empty_cache):
    for args in (["run", TOY, *FAST_RUN],
                 ["submit", TOY, *FAST_RUN, "--seeds", "1"],
                 ["noise", TOY, *FAST_RUN, "--runs", "1"],
                 ["baseline", *FAST_RUN, "--runs", "1"]):
        assert_usage_error(invoke(*args), "harness prepare --benchmark tiny", str(empty_cache / "tiny"))


def test_submit_json_decision_matches_exit_code_and_records(submitted):
    doc = submitted.doc
    assert submitted.exit_code == (0 if doc["decision"] == "keep" else 1), submitted.output
    assert doc["decision"] == "keep", doc["reason"]  # the first scored submission becomes the reference
    assert doc["reference"]["kind"] == "none" and len(doc["runs"]) == 1 and len(doc["records"]) == 1
    assert doc["summary"]["n"] == len(doc["scores"]) == 1
    assert doc["tsv"] is None and "not in a git repository" in doc["tsv_note"]
    for run_id, path in zip(doc["runs"], doc["records"]):
        record = json.loads(Path(path).read_text())
        jsonschema.validate(record, SCHEMA)
        assert record["run_id"] == run_id and record["schema_version"] == 2
        assert record["decision"]["label"] == doc["decision"] and record["decision"]["reason"] == doc["reason"]
        assert record["metrics"]["val_bpb"] == doc["scores"][0]
        assert record["provenance"]["submission"]["description"] == "toy"
        assert Path(path).parent == submitted.results / "runs"


def test_submit_setup_errors_exit_2_and_an_invalid_file_exit_1(cache, tmp_path):
    assert_usage_error(invoke("submit", TOY, "--backend", "nosuch", "--seeds", "1"), "nosuch")
    assert_usage_error(invoke("submit", TOY, "-b", "nosuch"), "nosuch")
    assert_usage_error(invoke("submit", tmp_path / "missing.py", "--backend", "local"), "missing.py")
    bad = tmp_path / "train.py"
    bad.write_text("import subprocess\n")
    out = invoke("submit", bad, "--backend", "local")
    assert out.exit_code == 1 and "train.py:1:8: error forbidden-import" in out.output
    assert not (tmp_path / "results").exists()  # refused before any run


def test_score_rescores_the_submitted_run(in_store, tmp_path):
    [run_id] = in_store.doc["runs"]
    original = stored_records(in_store.results)[run_id]
    run_dir = Path(original["log_path"]).parent
    elsewhere = tmp_path / "rescored"  # the shared store keeps the original record
    out = invoke("score", run_dir, "--backend", "local", "--results", elsewhere, "--json")
    doc = json.loads(out.stdout)
    assert out.exit_code == (0 if doc["status"] == "ok" else 1), out.output
    jsonschema.validate(doc, SCHEMA)
    assert doc["run_id"] == run_id and doc["status"] == "ok" and doc["evaluation"]["rescored"]
    assert doc["metrics"]["val_bpb"] == pytest.approx(original["metrics"]["val_bpb"], rel=1e-9)
    assert doc["decision"]["label"] == original["decision"]["label"]
    assert stored_records(elsewhere)[run_id] == doc
    assert_usage_error(invoke("score", tmp_path / "no-run", "--backend", "local"), "result.json")


# --- the store: results list|show|reindex, leaderboard ----------------------------------------------

def test_results_list_json_rows_match_the_stored_records(in_store):
    out = invoke("results", "list", "--all", "--json")
    assert out.exit_code == 0, out.output
    doc = json.loads(out.stdout)
    stored = stored_records(in_store.results)
    assert doc["problems"] == [] and doc["hidden"] == 0
    assert [r["run_id"] for r in doc["rows"]] == in_store.doc["runs"] == list(stored)
    for row in doc["rows"]:
        rec = stored[row["run_id"]]
        assert Path(row["path"]) == in_store.results / "runs" / f"{row['run_id']}.json"
        assert row["status"] == rec["status"] and row["trust"] == rec["trust"] == "unisolated"
        assert row["val_bpb"] == rec["metrics"]["val_bpb"] and row["flags"] == rec["flags"]
        assert row["decision"] == rec["decision"]["label"] and row["description"] == "toy"
        assert row["benchmark"] == "tiny" and row["seed"] == rec["provenance"]["seed"]
        assert row["gpu_class"] == rec["hardware"]["class"]
    # without --all an unisolated (local) run is hidden, and counted as such
    default = json.loads(invoke("results", "list", "--json").stdout)
    assert default["rows"] == [] and default["hidden"] == len(stored)
    assert json.loads(invoke("results", "list", "--all", "-b", "climbmix", "--json").stdout)["rows"] == []


def test_results_show_json_is_the_stored_record(in_store):
    [run_id] = in_store.doc["runs"]
    out = invoke("results", "show", run_id, "--json")
    assert out.exit_code == 0, out.output
    assert json.loads(out.stdout) == stored_records(in_store.results)[run_id]
    card = invoke("results", "show", run_id[:15])  # a unique prefix
    assert card.exit_code == 0 and run_id in card.stdout and "val_bpb" in card.stdout
    assert_usage_error(invoke("results", "show", "nosuch"), "nosuch")


def test_results_reindex_rebuilds_a_deleted_index(in_store, tmp_path):
    import shutil

    copy = tmp_path / "results"
    shutil.copytree(in_store.results, copy)  # the shared store stays as it is
    for p in copy.glob("index.sqlite*"):
        p.unlink()
    (copy / "runs" / ".half-written.json.tmp").write_text("{")
    out = invoke("results", "reindex", "--results", copy)
    assert out.exit_code == 0, out.output
    n = len(in_store.doc["runs"])
    assert f"indexed {n} record(s); 0 problem(s)" in out.stdout
    assert (copy / "index.sqlite").exists()
    rows = json.loads(invoke("results", "list", "--all", "--json", "--results", copy).stdout)["rows"]
    assert [r["run_id"] for r in rows] == in_store.doc["runs"]


def test_leaderboard_json(in_store):
    out = invoke("leaderboard", "--all", "--json")
    assert out.exit_code == 0, out.output
    rows = json.loads(out.stdout)
    [run_id] = in_store.doc["runs"]
    record = stored_records(in_store.results)[run_id]
    assert [r["run_id"] for r in rows] == [run_id]
    assert rows[0]["val_bpb"] == record["metrics"]["val_bpb"] == rows[0]["mean_bpb"]
    assert rows[0]["samples"] == [record["metrics"]["val_bpb"]]
    assert rows[0]["submission_sha256"] == record["provenance"]["submission"]["sha256"]
    by_class = json.loads(invoke("leaderboard", "--all", "--by", "gpu-class", "--json").stdout)
    assert [r["gpu_class"] for r in by_class] == [record["hardware"]["class"]]
    assert json.loads(invoke("leaderboard", "--json").stdout) == []  # verified, unflagged only: none here
    assert_usage_error(invoke("leaderboard", "--by", "nosuch"), "nosuch")


# --- noise, baseline, baselines-merge ---------------------------------------------------------------

def _check_spread(out, runs: int) -> dict[str, Any]:
    doc = json.loads(out.stdout)
    assert len(doc["runs"]) == runs
    used = set(doc["used"])
    assert used <= {r["run_id"] for r in doc["runs"]}
    for r in doc["runs"]:  # used: ok, scored and unflagged (no --include-flagged)
        assert (r["run_id"] in used) == (r["status"] == "ok" and r["val_bpb"] is not None and not r["flags"]), r
    summary = doc["summary"]
    assert out.exit_code == (0 if summary else 1), out.output
    if summary:
        assert summary["n"] == len(used)
        scores = [r["val_bpb"] for r in doc["runs"] if r["run_id"] in used]
        assert summary["mean"] == pytest.approx(sum(scores) / len(scores))
    return doc


def test_noise_json_summary_counts_the_used_runs(cache, scratch):
    out = invoke("noise", TOY, *FAST_RUN, "--runs", "2", "--json")
    doc = _check_spread(out, 2)
    assert doc["baselines_file"] is None and not (scratch / "baselines.json").exists()  # noise records no baseline
    stored = stored_records(scratch / "results")
    assert set(stored) == {r["run_id"] for r in doc["runs"]}  # every run is stored, used or not
    assert {rec["hardware"]["class"] for rec in stored.values()} == {doc["class"]}
    assert_usage_error(invoke("noise", TOY, "--backend", "nosuch", "--runs", "1"), "nosuch")


def test_baseline_json_summary_and_the_baselines_file(cache, scratch, monkeypatch):
    import harness.baseline

    # The reference submission's verified evaluation takes over a minute on 2 cores: the command runs the
    # toy candidate instead (everything else, options, records and the baselines file, is the command's own).
    real = harness.baseline.run_baseline
    monkeypatch.setattr(harness.baseline, "run_baseline", lambda *a, **kw: real(*a, train_py=TOY, **kw))
    target = scratch / "lab" / "baselines.json"
    out = invoke("baseline", *FAST_RUN, "--runs", "1", "--baselines", target, "--json")
    doc = _check_spread(out, 1)
    assert Path(doc["baselines_file"]) == target
    saved = json.loads(target.read_text())["benchmarks"]
    samples = saved.get("tiny", {}).get(doc["class"], {}).get("samples", [])
    assert [s["run_id"] for s in samples] == doc["used"]  # a fresh file: exactly the used runs
    assert_usage_error(invoke("baseline", "-b", "nosuch", "--runs", "1"), "nosuch")


def _baselines_file(path: Path, run_ids: list[str]) -> Path:
    from harness.scoring.baselines import Baselines, add_sample, save_baselines

    b = Baselines()
    for i, rid in enumerate(run_ids):
        add_sample(b, "tiny", "CPU-test-2c", val_bpb=2.0 + i / 100, run_id=rid)
    save_baselines(b, path)
    return path


def test_baselines_merge_dedupes_by_run_id(tmp_path):
    a = _baselines_file(tmp_path / "a.json", ["r1", "r2"])
    b = _baselines_file(tmp_path / "b.json", ["r2", "r3"])
    merged = tmp_path / "out" / "merged.json"
    out = invoke("baselines-merge", a, b, "-o", merged)
    assert out.exit_code == 0, out.output
    assert f"merged 2 file(s) into {merged}" in out.stdout
    samples = json.loads(merged.read_text())["benchmarks"]["tiny"]["CPU-test-2c"]["samples"]
    assert sorted(s["run_id"] for s in samples) == ["r1", "r2", "r3"]
    broken = tmp_path / "broken.json"
    broken.write_text("{not json")
    assert_usage_error(invoke("baselines-merge", a, broken, "-o", tmp_path / "x.json"), "broken.json")
    assert not (tmp_path / "x.json").exists()
    assert invoke("baselines-merge", a).exit_code == 2  # -o is required


def test_baselines_merge_refuses_a_missing_input(tmp_path):
    a = _baselines_file(tmp_path / "a.json", ["r1"])
    out = invoke("baselines-merge", a, tmp_path / "typo.json", "-o", tmp_path / "merged.json")
    assert_usage_error(out, "typo.json")


# --- hw, doctor -------------------------------------------------------------------------------------

def test_hw_json_has_a_class_label():
    out = invoke("hw", "--json")
    assert out.exit_code == 0, out.output
    doc = json.loads(out.stdout)
    assert doc["class"]["label"] and doc["class"]["kind"] in ("gpu", "cpu")
    assert {"class", "peak_flops_for_runs", "nvml", "profile"} <= set(doc)
    if not doc["profile"]["gpus"]:
        assert doc["class"]["kind"] == "cpu" and doc["peak_flops_for_runs"] == "unknown"
    text = invoke("hw")
    assert text.exit_code == 0 and f"class      {doc['class']['label']}" in text.stdout
    assert_usage_error(invoke("hw", "--no-such-flag"), "--no-such-flag")


def test_doctor_json_checks_and_exit_code(cache):
    out = invoke("doctor", "--json")
    checks = json.loads(out.stdout)
    assert isinstance(checks, list) and checks
    for c in checks:
        assert c["status"] == ("ok" if c["ok"] else "FAIL" if c["required"] else "warn"), c
        assert c["ok"] or c["fix"], c
    by_name = {c["name"]: c for c in checks}
    assert by_name["benchmark tiny"]["status"] == "ok"
    assert out.exit_code == (1 if any(c["status"] == "FAIL" for c in checks) else 0)


def test_doctor_warns_on_an_unprepared_benchmark_and_fails_on_a_broken_one(empty_cache):
    out = invoke("doctor", "--json")
    tiny = {c["name"]: c for c in json.loads(out.stdout)}["benchmark tiny"]
    assert tiny["status"] == "warn" and tiny["fix"] == "harness prepare --benchmark tiny"  # matters once run
    (empty_cache / "tiny").mkdir()
    (empty_cache / "tiny" / "manifest.json").write_text("{broken")
    out = invoke("doctor", "--json")
    tiny = {c["name"]: c for c in json.loads(out.stdout)}["benchmark tiny"]
    assert tiny["status"] == "FAIL" and tiny["fix"] == "harness prepare --benchmark tiny"
    assert out.exit_code == 1  # the thing checked failed


# --- image build|ensure|show, janitor --------------------------------------------------------------

def test_image_build_refuses_an_unknown_kind_without_building():
    out = invoke("image", "build", "nosuch")
    assert_usage_error(out, "nosuch", "cpu, cuda or base")


def test_image_show_refuses_an_unknown_kind():
    assert_usage_error(invoke("image", "show", "nosuch"), "nosuch")


@pytest.mark.docker
def test_image_show_and_ensure_cpu(docker_client):
    out = invoke("image", "show", "cpu", "--json")
    assert out.exit_code == 0, out.output
    doc = json.loads(out.stdout)["cpu"]
    assert doc["kind"] == "cpu" and doc["id"] == docker_client.images.get(IMAGE).id
    if doc["stale"] is not None:  # ensure would rebuild it (minutes): the image must be current first
        pytest.fail(f"{doc['tag']} is stale ({doc['stale']}): run harness image ensure cpu")
    ensured = invoke("image", "ensure", "cpu")
    assert ensured.exit_code == 0, ensured.output
    assert ensured.stdout.split() == [doc["tag"], doc["id"]] and "nothing to build" in ensured.stderr
    every = invoke("image", "show", "--json")
    shown = json.loads(every.stdout)
    assert set(shown) == {"base", "cpu", "cuda"}
    assert every.exit_code == (1 if any(v is None for v in shown.values()) else 0)  # exit 1: one is absent


def test_image_ensure_refuses_an_unknown_kind():
    assert_usage_error(invoke("image", "ensure", "nosuch"), "nosuch")


def _dead_pid() -> int:
    p = subprocess.Popen(["true"])
    p.wait()
    return p.pid


@pytest.mark.docker
def test_janitor_records_dead_runs_and_removes_leftover_containers(docker_client, scratch, monkeypatch):
    import docker.errors

    import harness.backends.docker as docker_pkg

    # A run whose harness died: its journal names a pid that is gone.
    dead_run = f"{SESSION_PREFIX}-dead"
    run_dir = scratch / "runs" / dead_run
    run_dir.mkdir(parents=True)
    (run_dir / "journal.json").write_text(json.dumps({
        "host": socket.gethostname(), "pid": _dead_pid(), "proc_start": "0", "written_at": time.time(),
        "results_dir": None,
        "record": {"run_id": dead_run, "status": "aborted", "timings": {"started_at": time.time() - 5}}}))
    # A leftover container. Other harness sessions may share this daemon: the sweep is held to this
    # test's run id (the janitor's own run_id filter), so it never removes theirs.
    left_id = f"{SESSION_PREFIX}-janitor"
    container = docker_client.containers.create(
        IMAGE, ["true"], labels={"harness": "1", "harness.run_id": left_id}, name=f"{left_id}-{os.getpid()}")
    real = docker_pkg.janitor
    monkeypatch.setattr(docker_pkg, "janitor", lambda client=None, run_id=None: real(client, run_id=run_id or left_id))
    try:
        out = invoke("janitor")
        assert out.exit_code == 0, out.output
        assert container.name in out.stdout.split()
        assert f"recorded run {dead_run} as aborted" in out.stderr
        record = json.loads((run_dir / "result.json").read_text())
        assert record["status"] == "aborted" and "died during the run" in record["reason"]
        assert not (run_dir / "journal.json").exists()
        with pytest.raises(docker.errors.NotFound):
            docker_client.containers.get(container.id)
        again = invoke("janitor")
        assert again.exit_code == 0
        assert again.stdout.splitlines() == ["nothing to remove", "no run left without a record"]
    finally:
        try:
            container.remove(force=True)
        except Exception:  # noqa: BLE001 - already removed by the janitor
            pass


def test_janitor_without_a_daemon_is_a_setup_error(monkeypatch):
    monkeypatch.setenv("DOCKER_HOST", "unix:///nonexistent/docker.sock")
    assert_usage_error(invoke("janitor"), "Docker daemon not reachable")
