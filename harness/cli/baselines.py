"""`harness noise`, `baseline` and `baselines-merge`: a class's seed noise and baseline."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from harness.cli.common import (BASELINE_DEFAULT, BenchOpt, EXIT_FAILED, EXIT_OK, GpusOpt, JsonOpt, ParallelOpt,
                                ResultsOpt, RuntimeOpt, app, bench_or_exit, display_for, emit_json, fail,
                                open_pool_or_none, setup_errors, sigterm_as_interrupt, submit_options)
from harness.sanitize import clean_text


@app.command()
def noise(train_py: Path = typer.Argument(BASELINE_DEFAULT, help="The submission (default: the baseline)."),
          benchmark: str = BenchOpt, runs: int = typer.Option(5, help="Number of runs with fresh seeds."),
          backend: str = typer.Option("auto"), budget: Optional[float] = typer.Option(None),
          include_flagged: bool = typer.Option(False, "--include-flagged"),
          runtime: Optional[str] = RuntimeOpt,
          no_calibrate: bool = typer.Option(False, "--no-calibrate", help="Skip the calibration micro-benchmark."),
          parallel: Optional[str] = ParallelOpt, gpus: Optional[str] = GpusOpt,
          results: Optional[Path] = ResultsOpt, as_json: bool = JsonOpt) -> None:
    """Measure a submission's run-to-run spread on this machine's GPU class."""
    from harness.baseline import measure_noise

    bench = bench_or_exit(benchmark)
    opts = submit_options(bench, backend=backend, budget_s=budget, results_dir=results, runtime=runtime,
                          calibrate=not no_calibrate)
    with sigterm_as_interrupt(), setup_errors():
        pool, chosen = open_pool_or_none(parallel, gpus, opts.backend, opts.runtime, bench)
        report = measure_noise(train_py, opts, runs, include_flagged, display_for(pool), pool, chosen)
    _print_spread(report, as_json)


def _print_spread(report, as_json: bool) -> None:
    if as_json:
        emit_json(report.to_dict())
    else:
        for r in report.results:
            bpb = f"{r.val_bpb:.4f}" if r.val_bpb is not None else "-"
            typer.echo(clean_text(f"{r.run_id}  {r.status:8} {bpb}  seed {r.seed}  {' '.join(r.flags)}"))
        s = report.summary
        if s is None:
            typer.echo(f"{report.class_label}: no usable run")
        else:
            std = f" ± {s.std:.5f}" if s.std is not None else ""
            typer.echo(f"{report.class_label}: val_bpb {s.mean:.5f}{std} (n={s.n})"
                       + (f" · saved to {report.baselines_file}" if report.baselines_file else ""))
    raise typer.Exit(EXIT_OK if report.summary else EXIT_FAILED)


@app.command()
def baseline(benchmark: str = BenchOpt, runs: int = typer.Option(5, help="Number of runs with fresh seeds."),
             backend: str = typer.Option("auto"), budget: Optional[float] = typer.Option(None),
             baselines: Optional[Path] = typer.Option(None, help="Baselines file (default results/baselines.json)."),
             include_flagged: bool = typer.Option(False, "--include-flagged"),
             runtime: Optional[str] = RuntimeOpt,
             no_calibrate: bool = typer.Option(False, "--no-calibrate", help="Skip the calibration micro-benchmark."),
             parallel: Optional[str] = ParallelOpt, gpus: Optional[str] = GpusOpt,
             results: Optional[Path] = ResultsOpt, as_json: bool = JsonOpt) -> None:
    """Run the reference submission N times on this machine's class and record the class baseline."""
    from harness.baseline import run_baseline

    bench = bench_or_exit(benchmark)
    opts = submit_options(bench, backend=backend, budget_s=budget, results_dir=results, baselines_path=baselines,
                          runtime=runtime, calibrate=not no_calibrate)
    with sigterm_as_interrupt(), setup_errors():
        pool, chosen = open_pool_or_none(parallel, gpus, opts.backend, opts.runtime, bench)
        report = run_baseline(opts, runs, include_flagged, display_for(pool), pool=pool, backend=chosen)
    _print_spread(report, as_json)


@app.command("baselines-merge")
def baselines_merge(files: list[Path] = typer.Argument(..., help="Baselines files to merge."),
                    output: Path = typer.Option(..., "-o", "--output", help="Where to write the merge.")) -> None:
    """Merge baselines files shared by other labs (samples deduplicated by run id)."""
    from harness.scoring.baselines import BaselineFormatError, Baselines, load_baselines, merge_baselines, save_baselines

    missing = [str(f) for f in files if not f.is_file()]
    if missing:  # a mistyped lab file must not merge as an empty one
        fail(f"no such baselines file: {', '.join(missing)}")
    merged = Baselines()
    try:
        for f in files:
            merged = merge_baselines(merged, load_baselines(f))
    except (OSError, BaselineFormatError) as e:
        fail(str(e))
    save_baselines(merged, output)
    typer.echo(f"merged {len(files)} file(s) into {output}")
