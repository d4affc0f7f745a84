"""harness.ci.report: JUnit XML, the markdown summary and the terminal lines, from hand-built CiReports;
and harness.ci.model.exit_code. Pure unit tests: nothing is run or scored."""

from __future__ import annotations

import os
import re
import unicodedata

import pytest
from junitparser import Failure, JUnitXml, Skipped

from harness import atomic
from harness.ci.model import (
    CACHED,
    DISCARD,
    FAILED,
    KEEP,
    NONE,
    PLANNED,
    REFUSED,
    SCORED,
    BranchResult,
    CiReport,
    CommitResult,
    exit_code,
)
from harness.ci.report import junit_xml, markdown_summary, text_summary, write_junit, write_summary

BASE = "0" * 40


def sha(c: str) -> str:
    return c * 40


KEPT = CommitResult(sha("a"), "wider MLP | lr=0.05", 1, "b" * 40, SCORED, KEEP, "better than the base",
                    status="ok", val_bpb=0.98761, scores=(0.9875, 0.9877), delta=-0.0123, p=0.004,
                    run_ids=("r1", "r2"))
DISCARDED = CommitResult(sha("b"), "deeper \x1b[2Jnet\x1b]0;pwned\x07", 2, "c" * 40, SCORED, DISCARD,
                         "not better than the last kept", status="ok", val_bpb=0.9901, scores=(0.99, 0.9902),
                         delta=0.0025, p=0.31)
CACHED_C = CommitResult(sha("c"), "retune warmup", 3, "d" * 40, CACHED, KEEP, "better than the last kept",
                        status="ok", val_bpb=0.9812, scores=(0.9812,), delta=-0.0064, p=0.02)
REFUSED_C = CommitResult(sha("d"), "huge file", 4, "e" * 40, REFUSED, FAILED, "train.py is 9 MB (limit 1 MB)",
                         status="invalid")
CRASHED_HEAD = CommitResult(sha("e"), "try fp8", 5, "f" * 40, SCORED, FAILED, "exit code 1 at step 12",
                            status="crash", log_tail="Traceback (most recent call last):\n\x1b[31m  boom\x1b[0m"
                            "\x00\nRuntimeError: fp8\r\n", is_head=True)
AGENT1 = BranchResult("agent/one", CRASHED_HEAD.sha, BASE, 1.0,
                      (KEPT, DISCARDED, CACHED_C, REFUSED_C, CRASHED_HEAD), gone=(sha("9"), sha("8")))

OTHER_HEAD = CommitResult(sha("7"), "smaller batch", 6, "1" * 40, CACHED, DISCARD, "not better than the base",
                          status="ok", val_bpb=1.002, delta=0.002, p=0.6, is_head=True)
AGENT2 = BranchResult("agent/two", OTHER_HEAD.sha, BASE, 1.0, (OTHER_HEAD,))

REPORT = CiReport("autoresearch", "tiny", "H100-SXM-80GB", "main", (AGENT1, AGENT2))

PLANNED_C = [CommitResult(sha(x), f"idea {x}", i, "2" * 40, PLANNED, NONE, "would be scored")
             for i, x in enumerate("56")]
# what the walk records for an invalid candidate in a dry run: planned, yet failed
PLANNED_C.append(CommitResult(sha("4"), "import os", 3, "3" * 40, PLANNED, FAILED, "invalid: import os is not allowed",
                              status="invalid", is_head=True))
DRY = CiReport("autoresearch", "tiny", "H100-SXM-80GB", "main",
               (BranchResult("agent/dry", PLANNED_C[-1].sha, BASE, None, tuple(PLANNED_C)),), dry_run=True)
EMPTY = CiReport("autoresearch", "tiny", "H100-SXM-80GB", "main", missing=("agent/none-*",))


def _case(suite, sha_):
    return next(c for c in suite if c.name.startswith(sha_[:12]))


def _inert(text: str) -> bool:
    return not [c for c in text if c != "\n" and unicodedata.category(c) in ("Cc", "Cf", "Cs")]


# ---------------------------------------------------------------- JUnit


