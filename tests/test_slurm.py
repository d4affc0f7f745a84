"""Slurm through submitit, on a real one-node cluster (.ci/slurm-up starts it; .ci/run calls it): real jobs
run real tiny training in docker on the node, one is cancelled mid-run, and the hardware a record names is
the node's (the fake NVML is given to the job's environment only). Plus the [slurm] config file's errors."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from harness.slurm.config import SlurmConfigError, load_slurm_options, sbatch_parameters
from tests.conftest import REPO

sys.path.insert(0, str(Path(__file__).parent))
from docker_support import docker_client  # noqa: E402,F401

TOY = REPO / "tests" / "cases" / "toy_train.py"
FAKES = REPO / "tests" / "fakes"  # holds pynvml.py: on a job's PYTHONPATH it is the node's NVML


# --- the config file --------------------------------------------------------------------------

def test_the_slurm_section_is_read_and_the_command_line_wins(tmp_path):
    cfg = tmp_path / "config.toml"
    cfg.write_text('[slurm]\nshared_dir = "/shared/h"\npartition = "gpu"\ngpus = 1\nrequeue = true\n'
                   'sbatch = ["--constraint=h100"]\nsetup = ["module load cuda"]\n')
    o = load_slurm_options(cfg, partition="debug", sbatch=("--exclusive",))
    assert (o.shared_dir, o.partition, o.gpus, o.requeue) == (Path("/shared/h"), "debug", 1, True)
    assert o.sbatch == ("--constraint=h100", "--exclusive") and o.setup == ("module load cuda",)
    assert sbatch_parameters(o.sbatch) == {"constraint": "h100", "exclusive": True}


@pytest.mark.parametrize("text, names", [
    ("[slurm]\npartion = 'gpu'\n", "[slurm] partion: unknown setting"),
    ("[slurm]\ngpus = 'one'\n", "[slurm] gpus = 'one': expected int"),
    ("[slurm]\nrequeue = 1\n", "[slurm] requeue = 1: expected bool"),
    ("[slurm]\nsbatch = ['constraint=h100']\n", "[slurm] sbatch: a list of sbatch options"),
    ("[slurm\n", "not valid TOML"),
])
def test_a_bad_setting_names_the_file_and_the_key(tmp_path, text, names):
    cfg = tmp_path / "config.toml"
    cfg.write_text(text)
    with pytest.raises(SlurmConfigError) as e:
        load_slurm_options(cfg)
    assert str(cfg) in str(e.value) and names in str(e.value)


def test_submit_without_a_shared_dir_says_how_to_give_one(tmp_path, monkeypatch):
    monkeypatch.setenv("HARNESS_CONFIG_DIR", str(tmp_path))  # no config file
    proc = subprocess.run([sys.executable, "-m", "harness", "submit", str(TOY), "--backend", "slurm"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert "--shared-dir" in proc.stderr or "sbatch is not on PATH" in proc.stderr


# --- a real cluster ---------------------------------------------------------------------------

def _cluster_up() -> None:
    if shutil.which("sinfo") is None or subprocess.run(["sinfo", "-h"], capture_output=True).returncode != 0:
        if os.environ.get("CI"):
            pytest.fail("no Slurm cluster answers: .ci/run starts one with .ci/slurm-up")
        pytest.skip("no Slurm cluster answers (start one: .ci/slurm-up)")


@pytest.fixture
def cluster(tiny_cache, isolated_dirs, monkeypatch, docker_client):  # noqa: F811
    _cluster_up()
    shared = isolated_dirs / "shared"
    shared.mkdir()
    monkeypatch.setenv("HARNESS_CACHE_DIR", str(tiny_cache.data_dir.parent))
    monkeypatch.setenv("HARNESS_BASELINES", str(isolated_dirs / "baselines.json"))
    monkeypatch.setenv("HARNESS_CONFIG_DIR", str(isolated_dirs / "config"))
    # The jobs' device leases apart from every other test's: a job whose harness outlives its test (a
    # killed node's, until Slurm ends it) must not make another test's run wait for its CPU.
    monkeypatch.setenv("HARNESS_STATE_DIR", str(isolated_dirs / "state"))
    (isolated_dirs / "config").mkdir()
    (isolated_dirs / "config" / "config.toml").write_text("[slurm]\ncpus_per_task = 1\n")  # two jobs at once
    monkeypatch.chdir(isolated_dirs)
    return shared


def _submit(shared: Path, *args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "harness", "submit", *args, "-b", "tiny", "--seeds", "1", "--backend", "slurm",
           "--shared-dir", str(shared), "--no-calibrate", "--json"]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)


def _records(proc: subprocess.CompletedProcess) -> list[dict]:
    doc = json.loads(proc.stdout)
    subs = doc.get("submissions", [doc])
    return [json.loads(Path(p).read_text()) for s in subs for p in s["records"]]


@pytest.mark.slurm
@pytest.mark.docker
def test_two_candidates_run_as_two_slurm_jobs_in_docker_on_the_node(cluster):
    """The issue's check: two candidates, --backend slurm: two real jobs, two records naming job and node."""
    second = cluster.parent / "b.py"
    second.write_text(TOY.read_text().replace("lr=0.05", "lr=0.04"))
    proc = _submit(cluster, str(TOY), str(second), "--budget", "4")
    assert proc.returncode in (0, 1), proc.stderr[-3000:]
    records = _records(proc)
    assert len(records) == 2
    for r in records:
        assert r["status"] == "ok" and r["trust"] == "verified", r["reason"]
        place = r["provenance"]["placement"]
        assert place["scheduler"] == "slurm" and place["job_id"] and place["node"] == socket.gethostname()
        assert len(place["cpuset"].split(",")) == 1  # the one CPU Slurm bound the job to, its containers too
        assert r["backend"] == "docker" and r["provenance"]["image"]  # the node ran it in a container
        assert Path(r["log_path"]).is_relative_to(cluster)  # its run folder is in the shared folder
    assert len({r["provenance"]["placement"]["job_id"] for r in records}) == 2  # two jobs
    listed = subprocess.run([sys.executable, "-m", "harness", "slurm", "status", "--json"], capture_output=True,
                            text=True, timeout=60)
    assert listed.returncode == 0, listed.stderr


