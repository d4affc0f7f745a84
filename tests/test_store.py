"""The result store: real JSON files, a real SQLite index, real processes (concurrent puts, kill -9)."""

from __future__ import annotations

import copy
import itertools
import json
import multiprocessing
import os
import signal
import sqlite3
import time
from pathlib import Path

import pytest

from harness.record import COMPAT, VERIFIED, Evaluation, Export, Hardware, Outcome, RunRecord, Timings
from harness.store import (
    INDEX_VERSION,
    AmbiguousRunId,
    RecordError,
    ResultStore,
    RunNotFound,
    gpu_class_of,
    validate_record,
)

_ids = itertools.count(1)
SHA_A, SHA_B, SHA_C = "a" * 64, "b" * 64, "c" * 64


def make_record(val_bpb: float | None = 1.0, *, sha: str = SHA_A, benchmark: str = "tiny", status: str = "ok",
                trust: str = "verified", flags: list[str] | None = None, gpu_class: str | None = None,
                seed: int | None = None, created_at: str | None = None, run_id: str | None = None,
                description: str = "a candidate", **extra) -> dict:
    """A schema-valid record shaped like a real one (harness run on the tiny benchmark)."""
    n = next(_ids)
    run_id = run_id or f"20261126-{n // 60 // 60 % 24:02d}{n // 60 % 60:02d}{n % 60:02d}-{os.getpid() % 4096:03x}{n % 4096:03x}"
    created_at = created_at or f"2026-11-26T{n // 3600 % 24:02d}:{n // 60 % 60:02d}:{n % 60:02d}Z"
    started = 1795732209.5 + n
    isolated = trust != "unisolated"
    outcome = Outcome(
        status=status, reason=None if status == "ok" else f"the run ended with status {status}",
        backend="docker" if isolated else "local", isolated=isolated, log_path=f"/tmp/runs/{run_id}/log.txt",
        timings=Timings(started_at=started, first_output_at=started + 7.1, ended_at=started + 11.6, startup_s=7.1,
                        training_s=6.1, eval_s=2.0, total_s=11.6),
        metrics={"depth": 0, "mfu_percent": None, "num_params_M": 0.26, "num_steps": 57, "peak_vram_mb": 2048.0,
                 "total_seconds": 1.0, "total_tokens_M": 0.1, "training_seconds": 6.1,
                 "val_bpb": val_bpb if status == "ok" else None},
        flags=tuple(flags or ()))
    # The trust a test asks for follows from the parts, as in a real record (harness.record.decide_trust).
    evaluation = (Evaluation(mode=VERIFIED, export=Export(ok=True), training_status="ok",
                             evaluator={"ok": True, "val_bpb": val_bpb, "backend": "docker", "isolated": True})
                  if trust == "verified" else Evaluation(mode=COMPAT))
    result = RunRecord(
        run_id=run_id, budget_s=5.0, hard_timeout_s=185.0, outcome=outcome, evaluation=evaluation,
        provenance={
            "backend": "docker",
            "benchmark": {"name": benchmark, "prepare_sha256": "e" * 64, "manifest_sha256": "8" * 64,
                          "tokenizer_sha256": "7" * 64, "config_sha256": "d" * 64,
                          "fixed_sha256": {"prepare.py": "e" * 64}, "entropy_floor_bpb": 1.936,
                          "unigram_bpb": 4.676},
            "created_at": created_at, "image": None, "seed": n if seed is None else seed,
            "submission": {"bytes": 1266, "description": description, "git": None, "path": "/tmp/t/train.py",
                           "sha256": sha},
            "versions": {"harness": "0.1.0", "python": "3.11.7"},
        },
        hardware=Hardware(machine={"class": gpu_class} if gpu_class else None))
    doc = result.to_dict()
    doc.update(extra)
    return doc


def test_helper_record_matches_a_real_run_record():
    real = Path("/tmp/runs")
    for path in sorted(real.glob("*/result.json"))[:3] if real.is_dir() else []:
        validate_record(json.loads(path.read_text()))
        assert set(json.loads(path.read_text())) == set(make_record())
    validate_record(make_record())


# --- round trip -------------------------------------------------------------------------------

