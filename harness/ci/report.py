"""What `harness ci score` found, for people and CI systems: JUnit XML (one testsuite per branch, one
testcase per commit), a markdown summary for GitHub's job summary ($GITHUB_STEP_SUMMARY) and a few plain
lines for the terminal. They only read a CiReport (harness/ci/model.py); nothing here runs or decides.

Every string that came from a branch (branch names, commit subjects, reasons, log tails) is made inert
first with ``clean_text``: no escape sequence reaches a terminal, no control character makes the XML
unreadable, no pipe or markup changes the shape of the markdown.

JUnit mapping: a kept commit passes; a discarded one passes with its decision, reason, Δ and p in
system-out (and, when a seed failed, that run's log tail in system-err); a failed one (crash, timeout, oom,
nan, or refused as invalid, in a dry run too) is a <failure> whose message is the status and reason and whose
text is the log tail; a planned one (--dry-run, --max-commits reached), or one with no decision, is <skipped>.
"""

from __future__ import annotations

import io
import os
import re
from pathlib import Path

from junitparser import Failure, JUnitXml, Skipped, SystemErr, SystemOut, TestCase, TestSuite

from harness.ci.model import (
    CACHED,
    DISCARD,
    FAILED,
    KEEP,
    PLANNED,
    REFUSED,
    SCORED,
    BranchResult,
    CiReport,
    CommitResult,
)
from harness.atomic import write_bytes_atomic
from harness.sanitize import clean_text

# XML 1.0 allows only these characters; clean_text leaves a few others (U+FFFE, U+FFFF: unassigned).
_NOT_XML = re.compile("[^\t\n\r\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")
# Backslash-escaped in markdown text: CommonMark/GFM emphasis, code, links, HTML, entities, tables,
# strikethrough, GitHub's $math$ and a heading's closing #s.
_MD_SPECIAL = re.compile(r"([\\`*_\[\]<>|~&$#])")
_REASON_CHARS = 120  # a table cell's reason is cut here (the JUnit file and --json have it whole)


# ---------------------------------------------------------------- numbers


def _num(x: float | None, spec: str) -> str:
    return "-" if x is None else format(x, spec)


def _bpb(x: float | None) -> str:
    return _num(x, ".4f")


def _delta(x: float | None) -> str:
    return _num(x, "+.4f")


def _p(x: float | None) -> str:
    return _num(x, ".3g")


def _delta_vs_base(b: BranchResult) -> float | None:
    best = b.best
    if best is None or best.val_bpb is None or b.base_val_bpb is None:
        return None
    return best.val_bpb - b.base_val_bpb


def _counts(b: BranchResult) -> str:
    hows = [(n, sum(1 for c in b.commits if c.how == n)) for n in (SCORED, CACHED, REFUSED, PLANNED)]
    done = ", ".join(f"{k} {name}" for name, k in hows if k)
    n = len(b.commits)
    head = f"{n} commit{'' if n == 1 else 's'}" + (f" ({done})" if done else "")
    return f"{head}; kept {b.count(KEEP)}, discarded {b.count(DISCARD)}, failed {b.count(FAILED)}"


def _best(b: BranchResult, sha) -> str:
    """'best val_bpb 0.9979 at <sha> (Δ -0.0012 vs base 0.9991)', or why there is none."""
    best = b.best
    if best is None:
        return "no kept commit" + (f" (base {_bpb(b.base_val_bpb)})" if b.base_val_bpb is not None else "")
    vs = f" (Δ {_delta(_delta_vs_base(b))} vs base {_bpb(b.base_val_bpb)})" if b.base_val_bpb is not None else ""
    return f"best val_bpb {_bpb(best.val_bpb)} at {sha(best.sha)}{vs}"


def _why(c: CommitResult) -> str:
    """'status: reason', once: the walk's reasons for an invalid candidate already start with 'invalid: '."""
    status = c.status or c.how
    return c.reason if c.reason.startswith(f"{status}:") else f"{status}: {c.reason}"


def _short(sha: str) -> str:
    return clean_text(sha)[:12]


