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
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, List, Optional

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
ParallelOpt = typer.Option(None, "--parallel", help="Runs at once: auto (one per GPU) or N. Each run leases one "
                           "GPU by UUID, or on a machine without GPUs one of N disjoint CPU sets (those records "
                           "are flagged shared_host and never enter a baseline). Default: one run at a time.")
GpusOpt = typer.Option(None, "--gpus", help="The GPUs of the --parallel pool, by index or UUID (e.g. 0,2).")


@dataclass
class SlurmArgs:
    """The Slurm options of a command (typer fills them through slurm_args); None: from the config file."""
    shared_dir: Optional[Path] = None
    partition: Optional[str] = None
    account: Optional[str] = None
    qos: Optional[str] = None
    gpus: Optional[int] = None
    sbatch: Optional[List[str]] = None
    requeue: Optional[bool] = None
    node_backend: Optional[str] = None
    config: Optional[Path] = None


_SLURM = "Slurm (--backend slurm)"
SharedDirOpt = typer.Option(None, "--shared-dir", rich_help_panel=_SLURM,
                            help="A folder every node and this host see at the same path: run folders go there.")
PartitionOpt = typer.Option(None, "--partition", rich_help_panel=_SLURM, help="sbatch --partition.")
AccountOpt = typer.Option(None, "--account", rich_help_panel=_SLURM, help="sbatch --account.")
QosOpt = typer.Option(None, "--qos", rich_help_panel=_SLURM, help="sbatch --qos.")
SlurmGpusOpt = typer.Option(None, "--slurm-gpus", rich_help_panel=_SLURM, help="GPUs per job (sbatch --gpus).")
SbatchOpt = typer.Option(None, "--sbatch", rich_help_panel=_SLURM, help="An extra sbatch option, e.g. "
                         "--sbatch=--constraint=h100 (repeatable).")
RequeueOpt = typer.Option(None, "--requeue/--no-requeue", rich_help_panel=_SLURM,
                          help="Retry a run lost with its node or preempted, once.")
NodeBackendOpt = typer.Option(None, "--node-backend", rich_help_panel=_SLURM,
                              help="docker (default) or local (a process on the node: unisolated).")
SlurmConfigOpt = typer.Option(None, "--slurm-config", rich_help_panel=_SLURM,
                              help="A TOML file with a [slurm] section (default: config.toml in the config dir).")


def slurm_backend(backend: str, runtime: str | None, args: SlurmArgs) -> Any:
    """The Slurm backend with the command's options over the config file's; None for other backends."""
    if backend != "slurm":
        return None
    from harness.slurm.backend import SlurmBackend
    from harness.slurm.config import SlurmConfigError, load_slurm_options

    try:
        opts = load_slurm_options(args.config, shared_dir=args.shared_dir, partition=args.partition,
                                  account=args.account, qos=args.qos, gpus=args.gpus, sbatch=tuple(args.sbatch or ()),
                                  requeue=args.requeue, node_backend=args.node_backend)
    except SlurmConfigError as e:
        fail(str(e))
    chosen = SlurmBackend(runtime=runtime, options=opts)
    try:
        chosen.check()
    except RuntimeError as e:
        fail(str(e))
    return chosen


def display_for(pool: Any):
    """The live display of one run at a time, or the line-per-event one of a pool."""
    from harness.display import PoolDisplay, RunDisplay

    return RunDisplay(err) if pool is None else PoolDisplay(err)


def open_pool_or_none(parallel: str | None, gpus: str | None, backend: str, runtime: str | None, bench: Benchmark,
                      nvml_module: Any = None):
    """(the device pool, the backend) for --parallel/--gpus; (None, None) without --parallel."""
    if parallel is None:
        if gpus:
            fail("--gpus picks the members of a --parallel pool: add --parallel auto (or N)")
        return None, None
    from harness.pipeline.backend import backend_and_hardware
    from harness.pool.parallel import open_pool
    from harness.pool.slots import PoolError

    chosen, hw = backend_and_hardware(backend, None, runtime, bench, None, nvml_module)
    if hw is None:
        fail(f"--parallel is for this machine's devices; with --backend {backend} every run is a job already")
    try:
        return open_pool(parallel, gpus, chosen, hw, nvml_module), chosen
    except PoolError as e:
        fail(str(e))


def submit_options(bench: Benchmark, **kw: Any):
    from harness.submit import SubmitOptions

    return SubmitOptions(benchmark=bench, **kw)
