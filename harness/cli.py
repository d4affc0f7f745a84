"""The harness command line: one small function per command, each over a library call.

Exit codes: 0 success, 1 the thing checked or run failed (invalid file, run not ok), 2 usage or setup errors.

Every string a candidate, an agent or a stored record controls goes through harness.sanitize.clean_text
before it reaches the terminal; --json output keeps exact strings, escaped by JSON itself.
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
from rich.markup import escape
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

from harness import __version__
from harness.benchmarks import Benchmark, BenchmarkError, get_benchmark, load_benchmarks
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


def fail(message: str, code: int = 2) -> None:
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
        fail(str(e), 1)
    except (RunError, DataError, HardwareError, OSError) as e:
        fail(str(e))


@app.callback(invoke_without_command=True)
def main(version: bool = typer.Option(False, "--version", help="Print the harness version and exit.")) -> None:
    if version:
        typer.echo(__version__)
        raise typer.Exit(0)
    _recover_orphans()


def _recover_orphans() -> list[Any]:
    """Runs whose harness died get their record now (harness/journal.py): every command does this first."""
    from harness.journal import recover

    found = recover(paths.runs_dir())
    for r in found:
        typer.echo(clean_text(f"recorded run {r.run_id} as aborted: {r.reason}"), err=True)
    return found


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
        typer.echo(f"{clean_text(str(train_py))}: {'valid' if report.ok else 'INVALID'} "
                   f"({len(report.errors)} error(s), {len(report.warnings)} warning(s))")
    raise typer.Exit(0 if report.ok else 1)


RuntimeOpt = typer.Option(None, "--runtime", help="The docker backend's container runtime by its name in "
                          "dockerd's config (runsc: gVisor); default: the benchmark's `runtime:`, else the daemon's "
                          "default. One the daemon lacks fails the run (infra_error), never falls back.")


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
    raise typer.Exit(0 if result.status == "ok" else 1)


ResultsOpt = typer.Option(None, "--results", help="Results directory (default ./results or HARNESS_RESULTS).")


def _submit_options(bench: Benchmark, **kw: Any):
    from harness.submit import SubmitOptions

    return SubmitOptions(benchmark=bench, **kw)


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
    opts = _submit_options(bench, seeds=seeds, description=message, backend=backend, verified=not compat,
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
    raise typer.Exit(0 if report.decision.keep else 1)


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
    except (OSError, RescoreError, DataError, HardwareError, RunError, BenchmarkError) as e:
        fail(str(e))
    if as_json:
        emit_json(record.to_dict())
    else:
        typer.echo(score_card(record))
    raise typer.Exit(0 if record.status == "ok" else 1)


results_app = typer.Typer(help="The result store: list, show, reindex.", no_args_is_help=True)
app.add_typer(results_app, name="results")


@results_app.command("list")
def results_list(benchmark: Optional[str] = typer.Option(None, "--benchmark", "-b"),
                 status: Optional[str] = typer.Option(None, help="Only runs with this status."),
                 gpu_class: Optional[str] = typer.Option(None, "--gpu-class"),
                 all_runs: bool = typer.Option(False, "--all", help="Also flagged and unverified runs."),
                 limit: int = typer.Option(50, help="At most this many rows."),
                 results: Optional[Path] = ResultsOpt, as_json: bool = JsonOpt) -> None:
    """List stored runs, newest first (flagged and unverified runs hidden unless --all)."""
    from harness.store import ResultStore

    listing = ResultStore(results).list(benchmark=benchmark, status=status, gpu_class=gpu_class,
                                        include_flagged=all_runs, include_unverified=all_runs, limit=limit)
    for problem in listing.problems:
        err.print(clean_text(f"skipped {problem.path}: {problem.reason}"), markup=False, highlight=False)
    if as_json:
        emit_json({"rows": [r.to_dict() for r in listing.rows], "hidden": listing.hidden,
                   "problems": [{"path": str(p.path), "reason": p.reason} for p in listing.problems]})
        return
    for r in listing.rows:  # every field from a record file, which anyone who can write the folder can edit
        c = clean_text
        bpb = f"{r.val_bpb:.4f}" if r.val_bpb is not None else "-"
        typer.echo(f"{c(r.run_id)}  {c(r.benchmark):8} {c(r.status):11} {bpb:>8}  {c(r.trust):13} "
                   f"{c(r.gpu_class) or '-':24} {c(r.decision) or '-':8} {c(r.description)[:40]}")
    if listing.hidden:
        typer.echo(f"({listing.hidden} flagged or unverified run(s) hidden: add --all)")


@results_app.command("show")
def results_show(run_id: str = typer.Argument(..., help="A run id or a unique prefix."),
                 results: Optional[Path] = ResultsOpt, as_json: bool = JsonOpt) -> None:
    """Show one stored run: its score card, or the whole record with --json."""
    from harness.record import RecordError, RunRecord
    from harness.scorecard import score_card
    from harness.store import ResultStore, StoreError

    try:
        doc = ResultStore(results).get(run_id)
    except StoreError as e:
        fail(str(e))
    if as_json:
        emit_json(doc)
    else:
        try:
            typer.echo(score_card(RunRecord.from_dict(doc)))
        except RecordError as e:
            fail(f"run {run_id}: unreadable record ({e}); harness results show {run_id} --json prints it as stored", 1)


@results_app.command("reindex")
def results_reindex(results: Optional[Path] = ResultsOpt) -> None:
    """Rebuild the SQLite index from the JSON files (the files are the truth)."""
    from harness.store import ResultStore

    report = ResultStore(results).rebuild_index()
    for problem in report.problems:
        err.print(clean_text(f"skipped {problem.path}: {problem.reason}"), markup=False, highlight=False)
    typer.echo(f"indexed {report.indexed} record(s); {len(report.problems)} problem(s); "
               f"{report.removed_tmp} stale temp file(s) removed")


@app.command()
def leaderboard(benchmark: str = BenchOpt,
                by: Optional[str] = typer.Option(None, "--by", help="gpu-class: one board per GPU class."),
                all_runs: bool = typer.Option(False, "--all", help="Also flagged and unverified runs."),
                results: Optional[Path] = ResultsOpt, as_json: bool = JsonOpt) -> None:
    """Best score per submission (throttled and unverified runs hidden unless --all)."""
    from harness.store import ResultStore

    if by not in (None, "gpu-class"):
        fail(f"--by takes gpu-class, not {by!r}")
    rows = ResultStore(results).leaderboard(benchmark, by_gpu_class=by == "gpu-class", include_flagged=all_runs,
                                            include_unverified=all_runs)
    if as_json:
        emit_json([r.to_dict() for r in rows])
        return
    if not rows:
        typer.echo(f"no scored runs for {benchmark}" + ("" if all_runs else " (verified, unflagged); try --all"))
    for i, r in enumerate(rows, 1):
        c = clean_text
        typer.echo(f"{i:3}. {r.val_bpb:.4f}  {c(r.gpu_class) or '-':24} {c(r.trust):13} "
                   f"{c(r.submission_sha256)[:12]}  {c(r.run_id)}  {c(r.description)[:50]}")


@app.command()
def noise(train_py: Path = typer.Argument(BASELINE_DEFAULT, help="The submission (default: the baseline)."),
          benchmark: str = BenchOpt, runs: int = typer.Option(5, help="Number of runs with fresh seeds."),
          backend: str = typer.Option("auto"), budget: Optional[float] = typer.Option(None),
          include_flagged: bool = typer.Option(False, "--include-flagged"),
          runtime: Optional[str] = RuntimeOpt,
          results: Optional[Path] = ResultsOpt, as_json: bool = JsonOpt) -> None:
    """Measure a submission's run-to-run spread on this machine's GPU class."""
    from harness.baseline import measure_noise
    from harness.display import RunDisplay

    bench = bench_or_exit(benchmark)
    opts = _submit_options(bench, backend=backend, budget_s=budget, results_dir=results, runtime=runtime)
    with sigterm_as_interrupt(), setup_errors():
        report = measure_noise(train_py, opts, runs, include_flagged, RunDisplay(err))
    _print_spread(report, as_json)


def _print_spread(report, as_json: bool) -> None:
    if as_json:
        emit_json(report.to_dict())
    else:
        for r in report.results:
            bpb = f"{r.val_bpb:.4f}" if r.val_bpb is not None else "-"
            typer.echo(clean_text(f"{r.run_id}  {r.status:8} {bpb}  seed {r.provenance['seed']}  {' '.join(r.flags)}"))
        s = report.summary
        if s is None:
            typer.echo(f"{report.class_label}: no usable run")
        else:
            std = f" ± {s.std:.5f}" if s.std is not None else ""
            typer.echo(f"{report.class_label}: val_bpb {s.mean:.5f}{std} (n={s.n})"
                       + (f" · saved to {report.baselines_file}" if report.baselines_file else ""))
    raise typer.Exit(0 if report.summary else 1)


@app.command()
def baseline(benchmark: str = BenchOpt, runs: int = typer.Option(5, help="Number of runs with fresh seeds."),
             backend: str = typer.Option("auto"), budget: Optional[float] = typer.Option(None),
             baselines: Optional[Path] = typer.Option(None, help="Baselines file (default results/baselines.json)."),
             include_flagged: bool = typer.Option(False, "--include-flagged"),
             runtime: Optional[str] = RuntimeOpt,
             results: Optional[Path] = ResultsOpt, as_json: bool = JsonOpt) -> None:
    """Run the reference submission N times on this machine's class and record the class baseline."""
    from harness.baseline import run_baseline
    from harness.display import RunDisplay

    bench = bench_or_exit(benchmark)
    opts = _submit_options(bench, backend=backend, budget_s=budget, results_dir=results, baselines_path=baselines,
                           runtime=runtime)
    with sigterm_as_interrupt(), setup_errors():
        report = run_baseline(opts, runs, include_flagged, RunDisplay(err))
    _print_spread(report, as_json)


