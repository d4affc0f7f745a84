"""The backends by name: the built-in "local" and "docker", and those other packages install.

A backend is any object with ``name`` (str), ``isolated`` (bool: False means every result of it says
"unisolated") and ``execute(request, on_line) -> ProcessOutcome`` (harness/backends/base.py). A
*factory* makes one from keyword options: ``factory(**options) -> backend``.

A third party adds a backend by declaring a factory in the entry point group ``harness.backends`` of
its package, e.g. in its pyproject.toml::

    [project.entry-points."harness.backends"]
    slurm = "harness_slurm:make_backend"

after which ``harness run --backend slurm`` finds it (``pip install`` is the whole registration). The
harness calls the factory with ``image=`` (the run image it chose; a backend without images may ignore
it) and, when one was asked for, ``runtime=``. A name of the built-ins cannot be taken over, and a
name must match NAME_PATTERN (what the result schema allows in a record's ``backend``); entry points
with other names are ignored.

    backend_names()                   -> ["local", "docker", ...third parties, sorted]
    create_backend("docker", image=...) -> a DockerBackend
    create_backend("nosuch")          -> UnknownBackend: unknown backend 'nosuch'; registered: local, docker
"""

from __future__ import annotations

import importlib
import re
from importlib import metadata
from typing import Any, Callable

ENTRY_POINT_GROUP = "harness.backends"
NAME_PATTERN = re.compile(r"[a-z][a-z0-9_-]{0,31}")  # as "backend" in harness/schemas/result.schema.json

# The built-ins, as "module:attribute" (imported only when asked for: docker needs the Docker SDK).
BUILTIN: dict[str, str] = {
    "local": "harness.backends.local:LocalBackend",
    "docker": "harness.backends.docker.backend:DockerBackend",
    "slurm": "harness.slurm.backend:SlurmBackend",  # runs whole pipelines as Slurm jobs (run_many)
    "k8s": "harness.backends.k8s.backend:K8sBackend",  # a Kubernetes Job per run (never run on a live cluster)
}

Factory = Callable[..., Any]


class UnknownBackend(LookupError):
    """No backend of that name is registered; the message lists the registered names."""

    def __init__(self, name: str, names: list[str]):
        self.name = name
        self.names = names
        super().__init__(f"unknown backend {name!r}; registered backends: {', '.join(names)}")

    def __str__(self) -> str:  # LookupError would quote the message like a key
        return str(self.args[0])


class BackendUnavailable(RuntimeError):
    """The backend is registered but its factory could not be loaded (a missing dependency)."""


def _third_party() -> dict[str, metadata.EntryPoint]:
    """The group's entry points by name (the first one on sys.path wins a name; built-in names are skipped)."""
    found: dict[str, metadata.EntryPoint] = {}
    for ep in metadata.entry_points(group=ENTRY_POINT_GROUP):
        if ep.name not in BUILTIN and ep.name not in found and NAME_PATTERN.fullmatch(ep.name):
            found[ep.name] = ep
    return found


def backend_names() -> list[str]:
    """Every registered backend: the built-ins first, then those of installed packages, sorted."""
    return [*BUILTIN, *sorted(_third_party())]


def backend_factory(name: str) -> Factory:
    """The factory registered under `name`; UnknownBackend (listing the names) or BackendUnavailable."""
    if name in BUILTIN:
        module, _, attr = BUILTIN[name].partition(":")
        try:
            return getattr(importlib.import_module(module), attr)
        except ImportError as e:
            raise BackendUnavailable(f"the {name} backend is unavailable: {e}") from e
    ep = _third_party().get(name)
    if ep is None:
        raise UnknownBackend(name, backend_names())
    try:
        factory = ep.load()
    except Exception as e:  # noqa: BLE001 - ImportError, AttributeError, or the package's own trouble
        raise BackendUnavailable(f"backend {name!r} ({ep.value}, entry point group {ENTRY_POINT_GROUP}) "
                                 f"could not be loaded: {type(e).__name__}: {e}") from e
    if not callable(factory):
        raise BackendUnavailable(f"backend {name!r}: {ep.value} is not callable")
    return factory


def create_backend(name: str, **options: Any) -> Any:
    """A new backend of the named kind, made by its factory with `options`."""
    return backend_factory(name)(**options)
