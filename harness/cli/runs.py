"""`harness validate`, `run`, `submit` and `score`: a candidate checked, run once, submitted with seeds, re-scored."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from harness.cli.common import (AccountOpt, BenchOpt, EXIT_FAILED, EXIT_OK, GpusOpt, JsonOpt, NodeBackendOpt,
                                ParallelOpt, PartitionOpt, QosOpt, RequeueOpt, ResultsOpt, RuntimeOpt, SbatchOpt,
                                SharedDirOpt, SlurmArgs, SlurmConfigOpt, SlurmGpusOpt, app, bench_or_exit, emit_json,
                                err, fail, open_pool_or_none, setup_errors, sigterm_as_interrupt, slurm_backend,
                                submit_options)
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
def submit(train_pys: list[Path] = typer.Argument(..., metavar="TRAIN_PY...", help="The candidate train.py "
                                                  "(several: each submitted; at once with --parallel)."),
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
           parallel: Optional[str] = ParallelOpt,
           gpus: Optional[str] = GpusOpt,
           shared_dir: Optional[Path] = SharedDirOpt, partition: Optional[str] = PartitionOpt,
           account: Optional[str] = AccountOpt, qos: Optional[str] = QosOpt, slurm_gpus: Optional[int] = SlurmGpusOpt,
           sbatch: Optional[List[str]] = SbatchOpt, requeue: Optional[bool] = RequeueOpt,
           node_backend: Optional[str] = NodeBackendOpt, slurm_config: Optional[Path] = SlurmConfigOpt,
           as_json: bool = JsonOpt) -> None:
    """Validate, run with harness-chosen seeds, verify, normalize, store; print keep or discard.

    Exit 0 when the decision is keep (several candidates: when at least one is kept), 1 when discard or
    nothing scored, 2 for usage errors.
    """
    from harness.display import PoolDisplay, RunDisplay
    from harness.submit import SubmitError, submit_many

    bench = bench_or_exit(benchmark)
    if tsv is not None and tsv.is_dir():
        fail(f"--tsv {tsv}: is a directory; give the path of the results.tsv file to append to")
    opts = submit_options(bench, seeds=seeds, description=message, backend=backend, verified=not compat,
                           budget_s=budget, results_dir=results, calibrate=not no_calibrate, tsv_path=tsv,
                           runtime=runtime)
    remote = slurm_backend(backend, runtime, SlurmArgs(shared_dir, partition, account, qos, slurm_gpus, sbatch,
                                                       requeue, node_backend, slurm_config))
    if remote is not None and parallel is not None:
        fail("--parallel is for this machine's devices; with --backend slurm every run is a job already")
    with sigterm_as_interrupt(), setup_errors():
        pool, chosen = open_pool_or_none(parallel, gpus, opts.backend, opts.runtime, bench)
        chosen = remote or chosen
        display = (PoolDisplay(err) if pool is not None or remote is not None or len(train_pys) > 1
                   else RunDisplay(err))
        reports = submit_many(train_pys, opts, pool, on_event=display, backend=chosen)
        if len(reports) == 1 and isinstance(reports[0], BaseException):
            raise reports[0]
    if as_json:
        docs = [{"train_py": str(p), "error": str(r)} if isinstance(r, BaseException) else
                {"train_py": str(p), **r.to_dict()} for p, r in zip(train_pys, reports)]
        emit_json(docs[0] if len(docs) == 1 else {"submissions": docs})
    else:
        for path, report in zip(train_pys, reports):
            if len(reports) > 1:
                typer.echo(clean_text(f"== {path}"))
            if isinstance(report, BaseException):
                for finding in (report.report.findings if isinstance(report, SubmitError) and report.report else []):
                    typer.echo(finding.format())
                typer.echo(clean_text(f"error: {report}"))
                continue
            _print_report(report)
    kept = any(not isinstance(r, BaseException) and r.decision.keep for r in reports)
    raise typer.Exit(EXIT_OK if kept else EXIT_FAILED)


def _print_report(report) -> None:
    _print_run_lines(report.results)
    d = report.to_dict()
    if d["summary"]:
        s = d["summary"]
        spread = f" ± {s['std']:.4f}" if s["std"] is not None else ""
        typer.echo(f"val_bpb {s['mean']:.4f}{spread} over {s['n']} seed(s) · reference: "
                   f"{clean_text(report.reference.label)}")
    typer.echo(clean_text(f"{d['decision']}: {d['reason']}"))
    typer.echo(clean_text(report.tsv_note))


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