@app.command("baselines-merge")
def baselines_merge(files: list[Path] = typer.Argument(..., help="Baselines files to merge."),
                    output: Path = typer.Option(..., "-o", "--output", help="Where to write the merge.")) -> None:
    """Merge baselines files shared by other labs (samples deduplicated by run id)."""
    from harness.scoring.baselines import BaselineFormatError, Baselines, load_baselines, merge_baselines, save_baselines

    merged = Baselines()
    try:
        for f in files:
            merged = merge_baselines(merged, load_baselines(f))
    except (OSError, BaselineFormatError) as e:
        fail(str(e))
    save_baselines(merged, output)
    typer.echo(f"merged {len(files)} file(s) into {output}")


@app.command()
def hw(as_json: bool = JsonOpt,
       calibrate: bool = typer.Option(False, "--calibrate", help="Also run the calibration micro-benchmark.")) -> None:
    """This machine's hardware profile and GPU class (the label every result carries)."""
    from harness.hw.calibration import judge_calibration, run_calibration_locally
    from harness.hw.context import detect_hardware

    ctx = detect_hardware()
    doc = {"class": ctx.cls.to_dict(), "peak_flops_for_runs": ctx.peak_flops_env, "nvml": ctx.profile.nvml,
           "profile": ctx.profile.to_dict()}
    if calibrate:
        cal = run_calibration_locally()
        doc["calibration"] = {"result": cal.to_dict() if cal else None,
                              "judgement": judge_calibration(cal, ctx.cls).to_dict()}
    if as_json:
        emit_json(doc)
        return
    host = ctx.profile.host
    typer.echo(f"class      {ctx.cls.label}" + ("" if ctx.cls.known else "  (not in the class table)"))
    typer.echo(f"peak       {ctx.peak_flops_env} FLOP/s (bf16 dense, passed to runs as HARNESS_PEAK_FLOPS)")
    typer.echo(f"nvml       {ctx.profile.nvml}")
    for g in ctx.profile.gpus:
        typer.echo(f"gpu        {g.index}: {g.name} {g.uuid} driver {g.driver_version} cc {g.compute_capability}")
    typer.echo(f"host       {host.cpu_model} · {host.cpu_usable_cores} cores · {host.ram_bytes / 2**30:.0f} GiB · "
               f"{host.os} · kernel {host.kernel}")
    if ctx.cls.note:
        typer.echo(f"note       {ctx.cls.note}")
    if calibrate:
        c = doc["calibration"]
        r = c["result"] or {}
        typer.echo(f"calibration matmul {r.get('matmul_flops', 0) / 1e12:.2f} TFLOP/s ({r.get('dtype')}) · "
                   f"copy {r.get('mem_bw_bytes_s', 0) / 1e9:.1f} GB/s · {c['judgement']['note'] or ''}")


