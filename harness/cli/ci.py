"""`harness ci score` and `harness ci status`: agent branches scored commit by commit (harness/ci/)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import List, Optional

import typer

from harness.cli.common import (BenchOpt, EXIT_USAGE, GpusOpt, JsonOpt, ParallelOpt, ResultsOpt, RuntimeOpt, app,
                                bench_or_exit, emit_json, err, fail, sigterm_as_interrupt)
from harness.sanitize import clean_text

ci_app = typer.Typer(help="Score every commit agents push to their branches (for CI), and show where they stand.",
                     no_args_is_help=True)
app.add_typer(ci_app, name="ci")


@ci_app.command("score")
def ci_score(repo: Path = typer.Option(Path("."), "--repo", help="The git repository (default: the current one)."),
             branches: Optional[List[str]] = typer.Option(None, "--branches", help="Branch glob, repeatable "
                                                          "(default autoresearch/*); remote-tracking ones count."),
             base: Optional[str] = typer.Option(None, "--base", help="Where the branches start (default: the "
                                                "repository's default branch)."),
             path: str = typer.Option("train.py", "--path", help="Where the candidate lives in each commit."),
             benchmark: str = BenchOpt,
             seeds: Optional[int] = typer.Option(None, help="Runs per commit (default: the benchmark's)."),
             budget: Optional[float] = typer.Option(None, help="Override the training budget (recorded)."),
             results: Optional[Path] = ResultsOpt,
             junit: Optional[Path] = typer.Option(None, "--junit", help="Write JUnit XML here."),
             summary: Optional[Path] = typer.Option(None, "--summary", help="Append a markdown summary here "
                                                    "(default: $GITHUB_STEP_SUMMARY when set)."),
             max_commits: Optional[int] = typer.Option(None, "--max-commits", min=0,
                                                       help="Run at most N candidates (cached ones are free)."),
             dry_run: bool = typer.Option(False, "--dry-run", help="List what would be scored; run nothing."),
             fail_on: str = typer.Option("head", "--fail-on", help="Exit 1 when a commit failed: head (a branch "
                                         "head crashed or was invalid), any, or never."),
             backend: str = typer.Option("auto", help="auto (docker when reachable), or a registered backend."),
             runtime: Optional[str] = RuntimeOpt,
             no_calibrate: bool = typer.Option(False, "--no-calibrate", help="Skip the calibration micro-benchmark."),
             parallel: Optional[str] = ParallelOpt, gpus: Optional[str] = GpusOpt,
             as_json: bool = JsonOpt) -> None:
    """Walk each matching branch from its merge base with --base, oldest first; score every commit whose
    candidate changed (read with git, the working tree untouched; the same content is scored once), and
    decide keep/discard against the branch's last kept commit.

    Exit 0 when the commits that matter scored (see --fail-on), 1 when one failed, 2 for usage or set-up
    errors (no matching branch, a clone too shallow, an unprepared benchmark).
    """
    from harness.ci.model import FAIL_ON, exit_code
    from harness.ci.report import text_summary, write_junit, write_summary
    from harness.ci.walk import DEFAULT_BRANCHES, CiError, CiOptions, score_branches
    from harness.data import DataError
    from harness.display import PoolDisplay, RunDisplay
    from harness.hw.context import HardwareError
    from harness.pipeline import RunError

    if fail_on not in FAIL_ON:
        fail(f"--fail-on must be one of {', '.join(FAIL_ON)}, not {fail_on!r}")
    bench = bench_or_exit(benchmark)
    opts = CiOptions(benchmark=bench, repo=repo, branches=tuple(branches or DEFAULT_BRANCHES), base=base, path=path,
                     seeds=seeds, budget_s=budget, results_dir=results, max_commits=max_commits, dry_run=dry_run,
                     backend=backend, runtime=runtime, calibrate=not no_calibrate, parallel=parallel, gpus=gpus)
    try:
        with sigterm_as_interrupt():
            report = score_branches(opts, on_event=RunDisplay(err) if parallel is None else PoolDisplay(err))
    except (CiError, RunError, DataError, HardwareError) as e:
        fail(str(e), EXIT_USAGE)
    for glob in report.missing:
        err.print(clean_text(f"note: no branch matches {glob}"), markup=False, highlight=False)
    if junit is not None:
        write_junit(report, junit)
    summary = summary or (Path(os.environ["GITHUB_STEP_SUMMARY"]) if os.environ.get("GITHUB_STEP_SUMMARY") else None)
    if summary is not None:
        write_summary(report, summary)
    if as_json:
        emit_json(report.to_dict())
    else:
        for line in text_summary(report):
            typer.echo(line)
    raise typer.Exit(exit_code(report, fail_on))


@ci_app.command("status")
def ci_status(benchmark: str = BenchOpt, results: Optional[Path] = ResultsOpt,
              repo: Optional[Path] = typer.Option(None, "--repo", help="Also count pending commits in this "
                                                  "repository (read with git; nothing runs)."),
              base: Optional[str] = typer.Option(None, "--base", help="With --repo: where the branches start."),
              path: str = typer.Option("train.py", "--path", help="With --repo: where the candidate lives."),
              as_json: bool = JsonOpt) -> None:
    """Each agent branch the store knows: its head, commits scored and pending, the best kept val_bpb."""
    from harness.ci.status import branch_status
    from harness.store import ResultStore

    bench = bench_or_exit(benchmark)
    rows = branch_status(ResultStore(results), bench.name, repo, base, path)
    if as_json:
        emit_json([r.to_dict() for r in rows])
        return
    if not rows:
        typer.echo("no branch scored yet (harness ci score)")
    for r in rows:
        best = (f"{r.best_val_bpb:.4f} at {r.best_commit[:12]} ({r.best_trust})" if r.best_val_bpb is not None
                else "-")
        pending = "-" if r.pending is None else str(r.pending)
        typer.echo(clean_text(f"{r.branch:32} head {(r.head or '-')[:12]:12}  scored {r.scored:3}  "
                              f"pending {pending:>3}  best kept {best}"))