# ---------------------------------------------------------------- JUnit XML


def _xml(text: str | None, *, multiline: bool = False) -> str:
    return _NOT_XML.sub("", clean_text(text, keep_newlines=multiline))


def _judgement(c: CommitResult) -> str:
    """Lines for a commit's system-out: the decision and why, the score and its comparison."""
    lines = [f"{c.decision}: {c.reason}", f"how: {c.how}, status: {c.status or '-'}"]
    if c.val_bpb is not None:
        seeds = f" (seeds {', '.join(_bpb(s) for s in c.scores)})" if c.scores else ""
        lines.append(f"val_bpb {_bpb(c.val_bpb)}{seeds}")
    if c.delta is not None or c.p is not None:
        lines.append(f"Δ {_delta(c.delta)} vs the reference, p {_p(c.p)}")
    if c.run_ids:
        lines.append("runs: " + " ".join(c.run_ids))
    return "\n".join(_xml(line) for line in lines)


def _testcase(branch: str, c: CommitResult) -> TestCase:
    case = TestCase(name=_xml(f"{_short(c.sha)} {c.subject}"), classname=branch)
    if c.decision == FAILED:  # a dry run's invalid candidate too: it fails the same way when scored
        status = c.status or c.how
        failure = Failure(_xml(_why(c)), _xml(status))
        if c.log_tail:
            failure.text = _xml(c.log_tail, multiline=True)
        case.result = [failure]
    elif c.how == PLANNED:  # --dry-run, or --max-commits reached
        case.result = [Skipped(_xml(f"{c.how}: {c.reason}" if c.reason else f"{c.how}: not scored"))]
    elif c.decision not in (KEEP, DISCARD):  # NONE: nothing was judged
        case.result = [Skipped(_xml(f"{c.how}: {c.reason}"))]
    case.append(SystemOut(_judgement(c)))
    if c.log_tail and c.decision != FAILED:  # a discard whose seeds did not all finish: the failing one's tail
        case.append(SystemErr(_xml(c.log_tail, multiline=True)))
    return case


def _suite(b: BranchResult) -> TestSuite:
    name = _xml(b.name)
    suite = TestSuite(name)
    suite.add_property("head", _xml(b.head))
    suite.add_property("base", _xml(b.base))
    if b.base_val_bpb is not None:
        suite.add_property("base_val_bpb", _bpb(b.base_val_bpb))
    best = b.best
    if best is not None:
        suite.add_property("best", _xml(best.sha))
        suite.add_property("best_val_bpb", _bpb(best.val_bpb))
    if b.gone:
        suite.add_property("gone", _xml(" ".join(b.gone)))
    suite.add_testcases([_testcase(name, c) for c in b.commits])
    return suite


def _junit(report: CiReport) -> JUnitXml:
    xml = JUnitXml(_xml(f"{report.repo} {report.benchmark} {report.gpu_class} vs {report.base_ref}"))
    for b in report.branches:
        xml.append(_suite(b))  # not add_testsuite: it would merge two suites that compare equal
    xml.update_statistics()
    return xml


def junit_xml(report: CiReport) -> str:
    """The report as a JUnit XML document (with its XML declaration)."""
    buf = io.BytesIO()
    _junit(report).write(buf)
    return buf.getvalue().decode("utf-8")


def write_junit(report: CiReport, path: str | os.PathLike[str]) -> Path:
    """Write junit_xml(report) to ``path`` atomically (a temp file in the same folder, then a rename)."""
    path = Path(path)
    write_bytes_atomic(path, junit_xml(report).encode("utf-8"))
    return path


# ---------------------------------------------------------------- markdown


def _md(text: str | None) -> str:
    """One line of branch-controlled text, inert in GitHub markdown (tables included)."""
    return _MD_SPECIAL.sub(r"\\\1", clean_text(text))


def _code(text: str | None) -> str:
    """A sha as inline code (no backtick can end it early; a pipe cannot split a table cell)."""
    shown = clean_text(text).replace("`", "").replace("|", "")
    return f"`{shown}`" if shown else "-"


