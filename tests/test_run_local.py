"""`harness run --backend local`: statuses, the harness's own clock, seeds, logs, Ctrl-C, the CLI."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from harness.cli import app
from harness.pipeline import RunOptions, execute_run
from tests.conftest import REPO

TOY = REPO / "tests" / "cases" / "toy_train.py"


@pytest.fixture
def cli_env(tiny_cache, isolated_dirs, monkeypatch):
    monkeypatch.setenv("HARNESS_CACHE_DIR", str(tiny_cache.data_dir.parent))
    return isolated_dirs


def write(tmp_path: Path, body: str) -> Path:
    p = tmp_path / "train.py"
    p.write_text(body)
    return p


def run_local(tiny_bench, tiny_cache, path, tmp_path, **kw):
    kw.setdefault("calibrate", False)  # a few seconds each; one test below keeps it
    opts = RunOptions(benchmark=tiny_bench, backend="local", runs_dir=tmp_path / "runs",
                      data_dir=tiny_cache.data_dir, baselines_path=tmp_path / "baselines.json", **kw)
    return execute_run(path, opts)


def test_ok_run_records_budget_seed_and_score(tiny_bench, tiny_cache, tmp_path):
    r = run_local(tiny_bench, tiny_cache, TOY, tmp_path, budget_s=2, seed=1234, calibrate=True)
    assert r.status == "ok", r.traceback_tail
    # Hardware: a CPU class here, calibration measured in the run's process space, no GPU telemetry.
    assert r.hardware.machine["class"].startswith("CPU-") and r.hardware.machine["class_info"]["peak_flops"]["bf16"] is None
    assert r.calibration["result"]["device"] == "cpu" and r.calibration["result"]["matmul_flops"] > 0
    assert r.timings.calibration_s is not None and r.timings.startup_s >= r.timings.calibration_s
    assert r.telemetry["summary"] is None and "no GPU" in r.telemetry["unavailable"]
    assert "no baseline for this class" in r.normalization["line"] and r.normalization["delta"] is None
    assert r.budget_s == 2 and r.provenance["seed"] == 1234
    assert r.trust == "unisolated" and r.backend == "local" and not r.isolated
    floor = tiny_cache.stats["entropy_floor_bpb"]
    assert floor < r.metrics["val_bpb"] < tiny_cache.stats["unigram_bpb"] + 1
    log = Path(r.log_path).read_text()
    assert "seed=1234" in log  # the harness's seed reached the run through prepare.SEED
    saved = json.loads((Path(r.log_path).parent / "result.json").read_text())
    assert saved["status"] == "ok" and saved["metrics"]["val_bpb"] == r.metrics["val_bpb"]
    prov = r.provenance
    assert prov["submission"]["sha256"] and prov["benchmark"]["manifest_sha256"] == tiny_cache.manifest_sha256
    assert prov["benchmark"]["prepare_sha256"] and prov["versions"]["torch"]
    assert r.timings.total_s >= 2 and r.timings.startup_s is not None


def test_seeds_are_fresh_unless_given(tiny_bench, tiny_cache, tmp_path):
    body = "import prepare\nprint('seed', prepare.SEED)\n"
    a = run_local(tiny_bench, tiny_cache, write(tmp_path, body), tmp_path)
    b = run_local(tiny_bench, tiny_cache, write(tmp_path, body), tmp_path)
    assert a.provenance["seed"] != b.provenance["seed"]
    assert f"seed {a.provenance['seed']}" in Path(a.log_path).read_text()


def test_crash_keeps_traceback_tail(tiny_bench, tiny_cache, tmp_path):
    r = run_local(tiny_bench, tiny_cache, write(tmp_path, "print('hi')\nraise ValueError('boom at step 3')\n"), tmp_path)
    assert r.status == "crash" and "exit code 1" in r.reason
    assert "ValueError: boom at step 3" in r.traceback_tail


def test_exit_zero_without_summary_is_a_crash(tiny_bench, tiny_cache, tmp_path):
    r = run_local(tiny_bench, tiny_cache, write(tmp_path, "print('done, no score')\n"), tmp_path)
    assert r.status == "crash" and "summary" in r.reason


def test_nan_status(tiny_bench, tiny_cache, tmp_path):
    body = "print('progress step=1 elapsed=0.1 budget=1 loss=nan')\nprint('FAIL: loss is nan')\nraise SystemExit(1)\n"
    r = run_local(tiny_bench, tiny_cache, write(tmp_path, body), tmp_path)
    assert r.status == "nan"


def test_harness_kills_at_hard_timeout(tiny_bench, tiny_cache, tmp_path):
    body = "import time\nprint('started', flush=True)\nwhile True:\n    time.sleep(0.1)\n"
    t0 = time.time()
    r = run_local(tiny_bench, tiny_cache, write(tmp_path, body), tmp_path, budget_s=1, hard_timeout_s=3)
    assert r.status == "timeout" and r.hard_timeout_s == 3
    assert time.time() - t0 < 15 and 2.5 < r.timings.total_s < 10


def test_background_child_does_not_outlive_the_run(tiny_bench, tiny_cache, tmp_path):
    marker = tmp_path / "alive"
    body = (f"import os, time\nif os.fork() == 0:\n    time.sleep(3)\n    open({str(marker)!r}, 'w').write('x')\n"
            "    os._exit(0)\nprint('parent exits')\n")
    r = run_local(tiny_bench, tiny_cache, write(tmp_path, body), tmp_path)
    time.sleep(4)
    assert not marker.exists()  # the child was killed with the run's process group
    assert r.status == "crash"


def test_each_run_has_a_temp_folder_of_its_own(tiny_bench, tiny_cache, tmp_path):
    # A shared /tmp let two runs' model servers write the same checked archive, so that one run's scorer
    # could load another run's model (found with two test workers): TMPDIR is the run's own work folder.
    body = "import os, tempfile\nprint('tmp', os.environ['TMPDIR'], tempfile.gettempdir())\nprint('---')\nprint('val_bpb: 3.0')\n"
    r = run_local(tiny_bench, tiny_cache, write(tmp_path, body), tmp_path)
    line = next(ln for ln in Path(r.log_path).read_text().splitlines() if ln.startswith("tmp "))
    _, env_tmp, py_tmp = line.split()
    assert env_tmp == py_tmp == str(Path(r.log_path).parent / "work")


def test_two_model_servers_on_one_host_share_no_file(tmp_path, monkeypatch):
    from harness.fixedcode import load_fixed_module

    ms = load_fixed_module("model_server")
    seen = []

    def refuse(src, dest):  # where the server would write the checked archive
        seen.append(Path(dest))
        raise ms.archive_check.ArchiveRefused("stop here")

    monkeypatch.setattr(ms.archive_check, "sanitize_archive", refuse)
    for _ in range(2):
        with pytest.raises(ms.InvalidModel):
            ms.load_program(tmp_path / "model.pt2", "cpu", tmp_path)
    assert seen[0].parent != seen[1].parent and {p.parent.parent for p in seen} == {tmp_path}
    assert list(tmp_path.iterdir()) == []  # and each folder is gone after the load


def test_log_is_capped(tiny_bench, tiny_cache, tmp_path):
    body = "for i in range(200000):\n    print('x' * 100)\nprint('---')\nprint('val_bpb: 2.5')\n"
    r = run_local(tiny_bench, tiny_cache, write(tmp_path, body), tmp_path, log_cap_bytes=100_000)
    assert r.log_truncated and Path(r.log_path).stat().st_size < 101_000
    assert "[harness] log truncated" in Path(r.log_path).read_text()
    assert r.status == "ok" and r.metrics["val_bpb"] == 2.5  # the tail, with the summary, survives a flood


def test_cli_run_says_unisolated(cli_env):
    result = CliRunner().invoke(app, ["run", str(TOY), "--backend", "local", "--budget", "2"])
    assert result.exit_code == 0, result.output
    assert "unisolated" in result.output and "val_bpb" in result.output


def test_cli_run_json_and_failing_exit_code(cli_env, tmp_path):
    bad = write(tmp_path, "raise SystemExit(3)\n")
    result = CliRunner().invoke(app, ["run", str(bad), "--backend", "local", "--json"])
    assert result.exit_code == 1
    doc = json.loads(result.stdout)
    assert doc["status"] == "crash" and doc["trust"] == "unisolated"


def test_cli_run_unprepared_benchmark_says_what_to_do(isolated_dirs, monkeypatch, tmp_path):
    monkeypatch.setenv("HARNESS_CACHE_DIR", str(tmp_path / "empty"))
    result = CliRunner().invoke(app, ["run", str(TOY), "--backend", "local"])
    assert result.exit_code == 2
    assert "harness prepare --benchmark tiny" in result.output


def test_ctrl_c_leaves_an_aborted_record(cli_env, tmp_path):
    body = "import time\nprint('progress step=1 elapsed=0.1 budget=60 loss=3.0', flush=True)\ntime.sleep(60)\n"
    path = write(tmp_path, body)
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "harness", "run", str(path), "--backend", "local"],
                            cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    runs = Path(os.environ["HARNESS_RUNS_DIR"])
    deadline = time.time() + 60
    while time.time() < deadline and not any(runs.glob("*/log.txt")):
        time.sleep(0.2)
    log = next(runs.glob("*/log.txt"))
    while time.time() < deadline and "progress" not in log.read_text():
        time.sleep(0.2)
    proc.send_signal(signal.SIGINT)
    out, _ = proc.communicate(timeout=30)
    assert proc.returncode == 1, out
    record = json.loads((log.parent / "result.json").read_text())
    assert record["status"] == "aborted"
    assert b"aborted" in out


def test_gpu_path_with_fake_nvml(tiny_bench, tiny_cache, tmp_path):
    """The run's GPU path end to end with a fake NVML: class label, the class's peak handed to train.py,
    host-side telemetry over the training window, and the throttled flag. (tests/gpu_check.sh runs
    the same path on a real GPU.)"""
    from tests.fakes import pynvml as fake

    gpu = fake.h100_sxm(script=[dict(x) for x in fake.THROTTLE_CYCLE], loop=True)  # throttles all run long
    body = TOY.read_text().replace('print(f"seed={SEED}", flush=True)',
                                   'import prepare\nprint(f"peak={prepare.PEAK_FLOPS}", flush=True)')
    r = run_local(tiny_bench, tiny_cache, write(tmp_path, body), tmp_path, budget_s=2,
                  nvml_module=fake.make_module([gpu]))
    assert r.status == "ok", r.traceback_tail
    assert r.hardware.machine["class"].startswith("H100-SXM-80GB") and r.hardware.machine["gpu"]["uuid"] == gpu.uuid
    assert "peak=989500000000000.0" in Path(r.log_path).read_text()
    summary = r.telemetry["summary"]
    assert summary["sample_count"] > 0 and Path(r.telemetry["series"]).is_file()
    assert "throttled" in r.flags


def test_a_runtime_never_falls_back_to_a_host_process(cli_env, tmp_path, monkeypatch):
    # Asked on the command line: the local backend cannot honour it, so nothing runs (exit 2, no run folder).
    for cmd in (["run", str(TOY)], ["submit", str(TOY), "--seeds", "1"]):
        result = CliRunner().invoke(app, [*cmd, "--backend", "local", "--runtime", "runsc", "--budget", "2"])
        assert result.exit_code == 2, result.output
        assert "runtime 'runsc' needs the docker backend" in result.output
    assert not (cli_env / "runs").exists() or not any((cli_env / "runs").iterdir())
    # Asked by the benchmark (benchmarks.yaml `runtime: runsc`): the same refusal.
    import yaml

    doc = yaml.safe_load((REPO / "benchmarks.yaml").read_text())
    doc["benchmarks"]["tiny"]["runtime"] = "runsc"
    (tmp_path / "benchmarks.yaml").write_text(yaml.safe_dump(doc))
    monkeypatch.setenv("HARNESS_BENCHMARKS", str(tmp_path / "benchmarks.yaml"))
    result = CliRunner().invoke(app, ["run", str(TOY), "--backend", "local", "--budget", "2"])
    assert result.exit_code == 2 and "runtime 'runsc' needs the docker backend" in result.output


def test_the_pipeline_asks_the_backend_where_the_run_happens(tiny_bench, tiny_cache, tmp_path):
    """A backend that runs elsewhere probes the hardware and samples telemetry there, and stages the run
    folder in and out: the record carries the executor's GPU, never the submitting machine's (a CPU here)."""
    from harness.backends.local import LocalBackend
    from harness.hw.context import detect_hardware
    from tests.fakes import pynvml as fake

    remote_gpu = fake.h100_sxm()
    remote_nvml = fake.make_module([remote_gpu])  # the executor's NVML, not this machine's

    class Remote(LocalBackend):
        name = "remote"
        staged: list[str] = []

        def probe_hardware(self, gpu=None, nvml_module=None):
            return detect_hardware(gpu, remote_nvml, probe_docker=False)

        def start_telemetry(self, gpu_uuid, series_path, nvml_module=None):
            return super().start_telemetry(gpu_uuid, series_path, remote_nvml)

        def stage_in(self, request):
            self.staged.append("in:" + request.run_id)

        def stage_out(self, request):
            self.staged.append("out:" + request.run_id)

    backend = Remote()
    opts = RunOptions(benchmark=tiny_bench, backend="remote", runs_dir=tmp_path / "runs", calibrate=False, budget_s=2,
                      data_dir=tiny_cache.data_dir, baselines_path=tmp_path / "baselines.json")
    r = execute_run(TOY, opts, backend=backend)
    assert r.status == "ok", r.traceback_tail
    assert r.hardware.machine["gpu"]["uuid"] == remote_gpu.uuid and r.hardware.machine["class"].startswith("H100")
    assert r.telemetry["summary"]["sample_count"] > 0  # sampled through the backend's hook
    assert backend.staged == [f"in:{r.run_id}", f"out:{r.run_id}"]
    assert detect_hardware(probe_docker=False).gpu is None  # this machine has no GPU: the label came from the executor
