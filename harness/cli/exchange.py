"""Commands that move results between labs: keys (init, show), export, import (harness/exchange/)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from harness import paths
from harness.cli.common import EXIT_FAILED, JsonOpt, ResultsOpt, app, emit_json, fail
from harness.sanitize import clean_text

keys_app = typer.Typer(help="This lab's signing key (ed25519) and the labs whose bundles it trusts.",
                       no_args_is_help=True)
app.add_typer(keys_app, name="keys")

TrustedOpt = typer.Option(None, "--trusted-keys", help="Trusted-keys file: one 'LAB ssh-ed25519 AAAA...' per "
                                                       "line (default: the config directory's trusted_keys).")


def _local_lab() -> str | None:
    from harness.exchange.keys import local_lab

    return local_lab()  # a bundle of this lab's own is never imported back


@keys_app.command("init")
def keys_init(lab: str = typer.Option(..., "--lab", help="This lab's name, as other labs will see it."),
              force: bool = typer.Option(False, "--force", help="Replace an existing key pair."),
              as_json: bool = JsonOpt) -> None:
    """Make this lab's ed25519 key pair (owner-only files under $XDG_CONFIG_HOME/harness) and trust it."""
    from harness.exchange.keys import KeyProblem, config_dir, init_keys

    try:
        key = init_keys(lab, force=force)
    except KeyProblem as e:
        fail(str(e))
    if as_json:
        emit_json({"lab": key.lab, "public_key": key.public_line, "config_dir": str(config_dir())})
        return
    typer.echo(f"lab {key.lab}: key pair in {config_dir()}; give other labs this line for their trusted keys:")
    typer.echo(key.trusted_line())


@keys_app.command("show")
def keys_show(as_json: bool = JsonOpt) -> None:
    """Print this lab's line for another lab's trusted-keys file."""
    from harness.exchange.keys import KeyProblem, load_keys

    try:
        key = load_keys()
    except KeyProblem as e:
        fail(str(e))
    if as_json:
        emit_json({"lab": key.lab, "public_key": key.public_line, "line": key.trusted_line()})
        return
    typer.echo(key.trusted_line())


@app.command("export")
def export_cmd(output: Path = typer.Option(..., "--output", "-o", help="FILE.tar.gz, or a new directory."),
               results: Optional[Path] = ResultsOpt,
               benchmark: Optional[str] = typer.Option(None, "--benchmark", "-b", help="Only this benchmark."),
               since: Optional[str] = typer.Option(None, "--since", help="Only runs created on or after this "
                                                                         "date (2026-12-01 or a full timestamp)."),
               run: list[str] = typer.Option([], "--run", help="Only these run ids (repeat)."),
               with_models: bool = typer.Option(False, "--with-models", help="Add each run's exported model, so "
                                                                             "other labs can re-score it."),
               include_all: bool = typer.Option(False, "--all", help="Also unverified, flagged and failed runs "
                                                                     "(their flags travel with them)."),
               as_json: bool = JsonOpt) -> None:
    """Write a signed bundle of this lab's verified results for another lab to import."""
    from harness.exchange.bundle import BundleError, export_bundle
    from harness.exchange.keys import KeyProblem, load_keys
    from harness.store import ResultStore, StoreError

    try:
        key = load_keys()
        report = export_bundle(ResultStore(results or paths.results_dir()), key, output, benchmark=benchmark,
                               since=since, run_ids=run, include_all=include_all, with_models=with_models,
                               baselines_path=paths.baselines_file())
    except (KeyProblem, BundleError, StoreError) as e:
        fail(str(e), EXIT_FAILED)
    if as_json:
        emit_json(report.to_dict())
        return
    typer.echo(f"{report.path}: {len(report.runs)} run(s) of lab {report.lab}, {report.models} model(s), "
               f"signed; bundle {report.bundle_id[:16]}")
    for bench, fps in report.fingerprints.items():
        typer.echo(f"  {bench}: fingerprint {', '.join(fps)}")
    for line in report.skipped:
        typer.echo(f"  left out {clean_text(line)}")


