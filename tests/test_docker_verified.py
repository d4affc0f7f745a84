"""The verified flow on the real docker backend: the training container cannot find the val split,
the evaluator container scores the exported model, and the result is labelled verified."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

sys.path.insert(0, str(Path(__file__).parent))
from docker_support import docker_client  # noqa: E402,F401

from harness.cli import app  # noqa: E402
from harness.submit import SubmitOptions, submit  # noqa: E402
from tests.conftest import REPO  # noqa: E402

TOY = REPO / "tests" / "cases" / "toy_train.py"

SEARCH_FOR_VAL = '''
import os
found = []
for root, dirs, files in os.walk("/", onerror=lambda e: None):
    if root.startswith(("/proc", "/sys", "/dev")):
        dirs[:] = []
        continue
    if os.path.basename(root) == "val" or any(f.endswith(".bin") and "val" in root for f in files):
        found.append(root)
print("val found:", found, flush=True)
'''


@pytest.fixture
def env(tiny_cache, isolated_dirs, monkeypatch, docker_client):  # noqa: F811
    monkeypatch.setenv("HARNESS_CACHE_DIR", str(tiny_cache.data_dir.parent))
    monkeypatch.setenv("HARNESS_BASELINES", str(isolated_dirs / "baselines.json"))
    return isolated_dirs


@pytest.mark.docker
def test_verified_submit_in_containers(tiny_bench, env):
    searcher = env / "search.py"
    searcher.write_text(SEARCH_FOR_VAL + TOY.read_text())
    report = submit(searcher, SubmitOptions(benchmark=tiny_bench, backend="docker", seeds=1, budget_s=2,
                                            results_dir=env / "results", calibrate=False))
    r = report.results[0]
    assert r.status == "ok" and r.backend == "docker" and r.isolated, r.reason
    assert r.trust == "verified" and r.evaluation.evaluator["backend"] == "docker"
    assert "val found: []" in Path(r.log_path).read_text()  # hidden for real: not mounted at all
    assert r.provenance["image"]["id"].startswith("sha256:")
    assert r.val_bpb > r.provenance["benchmark"]["entropy_floor_bpb"]
    assert report.decision.keep  # the first verified result on this class becomes the reference


@pytest.mark.docker
def test_cli_run_uses_a_container_by_default_and_names_the_image(env):
    out = CliRunner().invoke(app, ["run", str(TOY), "--budget", "2", "--no-calibrate", "--json"])
    assert out.exit_code == 0, out.output
    doc = json.loads(out.stdout)
    assert doc["backend"] == "docker" and doc["trust"] == "self-reported"
    assert doc["provenance"]["image"]["tag"] == "harness-cpu:latest"
    text = CliRunner().invoke(app, ["run", str(TOY), "--budget", "2", "--no-calibrate"]).output
    assert "backend docker · image harness-cpu:latest sha256:" in text


@pytest.mark.docker
def test_a_benchmarks_runtime_puts_every_container_under_gvisor(env, tmp_path, monkeypatch):
    # benchmarks.yaml `runtime: runsc`: training, scorer and both model servers run under gVisor.
    import yaml

    doc = yaml.safe_load((REPO / "benchmarks.yaml").read_text())
    doc["benchmarks"]["tiny"]["runtime"] = "runsc"
    # gVisor's syscall layer makes `import torch` several times slower; on a loaded 2-core CI machine that
    # can pass tiny's 20 s to the first batch. What this test checks is the runtime, not the start-up clock.
    doc["benchmarks"]["tiny"]["clock"]["startup_s"] = 60
    (tmp_path / "benchmarks.yaml").write_text(yaml.safe_dump(doc))
    monkeypatch.setenv("HARNESS_BENCHMARKS", str(tmp_path / "benchmarks.yaml"))
    out = CliRunner().invoke(app, ["submit", str(TOY), "--seeds", "1", "--budget", "2", "--no-calibrate",
                                   "--json"])
    assert out.exit_code in (0, 1), out.output
    r = json.loads(Path(json.loads(out.stdout)["records"][0]).read_text())
    assert r["status"] == "ok" and r["trust"] == "verified", r["reason"]
    assert r["provenance"]["runtime"]["name"] == "runsc"
    assert r["provenance"]["runtime"]["version"].startswith("runsc version ")
    assert r["evaluation"]["evaluator"]["runtimes"] == ["runsc"]


@pytest.mark.docker
def test_an_unknown_runtime_on_the_command_line_is_infra_error(env):
    out = CliRunner().invoke(app, ["run", str(TOY), "--budget", "2", "--no-calibrate", "--runtime", "nosuch",
                                   "--json"])
    assert out.exit_code == 1, out.output
    doc = json.loads(out.stdout)
    assert doc["status"] == "infra_error" and "'nosuch' is not registered with dockerd" in doc["reason"]
    assert doc["trust"] != "verified"