def test_junit_parses_back_with_the_counts_per_suite(tmp_path):
    path = write_junit(REPORT, tmp_path / "out" / "junit.xml")
    xml = JUnitXml.fromfile(str(path))
    suites = {s.name: s for s in xml}
    assert list(suites) == ["agent/one", "agent/two"]
    one, two = suites["agent/one"], suites["agent/two"]
    assert (one.tests, one.failures, one.skipped, one.errors) == (5, 2, 0, 0)
    assert (two.tests, two.failures, two.skipped, two.errors) == (1, 0, 0, 0)
    assert (xml.tests, xml.failures, xml.skipped) == (6, 2, 0)
    assert all(c.classname == "agent/one" for c in one)
    assert [c.name for c in one][0] == "aaaaaaaaaaaa wider MLP | lr=0.05"
    assert [p.value for p in one.properties() if p.name == "gone"] == [f"{sha('9')} {sha('8')}"]
    # the file holds exactly what junit_xml returns
    assert path.read_text(encoding="utf-8") == junit_xml(REPORT)
    assert not [p for p in path.parent.iterdir() if p.name != "junit.xml"]  # no temp file left behind


def test_junit_results_per_decision(tmp_path):
    xml = JUnitXml.fromfile(str(write_junit(REPORT, tmp_path / "junit.xml")))
    one = next(iter(xml))
    kept, cached = _case(one, KEPT.sha), _case(one, CACHED_C.sha)
    assert kept.is_passed and cached.is_passed
    discarded = _case(one, DISCARDED.sha)
    assert discarded.is_passed
    out = discarded.system_out
    assert "discard: not better than the last kept" in out
    assert "Δ +0.0025" in out and "p 0.31" in out and "val_bpb 0.9901" in out
    assert discarded.name == "bbbbbbbbbbbb deeper net"  # escape sequences gone from the name

    crashed = _case(one, CRASHED_HEAD.sha)
    (failure,) = crashed.result
    assert isinstance(failure, Failure)
    assert failure.message == "crash: exit code 1 at step 12" and failure.type == "crash"
    assert failure.text.splitlines() == ["Traceback (most recent call last):", "  boom", "RuntimeError: fp8"]
    assert _inert(failure.text)

    refused = _case(one, REFUSED_C.sha)
    (failure,) = refused.result
    assert isinstance(failure, Failure)
    assert failure.message == "invalid: train.py is 9 MB (limit 1 MB)"
    assert failure.text is None  # no log tail


def test_junit_dry_run_is_skipped_but_an_invalid_candidate_fails():
    xml = JUnitXml.fromstring(junit_xml(DRY).encode("utf-8"))
    (suite,) = list(xml)
    assert (suite.tests, suite.failures, suite.skipped) == (3, 1, 2)
    *planned, invalid = list(suite)
    for case in planned:
        (skipped,) = case.result
        assert isinstance(skipped, Skipped) and skipped.message == "planned: would be scored"
    (failure,) = invalid.result
    assert isinstance(failure, Failure) and failure.message == "invalid: import os is not allowed"  # said once


def test_junit_discard_with_a_failed_seed_keeps_its_log_tail():
    c = CommitResult(sha("a"), "flaky", 1, None, SCORED, DISCARD, "1 of 2 seeds failed (crash)", status="crash",
                     val_bpb=0.99, scores=(0.99,), log_tail="seed 2\n\x1b[31mKilled\x1b[0m")
    rep = CiReport("r", "b", "g", "main", (BranchResult("agent/x", c.sha, BASE, 1.0, (c,)),))
    ((case,),) = [list(s) for s in JUnitXml.fromstring(junit_xml(rep).encode("utf-8"))]
    assert case.is_passed and "discard: 1 of 2 seeds failed (crash)" in case.system_out
    assert case.system_err == "seed 2\nKilled"


def test_junit_empty_report_and_hostile_text():
    xml = JUnitXml.fromstring(junit_xml(EMPTY).encode("utf-8"))
    assert len(xml) == 0 and xml.tests == 0
    # control characters XML cannot hold, and ones clean_text leaves (U+FFFE), do not break the file
    bad = CommitResult(sha("f"), "x\x01\ufffey<&>\"'", 1, None, SCORED, FAILED, "nan\x0b\x1b[1mloss",
                       status="nan", log_tail="a\x07b\ud800c\ufffe")
    rep = CiReport("r", "b", "g", "main", (BranchResult("agent/<&>\x1b[2J", bad.sha, BASE, None, (bad,)),))
    (suite,) = list(JUnitXml.fromstring(junit_xml(rep).encode("utf-8")))
    assert suite.name == "agent/<&>"
    (case,) = list(suite)
    assert case.name == "ffffffffffff xy<&>\"'"
    assert case.result[0].message == "nan: nan loss" and case.result[0].text == "ab\ufffdc"


