"""Which backend a command's runs go to: a registered name (harness/backends/registry.py) or "auto", the
run image, and the container runtime; decided once per command, then the same backend object trains,
scores and serves the model."""

from __future__ import annotations

from typing import Any

from harness.backends.base import Backend
from harness.backends.host import hooks
from harness.backends.registry import BackendUnavailable, UnknownBackend, backend_factory, backend_names
from harness.benchmarks import Benchmark
from harness.hw.context import HardwareContext
from harness.pipeline.request import RunError

AUTO = "auto"


def is_remote(backend: Any) -> bool:
    """A backend that runs whole pipelines elsewhere (Slurm: run_many), each run's hardware probed and
    its record made where it ran, rather than one process or container from here."""
    return callable(getattr(backend, "run_many", None))


def chosen_runtime(asked: str | None, bench: Benchmark | None) -> str | None:
    """--runtime if given, else the benchmark's `runtime:` setting, else the daemon's default (None)."""
    return asked or (bench.runtime if bench is not None else None) or None


def make_backend(name: str, image: str | None = None, runtime: str | None = None,
                 bench: Benchmark | None = None) -> Backend:
    """The backend by name: "auto" (docker when a daemon answers, else local) or a registered one
    (harness/backends/registry.py: local, docker, and those installed packages declare). A runtime (e.g.
    runsc, asked for or the benchmark's) needs Docker: asking for it fails closed, never falls back to a
    process on the host or to the daemon's default runtime."""
    runtime = chosen_runtime(runtime, bench)
    if name == AUTO:
        if _docker_answers():
            name = "docker"
        elif runtime:
            raise RunError(f"runtime {runtime!r} needs the docker backend: no Docker daemon is reachable, so "
                           "--backend auto would run train.py as a plain process on this host (start dockerd, "
                           "see .ci/docker-up, or drop the runtime)")
        else:
            name = "local"
    if name == "local" and runtime:
        raise RunError(f"runtime {runtime!r} needs the docker backend: the local backend runs train.py as a "
                       "plain process on this host (use --backend docker, or drop the runtime)")
    try:
        factory = backend_factory(name)
    except UnknownBackend as e:
        raise RunError(f"unknown backend {name!r}: use auto or a registered backend: {', '.join(e.names)}") from None
    except BackendUnavailable as e:
        raise RunError(str(e)) from None
    if name == "local":
        return factory()
    options: dict[str, Any] = {"image": image} if image else {}
    if runtime:
        options["runtime"] = runtime
    return factory(**options)


def _docker_answers() -> bool:
    try:
        from harness.backends.docker import client
    except ImportError:
        return False
    return client.docker_available()


def backend_and_hardware(name: str, image: str | None, runtime: str | None, bench: Benchmark | None,
                         gpu: str | None = None, nvml_module: Any = None,
                         hw: HardwareContext | None = None) -> tuple[Backend, HardwareContext]:
    """The backend a command's runs go to, and the hardware they get, probed by the backend where the runs
    happen (harness/backends/host.py: this machine for local and docker). A GPU run gets the CUDA image
    unless an image was asked for."""
    backend = make_backend(name, image, runtime, bench)
    if is_remote(backend):  # probed by each job on its node: there is nothing to probe here
        return backend, hw
    hw = hw or hooks(backend).probe_hardware(gpu, nvml_module)
    if image is None and getattr(backend, "image", None) is not None:
        backend = make_backend(backend.name, default_image(hw), runtime, bench)
    return backend, hw


def default_image(hw: HardwareContext) -> str:
    """The CUDA image for a GPU run, the CPU image otherwise."""
    from harness.images import latest_tag

    return latest_tag("cuda" if hw.gpu else "cpu")


__all__ = ["AUTO", "backend_and_hardware", "is_remote", "backend_names", "chosen_runtime", "default_image", "hooks",
           "make_backend"]
