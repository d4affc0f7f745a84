"""The device pool (harness/pool/): leases that two processes cannot share and that die with their holder,
members planned from the GPUs (fake NVML: no GPU here) or from disjoint CPU sets, and a real
`harness submit A B --parallel 2` whose two docker runs overlap in time on disjoint CPUs."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from harness.hw.context import detect_hardware
from harness.pool.lease import LeaseAborted, try_lease
from harness.pool.parallel import DevicePool
from harness.pool.slots import PoolError, PoolPlan, Slot, cpu_sets, parse_parallel, plan_pool
from tests.conftest import REPO
from tests.fakes import pynvml as fake

sys.path.insert(0, str(Path(__file__).parent))
from docker_support import docker_client  # noqa: E402,F401

TOY = REPO / "tests" / "cases" / "toy_train.py"

HOLD = """
import sys, time
sys.path.insert(0, {repo!r})
from pathlib import Path
from harness.pool.lease import try_lease
lease = try_lease({key!r}, Path({folder!r}))
print("held" if lease else "busy", flush=True)
time.sleep(60)
"""


def _holder(tmp_path: Path, key: str) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, "-c", HOLD.format(repo=str(REPO), key=key, folder=str(tmp_path))],
                            stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "held"
    return proc


def test_a_lease_held_by_another_process_is_refused_and_freed_by_kill_9(tmp_path):
    proc = _holder(tmp_path, "GPU-aaaa")
    try:
        assert try_lease("GPU-aaaa", tmp_path) is None  # another process holds it
        other = try_lease("GPU-bbbb", tmp_path)
        assert other is not None  # a different device is free
        other.release()
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    lease = try_lease("GPU-aaaa", tmp_path)  # the kernel dropped the lock with the process
    assert lease is not None
    lease.release()


def test_two_leases_on_one_device_exclude_each_other_within_one_process(tmp_path):
    first = try_lease("cpu0", tmp_path)
    assert first is not None and try_lease("cpu0", tmp_path) is None
    first.release()
    again = try_lease("cpu0", tmp_path)
    assert again is not None
    again.release()


def _hw(gpus):
    return detect_hardware(nvml_module=fake.make_module(gpus), probe_docker=False)


def _probe(gpus):
    module = fake.make_module(gpus)
    return lambda uuid: detect_hardware(uuid, nvml_module=module, probe_docker=False)


def test_the_pool_has_one_member_per_gpu_by_uuid_and_gpus_restricts_it():
    gpus = [fake.h100_sxm(uuid="GPU-0"), fake.h100_sxm(uuid="GPU-1"), fake.h100_sxm(uuid="GPU-2")]
    plan = plan_pool("auto", None, _hw(gpus), _probe(gpus))
    assert [s.gpu for s in plan.slots] == ["GPU-0", "GPU-1", "GPU-2"] and not plan.shared_host
    assert all(s.hardware.gpu.uuid == s.gpu for s in plan.slots)  # each member's runs are given that GPU
    assert [s.keys for s in plan.slots] == [("GPU-0",), ("GPU-1",), ("GPU-2",)]
    picked = plan_pool("auto", "0,GPU-2", _hw(gpus), _probe(gpus))
    assert [s.gpu for s in picked.slots] == ["GPU-0", "GPU-2"]
    assert plan_pool("2", None, _hw(gpus), _probe(gpus)).size == 2
    with pytest.raises(PoolError, match="only 3 GPU"):
        plan_pool("4", None, _hw(gpus), _probe(gpus))
    with pytest.raises(PoolError, match="no runnable GPU '7'.*GPU-0"):
        plan_pool("auto", "7", _hw(gpus), _probe(gpus))


def test_a_mig_slice_is_a_member_of_its_own_class_and_classes_are_not_mixed():
    gpus = [fake.a100_with_mig(), fake.h100_sxm(uuid="GPU-9")]
    with pytest.raises(PoolError, match="mixes GPU classes.*--gpus"):
        plan_pool("auto", None, _hw(gpus), _probe(gpus))
    mig = plan_pool("auto", "MIG-66666666-6666-6666-6666-666666666666", _hw(gpus), _probe(gpus))
    assert mig.size == 1 and "MIG-1g.10gb" in mig.slots[0].hardware.cls.label
    assert mig.slots[0].keys == ("MIG-66666666-6666-6666-6666-666666666666",)


def test_without_a_gpu_n_members_get_disjoint_cpu_sets_and_are_flagged_shared():
    assert cpu_sets(2, [0, 1, 2, 3, 4]) == [[0, 1, 2], [3, 4]]
    with pytest.raises(PoolError, match="only 2 CPU"):
        cpu_sets(3, [0, 1])
    hw = _hw([])
    plan = plan_pool("2", None, hw, _probe([]), cpus=[0, 1, 2, 3])
    assert [s.cpuset for s in plan.slots] == ["0,1", "2,3"] and plan.shared_host
    assert set(plan.slots[0].keys).isdisjoint(plan.slots[1].keys)
    one = plan_pool("auto", None, hw, _probe([]), cpus=[0, 1])
    assert one.size == 1 and not one.shared_host and one.slots[0].cpuset is None
    for bad in ("0", "-1", "many"):
        with pytest.raises(PoolError, match="auto or a number"):
            parse_parallel(bad)


def _cpu_plan(n: int) -> PoolPlan:
    hw = _hw([])
    return PoolPlan(tuple(Slot(f"s{i}", (f"cpu{i}",), hw, cpuset=str(i)) for i in range(n)), shared_host=n > 1)


def test_pool_map_runs_at_most_size_at_once_and_two_pools_never_share_a_member(tmp_path):
    busy: dict[str, int] = {}
    most: dict[str, int] = {}
    guard = threading.Lock()

    def job(slot: Slot) -> str:
        with guard:
            busy[slot.name] = busy.get(slot.name, 0) + 1
            most[slot.name] = max(most.get(slot.name, 0), busy[slot.name])
        time.sleep(0.3)
        with guard:
            busy[slot.name] -= 1
        return slot.name

    # two pools over the same two CPUs and lease folder: two harness processes on one machine
    a, b = DevicePool(_cpu_plan(2), tmp_path), DevicePool(_cpu_plan(2), tmp_path)
    out: list = []
    threads = [threading.Thread(target=lambda p=p: out.append(p.map([job] * 4))) for p in (a, b)]
    started = time.time()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    names = [n for r in out for n in r]
    assert len(names) == 8 and set(names) <= {"s0", "s1"}  # every job ran, each on a member
    assert max(most.values()) == 1  # never two jobs on one member, across both pools
    assert time.time() - started >= 0.3 * 8 / 2 - 0.05  # eight jobs on two members: four rounds at least


def test_a_stopped_pool_starts_nothing_more(tmp_path):
    pool = DevicePool(_cpu_plan(1), tmp_path)
    held = try_lease("cpu0", tmp_path)  # someone else has the only member
    ran: list = []
    threading.Timer(0.5, pool.stop.set).start()
    result = pool.map([lambda s: ran.append(s)])
    held.release()
    assert result == [None] and ran == []
    with pytest.raises(LeaseAborted):
        with pool.member():
            pass


@pytest.fixture
def docker_env(tiny_cache, isolated_dirs, monkeypatch, docker_client):  # noqa: F811
    monkeypatch.setenv("HARNESS_CACHE_DIR", str(tiny_cache.data_dir.parent))
    monkeypatch.setenv("HARNESS_BASELINES", str(isolated_dirs / "baselines.json"))
    monkeypatch.setenv("HARNESS_STATE_DIR", str(isolated_dirs / "state"))
    monkeypatch.chdir(isolated_dirs)
    return isolated_dirs


@pytest.mark.docker
def test_submit_two_candidates_in_parallel_overlap_on_disjoint_cpus(docker_env):
    """The issue's check: --parallel 2 on this machine runs two at once; their windows overlap."""
    second = docker_env / "b.py"
    second.write_text(TOY.read_text().replace("lr=0.05", "lr=0.04"))
    cmd = [sys.executable, "-m", "harness", "submit", str(TOY), str(second), "-b", "tiny", "--seeds", "1",
           "--budget", "4", "--backend", "docker", "--parallel", "2", "--no-calibrate", "--json"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600, cwd=docker_env)
    assert proc.returncode in (0, 1), proc.stderr[-3000:]
    subs = json.loads(proc.stdout)["submissions"]
    assert len(subs) == 2 and all("error" not in s for s in subs), proc.stdout
    records = [json.loads(Path(s["records"][0]).read_text()) for s in subs]
    assert all(r["status"] == "ok" and r["trust"] == "verified" for r in records), [r["reason"] for r in records]
    assert all("shared_host" in r["flags"] for r in records)  # a CPU pool: never a baseline
    places = [r["provenance"]["placement"] for r in records]
    sets = [set(p["cpuset"].split(",")) for p in places]
    assert sets[0].isdisjoint(sets[1]) and all(p["shared_host"] and p["node"] for p in places)
    (s1, e1), (s2, e2) = [(r["timings"]["started_at"], r["timings"]["ended_at"]) for r in records]
    assert s1 < e2 and s2 < e1, "the two runs did not overlap"


