"""`harness benchmarks` and `harness prepare`: the benchmarks and their data caches."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

import typer
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

from harness.benchmarks import BenchmarkError, load_benchmarks
from harness.cli.common import (BenchOpt, EXIT_FAILED, JsonOpt, app, bench_or_exit, emit_json, err, fail)


@app.command()
def benchmarks(as_json: bool = JsonOpt) -> None:
    """List the benchmarks of benchmarks.yaml."""
    try:
        found = load_benchmarks()
    except BenchmarkError as e:
        fail(str(e))
    from harness.data import DataError
    from harness.fingerprint import local_fingerprint

    docs = []
    for b in found.values():
        try:  # the fingerprint covers the prepared data, so an unprepared benchmark has none yet
            fp, why = local_fingerprint(b), None
        except DataError as e:
            fp, why = None, str(e)
        docs.append({**b.to_dict(), "fingerprint": fp, "fingerprint_missing": why})
    if as_json:
        emit_json(docs)
        return
    for b, doc in zip(found.values(), docs):
        typer.echo(f"{b.name:10} vocab {b.vocab_size:<6} seq {b.seq_len:<5} eval {b.eval_tokens:<9} "
                   f"budget {b.time_budget_s:g}s  timeout {b.hard_timeout_s:g}s  {b.data['source']}")
        typer.echo(f"{'':10} {b.description}")
        typer.echo(f"{'':10} fingerprint {doc['fingerprint'] or 'none: not prepared (harness prepare -b ' + b.name + ')'}")


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
            fail(str(e), EXIT_FAILED)
    if as_json:
        emit_json(info.to_dict())
    else:
        typer.echo(f"{bench.name}: ready at {info.data_dir} (manifest {info.manifest_sha256[:12]})")