@pytest.mark.slurm
def test_the_hardware_of_a_record_is_the_nodes_not_the_submitters(cluster):
    """The job's environment alone has a (fake) H100: its record says H100; this process sees a CPU."""
    from harness.hw.context import detect_hardware

    here = detect_hardware(probe_docker=False).cls.label
    assert "H100" not in here
    cfg = cluster.parent / "config" / "config.toml"
    cfg.write_text(f'[slurm]\ncpus_per_task = 1\nnode_backend = "local"\nsetup = ["export PYTHONPATH={FAKES}"]\n')
    proc = _submit(cluster, str(TOY), "--budget", "3")
    assert proc.returncode in (0, 1), proc.stderr[-3000:]
    (r,) = _records(proc)
    assert r["status"] == "ok", r["reason"]
    assert "H100" in r["hardware"]["class"], r["hardware"]["class"]  # probed on the node
    assert r["hardware"]["gpu"]["uuid"] == r["provenance"]["placement"]["gpu_uuid"]
    assert r["telemetry"]["summary"] is not None  # NVML sampled where the run was
    assert r["trust"] == "unisolated" and r["backend"] == "local"  # asked for, and labelled


def _job_of(run_dir_glob: Path, timeout: float = 120) -> tuple[str, Path]:
    """The Slurm job id and run folder of the one harness job running now, once its run has started."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        out = subprocess.run(["squeue", "-h", "--name", "harness", "-t", "RUNNING", "-o", "%i"],
                             capture_output=True, text=True).stdout.split()
        logs = list(run_dir_glob.glob("runs/*/log.txt"))
        if out and logs and "step" in logs[0].read_text(errors="replace"):
            return out[0], logs[0].parent
        time.sleep(1)
    raise AssertionError("no harness job started training in time")


@pytest.mark.slurm
@pytest.mark.docker
def test_scancel_mid_run_leaves_an_aborted_record(cluster):
    result: dict = {}
    t = threading.Thread(target=lambda: result.update(proc=_submit(cluster, str(TOY), "--budget", "60")))
    t.start()
    job, run_dir = _job_of(cluster)
    subprocess.run(["scancel", job], check=True)
    t.join(300)
    proc = result["proc"]
    assert proc.returncode == 1, proc.stderr[-3000:]
    (r,) = _records(proc)
    assert r["status"] == "aborted" and r["provenance"]["placement"]["job_id"].split("_")[0] == job.split("_")[0]
    assert r["run_id"] == run_dir.name and (run_dir / "result.json").is_file()
    assert json.loads(proc.stdout)["decision"] == "discard"


@pytest.mark.slurm
@pytest.mark.docker
def test_a_node_that_dies_under_a_run_ends_infra_error_with_slurms_reason(cluster):
    """slurmd killed under a running job: Slurm declares the node down and the job NODE_FAIL; the run's
    record says infra_error with Slurm's words, and a later job of the dead one cannot replace it."""
    result: dict = {}
    t = threading.Thread(target=lambda: result.update(proc=_submit(cluster, str(TOY), "--budget", "60")))
    t.start()
    try:
        job, run_dir = _job_of(cluster)
        subprocess.run(["pkill", "-9", "-x", "slurmd"], check=True)
        t.join(300)
    finally:
        subprocess.run(["bash", str(REPO / ".ci" / "slurm-up")], capture_output=True, timeout=300)
    proc = result["proc"]
    assert proc.returncode == 1, proc.stderr[-3000:]
    (r,) = _records(proc)
    assert r["status"] == "infra_error" and "NODE_FAIL" in r["reason"], r["reason"]
    assert r["run_id"] == run_dir.name and r["provenance"]["placement"]["job_id"].split("_")[0] == job.split("_")[0]
    stored = json.loads((run_dir / "result.json").read_text())
    deadline = time.time() + 30  # slurmd is back: it kills the orphaned job, whose harness must keep out
    while time.time() < deadline and subprocess.run(["squeue", "-h", "--name", "harness"], capture_output=True,
                                                    text=True).stdout.strip():
        time.sleep(1)
    time.sleep(2)
    assert json.loads((run_dir / "result.json").read_text())["status"] == stored["status"] == "infra_error"


