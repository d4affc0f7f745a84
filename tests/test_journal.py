"""A run whose harness dies still gets its record: the journal written at the start, recovered by the
next harness command (harness/journal.py)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import jsonschema
import pytest
from typer.testing import CliRunner

from harness import journal
from harness.cli import app
from harness.atomic import write_json_atomic
from harness.store import ResultStore
from tests.conftest import REPO

TOY = REPO / "tests" / "cases" / "toy_train.py"
SCHEMA = json.loads((REPO / "harness" / "schemas" / "result.schema.json").read_text())


def _wait_for(predicate, timeout=120.0):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if predicate():
            return True
        time.sleep(0.2)
    return False


def test_a_killed_submit_is_recorded_as_aborted_by_the_next_command(tiny_cache, isolated_dirs, monkeypatch):
    runs, results = isolated_dirs / "runs", isolated_dirs / "results"
    env = {**os.environ, "HARNESS_CACHE_DIR": str(tiny_cache.data_dir.parent), "HARNESS_RUNS_DIR": str(runs),
           "HARNESS_RESULTS": str(results), "HARNESS_BASELINES": str(isolated_dirs / "b.json")}
    proc = subprocess.Popen([sys.executable, "-m", "harness", "submit", str(TOY), "--budget", "30", "--seeds", "1",
                             "--backend", "local", "--no-calibrate"], cwd=isolated_dirs, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        assert _wait_for(lambda: any(p.read_text().count("progress") for p in runs.glob("*/log.txt"))), \
            "the run never started training"
        journals = list(runs.glob("*/journal.json"))
        assert len(journals) == 1
        os.kill(proc.pid, signal.SIGKILL)  # the harness dies; nothing of it runs any more
        proc.wait(10)
    finally:
        if proc.poll() is None:
            proc.kill()
    run_dir = journals[0].parent
    assert not (run_dir / "result.json").exists()
    monkeypatch.setenv("HARNESS_RUNS_DIR", str(runs))
    monkeypatch.setenv("HARNESS_RESULTS", str(results))
    out = CliRunner().invoke(app, ["results", "list", "--all"])  # any command recovers first
    assert out.exit_code == 0, out.output
    assert f"recorded run {run_dir.name} as aborted" in out.output
    record = json.loads((run_dir / "result.json").read_text())
    jsonschema.validate(record, SCHEMA)
    assert record["status"] == "aborted" and f"pid {proc.pid}" in record["reason"]
    assert not (run_dir / "journal.json").exists()
    stored = ResultStore(results).path_for(record["run_id"])
    assert json.loads(stored.read_text())["status"] == "aborted"
    again = CliRunner().invoke(app, ["results", "list", "--all"])
    assert "recorded run" not in again.output  # once


def test_a_live_owner_or_a_finished_run_is_left_alone(tmp_path):
    live = tmp_path / "20260101-000000-aaaaaa"
    live.mkdir()
    journal.begin(live, {"run_id": live.name}, None)  # this very process: alive
    done = tmp_path / "20260101-000000-bbbbbb"
    done.mkdir()
    journal.begin(done, {"run_id": done.name}, None)
    doc = json.loads((done / "journal.json").read_text())
    write_json_atomic(done / "journal.json", {**doc, "pid": 2 ** 22 + 7})  # no such process
    write_json_atomic(done / "result.json", {"run_id": done.name, "status": "ok"})
    elsewhere = tmp_path / "20260101-000000-cccccc"
    elsewhere.mkdir()
    journal.begin(elsewhere, {"run_id": elsewhere.name}, None)
    doc = json.loads((elsewhere / "journal.json").read_text())
    write_json_atomic(elsewhere / "journal.json", {**doc, "host": "another-node", "pid": 1})
    assert journal.recover(tmp_path, remove_containers=False) == []
    assert (live / "journal.json").exists() and (elsewhere / "journal.json").exists()
    assert not (done / "journal.json").exists()  # its record was written: only the journal was left
    assert json.loads((done / "result.json").read_text())["status"] == "ok"


def test_a_reused_pid_is_not_taken_for_the_owner(tmp_path):
    run_dir = tmp_path / "20260101-000000-dddddd"
    run_dir.mkdir()
    journal.begin(run_dir, {"run_id": run_dir.name}, None)
    doc = json.loads((run_dir / "journal.json").read_text())
    assert journal.owner_alive(doc) is True
    assert journal.owner_alive({**doc, "proc_start": "1"}) is False  # same pid, another process
    assert Path(f"/proc/{doc['pid']}").exists()


def test_a_recovered_run_ends_at_its_last_sign_of_life_not_at_the_recovery(tmp_path):
    run_dir = tmp_path / "20260101-000000-eeeeee"
    run_dir.mkdir()
    started = time.time() - 3600
    journal.begin(run_dir, {"run_id": run_dir.name, "status": "aborted", "timings": {"started_at": started}}, None)
    doc = json.loads((run_dir / "journal.json").read_text())
    write_json_atomic(run_dir / "journal.json", {**doc, "pid": 2 ** 22 + 7})  # its harness is gone
    (run_dir / "log.txt").write_text("step 1\n")
    for p in (run_dir / "log.txt", run_dir / "journal.json", run_dir):
        os.utime(p, (started + 120, started + 120))  # the last write, long ago
    assert [r.run_id for r in journal.recover(tmp_path, remove_containers=False)] == [run_dir.name]
    timings = json.loads((run_dir / "result.json").read_text())["timings"]
    assert timings["ended_at"] == pytest.approx(started + 120, abs=1)
    assert timings["total_s"] == pytest.approx(120, abs=1)


def test_a_held_run_whose_harness_died_keeps_its_own_record(tmp_path):
    """A finished seed of a multi-seed submit waits in its journal for the decision; if the harness dies
    first, recovery writes that run's real record (ok, its score), not an aborted one."""
    run_dir = tmp_path / "20260101-000000-ffffff"
    run_dir.mkdir()
    journal.begin(run_dir, {"run_id": run_dir.name, "status": "aborted", "timings": {"started_at": 1.0}},
                  tmp_path / "results")
    finished = {"run_id": run_dir.name, "status": "ok", "metrics": {"val_bpb": 2.5}}
    journal.hold(run_dir, finished)
    doc = json.loads((run_dir / "journal.json").read_text())
    assert doc["finished"] and doc["record"] == finished and doc["results_dir"] == str(tmp_path / "results")
    write_json_atomic(run_dir / "journal.json", {**doc, "pid": 2 ** 22 + 7})  # its harness is gone
    [recovered] = journal.recover(tmp_path, remove_containers=False)
    assert "before the submission's decision" in recovered.reason
    # Its own status and score, flagged undecided: a cut-short submission's lucky seed reaches no leaderboard.
    assert json.loads((run_dir / "result.json").read_text()) == {**finished, "flags": ["undecided"]}
    assert not (run_dir / "journal.json").exists()
