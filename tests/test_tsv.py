"""results.tsv rows as autoresearch writes them, concurrent appends, and git commits of a real temp repository."""

from __future__ import annotations

import multiprocessing
import os
import subprocess

import pytest

from harness.tsv import (
    HEADER,
    append_record,
    append_row,
    default_tsv_path,
    git_commit_of,
    read_rows,
)


def test_header_then_rows_in_autoresearch_format(tmp_path):
    tsv = tmp_path / "results.tsv"
    append_row(tsv, "a1b2c3d", 0.9979, 44.0041015625, "keep", "baseline")
    append_row(tsv, "b2c3d4e", 1.0123456789, 44.2, "discard", "wider\tMLP\nand more\r\nlines")
    append_row(tsv, "c3d4e5f", 0.5, 80.0, "crash", "OOM at depth 32")
    assert tsv.read_text() == (
        "commit\tval_bpb\tmemory_gb\tstatus\tdescription\n"
        "a1b2c3d\t0.997900\t44.0\tkeep\tbaseline\n"
        "b2c3d4e\t1.012346\t44.2\tdiscard\twider MLP and more lines\n"
        "c3d4e5f\t0.000000\t0.0\tcrash\tOOM at depth 32\n")
    assert [r.status for r in read_rows(tsv)] == ["keep", "discard", "crash"]
    assert tsv.read_text().count(HEADER) == 1


def test_invalid_rows_are_refused(tmp_path):
    tsv = tmp_path / "results.tsv"
    with pytest.raises(ValueError, match="keep, discard, crash"):
        append_row(tsv, "abc1234", 1.0, 1.0, "maybe", "x")
    with pytest.raises(ValueError, match="crash"):
        append_row(tsv, "abc1234", None, 1.0, "keep", "x")
    assert not tsv.exists() or tsv.read_text() == ""


def test_existing_file_without_trailing_newline_gets_a_fresh_line(tmp_path):
    tsv = tmp_path / "results.tsv"
    tsv.write_text(HEADER + "a1b2c3d\t0.997900\t44.0\tkeep\tbaseline")  # edited by hand, no final newline
    append_row(tsv, "b2c3d4e", 0.99, 44.0, "keep", "next")
    assert [r.commit for r in read_rows(tsv)] == ["a1b2c3d", "b2c3d4e"]


def test_append_record_takes_fields_from_a_result_record(tmp_path):
    tsv = tmp_path / "results.tsv"
    ok = {"status": "ok", "metrics": {"val_bpb": 0.9979, "peak_vram_mb": 45060.2},
          "provenance": {"submission": {"description": "muon lr 0.05"}}}
    crashed = {"status": "oom", "metrics": {}, "provenance": {"submission": {"description": "depth 64"}}}
    append_record(tsv, ok, keep=True, commit="1111111")
    append_record(tsv, ok, keep=False, commit="2222222", description="override")
    append_record(tsv, crashed, keep=True, commit="3333333")
    assert tsv.read_text().splitlines()[1:] == [
        "1111111\t0.997900\t44.0\tkeep\tmuon lr 0.05",
        "2222222\t0.997900\t44.0\tdiscard\toverride",
        "3333333\t0.000000\t0.0\tcrash\tdepth 64"]


def _append_many(path: str, worker: int) -> None:
    for i in range(25):
        append_row(path, f"{worker:03d}{i:04d}", 1.0 + i / 1000, 1.0, "discard", f"worker {worker} row {i} " + "x" * 300)


