"""`harness results` (list, show, reindex) and `harness leaderboard`: the result store."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from harness.cli.common import (BenchOpt, EXIT_FAILED, JsonOpt, ResultsOpt, app, bench_or_exit, emit_json, err,
                                fail)
from harness.sanitize import clean_text


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
            fail(f"run {run_id}: unreadable record ({e}); harness results show {run_id} --json prints it as stored", EXIT_FAILED)


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
                by: Optional[str] = typer.Option(None, "--by", help="gpu-class: one board per GPU class; with "
                                                 "--labs, improvement: every class together, ranked by the "
                                                 "improvement over each row's own class baseline."),
                all_runs: bool = typer.Option(False, "--all", help="Also flagged and unverified runs."),
                labs: Optional[str] = typer.Option(None, "--labs", help="all, or LAB,LAB...: this lab's runs and "
                                                   "those imported from other labs (harness import), by GPU class."),
                incomparable: bool = typer.Option(False, "--incomparable", help="With --labs: also list runs "
                                                  "whose benchmark fingerprint differs from this lab's."),
                results: Optional[Path] = ResultsOpt, as_json: bool = JsonOpt) -> None:
    """Best score per submission (throttled and unverified runs hidden unless --all)."""
    from harness.store import ResultStore

    if by not in (None, "gpu-class", "improvement"):
        fail(f"--by takes gpu-class or improvement, not {by!r}")
    if labs is not None:
        return _cross_lab(benchmark, labs, incomparable, results, as_json, by == "improvement")
    if by == "improvement":
        fail("--by improvement ranks across labs and classes: add --labs all")
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


def _cross_lab(benchmark: str, labs: str, incomparable: bool, results: Optional[Path], as_json: bool,
               improvement: bool) -> None:
    from harness import paths
    from harness.data import DataError
    from harness.exchange.board import by_improvement, cross_lab_board
    from harness.exchange.keys import local_lab
    from harness.fingerprint import local_fingerprint

    bench = bench_or_exit(benchmark)
    try:
        fingerprint = local_fingerprint(bench)
    except DataError as e:
        fingerprint = None
        err.print(f"note: {clean_text(str(e))}: no run is comparable until it is", highlight=False)
    wanted = None if labs == "all" else [x.strip() for x in labs.split(",") if x.strip()]
    rows = cross_lab_board(Path(results or paths.results_dir()), benchmark, fingerprint,
                           baselines_path=paths.baselines_file(), labs=wanted, include_incomparable=incomparable,
                           local_lab=local_lab())
    if improvement:
        rows = by_improvement(rows)
    if as_json:
        emit_json({"benchmark": benchmark, "fingerprint": fingerprint, "view": "improvement" if improvement else
                   "gpu-class", "rows": [r.to_dict() for r in rows]})
        return
    if not rows:
        typer.echo(f"no comparable scored runs for {benchmark} in any lab")
        return
    typer.echo(f"{benchmark}, fingerprint {fingerprint or 'unknown'}")
    typer.echo(f"{'lab':14} {'class':24} {'submission':12} {'val_bpb mean ± std':>20} {'n':>3} {'Δ':>8} {'rel':>7} "
               f"{'z':>6} {'×class':>7} {'energy':>9}  trust")
    c = clean_text
    for r in rows:
        spread = f"{r.mean_bpb:.4f} ± {r.std_bpb:.4f}" if r.std_bpb is not None else f"{r.mean_bpb:.4f}"
        delta = f"{r.delta:+.4f}" if r.delta is not None else "-"
        rel = f"{r.relative * 100:+.2f}%" if r.relative is not None else "-"
        z = f"{r.z:+.1f}" if r.z is not None else "-"
        ratio = f"{r.class_ratio:.3f}" if r.class_ratio is not None else "-"
        energy = f"{r.energy_j / 1000:.1f} kJ" if r.energy_j is not None else "-"
        mark = "" if r.comparable else "  incomparable"
        typer.echo(f"{c(r.lab)[:14]:14} {c(r.gpu_class or '-')[:24]:24} {c(r.submission_sha256 or '-')[:12]:12} "
                   f"{spread:>20} {r.n:>3} {delta:>8} {rel:>7} {z:>6} {ratio:>7} {energy:>9}  {r.trust}{mark}")
