"""What the hardware profile (harness/hw/profile.py) learns from dockerd: versions and runtimes."""

from __future__ import annotations

from typing import Any

from harness.backends.docker.client import close_quietly, from_env

UNAVAILABLE = "unavailable"  # as harness.hw.profile.UNAVAILABLE


def docker_facts(client: Any = None, timeout: float = 3.0) -> dict[str, Any]:
    """Docker versions and runtimes through the SDK; "unavailable" (with ``docker_error``) if unreachable."""
    out: dict[str, Any] = {}
    own = client is None
    try:
        if client is None:
            client = from_env(timeout=timeout)  # ImportError without the SDK: docker_error, like no daemon
        v = client.version()
        out["docker_version"] = str(v.get("Version", UNAVAILABLE))
        out["docker_api_version"] = str(v.get("ApiVersion", UNAVAILABLE))
        out["docker_components"] = {
            str(c.get("Name")): str(c.get("Version")) for c in v.get("Components") or [] if c.get("Name")
        }
        info = client.info()
        out["docker_runtimes"] = sorted((info.get("Runtimes") or {}).keys())
        out["docker_default_runtime"] = str(info.get("DefaultRuntime") or UNAVAILABLE)
    except Exception as exc:  # noqa: BLE001 - any failure means "docker unavailable"
        out["docker_error"] = f"{type(exc).__name__}: {exc}"
    finally:
        if own:
            close_quietly(client)
    return out
