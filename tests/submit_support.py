"""What the submit tests share: the toy candidate, the record schema, the environment of a local submit."""

from __future__ import annotations

import json

import pytest

from harness.submit import SubmitOptions
from tests.conftest import REPO

TOY = REPO / "tests" / "cases" / "toy_train.py"
SCHEMA = json.loads((REPO / "harness" / "schemas" / "result.schema.json").read_text())


@pytest.fixture
def env(tiny_cache, isolated_dirs, monkeypatch):
    monkeypatch.setenv("HARNESS_CACHE_DIR", str(tiny_cache.data_dir.parent))
    monkeypatch.setenv("HARNESS_BASELINES", str(isolated_dirs / "baselines.json"))
    monkeypatch.chdir(isolated_dirs)  # outside any git repository: no results.tsv row unless a test asks
    return isolated_dirs


def opts(bench, tmp, **kw):
    kw.setdefault("seeds", 1)
    return SubmitOptions(benchmark=bench, backend="local", budget_s=2, results_dir=tmp / "results",
                         calibrate=False, **kw)


def outcome_of(tmp_path, val_bpb=2.0):
    from harness.record import Outcome, Timings

    return Outcome(status="ok", reason=None, backend="docker", isolated=True, log_path=str(tmp_path / "log.txt"),
                   timings=Timings(0, 1, 100, 1, 60, 5, 100), metrics={"val_bpb": val_bpb})