def test_put_get_list_round_trip(tmp_path):
    store = ResultStore(tmp_path / "results")
    rec = make_record(0.987654, gpu_class="H100-SXM-80GB", flags=[], description="wider MLP",
                      decision={"label": "keep", "reason": "significant", "reference": None, "seeds": 3,
                                "scores": [0.987654], "delta": -0.01, "p": 0.01})
    path = store.put(rec)
    assert path == tmp_path / "results" / "runs" / f"{rec['run_id']}.json"
    assert json.loads(path.read_text()) == rec
    assert store.get(rec["run_id"]) == rec
    assert store.get(rec["run_id"][:18]) == rec  # a unique prefix is enough
    assert (tmp_path / "results" / "index.sqlite").is_file()
    with sqlite3.connect(tmp_path / "results" / "index.sqlite") as con:
        assert con.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert con.execute("SELECT run_id, val_bpb FROM runs").fetchall() == [(rec["run_id"], 0.987654)]

    listing = store.list()
    assert listing.problems == []
    [row] = listing.rows
    assert (row.run_id, row.benchmark, row.submission_sha256, row.description, row.status, row.trust) == (
        rec["run_id"], "tiny", SHA_A, "wider MLP", "ok", "verified")
    assert (row.val_bpb, row.gpu_class, row.flags, row.seed, row.backend, row.decision) == (
        0.987654, "H100-SXM-80GB", [], rec["provenance"]["seed"], "docker", "keep")
    assert row.created_at == rec["provenance"]["created_at"] and row.path == path
    assert json.loads(json.dumps(listing.to_dict()))["rows"][0]["run_id"] == rec["run_id"]


def test_put_updates_the_same_run(tmp_path):
    store = ResultStore(tmp_path)
    rec = make_record(1.0)
    store.put(rec)
    rec2 = copy.deepcopy(rec)
    rec2["decision"] = {"label": "discard", "reason": "worse", "reference": None, "seeds": 1, "scores": [1.0],
                        "delta": 0.1, "p": None}
    store.put(rec2)
    assert [r.decision for r in store.list().rows] == ["discard"]
    assert store.get(rec["run_id"])["decision"]["label"] == "discard"


def test_list_filters_order_and_limit(tmp_path):
    store = ResultStore(tmp_path)
    a = make_record(1.0, benchmark="tiny", gpu_class="H100")
    b = make_record(None, benchmark="tiny", status="crash")
    c = make_record(0.9, benchmark="small", gpu_class="A100")
    d = make_record(0.8, benchmark="tiny", flags=["throttled"])
    e = make_record(0.7, benchmark="tiny", trust="unisolated")
    for r in (a, b, c, d, e):
        store.put(r)
    ids = lambda listing: [r.run_id for r in listing.rows]  # noqa: E731
    # newest first; flagged and unverified hidden (a crash is never verified: its trust follows from its parts)
    assert ids(store.list()) == [c["run_id"], a["run_id"]]
    assert store.list().hidden == 3
    assert ids(store.list(include_flagged=True, include_unverified=True)) == [
        e["run_id"], d["run_id"], c["run_id"], b["run_id"], a["run_id"]]
    assert ids(store.list(benchmark="tiny", include_unverified=True)) == [e["run_id"], b["run_id"], a["run_id"]]
    assert ids(store.list(status="crash", include_unverified=True)) == [b["run_id"]]
    assert ids(store.list(gpu_class="A100")) == [c["run_id"]]
    assert ids(store.list(limit=1)) == [c["run_id"]]


def test_get_unknown_and_ambiguous(tmp_path):
    store = ResultStore(tmp_path)
    store.put(make_record(run_id="20261126-120000-aaaaaa"))
    store.put(make_record(run_id="20261126-120000-aaaabb"))
    with pytest.raises(AmbiguousRunId, match="matches 2 runs"):
        store.get("20261126-120000-aaaa")
    with pytest.raises(RunNotFound):
        store.get("20261126-1300")
    with pytest.raises(RunNotFound):
        store.get("../../etc/passwd")
    assert store.get("20261126-120000-aaaab")["run_id"] == "20261126-120000-aaaabb"