def test_a_run_outside_a_pool_waits_for_its_device_and_gives_up_when_stopped(tmp_path):
    from harness.pool.parallel import run_keys, run_lease

    hw = _hw([])
    keys = run_keys(hw, None)
    assert keys == tuple(f"cpu{c}" for c in sorted(os.sched_getaffinity(0)))  # a CPU run has the host
    proc = _holder(tmp_path, keys[-1])  # another harness process's pool member holds one CPU
    notes: list[str] = []
    stop = threading.Event()
    threading.Timer(0.6, stop.set).start()
    try:
        with pytest.raises(LeaseAborted):
            with run_lease(hw, None, notes.append, stop, lease_dir=tmp_path):
                pass
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    assert notes and "waiting for" in notes[0]
    with run_lease(hw, None, notes.append, lease_dir=tmp_path):  # freed with its holder
        assert try_lease(keys[0], tmp_path) is None  # held by this run now
    gpu_hw = _hw([fake.h100_sxm(uuid="GPU-7")])
    assert run_keys(gpu_hw, None) == ("GPU-7",)  # a GPU run leases its GPU only


def test_the_local_backend_gives_a_run_only_the_gpu_it_was_given(tmp_path, tiny_bench):
    from harness import paths
    from harness.backends.base import RunRequest
    from harness.backends.local import LocalBackend

    lines: list[str] = []
    for uuids in (["GPU-abc"], []):
        run_dir = tmp_path / f"r{len(uuids)}"
        (run_dir / "out").mkdir(parents=True)
        (run_dir / "train.py").write_text("import os; print('cvd=' + repr(os.environ.get('CUDA_VISIBLE_DEVICES')))\n")
        req = RunRequest(run_id=run_dir.name, train_py=run_dir / "train.py", benchmark=tiny_bench,
                         data_dir=tmp_path, fixed_dir=paths.fixed_dir(), run_dir=run_dir, hard_timeout_s=30,
                         gpu_uuids=uuids)
        LocalBackend().execute(req, lines.append)
    assert "cvd='GPU-abc'" in lines and "cvd=''" in lines


