"""Stage 4, the judgement: the run's status, reason, metrics and flags, from what the harness observed
first and what the run printed last; then the evaluator's verdict, the entropy floor and the clock.
Trust is not decided here: harness.record.decide_trust derives it from the parts this stage builds."""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Any, Mapping

from harness.backends.base import ProcessOutcome
from harness.clock import ClockVerdict
from harness.logparse import Summary, parse_summary, saw_nan, saw_oom, traceback_tail
from harness.pipeline.train import Trained
from harness.record import COMPAT, OVER_BUDGET, VERIFIED, Evaluation, Export, Outcome, Timings, finite

# A score this far below the benchmark's entropy floor cannot come from a model that did not see the
# val text (finite-sample fluctuation of the tiny val set is ~0.003 bits per byte).
FLOOR_TOLERANCE = 0.02
CLOCK_KILL = "killed by the harness's clock"


@dataclass(frozen=True)
class Verdict:
    status: str
    reason: str | None
    traceback_tail: str | None = None


def decide_status(outcome: ProcessOutcome, log_text: str, summary: Summary | None, hard_timeout_s: float,
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


def judge_training(trained: Trained, hard_timeout_s: float, score_deferred: bool) -> Outcome:
    """The outcome of training: status from the backend's observations and the log, the summary's figures,
    the timings the harness saw, and the clock's spans and flags."""
    po, watcher = trained.outcome, trained.watcher
    log_text = po.log_path.read_text(errors="replace") if po.log_path.exists() else ""
    summary = parse_summary(log_text)
    verdict = decide_status(po, log_text, summary, hard_timeout_s, score_deferred)
    metrics = finite(summary.to_dict()) if summary else {}
    # Startup: from the start the harness saw to train.py's first output (calibration, when run, is apart).
    first = watcher.first_train_output_at or po.first_output_at
    timings = Timings(
        started_at=po.started_at, first_output_at=po.first_output_at, ended_at=po.ended_at,
        startup_s=first - po.started_at if first else None,
        calibration_s=watcher.calibrated_at - po.started_at if watcher.calibrated_at else None,
        training_s=metrics.get("training_seconds"),
        eval_s=(watcher.summary_at - watcher.last_progress_at
                if watcher.summary_at and watcher.last_progress_at else None),
        total_s=po.ended_at - po.started_at, training_observed_s=trained.clock.window_s)
    status, reason = verdict.status, verdict.reason
    if trained.killed_by_clock and status not in ("aborted", "infra_error"):
        status, reason = "timeout", f"{CLOCK_KILL}: {trained.killed_by_clock}"
    outcome = Outcome(status=status, reason=reason, backend=po.backend, isolated=po.isolated,
                      log_path=str(po.log_path), timings=timings, metrics=metrics, log_truncated=po.log_truncated,
                      traceback_tail=verdict.traceback_tail if status != "ok" else None,
                      clock=trained.clock.to_dict())
    return with_clock_flags(outcome, trained.clock)


def with_clock_flags(outcome: Outcome, clock: ClockVerdict) -> Outcome:
    """A run that trained to the end past a limit is flagged over_budget (it never counts), and so is one
    the clock killed; other failures keep their status."""
    killed = (outcome.reason or "").startswith(CLOCK_KILL)
    if (outcome.status == "ok" and clock.over_budget) or killed:
        return outcome.with_flags(OVER_BUDGET)
    return outcome


def judge_verified(outcome: Outcome, export: Export | None, verdict: Mapping[str, Any] | None,
                   rescored: bool = False) -> tuple[Outcome, Evaluation]:
    """Fold the export and the evaluator's verdict into the training outcome."""
    reported = outcome.metrics.get("val_bpb")
    metrics = {**outcome.metrics,
               "reported_val_bpb": reported if reported is None or math.isfinite(reported) else None}
    evaluation = Evaluation(mode=VERIFIED, export=export, evaluator=verdict, training_status=outcome.status,
                            rescored=rescored)
    metrics["val_bpb"] = None  # only the evaluator's score is a score; train.py's stays as reported_val_bpb
    if outcome.status != "ok":
        return replace(outcome, metrics=metrics), evaluation  # a crash, timeout, NaN loss ... keeps its status
    if export is None:
        return replace(outcome, status="crash", metrics=metrics,
                       reason="train.py never called evaluate_bpb, so there is no model to score"), evaluation
    if not export.ok:
        # Not scored: the caller may fall back to a self-reported compatibility run, which never
        # counts toward a verified decision.
        return replace(outcome, metrics=metrics), evaluation
    if verdict is None or not verdict.get("ok"):
        status, reason = _failed_evaluation(verdict)
        return replace(outcome, status=status, reason=reason, metrics=metrics), evaluation
    metrics["val_bpb"] = verdict["val_bpb"]
    timings = replace(outcome.timings, eval_s=verdict.get("seconds_observed"))
    return replace(outcome, metrics=metrics, timings=timings), evaluation


def _failed_evaluation(verdict: Mapping[str, Any] | None) -> tuple[str, str | None]:
    v = verdict or {}
    probe = v.get("causality_probe") or {}
    if v.get("aborted"):
        return "aborted", "interrupted during the verified evaluation"
    if (probe and not probe.get("ok")) or v.get("invalid"):
        return "invalid", v.get("error")
    if v.get("nonfinite"):
        return "nan", v.get("error")
    if v.get("timed_out"):
        return "timeout", f"verified evaluation: {v.get('error')}"
    if v.get("infra_error"):
        return "infra_error", f"verified evaluation: {v['infra_error']}"
    return "crash", f"verified evaluation failed: {v.get('error')}"


def compat_evaluation(note: str | None = None, export: Export | None = None) -> Evaluation:
    """train.py's own score: asked for (--compat), or the fallback for a model that could not be exported."""
    return Evaluation(mode=COMPAT, export=export, note=note)


def check_floor(outcome: Outcome, floor: float | None) -> Outcome:
    """A score below the benchmark's true entropy floor proves that the val text leaked: invalid."""
    bpb = outcome.val_bpb
    if outcome.status == "ok" and floor is not None and bpb is not None and bpb < floor - FLOOR_TOLERANCE:
        return replace(outcome, status="invalid",
                       reason=(f"val_bpb {bpb:.4f} is below the benchmark's entropy floor {floor:.4f}: no model can "
                               "do that without seeing the val text (leakage)"))
    return outcome


def measured_metrics(outcome: Outcome, telemetry: Mapping[str, Any] | None) -> Outcome:
    """A verified record's metrics hold what the harness measured; train.py's printed figures go to
    `reported`, never shown as measured."""
    reported = {k: v for k, v in outcome.metrics.items() if k not in ("val_bpb", "reported_val_bpb")}
    clock = outcome.clock or {}
    summary = (telemetry or {}).get("summary") or {}
    peak = summary.get("max_mem_used_bytes")
    metrics = {
        "val_bpb": outcome.metrics.get("val_bpb"),
        "reported_val_bpb": outcome.metrics.get("reported_val_bpb"),
        "training_seconds": clock.get("window_s"),
        "total_tokens_M": (clock.get("tokens") or 0) / 1e6,
        "peak_vram_mb": peak / (1024 * 1024) if peak else None,
        "num_steps": None, "mfu_percent": None,
    }
    return replace(outcome, metrics=metrics, reported=reported or None)
