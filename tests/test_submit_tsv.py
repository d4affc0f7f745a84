"""`harness submit`'s results.tsv row: which repository it goes to, --tsv, and hostile descriptions."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
from typer.testing import CliRunner

from harness.cli import app
from harness.submit import submit
from tests.submit_support import TOY, env, opts  # noqa: F401 (env: a fixture)


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