@app.command("import")
def import_cmd(bundle: Path = typer.Argument(..., help="A bundle: FILE.tar.gz or a directory."),
               results: Optional[Path] = ResultsOpt, trusted_keys: Optional[Path] = TrustedOpt,
               allow_unsigned: bool = typer.Option(False, "--allow-unsigned", help="Import a bundle without a "
                                                   "trusted signature; its runs are labelled unsigned."),
               as_json: bool = JsonOpt) -> None:
    """Check another lab's bundle (signature, hashes, schema, fingerprint) and add its runs, all or nothing."""
    from harness.exchange.importer import ImportRefused, import_bundle
    from harness.exchange.keys import KeyProblem, load_trusted

    try:
        trusted = load_trusted(trusted_keys)
    except KeyProblem as e:
        if not allow_unsigned:
            fail(str(e))
        trusted = []
    try:
        report = import_bundle(bundle, results or paths.results_dir(), trusted, allow_unsigned=allow_unsigned,
                               local_lab=_local_lab())
    except ImportRefused as e:
        fail(f"{bundle}: refused, nothing imported: {e}", EXIT_FAILED)
    if as_json:
        emit_json(report.to_dict())
        return
    typer.echo(f"lab {report.lab} ({report.signature}): {len(report.added)} run(s) added, "
               f"{len(report.already)} already here; in {report.store}")
    for run_id, why in report.incomparable.items():
        typer.echo(f"  {run_id} incomparable: {clean_text(why)}")


@app.command("sync")
def sync_cmd(repo: str = typer.Argument(..., help="A git repository the labs share (any URL git can push to)."),
             results: Optional[Path] = ResultsOpt, trusted_keys: Optional[Path] = TrustedOpt,
             benchmark: Optional[str] = typer.Option(None, "--benchmark", "-b", help="Only publish this benchmark."),
             with_models: bool = typer.Option(False, "--with-models", help="Publish the exported models too."),
             allow_unsigned: bool = typer.Option(False, "--allow-unsigned", help="Import unsigned bundles, "
                                                 "labelled unsigned."),
             as_json: bool = JsonOpt) -> None:
    """Push this lab's new runs as a bundle to REPO's bundles/LAB/, and import every other lab's bundles."""
    from harness.exchange.keys import KeyProblem, load_keys, load_trusted
    from harness.exchange.sync import SyncError, sync

    try:
        key = load_keys()
        trusted = load_trusted(trusted_keys)
        report = sync(repo, key, Path(results or paths.results_dir()), trusted, benchmark=benchmark,
                      with_models=with_models, allow_unsigned=allow_unsigned, baselines_path=paths.baselines_file())
    except KeyProblem as e:
        fail(str(e))
    except SyncError as e:
        fail(str(e), EXIT_FAILED)
    if as_json:
        emit_json(report.to_dict())
    else:
        typer.echo(f"pushed {report.pushed} ({len(report.pushed_runs)} run(s))" if report.pushed
                   else "pushed nothing: every run of this lab is published already")
        for path, got in report.imported.items():
            typer.echo(f"imported {path}: lab {got['lab']} ({got['signature']}), {len(got['added'])} new")
        for path, why in report.refused.items():
            typer.echo(f"refused {path}: {clean_text(why)}")
    if report.refused:
        raise typer.Exit(EXIT_FAILED)


