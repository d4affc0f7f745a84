"""Deciding a run's status from what the backend observed and what the run printed."""

from __future__ import annotations

from dataclasses import dataclass

from harness.backends.base import ProcessOutcome
from harness.logparse import Summary, saw_nan, saw_oom, traceback_tail

STATUSES = ("ok", "crash", "timeout", "nan", "oom", "aborted", "infra_error", "invalid")


@dataclass
class Verdict:
    status: str
    reason: str | None
    traceback_tail: str | None = None


def decide(outcome: ProcessOutcome, log_text: str, summary: Summary | None, hard_timeout_s: float,
           score_deferred: bool = False) -> Verdict:
    """One status per run, first match wins: the harness's own observations before the log's claims.

    score_deferred: verified mode, where evaluate_bpb returns NaN on purpose (the evaluator scores later),
    so only NaN losses count as a NaN run.
    """
    if outcome.infra_error:
        return Verdict("infra_error", outcome.infra_error)
    if outcome.aborted:
        return Verdict("aborted", "interrupted (Ctrl-C or SIGTERM): the run was killed", traceback_tail(log_text))
    if outcome.timed_out:
        return Verdict("timeout", f"killed by the harness at the hard timeout ({hard_timeout_s:g} s)",
                       traceback_tail(log_text))
    if outcome.kill_reason == "output_limit":
        return Verdict("crash", "the output directory filled up (limits.output): writes past it failed with ENOSPC",
                       traceback_tail(log_text))
    if outcome.oom_killed or (outcome.exit_code not in (0, None) and saw_oom(log_text)):
        why = "killed by the kernel's OOM killer" if outcome.oom_killed else "out of memory"
        return Verdict("oom", why, traceback_tail(log_text))
    if saw_nan(log_text, None if score_deferred else summary):
        return Verdict("nan", "the loss or the score became NaN", traceback_tail(log_text))
    if outcome.exit_code != 0:
        return Verdict("crash", f"exit code {outcome.exit_code}", traceback_tail(log_text))
    if summary is None or (summary.val_bpb is None and not score_deferred):
        return Verdict("crash", "exited 0 without the summary block (--- / val_bpb: ...)", traceback_tail(log_text))
    return Verdict("ok", None)