@app.command()
def doctor(as_json: bool = JsonOpt) -> None:
    """Check everything a run needs (Docker, NVIDIA runtime, NVML, GPUs, images, data, disk) and how to fix it."""
    from harness import paths
    from harness.doctor import all_ok, format_checks, run_checks

    benches = load_benchmarks()
    checks = run_checks(image_tags=("harness-cpu:latest", "harness-cuda:latest"),
                        benchmarks=[(b.name, paths.data_dir(b.name) / "manifest.json") for b in benches.values()],
                        disk_paths=[paths.runs_dir().parent, paths.cache_dir().parent])
    if as_json:
        emit_json([c.to_dict() for c in checks])
    else:
        typer.echo(format_checks(checks))
    raise typer.Exit(0 if all_ok(checks) else 1)


image_app = typer.Typer(help="Run images: build them (offline from Debian packages for cpu) and show them.",
                        no_args_is_help=True)
app.add_typer(image_app, name="image")


@image_app.command("build")
def image_build(kind: str = typer.Argument(..., help="cpu, cuda, or base (the Debian base alone; root + "
                                           "debootstrap)."),
                offline: Optional[bool] = typer.Option(None, "--offline/--online",
                                                       help="Offline: no registry, wheels downloaded on the host "
                                                            "(default: offline for cpu, online for cuda)."),
                base: Optional[str] = typer.Option(None, "--base", help="Base image (offline cuda: "
                                                   "harness-base:bookworm-dev)."),
                dev: bool = typer.Option(False, "--dev", help="base: the flavour with gcc and python3-dev."),
                force: bool = typer.Option(False, "--force", help="Ignore the layer cache."),
                as_json: bool = JsonOpt) -> None:
    """Build and tag a run image and record its id (every result records the image it ran in)."""
    from harness.backends.docker.images import ImageError, build_base, build_image

    if kind not in ("cpu", "cuda", "base"):
        fail(f"image kind must be cpu, cuda or base, not {kind!r}")
    progress = lambda m: err.print(m, markup=False, highlight=False)  # noqa: E731
    try:
        if kind == "base":
            info = build_base(dev=dev, progress=progress)
        else:
            info = build_image(kind, offline=offline, base_image=base, force=force, progress=progress)
    except ImageError as e:
        fail(str(e), 1)
    if as_json:
        emit_json(info.to_json())
    else:
        typer.echo(f"{info.tag} {info.id}")