@app.command("rescore-claims")
def rescore_claims_cmd(target: str = typer.Argument(..., help="A lab already imported, or a bundle (imported "
                                                    "first, with every check of harness import)."),
                       run: list[str] = typer.Option([], "--run", help="Only these run ids (repeat)."),
                       tolerance: float = typer.Option(2e-3, help="Largest |local - claimed| val_bpb confirmed."),
                       backend: str = typer.Option("auto", help="Where the evaluator runs."),
                       runtime: Optional[str] = typer.Option(None, "--runtime", help="Container runtime (runsc)."),
                       results: Optional[Path] = ResultsOpt, trusted_keys: Optional[Path] = TrustedOpt,
                       as_json: bool = JsonOpt) -> None:
    """Score another lab's exported models here and mark each claim confirmed or disputed."""
    from harness.data import DataError
    from harness.exchange.claims import ClaimError, check_claim, claims_of
    from harness.exchange.importer import ImportRefused, import_bundle
    from harness.exchange.keys import KeyProblem, load_trusted
    from harness.exchange.labs import lab_names
    from harness.pipeline import RunError

    root = Path(results or paths.results_dir())
    lab = target
    if Path(target).exists() and target not in lab_names(root):
        try:
            lab = import_bundle(Path(target), root, load_trusted(trusted_keys), local_lab=_local_lab()).lab
        except (ImportRefused, KeyProblem) as e:
            fail(f"{target}: refused, nothing imported: {e}", EXIT_FAILED)
    if lab not in lab_names(root):
        fail(f"no lab {lab!r} imported in {root} (imported: {', '.join(lab_names(root)) or 'none'})")
    wanted = run or claims_of(root, lab)
    if not wanted:
        fail(f"lab {lab!r} sent no models: ask for a bundle exported with --with-models", EXIT_FAILED)
    claims, problems = [], {}
    for run_id in wanted:
        try:
            claims.append(check_claim(root, lab, run_id, backend_name=backend, runtime=runtime, tolerance=tolerance))
        except (ClaimError, DataError, RunError) as e:
            problems[run_id] = str(e)
    if as_json:
        emit_json({"lab": lab, "claims": [c.to_dict() for c in claims], "unchecked": problems})
    else:
        for c in claims:
            detail = f"{c.local:.4f} here vs {c.claimed:.4f} claimed" if c.local is not None else clean_text(c.reason or "")
            typer.echo(f"{c.run_id}  {c.status:9}  {detail}")
        for run_id, why in problems.items():
            typer.echo(f"{run_id}  unchecked  {clean_text(why)}")
    if problems or any(c.status != "confirmed" for c in claims):
        raise typer.Exit(EXIT_FAILED)


@app.command("reproduce")
def reproduce_cmd(run_id: str = typer.Argument(..., help="An imported run (harness import); a prefix that names "
                                               "one run is enough."),
                  seeds: int = typer.Option(2, "--seeds", min=1, help="Runs here (2+ for Welch's test)."),
                  backend: str = typer.Option("auto", help="Where the runs happen."),
                  runtime: Optional[str] = typer.Option(None, "--runtime", help="Container runtime (runsc)."),
                  no_calibrate: bool = typer.Option(False, "--no-calibrate", help="Skip the calibration."),
                  results: Optional[Path] = ResultsOpt, as_json: bool = JsonOpt) -> None:
    """Train an imported submission here and set the local result beside the claim, with Welch's test."""
    from harness.cli.common import setup_errors, sigterm_as_interrupt
    from harness.exchange.reproduce import ReproduceError, reproduce

    root = Path(results or paths.results_dir())
    try:
        with setup_errors(), sigterm_as_interrupt():
            rep, records = reproduce(root, run_id, seeds, backend=backend, runtime=runtime,
                                     calibrate=not no_calibrate)
    except ReproduceError as e:
        fail(str(e))
    if as_json:
        emit_json({**rep.to_dict(), "records": [r.run_id for r in records]})
        return
    for side in (rep.claimed, rep.local):
        d = side.to_dict()
        spread = f" ± {d['std']:.4f}" if d["std"] is not None else ""
        delta = f", Δ {d['delta_mean']:+.4f} vs its class baseline" if d["delta_mean"] is not None else ""
        mean = f"{d['mean']:.4f}{spread}" if d["mean"] is not None else "no scored run"
        typer.echo(f"{clean_text(side.lab):12} {clean_text(side.gpu_class or '-'):24} n={side.n}  {mean}{delta}")
    if rep.welch:
        typer.echo(f"Welch on {rep.compared}: Δ(local - claimed) {rep.welch['delta']:+.4f}, "
                   f"p (two-sided) {rep.welch['p_two_sided']:.3g}")
    if rep.note:
        typer.echo(f"note: {clean_text(rep.note)}")
