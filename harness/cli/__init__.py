"""The harness command line (typer): `harness --help` lists the commands; each lives in the module of its
job (see harness/cli/common.py) as one small function over a library call."""

# Imported in the order `harness --help` lists them: each module registers its commands on the app.
from harness.cli import data  # noqa: F401,I001
from harness.cli import runs  # noqa: F401
from harness.cli import results  # noqa: F401
from harness.cli import baselines  # noqa: F401
from harness.cli import machine  # noqa: F401
from harness.cli import ci  # noqa: F401
from harness.cli import exchange  # noqa: F401
from harness.cli import slurm  # noqa: F401
from harness.cli.common import app

__all__ = ["app", "entrypoint"]


def entrypoint() -> None:  # pragma: no cover - for python -m harness
    app(prog_name="harness")
