"""The one place that makes a Docker client, and the messages that say how to fix Docker trouble.

Every part of the harness that talks to dockerd (the backend, the images, the janitor, `harness doctor`,
the hardware profile's probe) gets its client here. The Docker SDK is imported only when a client is
made, so this module (and those that import it) load without it; without the SDK, `from_env` raises
ImportError and `docker_available` says False.

    client = connect(timeout=60)       # pinged; DockerUnavailable naming the fix when no daemon answers
    client = from_env(timeout=5)       # not pinged (the caller asks what it wants)
    docker_available(timeout=3)        # True when a daemon answers a ping
"""

from __future__ import annotations

import os
import re
from typing import Any

DOCKER_UP_HINT = "start dockerd (see .ci/docker-up)"
RUNTIME_HINT = ("install it and register it with dockerd (\"runtimes\" in /etc/docker/daemon.json, then "
                "reload dockerd with SIGHUP); for gVisor, `sudo bash .ci/docker-up` installs Debian's runsc "
                "and registers it as \"runsc\"")


class DockerUnavailable(RuntimeError):
    """No daemon answers (or the SDK is missing); the message says what to do about it."""


def from_env(timeout: float | None = None) -> Any:
    """``docker.from_env()`` (DOCKER_HOST and friends); ImportError when the SDK is missing."""
    import docker

    kwargs = {"timeout": timeout} if timeout else {}
    return docker.from_env(**kwargs)


def daemon_address() -> str:
    return os.environ.get("DOCKER_HOST", "unix:///var/run/docker.sock")


def connect(timeout: float | None = None) -> Any:
    """A client whose daemon answered a ping; DockerUnavailable naming the fix otherwise."""
    try:
        client = from_env(timeout)
    except ImportError as e:  # pragma: no cover - docker is a dependency of the package
        raise DockerUnavailable("the Python package 'docker' is missing: pip install 'docker>=7.1'") from e
    except Exception as e:  # DockerException, PermissionError ...
        raise DockerUnavailable(unreachable_message(e)) from e
    try:
        client.ping()
    except Exception as e:  # requests ConnectionError, APIError ...
        close_quietly(client)
        raise DockerUnavailable(unreachable_message(e)) from e
    return client


def unreachable_message(err: BaseException) -> str:
    """Why no client could be had, with the fix."""
    return (f"Docker daemon not reachable at {daemon_address()} ({type(err).__name__}: {err}); "
            "start dockerd or run .ci/docker-up")


def docker_available(timeout: float = 3.0) -> bool:
    """True when a Docker daemon answers a ping within `timeout` seconds."""
    client = None
    try:
        client = from_env(timeout=timeout)
        return bool(client.ping())
    except Exception:
        return False
    finally:
        close_quietly(client)


def close_quietly(client: Any) -> None:
    if client is not None:
        try:
            client.close()
        except Exception:
            pass


# --------------------------------------------------------------------------------------------
# what a run's trouble with Docker means (the backend's infra_error messages)


def client_error(err: BaseException) -> str:
    """The infra_error of a run whose client could not be made."""
    msg = str(err)
    if "permission denied" in msg.lower():
        return f"no permission to use the Docker socket ({msg}): add your user to the docker group or run as root"
    return f"Docker daemon not reachable ({msg}): {DOCKER_UP_HINT}"


def image_hint(image: str) -> str:
    m = re.fullmatch(r"harness-([a-z0-9]+)(:.*)?", image)
    if m:
        return f"run `harness image build {m.group(1)}`"
    return f"build or pull it (`docker pull {image}`)"


def explain_api_error(err: Exception, gpu_uuids: list[str], runtime: str | None = None) -> str:
    """The infra_error of a run whose container dockerd refused (an APIError), with the fix."""
    text = str(getattr(err, "explanation", None) or err)
    low = text.lower()
    if "could not select device driver" in low or "nvidia-container-cli" in low or ("nvidia" in low and "gpu" in low):
        return (f"GPUs {gpu_uuids} requested but Docker cannot give them to the container ({text}): "
                "install the NVIDIA Container Toolkit, run `nvidia-ctk runtime configure --runtime=docker` "
                "and restart dockerd, and check the UUIDs with `nvidia-smi -L`")
    if "bind source path does not exist" in low or "no such file or directory" in low:
        return f"a mount source is missing ({text}): prepare the benchmark data (`harness prepare`) and check paths"
    if "permission denied" in low and "docker.sock" in low:
        return f"no permission to use the Docker socket ({text}): add your user to the docker group"
    if runtime and runtime != "runc" and ("unknown runtime" in low or runtime in low or "oci runtime" in low):
        return (f"Docker could not start the container with runtime {runtime!r} ({text}): check that it works "
                f"(`docker run --rm --runtime {runtime} --network none IMAGE true`), or {RUNTIME_HINT}")
    return f"Docker refused the container ({text})"
