"""Sweeping leftover harness containers (every one carries the label harness=1; see spec.py).

Light to import (the Docker SDK is imported when it runs): harness/backends/docker/__init__.py imports
`janitor` eagerly, so the package's `janitor` is always this function, never this module.
"""

from __future__ import annotations

from typing import Any

from harness.backends.docker.client import from_env


def janitor(client: Any = None, run_id: str | None = None) -> list[str]:
    """Remove (force) every container labelled harness=1 (only that run's with run_id).

    Returns the names of the removed containers. It also removes containers of runs that are
    still going in another process: call it when no harness is running.
    """
    import docker.errors

    from harness.backends.docker.spec import LABEL, LABEL_RUN_ID

    own = client is None
    client = client or from_env(timeout=30)
    try:
        filters = {"label": [f"{LABEL}=1"] + ([f"{LABEL_RUN_ID}={run_id}"] if run_id else [])}
        removed = []
        for c in client.containers.list(all=True, filters=filters):
            try:
                c.remove(force=True)
                removed.append(c.name)
            except docker.errors.NotFound:
                pass
        return removed
    finally:
        if own:
            client.close()
