"""A result's provenance: what went in (hashes, image, seed, versions). Written here and nowhere else."""

from __future__ import annotations

import platform
import subprocess
import time
from importlib import metadata
from pathlib import Path
from typing import Any

from harness import __version__
from harness.benchmarks import Benchmark
from harness.budget import BudgetPlan
from harness.data import CacheInfo
from harness.fingerprint import benchmark_fingerprint
from harness.fixedcode import file_sha256, fixed_hashes


def _version(package: str) -> str | None:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


def _git(path: Path) -> dict[str, Any] | None:
    """The commit the submission sits in, when it is in a git work tree."""
    try:
        top = subprocess.run(["git", "-C", str(path.parent), "rev-parse", "--show-toplevel"], capture_output=True,
                             text=True, timeout=5)
        if top.returncode:
            return None
        commit = subprocess.run(["git", "-C", str(path.parent), "rev-parse", "HEAD"], capture_output=True,
                                text=True, timeout=5).stdout.strip() or None
        dirty = subprocess.run(["git", "-C", str(path.parent), "status", "--porcelain", "--", str(path)],
                               capture_output=True, text=True, timeout=5).stdout.strip() != ""
        return {"commit": commit, "dirty": dirty}
    except (OSError, subprocess.TimeoutExpired):
        return None


def build_provenance(*, train_py: Path, description: str, bench: Benchmark, cache: CacheInfo, seed: int,
                     backend: str, image: dict[str, Any] | None, fixed_dir: Path,
                     budget: BudgetPlan | None = None) -> dict[str, Any]:
    """budget: the run's budget plan (harness/budget.py); None: a run refused before it had one."""
    fixed = fixed_hashes(fixed_dir)
    return {
        "submission": {
            "path": str(train_py),
            "sha256": file_sha256(train_py),
            "bytes": train_py.stat().st_size,
            "description": description,
            "git": _git(train_py),
        },
        "benchmark": {
            "name": bench.name,
            # What makes two results comparable (harness/fingerprint.py), at this run's unscaled budget.
            "fingerprint": benchmark_fingerprint(bench, cache.manifest, fixed, budget.base_s if budget else None),
            "config_sha256": cache.manifest["config_sha256"],
            "prepare_sha256": fixed.get("prepare.py"),
            "fixed_sha256": fixed,
            "manifest_sha256": cache.manifest_sha256,
            "tokenizer_sha256": cache.tokenizer_sha256,
            "entropy_floor_bpb": cache.stats.get("entropy_floor_bpb"),
            "unigram_bpb": cache.stats.get("unigram_bpb"),
        },
        "backend": backend,
        "budget": budget.to_dict() if budget else None,
        "image": image,
        "seed": seed,
        "versions": {
            "harness": __version__,
            "python": platform.python_version(),
            "torch": _version("torch"),
            "numpy": _version("numpy"),
            "tiktoken": _version("tiktoken"),
            "docker_sdk": _version("docker"),
            "platform": platform.platform(),
        },
        "created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
