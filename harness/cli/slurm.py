"""`harness slurm status`: the harness's Slurm jobs (the runs themselves go through --backend slurm)."""

from __future__ import annotations

import typer

from harness.cli.common import EXIT_OK, JsonOpt, app, emit_json, fail
from harness.sanitize import clean_text

slurm_app = typer.Typer(help="The harness's Slurm jobs (runs go through --backend slurm).", no_args_is_help=True)
app.add_typer(slurm_app, name="slurm")


@slurm_app.command("status")
def slurm_status(active: bool = typer.Option(False, "--active", help="Only queued and running jobs."),
                 as_json: bool = JsonOpt) -> None:
    """List the harness's jobs: id, state, elapsed time, node, Slurm's reason."""
    from harness.slurm.jobs import FIELDS, SlurmUnavailable, harness_jobs

    try:
        jobs = harness_jobs(include_finished=not active)
    except SlurmUnavailable as e:
        fail(str(e))
    if as_json:
        emit_json([j.to_dict() for j in jobs])
    else:
        typer.echo("  ".join(f"{f:12}" for f in FIELDS))
        for j in jobs:
            typer.echo(clean_text("  ".join(f"{getattr(j, f):12}" for f in FIELDS)))
        if not jobs:
            typer.echo("no harness jobs")
    raise typer.Exit(EXIT_OK)
