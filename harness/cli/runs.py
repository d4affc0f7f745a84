"""`harness validate`, `run`, `submit` and `score`: a candidate checked, run once, submitted with seeds, re-scored."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from harness.cli.common import (BenchOpt, EXIT_FAILED, EXIT_OK, JsonOpt, ResultsOpt, RuntimeOpt, app, bench_or_exit,
                                emit_json, err, fail, setup_errors, sigterm_as_interrupt, submit_options)
from harness.sanitize import clean_text


@app.command()
def validate(train_py: Path = typer.Argument(..., help="The candidate train.py."),
             benchmark: str = BenchOpt, as_json: bool = JsonOpt) -> None:
    """Static checks of a candidate: errors (exit 1) and warnings, as file:line findings."""
    from harness.validate import validate_file

    bench = bench_or_exit(benchmark)
    try:
        report = validate_file(train_py, bench.allowed_imports)
    except OSError as e:
        fail(f"{train_py}: {e.strerror or e}")
    if as_json:
        emit_json(report.to_dict())
    else:
        for finding in report.findings:
            typer.echo(finding.format())
        typer.echo(f"{clean_text(str(train_py))}: {'valid' if report.ok else 'INVALID'} "
                   f"({len(report.errors)} error(s), {len(report.warnings)} warning(s))")
    raise typer.Exit(EXIT_OK if report.ok else EXIT_FAILED)


@app.command()
def run(train_py: Path = typer.Argument(..., help="The candidate train.py."),
        benchmark: str = BenchOpt,
        backend: str = typer.Option("auto", help="auto (docker when a daemon is reachable, else local), or a "
                                    "registered backend: local, docker, or one a package adds (harness.backends)."),
        budget: Optional[float] = typer.Option(None, help="Override the training budget in seconds (recorded)."),
        seed: Optional[int] = typer.Option(None, help="Use this seed instead of a fresh one (recorded)."),
        runs_dir: Optional[Path] = typer.Option(None, help="Where run folders go (default ./runs or HARNESS_RUNS_DIR)."),
        show_output: bool = typer.Option(False, "--show-output", help="Echo the run's output lines."),
        no_calibrate: bool = typer.Option(False, "--no-calibrate", help="Skip the calibration micro-benchmark."),
        runtime: Optional[str] = RuntimeOpt,
        as_json: bool = JsonOpt) -> None:
    """Run a candidate once and print its score card (exit 1 unless the status is ok)."""
    from harness.data import DataError
    from harness.display import RunDisplay
    from harness.pipeline import RunError, RunOptions, execute_run
    from harness.scorecard import score_card

    bench = bench_or_exit(benchmark)
    opts = RunOptions(benchmark=bench, backend=backend, budget_s=budget, seed=seed, runs_dir=runs_dir,
                      calibrate=not no_calibrate, runtime=runtime)
    try:
        with sigterm_as_interrupt():
            result = execute_run(train_py, opts, on_event=RunDisplay(err, show_lines=show_output))
    except (RunError, DataError) as e:
        fail(str(e))
    if as_json:
        emit_json(result.to_dict())
    else:
        typer.echo(score_card(result))
    raise typer.Exit(EXIT_OK if result.status == "ok" else EXIT_FAILED)


def _print_run_lines(results) -> None:
    from harness.scorecard import score_card

    for r in results:
        typer.echo(score_card(r))
        typer.echo("")


@app.command()
def submit(train_py: Path = typer.Argument(..., help="The candidate train.py."),
           benchmark: str = BenchOpt,
           message: str = typer.Option("", "-m", "--message", help="What this candidate changes (recorded)."),
           seeds: Optional[int] = typer.Option(None, help="Runs with fresh seeds (default: the benchmark's)."),
           backend: str = typer.Option("auto", help="auto (docker when reachable, else local: labelled), or a "
                                       "registered backend (local, docker, or one a package adds)."),
           compat: bool = typer.Option(False, "--compat", help="autoresearch-style: val mounted, train.py's own "
                                       "score, labelled self-reported."),
           budget: Optional[float] = typer.Option(None, help="Override the training budget (recorded)."),
           results: Optional[Path] = ResultsOpt,
           no_calibrate: bool = typer.Option(False, "--no-calibrate", help="Skip the calibration micro-benchmark."),
           tsv: Optional[Path] = typer.Option(None, "--tsv", help="Append the results.tsv row to this file "
                                              "(default: results.tsv at the root of the git repository holding "
                                              "the current directory; none outside git)."),
           runtime: Optional[str] = RuntimeOpt,
           as_json: bool = JsonOpt) -> None:
    """Validate, run with harness-chosen seeds, verify, normalize, store; print keep or discard.

    Exit 0 when the decision is keep, 1 when discard or nothing scored, 2 for usage errors.
    """
    from harness.display import RunDisplay
    from harness.submit import submit as do_submit

    bench = bench_or_exit(benchmark)
    if tsv is not None and tsv.is_dir():
        fail(f"--tsv {tsv}: is a directory; give the path of the results.tsv file to append to")
    opts = submit_options(bench, seeds=seeds, description=message, backend=backend, verified=not compat,
                           budget_s=budget, results_dir=results, calibrate=not no_calibrate, tsv_path=tsv,
                           runtime=runtime)
    with sigterm_as_interrupt(), setup_errors():
        report = do_submit(train_py, opts, on_event=RunDisplay(err))
    if as_json:
        emit_json(report.to_dict())
    else:
        _print_run_lines(report.results)
        d = report.to_dict()
        if d["summary"]:
            s = d["summary"]
            spread = f" ± {s['std']:.4f}" if s["std"] is not None else ""
            typer.echo(f"val_bpb {s['mean']:.4f}{spread} over {s['n']} seed(s) · reference: "
                       f"{clean_text(report.reference.label)}")
        typer.echo(clean_text(f"{d['decision']}: {d['reason']}"))
        typer.echo(clean_text(report.tsv_note))
    raise typer.Exit(EXIT_OK if report.decision.keep else EXIT_FAILED)


@app.command()
def score(run_dir: Path = typer.Argument(..., help="A finished run's folder (runs/<run id>)."),
          backend: str = typer.Option("auto", help="Where the evaluator runs."),
          runtime: Optional[str] = typer.Option(None, "--runtime", help="The model servers' container runtime "
                                                "(runsc: gVisor); default: the one the run recorded, else the "
                                                "benchmark's."),
          results: Optional[Path] = ResultsOpt, as_json: bool = JsonOpt) -> None:
    """Re-score a finished verified run from its exported model with the fixed evaluator."""
    from harness.benchmarks import BenchmarkError
    from harness.data import DataError
    from harness.hw.context import HardwareError
    from harness.pipeline import RunError
    from harness.pipeline.rescore import RescoreError, rescore_run
    from harness.scorecard import score_card

    try:
        record = rescore_run(run_dir, backend, runtime, results)
    except (OSError, RescoreError, DataError, HardwareError, RunError, BenchmarkError, KeyError, TypeError,
            ValueError) as e:
        fail(str(e))
    if as_json:
        emit_json(record.to_dict())
    else:
        typer.echo(score_card(record))
    raise typer.Exit(EXIT_OK if record.status == "ok" else EXIT_FAILED)