def _cut(text: str, n: int) -> str:
    text = clean_text(text)
    return text if len(text) <= n else text[: n - 1] + "…"


_HEADER = ("best", "commit", "subject", "how", "status", "val_bpb", "Δ", "p", "decision", "reason")


def _row(c: CommitResult, best: CommitResult | None) -> str:
    cells = ["★" if best is not None and c.sha == best.sha else "",
             _code(_short(c.sha)) + (" (head)" if c.is_head else ""),
             _md(c.subject), c.how, _md(c.status) or "-", _bpb(c.val_bpb), _delta(c.delta), _p(c.p),
             f"**{c.decision}**" if c.decision == FAILED else c.decision,
             _md(_cut(c.reason, _REASON_CHARS)) or "-"]
    return "| " + " | ".join(cells) + " |"


def _branch_md(b: BranchResult) -> list[str]:
    lines = [f"### {_md(b.name)}", "",
             f"{_counts(b)} · {_best(b, lambda s: _code(_short(s)))} · head {_code(_short(b.head))}", ""]
    if b.commits:
        best = b.best
        lines += ["| " + " | ".join(_HEADER) + " |", "|" + "---|" * len(_HEADER)]
        lines += [_row(c, best) for c in b.commits]
    else:
        lines.append("No commit on this branch changed the candidate.")
    if b.gone:
        lines += ["", "Gone from the branch (force-pushed away): " + ", ".join(_code(_short(s)) for s in b.gone)]
    lines.append("")
    return lines


def markdown_summary(report: CiReport) -> str:
    """The report as GitHub-flavoured markdown: a heading, then per branch a line and a table."""
    dry = " (dry run)" if report.dry_run else ""
    lines = [f"## CI scores{dry}: {_md(report.repo)}", "",
             f"Benchmark **{_md(report.benchmark)}** on GPU class **{_md(report.gpu_class)}**, "
             f"compared with base **{_md(report.base_ref)}**.", ""]
    if report.missing:
        lines += ["No branch matched: " + ", ".join(_md(g) for g in report.missing), ""]
    if not report.branches:
        lines += ["No branches: nothing was scored.", ""]
    for b in report.branches:
        lines += _branch_md(b)
    return "\n".join(lines)


def write_summary(report: CiReport, path: str | os.PathLike[str]) -> Path:
    """Append markdown_summary(report) to ``path`` (GitHub's $GITHUB_STEP_SUMMARY is appended to by every
    step), creating the file when there is none."""
    path = Path(path)
    data = markdown_summary(report).encode("utf-8")
    with open(path, "ab+") as f:
        if f.seek(0, os.SEEK_END) > 0:  # something before us: start on a fresh paragraph
            f.seek(-1, os.SEEK_END)
            data = (b"\n" if f.read(1) == b"\n" else b"\n\n") + data
        f.write(data)
    return path


# ---------------------------------------------------------------- terminal


def text_summary(report: CiReport) -> list[str]:
    """A few plain lines per branch for a terminal: counts, best, failures, gone commits."""
    dry = " (dry run)" if report.dry_run else ""
    lines = [f"{report.repo}: {report.benchmark} on {report.gpu_class} vs {report.base_ref}{dry}"]
    if not report.branches:  # (globs that matched nothing: `harness ci score` notes them on stderr)
        lines.append("no branches: nothing was scored")
    for b in report.branches:
        lines.append(f"{b.name} (head {_short(b.head)}): {_counts(b)}")
        lines.append(f"  {_best(b, _short)}")
        for c in b.commits:
            if c.decision == FAILED:
                head = " (head)" if c.is_head else ""
                lines.append(f"  failed {_short(c.sha)}{head} {_cut(c.subject, 60)}: "
                             f"{_cut(_why(c), _REASON_CHARS)}")
        if b.gone:
            lines.append(f"  gone (force-pushed away): {' '.join(_short(s) for s in b.gone)}")
    return [clean_text(line) for line in lines]


__all__ = ["junit_xml", "write_junit", "markdown_summary", "write_summary", "text_summary"]
