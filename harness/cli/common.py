"""What every command of the harness CLI shares: the typer app, the console, common options, errors and
exit codes (harness/contract.py), and the callback that records runs whose harness died.

The commands live by job: data.py (benchmarks, prepare), runs.py (validate, run, submit, score),
results.py (results, leaderboard), baselines.py (noise, baseline, baselines-merge), machine.py (hw,
doctor, image, janitor), ci.py (ci score, ci status), exchange.py (keys, export, import). Each is one
small function over a library call.

Exit codes: 0 success, 1 the thing checked or run failed (invalid file, run not ok), 2 usage or setup errors.

Every string a candidate, an agent or a stored record controls goes through harness.sanitize.clean_text
before it reaches the terminal; --json output keeps exact strings, escaped by JSON itself.
"""

from __future__ import annotations

import contextlib
import json
import signal
from typing import Any, Iterator

import typer
from rich.console import Console
from rich.markup import escape

from harness import __version__
from harness.benchmarks import Benchmark, BenchmarkError, get_benchmark
from harness.contract import EXIT_FAILED, EXIT_OK, EXIT_USAGE
from harness import paths
from harness.paths import REPO_ROOT
from harness.sanitize import clean_text

BASELINE_DEFAULT = REPO_ROOT / "submissions" / "baseline" / "train.py"
app = typer.Typer(
    help="Validate, run and score autoresearch-style train.py candidates on fixed benchmarks.",
    no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False)
err = Console(stderr=True, soft_wrap=True)  # findings stay one line each: tools parse them

BenchOpt = typer.Option("tiny", "--benchmark", "-b", help="Benchmark name from benchmarks.yaml.")
JsonOpt = typer.Option(False, "--json", help="Print machine-readable JSON on stdout.")


def fail(message: str, code: int = EXIT_USAGE) -> None:
    err.print(f"[red]error:[/red] {escape(clean_text(message, keep_newlines=True))}", markup=True, highlight=False)
    raise typer.Exit(code)


def emit_json(doc: Any) -> None:
    """Exact strings, safe on a terminal: ensure_ascii escapes every control and non-ASCII character."""
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


@contextlib.contextmanager
def setup_errors() -> Iterator[None]:
    """Errors that stop a command before or between runs, as one clear line (exit 2; 1 for a bad file)."""
    from harness.data import DataError
    from harness.hw.context import HardwareError
    from harness.pipeline import RunError
    from harness.submit import SubmitError

    try:
        yield
    except SubmitError as e:
        for finding in (e.report.findings if e.report else []):
            err.print(finding.format(), markup=False, highlight=False)
        fail(str(e), EXIT_FAILED)
    except (RunError, DataError, HardwareError, OSError) as e:
        fail(str(e))


@app.callback(invoke_without_command=True)
def main(version: bool = typer.Option(False, "--version", help="Print the harness version and exit.")) -> None:
    if version:
        typer.echo(__version__)
        raise typer.Exit(EXIT_OK)
    recover_orphans()


def recover_orphans() -> list[Any]:
    """Runs whose harness died get their record now (harness/journal.py): every command does this first."""
    from harness.journal import recover

    found = recover(paths.runs_dir())
    typer.echo("".join(clean_text(f"recorded run {r.run_id} as {r.status}: {r.reason}") + "\n" for r in found), err=True,
               nl=False)
    return found


RuntimeOpt = typer.Option(None, "--runtime", help="The docker backend's container runtime by its name in "
                          "dockerd's config (runsc: gVisor); default: the benchmark's `runtime:`, else the daemon's "
                          "default. One the daemon lacks fails the run (infra_error), never falls back.")


ResultsOpt = typer.Option(None, "--results", help="Results directory (default ./results or HARNESS_RESULTS).")


def submit_options(bench: Benchmark, **kw: Any):
    from harness.submit import SubmitOptions

    return SubmitOptions(benchmark=bench, **kw)