def test_gpu_class_from_label_or_class_dict():
    assert gpu_class_of({"hardware": {"class": "H100-SXM-80GB"}}) == "H100-SXM-80GB"
    assert gpu_class_of({"hardware": {"class": {"label": "A100-SXM-40GB", "family": "A100-SXM"}}}) == "A100-SXM-40GB"
    assert gpu_class_of({"hardware": None}) is None and gpu_class_of({}) is None


# --- validation -------------------------------------------------------------------------------

@pytest.mark.parametrize("mutate, field, what", [
    (lambda r: r["metrics"].__setitem__("val_bpb", "abc"), "metrics.val_bpb", "'abc' is not of type 'number', 'null'"),
    (lambda r: r["provenance"].pop("seed"), "provenance.seed", "missing"),
    (lambda r: r.__setitem__("status", "great"), "status", "'great' is not one of"),
    (lambda r: r.__setitem__("run_id", "../evil"), "run_id", "does not match"),
    (lambda r: r["provenance"]["submission"].__setitem__("sha256", "XYZ"), "provenance.submission.sha256",
     "does not match"),
    (lambda r: r["metrics"].__setitem__("bogus", 1), "metrics", "'bogus' was unexpected"),
    (lambda r: r["flags"].append(3), "flags[0]", "3 is not of type 'string'"),
    (lambda r: r["metrics"].__setitem__("val_bpb", float("nan")), "metrics.val_bpb", "not a finite number"),
])
def test_schema_rejects_malformed_records_naming_the_field(tmp_path, mutate, field, what):
    rec = make_record()
    mutate(rec)
    with pytest.raises(RecordError) as info:
        validate_record(rec)
    assert f"result field '{field}'" in str(info.value)
    assert what in str(info.value)
    store = ResultStore(tmp_path)
    with pytest.raises(RecordError):
        store.put(rec)
    assert not list(tmp_path.rglob("*.json"))  # nothing written


# --- concurrency ------------------------------------------------------------------------------

def _put_many(root: str, worker: int, count: int) -> None:
    store = ResultStore(root)
    for i in range(count):
        store.put(make_record(1.0 + worker / 10 + i / 1000, run_id=f"20261126-1{worker:02d}{i:03d}-{worker:03x}{i:03x}"))