def test_concurrent_appends_neither_interleave_nor_duplicate_the_header(tmp_path):
    tsv = tmp_path / "results.tsv"
    ctx = multiprocessing.get_context("fork")
    procs = [ctx.Process(target=_append_many, args=(str(tsv), w)) for w in range(4)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(30)
    assert [p.exitcode for p in procs] == [0] * 4
    rows = read_rows(tsv)  # raises on a torn line (wrong field count)
    assert sorted(r.commit for r in rows) == sorted(f"{w:03d}{i:04d}" for w in range(4) for i in range(25))
    assert tsv.read_text().count("commit\t") == 1


def _git(cwd, *args) -> str:
    """Run a git command in cwd; returns HEAD's short hash afterwards ("" before the first commit)."""
    env = {**os.environ, "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t",
           "GIT_COMMITTER_EMAIL": "t@t"}
    subprocess.run(["git", "-C", str(cwd), *args], check=True, capture_output=True, env=env)
    return subprocess.run(["git", "-C", str(cwd), "rev-parse", "--short", "HEAD"],
                          capture_output=True, text=True).stdout.strip()


def test_git_commit_of_in_a_temp_repository(tmp_path):
    repo = tmp_path / "repo"
    (repo / "sub").mkdir(parents=True)
    train = repo / "sub" / "train.py"
    train.write_text("print('hi')\n")
    subprocess.run(["git", "init", "-q", str(repo)], check=True)
    assert git_commit_of(train) is None  # a repository without commits has no HEAD yet
    _git(repo, "add", ".")
    first = _git(repo, "commit", "-q", "-m", "one")
    assert first and git_commit_of(train) == first and git_commit_of(repo) == first
    train.write_text("print('bye')\n")
    second = _git(repo, "commit", "-q", "-am", "two")
    assert second != first and git_commit_of(train) == second
    assert default_tsv_path(train) == repo.resolve() / "results.tsv"

    outside = tmp_path / "plain"
    outside.mkdir()
    assert git_commit_of(outside / "train.py") is None
    assert default_tsv_path(outside / "train.py") is None


# --- control characters, the commit of what ran, where the row goes ---------------------------

def test_rows_carry_no_control_or_bidi_characters(tmp_path):
    import unicodedata

    tsv = tmp_path / "results.tsv"
    evil = "wider\x1b[2J\x1b]0;pwned\x07 MLP\rkeep\u202e\tdraw\u2066\x00\x7f\x85end"
    append_row(tsv, "abc1234\x1b[31m", 0.99, 1.0, "discard", evil)
    append_record(tsv, {"status": "ok", "metrics": {"val_bpb": 0.98, "peak_vram_mb": None},
                        "provenance": {"submission": {"description": evil}}}, keep=True, commit="def5678")
    text = tsv.read_text(encoding="utf-8")
    assert not [c for c in text if c not in "\t\n" and unicodedata.category(c) in ("Cc", "Cf")]
    rows = read_rows(tsv)
    assert [r.commit for r in rows] == ["abc1234", "def5678"]
    assert rows[0].description == rows[1].description == "wider MLP keep draw end"


def test_submission_commit_names_only_a_commit_that_holds_the_file(tmp_path):
    import hashlib

    from harness.tsv import submission_commit

    repo = tmp_path / "repo"
    (repo / "sub").mkdir(parents=True)
    train = repo / "sub" / "train.py"
    train.write_text("print('one')\n")
    subprocess.run(["git", "init", "-q", str(repo)], check=True)
    assert submission_commit(train) == "unknown"  # no commit yet
    _git(repo, "add", ".")
    head = _git(repo, "commit", "-q", "-m", "one")
    assert submission_commit(train) == head
    assert submission_commit(train, hashlib.sha256(b"print('one')\n").hexdigest()) == head
    assert submission_commit(train, hashlib.sha256(b"something else ran\n").hexdigest()) == f"{head}-dirty"
    train.write_text("print('edited, not committed')\n")
    assert submission_commit(train) == f"{head}-dirty"
    other = repo / "sub" / "other.py"  # in the repository, never committed
    other.write_text("print('x')\n")
    assert git_commit_of(other) == head and submission_commit(other) == "unknown"
    assert submission_commit(tmp_path / "train.py") == "unknown"  # outside git


def test_git_calls_run_no_program_the_repository_configures(tmp_path):
    """The candidate's repository is untrusted: its core.fsmonitor would run on `git status`/`git diff`."""
    from harness.tsv import cwd_tsv_path, submission_commit

    repo = tmp_path / "repo"
    repo.mkdir()
    (repo / "train.py").write_text("print('hi')\n")
    subprocess.run(["git", "init", "-q", str(repo)], check=True)
    _git(repo, "add", ".")
    head = _git(repo, "commit", "-q", "-m", "one")
    pwned = tmp_path / "PWNED"
    _git(repo, "config", "core.fsmonitor", f"touch {pwned}; false")
    subprocess.run(["git", "-C", str(repo), "status"], capture_output=True)  # the hook is live...
    assert pwned.exists()
    pwned.unlink()
    assert submission_commit(repo / "train.py") == head  # ...and the harness's own calls never start it
    assert cwd_tsv_path(repo) == repo.resolve() / "results.tsv"
    assert not pwned.exists()


def test_cwd_tsv_path_is_the_current_directorys_repository(tmp_path, monkeypatch):
    from harness.tsv import cwd_tsv_path

    repo = tmp_path / "repo"
    (repo / "deep").mkdir(parents=True)
    subprocess.run(["git", "init", "-q", str(repo)], check=True)
    monkeypatch.chdir(repo / "deep")
    assert cwd_tsv_path() == repo.resolve() / "results.tsv"
    monkeypatch.chdir(tmp_path)
    assert cwd_tsv_path() is None
