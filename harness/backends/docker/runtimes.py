"""Container runtimes: which OCI runtime (runc, runsc) a container gets, and its version for the record."""

from __future__ import annotations

import os
import shutil
import subprocess
from typing import Any

from harness.backends.docker.client import RUNTIME_HINT


def runtime_version(name: str, entry: dict[str, Any] | None, info: dict[str, Any]) -> str:
    """The runtime's `--version` first line (the binary dockerd would run, looked up on this host),
    else what the daemon says (runc's commit), else "unknown"."""
    path = (entry or {}).get("path") or name
    exe = path if os.path.isabs(path) else shutil.which(path) or (shutil.which(path, path="/usr/sbin:/sbin") or "")
    if exe:
        try:
            out = subprocess.run([exe, "--version"], capture_output=True, text=True, timeout=10).stdout
            first = out.strip().splitlines()[0] if out.strip() else ""
            if first:
                return first
        except (OSError, subprocess.SubprocessError):
            pass
    if name in ("runc", "io.containerd.runc.v2"):
        commit = (info.get("RuncCommit") or {}).get("ID")
        if commit:
            return f"runc commit {commit}"
    return "unknown"


class RuntimeMissing(Exception):
    """dockerd lacks the runtime asked for; the message says how to install and register it."""


def pick_runtime(info: dict[str, Any], asked: str | None) -> tuple[str, str]:
    """(name, version) of the runtime a container gets from this daemon (`docker info`): the one asked
    for, else the daemon's default. RuntimeMissing when dockerd does not have it: never a fall-back."""
    runtimes = info.get("Runtimes") or {}
    name = asked or info.get("DefaultRuntime") or "runc"
    if name not in runtimes:
        known = ", ".join(sorted(runtimes)) or "none"
        raise RuntimeMissing(f"container runtime {name!r} is not registered with dockerd (it has: {known}): "
                             f"{RUNTIME_HINT}; the run was not started (no fall-back to another runtime)")
    return name, runtime_version(name, runtimes.get(name), info)