def test_concurrent_puts_from_processes_lose_nothing(tmp_path):
    root = tmp_path / "results"
    ctx = multiprocessing.get_context("fork")
    procs = [ctx.Process(target=_put_many, args=(str(root), w, 10)) for w in range(4)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
    assert [p.exitcode for p in procs] == [0, 0, 0, 0]
    expected = {f"20261126-1{w:02d}{i:03d}-{w:03x}{i:03x}" for w in range(4) for i in range(10)}
    assert {p.stem for p in (root / "runs").glob("*.json")} == expected
    with sqlite3.connect(root / "index.sqlite") as con:  # the index saw every put, before any listing
        assert {r[0] for r in con.execute("SELECT run_id FROM runs")} == expected
    listing = ResultStore(root).list()
    assert {r.run_id for r in listing.rows} == expected and listing.problems == []


def test_index_failure_keeps_the_file_and_listing_reconciles(tmp_path, monkeypatch):
    store = ResultStore(tmp_path)
    first = make_record(1.0)
    store.put(first)

    def broken(*_a, **_k):
        raise sqlite3.OperationalError("database is locked")

    monkeypatch.setattr(ResultStore, "_upsert", staticmethod(broken))
    second = make_record(0.9)
    assert store.put(second).is_file()  # no exception: the file is the truth
    monkeypatch.undo()
    with sqlite3.connect(tmp_path / "index.sqlite") as con:
        assert [r[0] for r in con.execute("SELECT run_id FROM runs")] == [first["run_id"]]
    assert {r.run_id for r in store.list().rows} == {first["run_id"], second["run_id"]}
    with sqlite3.connect(tmp_path / "index.sqlite") as con:  # and the listing repaired the index
        assert {r[0] for r in con.execute("SELECT run_id FROM runs")} == {first["run_id"], second["run_id"]}


def test_listing_follows_changed_and_deleted_files(tmp_path):
    store = ResultStore(tmp_path)
    a, b = make_record(1.0), make_record(0.9)
    store.put(a)
    store.put(b)
    changed = copy.deepcopy(a)
    changed["metrics"]["val_bpb"] = 0.5
    from harness.atomic import write_json_atomic
    write_json_atomic(store.path_for(a["run_id"]), changed)  # behind the store's back
    store.path_for(b["run_id"]).unlink()
    # The edited score is no longer the evaluator's: the row follows the file, and is not verified any more.
    rows = store.list(include_unverified=True).rows
    assert [(r.run_id, r.val_bpb, r.trust) for r in rows] == [(a["run_id"], 0.5, "self-reported")]


# --- corruption and rebuilds ------------------------------------------------------------------

def test_corrupt_file_is_reported_and_skipped(tmp_path):
    store = ResultStore(tmp_path)
    good = make_record(1.0)
    store.put(good)
    bad = make_record(0.5)
    store.put(bad)
    store.path_for(bad["run_id"]).write_text('{"run_id": "20261126-')  # truncated: not JSON
    empty = store.runs_dir / "20261126-000000-000000.json"
    empty.write_text("")
    invalid = make_record(0.7)
    invalid["metrics"]["val_bpb"] = "abc"
    (store.runs_dir / f"{invalid['run_id']}.json").write_text(json.dumps(invalid))
    misnamed = make_record(0.6)
    (store.runs_dir / "20261126-000000-111111.json").write_text(json.dumps(misnamed))

    listing = store.list()
    assert [r.run_id for r in listing.rows] == [good["run_id"]]
    reasons = {p.path.name: p.reason for p in listing.problems}
    assert set(reasons) == {f"{bad['run_id']}.json", empty.name, f"{invalid['run_id']}.json",
                            "20261126-000000-111111.json"}
    assert "not valid JSON" in reasons[f"{bad['run_id']}.json"]
    assert reasons[empty.name] == "empty file"
    assert "metrics.val_bpb" in reasons[f"{invalid['run_id']}.json"]
    assert "file is named for" in reasons["20261126-000000-111111.json"]
    path, reason = listing.problems[0]  # problems unpack as (path, reason)
    assert isinstance(path, Path) and reason
    with sqlite3.connect(tmp_path / "index.sqlite") as con:  # the overwritten record left the index
        assert [r[0] for r in con.execute("SELECT run_id FROM runs")] == [good["run_id"]]
    assert store.leaderboard("tiny")[0].run_id == good["run_id"]
    with pytest.raises(Exception, match="not valid JSON"):
        store.get(bad["run_id"])


def test_deleted_index_rebuilds_to_the_same_listing(tmp_path):
    store = ResultStore(tmp_path)
    for i in range(6):
        store.put(make_record(1.0 - i / 100, sha=[SHA_A, SHA_B][i % 2], gpu_class=["H100", None][i % 2],
                              flags=["throttled"] if i == 3 else [], trust="unisolated" if i == 4 else "verified"))
    before = store.list(include_flagged=True, include_unverified=True).rows
    board = store.leaderboard("tiny")
    (tmp_path / "index.sqlite").unlink()
    report = store.rebuild_index()
    assert report.indexed == 6 and report.problems == []
    assert store.list(include_flagged=True, include_unverified=True).rows == before
    assert store.leaderboard("tiny") == board
    # deleted without a rebuild: the next listing builds it again by itself
    (tmp_path / "index.sqlite").unlink()
    assert store.list(include_flagged=True, include_unverified=True).rows == before
    with sqlite3.connect(tmp_path / "index.sqlite") as con:
        assert con.execute("SELECT count(*) FROM runs").fetchone()[0] == 6


def test_garbage_index_file_is_replaced(tmp_path):
    store = ResultStore(tmp_path)
    rec = make_record(1.0)
    store.put(rec)
    (tmp_path / "index.sqlite").write_bytes(b"this is not a database" * 100)
    assert [r.run_id for r in store.list().rows] == [rec["run_id"]]
    store.put(make_record(0.9))
    assert len(store.list().rows) == 2
    with sqlite3.connect(tmp_path / "index.sqlite") as con:
        assert con.execute("SELECT count(*) FROM runs").fetchone()[0] == 2


def test_outdated_index_version_is_rebuilt(tmp_path):
    store = ResultStore(tmp_path)
    rec = make_record(1.0)
    store.put(rec)
    with sqlite3.connect(tmp_path / "index.sqlite") as con:
        con.execute("PRAGMA user_version = 999")
    assert [r.run_id for r in store.list().rows] == [rec["run_id"]]
    with sqlite3.connect(tmp_path / "index.sqlite") as con:
        assert con.execute("PRAGMA user_version").fetchone()[0] == INDEX_VERSION


def _write_forever(root: str, marker: str, big: bool) -> None:
    """Puts records in a loop. With a marker, the rename of the first record waits (the kill lands there)."""
    import harness.atomic as result_mod

    if marker:
        real_replace = os.replace

        def slow_replace(src, dst):
            Path(marker).write_text(str(src))
            time.sleep(30)
            real_replace(src, dst)

        result_mod.os.replace = slow_replace
    store = ResultStore(root)
    for i in itertools.count():
        store.put(make_record(1.0, traceback_tail="x" * (2_000_000 if big else 10)))


def test_kill_9_during_writes_leaves_no_corrupt_record(tmp_path):
    root = tmp_path / "results"
    ctx = multiprocessing.get_context("fork")
    # 1) killed at a random moment while writing 2 MB records in a loop
    for delay in (0.15, 0.3):
        p = ctx.Process(target=_write_forever, args=(str(root), "", True))
        p.start()
        time.sleep(delay)
        os.kill(p.pid, signal.SIGKILL)
        p.join(10)
        assert p.exitcode == -signal.SIGKILL
    # 2) killed for certain between write and rename: a complete temp file is left behind
    marker = tmp_path / "marker"
    p = ctx.Process(target=_write_forever, args=(str(root), str(marker), False))
    p.start()
    deadline = time.time() + 20
    while not marker.exists() and time.time() < deadline:
        time.sleep(0.01)
    assert marker.exists()
    os.kill(p.pid, signal.SIGKILL)
    p.join(10)
    stray = Path(marker.read_text())
    assert stray.exists() and stray.name.endswith(".tmp")

    store = ResultStore(root)
    finals = sorted(store.runs_dir.glob("*.json"))
    assert finals  # the loops got some records out
    for path in finals:
        validate_record(json.loads(path.read_text()))
    listing = store.list()
    assert listing.problems == []
    assert {r.run_id for r in listing.rows} == {p.stem for p in finals}
    assert all(not r.path.name.startswith(".") for r in listing.rows)
    assert store.rebuild_index().removed_tmp == []  # young temp files may belong to a live writer
    report = store.rebuild_index(tmp_max_age_s=0)
    assert stray in report.removed_tmp and not list(store.runs_dir.glob("*.tmp"))
    assert report.indexed == len(finals)


# --- leaderboard, samples, best ---------------------------------------------------------------

def _board_store(tmp_path) -> ResultStore:
    store = ResultStore(tmp_path)
    recs = [
        make_record(1.00, sha=SHA_A, gpu_class="H100"), make_record(0.98, sha=SHA_A, gpu_class="H100"),
        make_record(0.995, sha=SHA_B, gpu_class="H100"), make_record(0.97, sha=SHA_B, gpu_class="A100"),
        make_record(0.90, sha=SHA_C, gpu_class="H100", flags=["throttled"]),
        make_record(0.91, sha=SHA_C, gpu_class="H100", trust="self-reported"),
        make_record(None, sha=SHA_C, status="crash"),
        make_record(0.50, sha=SHA_C, benchmark="other"),
    ]
    for r in recs:
        store.put(r)
    return store


def test_leaderboard_orders_best_per_submission_and_hides_flagged_and_unverified(tmp_path):
    store = _board_store(tmp_path)
    board = store.leaderboard("tiny")
    assert [(r.submission_sha256, r.val_bpb) for r in board] == [(SHA_B, 0.97), (SHA_A, 0.98)]
    assert sorted(board[1].samples) == [0.98, 1.00] and board[1].mean_bpb == pytest.approx(0.99)
    board = store.leaderboard("tiny", include_flagged=True)
    assert [(r.submission_sha256, r.val_bpb) for r in board][0] == (SHA_C, 0.90)
    board = store.leaderboard("tiny", include_unverified=True)
    assert [(r.submission_sha256, r.val_bpb) for r in board][0] == (SHA_C, 0.91)
    assert all(r.status == "ok" for r in store.leaderboard("tiny", include_flagged=True, include_unverified=True))


def test_leaderboard_per_gpu_class(tmp_path):
    store = _board_store(tmp_path)
    board = store.leaderboard("tiny", by_gpu_class=True)
    assert [(r.gpu_class, r.submission_sha256, r.val_bpb) for r in board] == [
        ("A100", SHA_B, 0.97), ("H100", SHA_A, 0.98), ("H100", SHA_B, 0.995)]


def test_samples_and_best(tmp_path):
    store = _board_store(tmp_path)
    assert store.samples("tiny", SHA_A) == [1.00, 0.98]  # oldest first
    assert store.samples("tiny", SHA_B, gpu_class="H100") == [0.995]
    assert sorted(store.samples("tiny", SHA_C)) == [0.90, 0.91]  # ok runs; the crash has no score
    assert store.samples("tiny", SHA_C, include_flagged=False, include_unverified=False) == []
    best = store.best("tiny")
    # lowest MEAN among verified unflagged: A has mean 0.99, B has mean 0.9825
    assert best.submission_sha256 == SHA_B and sorted(best.samples) == [0.97, 0.995]
    assert best.mean_bpb == pytest.approx(0.9825) and best.val_bpb == 0.97
    assert store.best("tiny", gpu_class="H100").submission_sha256 == SHA_A  # on H100 alone: A 0.99, B 0.995
    assert store.best("tiny", include_flagged=True, include_unverified=True).submission_sha256 == SHA_C
    assert store.best("nothing-here") is None


def test_best_is_by_mean_not_by_single_best_run(tmp_path):
    store = ResultStore(tmp_path)
    for v in (0.90, 1.10):
        store.put(make_record(v, sha=SHA_A))  # lucky once: best single run, mean 1.00
    for v in (0.95, 0.96):
        store.put(make_record(v, sha=SHA_B))  # consistent: mean 0.955
    assert store.leaderboard("tiny")[0].submission_sha256 == SHA_A
    assert store.best("tiny").submission_sha256 == SHA_B


def test_empty_store(tmp_path):
    store = ResultStore(tmp_path / "never-created")
    assert store.list().rows == [] and store.list().problems == []
    assert store.leaderboard("tiny") == [] and store.best("tiny") is None
    assert not (tmp_path / "never-created").exists()  # reading creates nothing


def test_default_root_from_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("HARNESS_RESULTS", str(tmp_path / "elsewhere"))
    store = ResultStore()
    assert store.root == tmp_path / "elsewhere"


def test_a_wave1_store_still_reads_and_forged_trust_is_not_believed(tmp_path):
    from tests.conftest import REPO

    store = ResultStore(tmp_path)
    v1 = json.loads((REPO / "tests" / "fixtures" / "wave1_verified_docker.json").read_text())
    store.runs_dir.mkdir(parents=True, exist_ok=True)
    (store.runs_dir / f"{v1['run_id']}.json").write_text(json.dumps(v1))  # as wave 1 left it on disk
    forged = make_record(0.5, trust="self-reported")
    forged["trust"] = "verified"  # edited by hand: compat score, claimed verified
    (store.runs_dir / f"{forged['run_id']}.json").write_text(json.dumps(forged))
    listing = store.list(include_unverified=True)
    assert listing.problems == []
    rows = {r.run_id: r for r in listing.rows}
    assert rows[v1["run_id"]].decision == "keep" and rows[v1["run_id"]].trust == "verified"
    assert rows[forged["run_id"]].trust == "self-reported"
    assert [r.run_id for r in store.leaderboard("tiny")] == [v1["run_id"]]  # the forged one is not verified
    assert store.get(v1["run_id"])["schema_version"] == 2  # read as the current version