def test_write_junit_replaces_atomically(tmp_path, monkeypatch):
    path = tmp_path / "junit.xml"
    path.write_text("old", encoding="utf-8")
    calls = []
    real = os.replace
    monkeypatch.setattr(atomic.os, "replace", lambda a, b: calls.append((a, b)) or real(a, b))
    write_junit(REPORT, path)
    ((src, dst),) = calls
    assert os.path.dirname(src) == str(tmp_path) and str(dst) == str(path)
    assert JUnitXml.fromfile(str(path)).tests == 6

    def boom(a, b):
        raise OSError("disk full")

    monkeypatch.setattr(atomic.os, "replace", boom)
    with pytest.raises(OSError):
        write_junit(DRY, path)
    assert JUnitXml.fromfile(str(path)).tests == 6  # the old file is whole
    assert sorted(p.name for p in tmp_path.iterdir()) == ["junit.xml"]  # the temp file is gone


# ---------------------------------------------------------------- markdown


def _tables(md: str) -> list[list[str]]:
    """Each markdown table's body rows (header and separator left out)."""
    tables, current = [], None
    for line in md.splitlines():
        if line.startswith("|"):
            if current is None:
                current = []
                tables.append(current)
            current.append(line)
        else:
            current = None
    for t in tables:
        assert re.fullmatch(r"\|(---\|)+", t[1]), t[1]
    return [t[2:] for t in tables]


def _cells(row: str) -> list[str]:
    return [c.strip() for c in re.split(r"(?<!\\)\|", row)[1:-1]]


def test_markdown_heading_tables_and_rows():
    md = markdown_summary(REPORT)
    first = md.splitlines()[0]
    assert first.startswith("## ") and "autoresearch" in first
    assert "tiny" in md and "H100-SXM-80GB" in md and "main" in md
    assert "### agent/one" in md and "### agent/two" in md
    t1, t2 = _tables(md)
    assert len(t1) == 5 and len(t2) == 1
    header = _cells(md.splitlines()[next(i for i, l in enumerate(md.splitlines()) if l.startswith("|"))])
    assert len(header) == 10
    assert all(len(_cells(r)) == len(header) for r in t1 + t2)  # escaped pipes split no cell

    rows = {_cells(r)[1].split()[0].strip("`"): _cells(r) for r in t1}
    assert set(rows) == {c.short for c in AGENT1.commits}
    best = [k for k, r in rows.items() if "★" in r[0]]
    assert best == [CACHED_C.short]  # 0.9812 < 0.98761: the best kept commit, not the first
    assert rows[KEPT.short][2] == r"wider MLP \| lr=0.05"
    assert rows[KEPT.short][3:9] == ["scored", "ok", "0.9876", "-0.0123", "0.004", "keep"]
    assert rows[DISCARDED.short][2] == "deeper net" and "\x1b" not in md and "pwned" not in md
    assert rows[CACHED_C.short][3] == "cached"
    assert rows[REFUSED_C.short][3:5] == ["refused", "invalid"] and rows[REFUSED_C.short][5] == "-"
    assert rows[CRASHED_HEAD.short][1].endswith("(head)") and "failed" in rows[CRASHED_HEAD.short][8]
    assert not [r for r in _tables(md)[1] if "★" in _cells(r)[0]]  # agent/two kept nothing


def test_markdown_branch_line_and_gone():
    md = markdown_summary(REPORT)
    line = next(l for l in md.splitlines() if l.startswith("5 commits"))
    assert "(3 scored, 1 cached, 1 refused)" in line
    assert "kept 2, discarded 1, failed 2" in line
    assert "0.9812" in line and f"`{CACHED_C.short}`" in line and "Δ -0.0188 vs base 1.0000" in line
    gone = md.split("### agent/two")[0].splitlines()
    gone_line = next(l for l in gone if "force-pushed" in l)
    assert f"`{sha('9')[:12]}`" in gone_line and f"`{sha('8')[:12]}`" in gone_line
    # the gone line follows the table
    lines = md.splitlines()
    assert lines.index(gone_line) > max(i for i, l in enumerate(lines) if l.startswith("| ") and "aaaa" in l)