def test_ctrl_c_on_a_pool_aborts_every_running_run_each_with_its_record(tiny_cache, isolated_dirs):
    runs = isolated_dirs / "runs"
    second = isolated_dirs / "b.py"
    second.write_text(TOY.read_text().replace("lr=0.05", "lr=0.04"))
    env = {**os.environ, "HARNESS_CACHE_DIR": str(tiny_cache.data_dir.parent), "HARNESS_RUNS_DIR": str(runs),
           "HARNESS_RESULTS": str(isolated_dirs / "results"), "HARNESS_STATE_DIR": str(isolated_dirs / "state"),
           "HARNESS_BASELINES": str(isolated_dirs / "b.json")}
    proc = subprocess.Popen([sys.executable, "-m", "harness", "submit", str(TOY), str(second), "--budget", "60",
                             "--seeds", "1", "--backend", "local", "--no-calibrate", "--parallel", "2", "--json"],
                            cwd=isolated_dirs, env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    deadline = time.time() + 120
    while time.time() < deadline and sum("progress" in p.read_text() for p in runs.glob("*/log.txt")) < 2:
        time.sleep(0.3)
    proc.send_signal(signal.SIGINT)
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 1
    subs = json.loads(out)["submissions"]
    assert all("records" in s for s in subs), subs
    records = [json.loads(Path(p).read_text()) for s in subs for p in s["records"]]
    assert len(records) == 2 and all(r["status"] == "aborted" for r in records), [r["status"] for r in records]
    assert all(s["decision"] == "discard" and "aborted" in s["reason"] for s in subs)
    assert not list(runs.glob("*/journal.json"))  # every run's record written, none left to recover
