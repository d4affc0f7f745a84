"""Shared fixtures: a real `tiny` data cache built once per session, and the fixed module loaded against it."""

from __future__ import annotations

import importlib.util
import itertools
import os
import sys
import tempfile
from pathlib import Path

import pytest

from harness import paths
from harness.benchmarks import get_benchmark
from harness.data import prepare_benchmark

REPO = paths.REPO_ROOT
_counter = itertools.count()
# Device leases (harness/pool/) per test process: two test workers' runs are not each other's neighbours
# to wait for (each test that checks leases gives its own folder).
os.environ.setdefault("HARNESS_STATE_DIR", tempfile.mkdtemp(prefix="harness-test-state-"))

# The longest files first. `make test` runs two workers that take whole files (--dist loadfile) in this
# order: a long file started last would end the suite alone while the other worker idles.
SLOW_FIRST = ("test_slurm.py", "test_submit_seeds.py", "test_ci.py", "test_clock.py", "test_exchange.py", "test_submit.py",
              "test_cli_commands.py", "test_eval_attacks.py", "test_docker_verified.py", "test_verified_eval.py",
              "test_submit_tsv.py", "test_run_local.py", "test_baseline.py", "test_pool.py")


def pytest_collection_modifyitems(items):
    rank = {name: i for i, name in enumerate(SLOW_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))  # stable: a file's own order is kept


@pytest.fixture(scope="session")
def tiny_bench():
    return get_benchmark("tiny")


@pytest.fixture(scope="session")
def tiny_cache(tmp_path_factory, tiny_bench):
    """The real tiny benchmark, built by the real code into a temp cache (a few seconds)."""
    root = tmp_path_factory.mktemp("cache")
    return prepare_benchmark(tiny_bench, data_dir=root / "tiny")


def load_prepare(data_dir: Path | None, **env: str):
    """A fresh import of fixed/prepare.py with the harness's environment set, as a run would see it."""
    saved = dict(os.environ)
    try:
        for key in [k for k in os.environ if k.startswith("HARNESS_")]:
            del os.environ[key]
        if data_dir is not None:
            os.environ["HARNESS_DATA_DIR"] = str(data_dir)
        os.environ.update(env)
        name = f"_test_prepare_{next(_counter)}"
        spec = importlib.util.spec_from_file_location(name, REPO / "fixed" / "prepare.py")
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
        return module
    finally:
        os.environ.clear()
        os.environ.update(saved)


@pytest.fixture
def prepare_mod(tiny_cache):
    return load_prepare(tiny_cache.data_dir, HARNESS_TIME_BUDGET="12.5", HARNESS_SEED="7")


@pytest.fixture
def isolated_dirs(tmp_path, monkeypatch):
    """Runs and results go to temp folders."""
    monkeypatch.setenv("HARNESS_RUNS_DIR", str(tmp_path / "runs"))
    monkeypatch.setenv("HARNESS_RESULTS", str(tmp_path / "results"))
    return tmp_path