def test_markdown_escapes_markup_in_names():
    c = CommitResult(sha("a"), "<img src=x> *bold* `code` [l](u) $x$ ~s~ &amp; #", 1, None, SCORED, KEEP, "ok",
                     status="ok", val_bpb=1.0)
    md = markdown_summary(CiReport("r|x", "b", "g", "main", (BranchResult("agent/*a*", c.sha, BASE, None, (c,)),)))
    assert r"\<img src=x\> \*bold\* \`code\` \[l\](u) \$x\$ \~s\~ \&amp; \#" in md
    assert r"### agent/\*a\*" in md and r"r\|x" in md


def test_markdown_dry_run_and_empty():
    md = markdown_summary(DRY)
    assert "dry run" in md.splitlines()[0]
    (rows,) = _tables(md)
    assert len(rows) == 3 and all(_cells(r)[3] == "planned" and _cells(r)[5] == "-" for r in rows)
    assert [_cells(r)[4] for r in rows] == ["-", "-", "invalid"] and "failed" in _cells(rows[2])[8]
    empty = markdown_summary(EMPTY)
    assert "No branches" in empty and "|" not in empty and "agent/none-\\*" in empty


def test_write_summary_appends_and_creates(tmp_path):
    path = tmp_path / "summary.md"
    write_summary(EMPTY, path)  # created
    assert path.read_text(encoding="utf-8") == markdown_summary(EMPTY)
    path.write_text("earlier step's summary", encoding="utf-8")
    write_summary(REPORT, path)
    write_summary(DRY, path)
    text = path.read_text(encoding="utf-8")
    assert text.startswith("earlier step's summary\n\n## ")
    assert text.count("\n## ") == 2
    assert text.endswith(markdown_summary(DRY)) and markdown_summary(REPORT) in text
    assert len(_tables(text)) == 3


# ---------------------------------------------------------------- terminal


def test_text_summary_is_short_and_inert():
    evil = BranchResult("agent/\x1b]0;title\x07x\u202e", CRASHED_HEAD.sha, BASE, 1.0,
                        (KEPT, DISCARDED, CRASHED_HEAD))
    lines = text_summary(CiReport("r\x1b[2J", "tiny", "g", "main", (evil, AGENT2)))
    assert lines and all(l.isprintable() for l in lines), [l for l in lines if not l.isprintable()]
    assert any(l.startswith("agent/x ") for l in lines)
    failed = [l for l in lines if "failed eeeeeeeeeeee (head)" in l]
    assert failed and "crash: exit code 1 at step 12" in failed[0]
    lines = text_summary(REPORT)
    assert len(lines) <= 1 + 5 * len(REPORT.branches)
    assert any("best val_bpb 0.9812 at cccccccccccc" in l for l in lines)
    assert any("gone" in l and "999999999999" in l for l in lines)
    assert text_summary(EMPTY)[-1].startswith("no branches")


# ---------------------------------------------------------------- exit_code


def _failed_only(head_failed: bool, other_failed: bool) -> CiReport:
    first = KEPT if not other_failed else REFUSED_C
    head = OTHER_HEAD if not head_failed else CRASHED_HEAD
    return CiReport("r", "b", "g", "main", (BranchResult("agent/x", head.sha, BASE, 1.0, (first, head)),))


@pytest.mark.parametrize("head_failed, other_failed, any_, head, never", [
    (False, False, 0, 0, 0),
    (False, True, 1, 0, 0),  # a failed commit that is not the head: only --fail-on any fails
    (True, False, 1, 1, 0),
    (True, True, 1, 1, 0),
])
def test_exit_code(head_failed, other_failed, any_, head, never):
    rep = _failed_only(head_failed, other_failed)
    assert (exit_code(rep, "any"), exit_code(rep, "head"), exit_code(rep, "never")) == (any_, head, never)
    assert exit_code(rep) == head  # head is the default


def test_exit_code_reports_and_refusals():
    assert exit_code(REPORT, "head") == 1 and exit_code(REPORT, "any") == 1
    assert exit_code(DRY, "never") == 0 and exit_code(EMPTY, "any") == 0
    assert exit_code(DRY, "head") == 1  # an invalid head fails a dry run too
    with pytest.raises(ValueError, match="--fail-on"):
        exit_code(REPORT, "sometimes")
