"""The harness command line: one small function per command, each over a library call.

Exit codes: 0 success, 1 the thing checked or run failed (invalid file, run not ok), 2 usage or setup errors.
"""

from __future__ import annotations

import contextlib
import json
import signal
import sys
from pathlib import Path
from typing import Any, Iterator, Optional

import typer
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

from harness import __version__
from harness.benchmarks import Benchmark, BenchmarkError, get_benchmark, load_benchmarks

app = typer.Typer(
    help="Validate, run and score autoresearch-style train.py candidates on fixed benchmarks.",
    no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False)
err = Console(stderr=True)

BenchOpt = typer.Option("tiny", "--benchmark", "-b", help="Benchmark name from benchmarks.yaml.")
JsonOpt = typer.Option(False, "--json", help="Print machine-readable JSON on stdout.")


def fail(message: str, code: int = 2) -> None:
    err.print(f"[red]error:[/red] {message}", markup=True, highlight=False)
    raise typer.Exit(code)


def emit_json(doc: Any) -> None:
    typer.echo(json.dumps(doc, indent=1, sort_keys=True, default=str))


def bench_or_exit(name: str) -> Benchmark:
    try:
        return get_benchmark(name)
    except BenchmarkError as e:
        fail(str(e))


@contextlib.contextmanager
def sigterm_as_interrupt() -> Iterator[None]:
    """SIGTERM (a CI job cancelled, kill) is handled like Ctrl-C: the run is killed and recorded as aborted."""
    def handler(_signum, _frame):
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


@app.callback(invoke_without_command=True)
def main(version: bool = typer.Option(False, "--version", help="Print the harness version and exit.")) -> None:
    if version:
        typer.echo(__version__)
        raise typer.Exit(0)


@app.command()
def benchmarks(as_json: bool = JsonOpt) -> None:
    """List the benchmarks of benchmarks.yaml."""
    try:
        found = load_benchmarks()
    except BenchmarkError as e:
        fail(str(e))
    if as_json:
        emit_json([b.to_dict() for b in found.values()])
        return
    for b in found.values():
        typer.echo(f"{b.name:10} vocab {b.vocab_size:<6} seq {b.seq_len:<5} eval {b.eval_tokens:<9} "
                   f"budget {b.time_budget_s:g}s  timeout {b.hard_timeout_s:g}s  {b.data['source']}")
        typer.echo(f"{'':10} {b.description}")


@app.command()
def prepare(benchmark: str = BenchOpt,
            source_dir: Optional[Path] = typer.Option(None, help="Read parquet shards from this folder instead of the hub."),
            as_json: bool = JsonOpt) -> None:
    """Build a benchmark's data cache, or verify and reuse it (corrupt files are rebuilt)."""
    from harness.data import DataError, prepare_benchmark

    bench = bench_or_exit(benchmark)
    with Progress(TextColumn("{task.description}"), BarColumn(), TextColumn("{task.completed:.0f}/{task.total}"),
                  TimeElapsedColumn(), console=err, transient=True, disable=not err.is_terminal) as bar:
        tasks: dict[str, Any] = {}

        def progress(stage: str, done: float, total: float | None) -> None:
            if stage not in tasks:
                tasks[stage] = bar.add_task(stage, total=total)
            bar.update(tasks[stage], completed=done, total=total)

        try:
            info = prepare_benchmark(bench, source_dir=source_dir, log=lambda m: err.print(m, highlight=False),
                                     progress=progress)
        except DataError as e:
            fail(str(e), 1)
    if as_json:
        emit_json(info.to_dict())
    else:
        typer.echo(f"{bench.name}: ready at {info.data_dir} (manifest {info.manifest_sha256[:12]})")


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
        typer.echo(f"{train_py}: {'valid' if report.ok else 'INVALID'} "
                   f"({len(report.errors)} error(s), {len(report.warnings)} warning(s))")
    raise typer.Exit(0 if report.ok else 1)


@app.command()
def run(train_py: Path = typer.Argument(..., help="The candidate train.py."),
        benchmark: str = BenchOpt,
        backend: str = typer.Option("auto", help="auto (docker when a daemon is reachable), docker or local."),
        budget: Optional[float] = typer.Option(None, help="Override the training budget in seconds (recorded)."),
        seed: Optional[int] = typer.Option(None, help="Use this seed instead of a fresh one (recorded)."),
        runs_dir: Optional[Path] = typer.Option(None, help="Where run folders go (default ./runs or HARNESS_RUNS_DIR)."),
        show_output: bool = typer.Option(False, "--show-output", help="Echo the run's output lines."),
        as_json: bool = JsonOpt) -> None:
    """Run a candidate once and print its score card (exit 1 unless the status is ok)."""
    from harness.data import DataError
    from harness.display import RunDisplay
    from harness.run import RunError, RunOptions, execute_run
    from harness.scorecard import score_card

    bench = bench_or_exit(benchmark)
    opts = RunOptions(benchmark=bench, backend=backend, budget_s=budget, seed=seed, runs_dir=runs_dir)
    try:
        with sigterm_as_interrupt():
            result = execute_run(train_py, opts, on_event=RunDisplay(err, show_lines=show_output))
    except (RunError, DataError) as e:
        fail(str(e))
    if as_json:
        emit_json(result.to_dict())
    else:
        typer.echo(score_card(result))
    raise typer.Exit(0 if result.status == "ok" else 1)


def entrypoint() -> None:  # pragma: no cover - for python -m harness
    app(prog_name="harness")


if __name__ == "__main__":  # pragma: no cover
    sys.exit(entrypoint())
