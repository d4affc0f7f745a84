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
