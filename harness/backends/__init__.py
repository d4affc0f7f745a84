"""Where a run happens. Every backend takes a RunRequest and returns a ProcessOutcome (base.py).

    base       RunRequest, ProcessOutcome, the Backend protocol
    registry   the backends by name: "local", "docker", and those of the entry point group
               ``harness.backends`` (backend_names, create_backend)
    local      a subprocess on this machine, unisolated
    docker/    a fresh, locked-down container per run (the only place that uses the Docker SDK)
    logsink    the capped log (head plus tail) both built-ins write
"""

from harness.backends.registry import (
    ENTRY_POINT_GROUP,
    BackendUnavailable,
    UnknownBackend,
    backend_factory,
    backend_names,
    create_backend,
)

__all__ = ["ENTRY_POINT_GROUP", "BackendUnavailable", "UnknownBackend", "backend_factory", "backend_names",
           "create_backend"]
