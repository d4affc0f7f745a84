"""The Python wheels an offline image build installs, downloaded on the host with the host's own pip."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Iterable

from harness.images.definitions import ImageError, Progress


def _pip_python() -> str:
    """The host Python whose pip downloads wheels (HARNESS_PIP_PYTHON overrides)."""
    override = os.environ.get("HARNESS_PIP_PYTHON")
    if override:
        return override
    try:
        import pip  # noqa: F401

        return sys.executable
    except ImportError:
        found = shutil.which("python3")
        if not found:
            raise ImageError("no Python with pip found to download wheels; set HARNESS_PIP_PYTHON")
        return found


def manylinux_platforms(glibc_minor: int = 36, arch: str = "x86_64") -> list[str]:
    """Every manylinux tag a glibc 2.<glibc_minor> system accepts (pip does not expand --platform).

    2.36 is Debian bookworm's glibc; Ubuntu 24.04 has 2.39, so bookworm's set fits both bases.
    """
    tags = [f"manylinux_2_{m}_{arch}" for m in range(glibc_minor, 4, -1)]
    return tags + [f"manylinux2014_{arch}", f"manylinux2010_{arch}", f"manylinux1_{arch}"]


def download_wheels(
    requirements: Path,
    dest: Path,
    *,
    python_version: str,
    platforms: Iterable[str] | None = None,
    extra_args: Iterable[str] = (),
    progress: Progress = print,
) -> list[Path]:
    """Download the wheels of ``requirements`` (and their dependencies) for the image's Python.

    Runs ``<host python> -m pip download`` so the host's pip configuration (find-links, indexes,
    constraints) applies. Wheels in ``dest`` that the requirements no longer need are removed.
    Extra pip arguments also come from HARNESS_PIP_ARGS (split on spaces), e.g.
    ``--extra-index-url https://download.pytorch.org/whl/cpu``.
    """
    dest.mkdir(parents=True, exist_ok=True)
    cmd = [_pip_python(), "-m", "pip", "download", "--only-binary=:all:", "--dest", str(dest),
           "--python-version", python_version, "--implementation", "cp",
           "-r", str(requirements)]
    for p in platforms or manylinux_platforms():
        cmd += ["--platform", p]
    cmd += list(extra_args)
    cmd += os.environ.get("HARNESS_PIP_ARGS", "").split()
    progress(f"downloading wheels: {' '.join(c for c in cmd if not c.startswith(('manylinux', '--platform')))}"
             f" --platform manylinux...")
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        tail = "\n".join((proc.stdout + proc.stderr).strip().splitlines()[-15:])
        raise ImageError(
            f"pip download failed for {requirements} (exit {proc.returncode}):\n{tail}\n"
            "check the pins, the host's pip configuration (pip config list) and that the index "
            "holding the torch wheel is reachable (HARNESS_PIP_ARGS adds pip options)"
        )
    wanted: set[str] = set()
    for line in proc.stdout.splitlines():
        line = line.strip()
        m = re.match(r"^(?:Saved|File was already downloaded)\s+(.+\.whl)$", line)
        if m:
            wanted.add(Path(m[1]).name)
    if not wanted:  # unknown pip output format: keep everything
        wanted = {p.name for p in dest.glob("*.whl")}
    for p in dest.iterdir():
        if p.is_file() and p.name not in wanted:
            p.unlink()
    wheels = sorted(dest / n for n in wanted)
    total = sum(p.stat().st_size for p in wheels)
    progress(f"wheels: {len(wheels)} files, {total / 2**20:.0f} MiB in {dest}")
    return wheels