@pytest.mark.slurm
@pytest.mark.docker
def test_requeue_runs_a_lost_run_once_more_and_the_lost_attempt_keeps_its_record(cluster):
    result: dict = {}
    t = threading.Thread(target=lambda: result.update(
        proc=_submit(cluster, str(TOY), "--budget", "8", "--requeue", "--results", str(cluster.parent / "results"))))
    t.start()
    try:
        job, run_dir = _job_of(cluster)
        subprocess.run(["pkill", "-9", "-x", "slurmd"], check=True)
        deadline = time.time() + 60  # Slurm declares the node down (about 9 s here), the harness resubmits
        while time.time() < deadline and not (run_dir / "settled").exists():
            time.sleep(1)
    finally:
        subprocess.run(["bash", str(REPO / ".ci" / "slurm-up")], capture_output=True, timeout=300)
    t.join(400)
    proc = result["proc"]
    (r,) = _records(proc)
    assert r["status"] == "ok" and r["run_id"] != run_dir.name, (r["status"], r["reason"], proc.stderr[-2000:])
    assert r["provenance"]["placement"]["job_id"].split("_")[0] != job.split("_")[0]  # a second job
    lost = json.loads((cluster.parent / "results" / "runs" / f"{run_dir.name}.json").read_text())
    assert lost["status"] == "infra_error" and "requeued once" in lost["reason"]


def test_the_command_line_may_add_placement_options_only_and_no_control_characters(tmp_path):
    missing = tmp_path / "none.toml"
    missing.write_text("")
    assert load_slurm_options(missing, sbatch=("--constraint=h100",)).sbatch == ("--constraint=h100",)
    for bad in ("--export=ALL,PYTHONPATH=/agent", "--chdir=/tmp", "--output=/shared/runs/x/result.json", "--wrap=id"):
        with pytest.raises(SlurmConfigError, match="not an option the command line may add"):
            load_slurm_options(missing, sbatch=(bad,))
    with pytest.raises(SlurmConfigError, match="control characters"):
        load_slurm_options(missing, sbatch=("--comment=x\ntouch /tmp/pwned #",))
    with pytest.raises(SlurmConfigError, match="control characters"):
        load_slurm_options(missing, partition="debug\n#SBATCH --export=ALL")


def test_a_record_in_the_shared_folder_is_believed_only_for_the_run_asked_for(tmp_path, tiny_bench, tiny_cache,
                                                                            isolated_dirs, monkeypatch):
    """A job's result.json is another process's file: it must name the run, the candidate's sha256, the
    benchmark, the node backend and its isolation that this host asked for, or the run is infra_error."""
    from harness.pipeline import RunOptions, execute_run
    from harness.pipeline.remote import RemoteRun
    from harness.slurm.backend import SlurmBackend
    from harness.slurm.config import SlurmOptions

    monkeypatch.setenv("HARNESS_CACHE_DIR", str(tiny_cache.data_dir.parent))
    shared = tmp_path / "shared"
    backend = SlurmBackend(options=SlurmOptions(shared_dir=shared, node_backend="local"))
    bench = tiny_bench

    class Job:
        job_id = "7_0"

    run = RemoteRun(TOY, bench, budget_s=1, calibrate=False)
    spec = backend._spec(shared, run)
    record = execute_run(Path(spec["train_py"]), RunOptions(
        benchmark=bench, backend="local", budget_s=1, calibrate=False, runs_dir=shared / "runs", run_id=run.run_id,
        scheduler={"name": "slurm", "job_id": "7_0"}), write=True)  # what the job writes on its node
    path = Path(record.log_path).parent / "result.json"
    written = path.read_text()

    def run_as_job(edit) -> dict:
        doc = json.loads(written)
        edit(doc)
        path.write_text(json.dumps(doc))
        (path.parent / "settled").unlink(missing_ok=True)
        return backend._record(shared, run, Job(), "COMPLETED", None).to_dict()

    honest = run_as_job(lambda d: None)
    assert honest["status"] == "ok" and honest["trust"] == "unisolated"
    forged = run_as_job(lambda d: d.update(backend="docker", isolated=True))
    assert forged["status"] == "infra_error" and "backend 'docker', not 'local'" in forged["reason"]
    other = run_as_job(lambda d: d["provenance"]["submission"].update(sha256="0" * 64))
    assert other["status"] == "infra_error" and "submission sha256" in other["reason"]
    path.write_text(written)  # an honest-looking record beside a job whose harness failed is not its word
    failed = backend._record(shared, run, Job(), "FAILED", None).to_dict()
    assert failed["status"] == "infra_error" and "ended FAILED" in failed["reason"]
