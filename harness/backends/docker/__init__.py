"""The docker backend: every run in a fresh, locked-down container. Everything that talks to Docker
lives in this package; nothing else in the harness imports the Docker SDK.

    backend    DockerBackend.execute(request, on_line) -> ProcessOutcome: the container's whole life
    spec       container_spec(request, image): every isolation knob, one pure function
    keeper     the container's PID 1 (KEEPER_SOURCE) and the harness's reader of its last line
    streams    the threads that drain the container's output and wait for its end
    output     copying /out out of the container (extract_output trusts nothing in the tar stream)
    runtimes   which OCI runtime (runc, runsc) a container gets, and its version
    client     the one place a Docker client is made (connect, from_env, docker_available), and the
               messages that say how to fix Docker trouble
    images     the run images in the daemon: look-up, build, ensure (their definitions: harness/images/)
    janitor    removing leftover harness containers
    probe      what the hardware profile learns from dockerd (versions, runtimes)

The names below are re-exported lazily (``from harness.backends.docker import DockerBackend`` works),
so importing a light module such as ``client`` or ``probe`` does not need the Docker SDK.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

# Eager, unlike the names below: the function shares its module's name, and an attribute bound here is
# not replaced by the submodule when something imports harness.backends.docker.janitor later.
from harness.backends.docker.janitor import janitor

_EXPORTS = {
    "backend": ["DEFAULT_IMAGE", "DockerBackend"],
    "client": ["DOCKER_UP_HINT", "DockerUnavailable", "docker_available"],
    "keeper": ["KEEPER_MARGIN_S", "KEEPER_SOURCE", "KeeperLine"],
    "output": ["CopyReport", "dir_usage", "extract_output"],
    "runtimes": ["runtime_version"],
    "spec": ["ContainerSpec", "container_spec"],
}
_WHERE = {name: mod for mod, names in _EXPORTS.items() for name in names}
__all__ = sorted([*_WHERE, "janitor"])

if TYPE_CHECKING:  # pragma: no cover
    from harness.backends.docker.backend import DEFAULT_IMAGE, DockerBackend  # noqa: F401
    from harness.backends.docker.client import DOCKER_UP_HINT, DockerUnavailable, docker_available  # noqa: F401
    from harness.backends.docker.keeper import KEEPER_MARGIN_S, KEEPER_SOURCE, KeeperLine  # noqa: F401
    from harness.backends.docker.output import CopyReport, dir_usage, extract_output  # noqa: F401
    from harness.backends.docker.runtimes import runtime_version  # noqa: F401
    from harness.backends.docker.spec import ContainerSpec, container_spec  # noqa: F401


def __getattr__(name: str) -> Any:
    mod = _WHERE.get(name)
    if mod is None:
        raise AttributeError(f"module 'harness.backends.docker' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"harness.backends.docker.{mod}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(list(globals()) + __all__)
