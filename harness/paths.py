"""Where things live. Every path the harness uses is decided here, from arguments or the environment."""

from __future__ import annotations

import os
from pathlib import Path

# The repository holds fixed/, benchmarks.yaml and submissions/; the package sits one level below it.
REPO_ROOT = Path(__file__).resolve().parent.parent


def repo_root() -> Path:
    return Path(os.environ.get("HARNESS_ROOT", REPO_ROOT))


def fixed_dir() -> Path:
    return repo_root() / "fixed"


def benchmarks_file() -> Path:
    return Path(os.environ.get("HARNESS_BENCHMARKS", repo_root() / "benchmarks.yaml"))


def cache_dir() -> Path:
    """Data caches, one folder per benchmark. HARNESS_CACHE_DIR moves it (tests use a temp dir)."""
    return Path(os.environ.get("HARNESS_CACHE_DIR", repo_root() / ".cache" / "data"))


def data_dir(benchmark: str) -> Path:
    return cache_dir() / benchmark


def runs_dir() -> Path:
    """Per-run working folders (logs, outputs). HARNESS_RUNS_DIR moves it."""
    return Path(os.environ.get("HARNESS_RUNS_DIR", repo_root() / "runs"))


def results_dir() -> Path:
    return Path(os.environ.get("HARNESS_RESULTS", Path.cwd() / "results"))


def baselines_file() -> Path:
    """Per-class baselines (shareable, mergeable JSON). HARNESS_BASELINES moves it."""
    return Path(os.environ.get("HARNESS_BASELINES", results_dir() / "baselines.json"))


def state_dir() -> Path:
    """Machine-local harness state shared by every harness process of this user: the device leases of
    harness/pool/. HARNESS_STATE_DIR moves it (point it at one folder for all users of a shared machine)."""
    env = os.environ.get("HARNESS_STATE_DIR")
    if env:
        return Path(env)
    base = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(base) / "harness"