@image_app.command("ensure")
def image_ensure(kind: str = typer.Argument("cpu", help="cpu or cuda.")) -> None:
    """Build the image only when it is missing or its recipe changed."""
    from harness.backends.docker.images import ImageError, ensure_image

    try:
        info = ensure_image(kind, progress=lambda m: err.print(m, markup=False, highlight=False))
    except ImageError as e:
        fail(str(e), 1)
    typer.echo(f"{info.tag} {info.id}")


@image_app.command("show")
def image_show(kind: Optional[str] = typer.Argument(None, help="cpu, cuda or base (default: all three)."),
               as_json: bool = JsonOpt) -> None:
    """The local run images, their labels, and whether they are stale (exit 1 when one is absent)."""
    from harness.backends.docker.images import ImageError, connect, show_images
    from harness.images import BASE_KIND, KINDS, image_tag

    kinds = [BASE_KIND, *KINDS]
    if kind is not None and kind not in kinds:
        fail(f"image kind must be one of {', '.join(kinds)}, not {kind!r}")
    try:
        shown = show_images(connect(), [kind] if kind else kinds)
    except ImageError as e:
        fail(str(e), 1)
    if as_json:
        emit_json(shown)
    else:
        for k, doc in shown.items():
            if doc is None:
                typer.echo(f"{image_tag(k)}: absent")
            else:
                stale = f"stale: {doc['stale']}" if doc["stale"] else "matches this checkout"
                typer.echo(f"{doc['tag']} {doc['id']} ({stale})")
    raise typer.Exit(1 if any(doc is None for doc in shown.values()) else 0)


@app.command()
def janitor() -> None:
    """Record runs whose harness died (status aborted) and remove leftover harness containers (by label).
    Run it when no harness run is in progress."""
    from harness.backends.docker import client as docker_client, janitor as sweep

    recovered = _recover_orphans()  # the callback already did; a second pass finds nothing new
    if not docker_client.docker_available():
        fail("Docker daemon not reachable: start dockerd (see .ci/docker-up)")
    removed = sweep()
    typer.echo("\n".join(removed) if removed else "nothing to remove")
    if not recovered:
        typer.echo("no run left without a record")


def entrypoint() -> None:  # pragma: no cover - for python -m harness
    app(prog_name="harness")


if __name__ == "__main__":  # pragma: no cover
    sys.exit(entrypoint())
