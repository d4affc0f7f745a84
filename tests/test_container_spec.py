"""The container spec: every isolation knob, read without a Docker daemon."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import docker.types
import pytest

from harness.backends.base import RunRequest
from harness.benchmarks import Limits, load_benchmarks, size_bytes
from harness.backends.docker.keeper import KEEPER_MARGIN_S, KEEPER_SOURCE
from harness.backends.docker.spec import ContainerSpec, container_name, container_spec, run_command

IMAGE = "harness-cpu:latest"


@pytest.fixture
def bench():
    return load_benchmarks()["tiny"]


def make_request(tmp_path: Path, bench, **kw) -> RunRequest:
    run_dir = tmp_path / "runs" / "r1"
    defaults = dict(
        run_id="r1",
        train_py=tmp_path / "submission" / "train.py",
        benchmark=bench,
        data_dir=tmp_path / "cache" / "tiny",
        fixed_dir=tmp_path / "fixed",
        run_dir=run_dir,
        env={
            "HARNESS_BENCHMARK": "tiny",
            "HARNESS_DATA_DIR": str(tmp_path / "cache" / "tiny"),
            "HARNESS_OUT_DIR": str(run_dir / "out"),
            "HARNESS_TIME_BUDGET": "60.0",
            "HARNESS_SEED": "7",
            "HARNESS_MODEL_HINT": '{"depth": 4}',
            "PATH": "/home/me/.venv/bin:/usr/bin",
            "CUDA_VISIBLE_DEVICES": "3",
        },
        hard_timeout_s=240.0,
    )
    defaults.update(kw)
    return RunRequest(**defaults)


def mounts_by_target(spec: ContainerSpec) -> dict[str, dict]:
    return {m["Target"]: m for m in spec.mounts}


def test_mounts_exactly_three_read_only_binds_and_out_is_a_capped_tmpfs(tmp_path, bench):
    req = make_request(tmp_path, bench)
    spec = container_spec(req, IMAGE)
    m = mounts_by_target(spec)
    assert set(m) == {"/work/train.py", "/fixed", "/data"}
    assert all(x["Type"] == "bind" for x in m.values())
    assert m["/work/train.py"]["Source"] == str((req.run_dir / "train.py").absolute())
    assert m["/fixed"]["Source"] == str(req.fixed_dir.absolute())
    assert m["/data"]["Source"] == str(req.data_dir.absolute())
    assert all(x["ReadOnly"] is True for x in m.values())  # nothing of the host is writable
    for x in m.values():
        assert Path(x["Source"]).is_absolute()
    # /out: a tmpfs of limits.output bytes, one inode per 4 KiB of it; nothing on the host disk
    cap = size_bytes(bench.limits.output)
    assert spec.tmpfs["/out"] == f"size={cap},nr_inodes={cap // 4096},mode=1777"


def test_filesystem_network_privileges(tmp_path, bench):
    spec = container_spec(make_request(tmp_path, bench), IMAGE)
    assert spec.read_only is True
    assert set(spec.tmpfs) == {"/tmp", "/out"}
    assert spec.tmpfs["/tmp"] == f"size={bench.limits.tmpfs},mode=1777"
    assert spec.network_mode == "none"
    assert spec.cap_drop == ["ALL"]
    assert spec.security_opt == ["no-new-privileges"]
    assert spec.user == "1000:1000"
    assert spec.init is False  # the keeper is PID 1 (it reaps orphans and keeps the deadline)
    assert spec.command[:5] == ["python3", "-I", "-S", "-c", KEEPER_SOURCE]
    assert spec.runtime is None and "runtime" not in spec.to_create_kwargs()  # the daemon's default
    assert spec.working_dir == "/work"
    assert spec.stdin_open is False and spec.tty is False
    assert spec.image == IMAGE
    assert not getattr(spec, "privileged", False)
    kwargs = spec.to_create_kwargs()
    for banned in ("privileged", "cap_add", "network", "pid_mode", "ipc_mode", "volumes", "devices", "auto_remove"):
        assert banned not in kwargs


def test_uid_parameter(tmp_path, bench):
    spec = container_spec(make_request(tmp_path, bench), IMAGE, uid=1234)
    assert spec.user == "1234:1234"


def test_resource_limits_from_benchmark(tmp_path, bench):
    spec = container_spec(make_request(tmp_path, bench), IMAGE)
    lim = bench.limits
    assert spec.pids_limit == lim.pids
    assert spec.mem_limit == size_bytes(lim.memory)
    assert spec.memswap_limit == spec.mem_limit  # no swap on top of memory
    assert spec.shm_size == size_bytes(lim.shm)
    assert spec.nano_cpus == int(lim.cpus * 1e9)


def test_limits_follow_any_benchmark(tmp_path, bench):
    small = dataclasses.replace(bench, limits=Limits(memory="64m", shm="8m", pids=32, tmpfs="4m", output="1m"))
    spec = container_spec(make_request(tmp_path, small), IMAGE)
    assert spec.mem_limit == spec.memswap_limit == 64 << 20
    assert spec.shm_size == 8 << 20
    assert spec.pids_limit == 32
    assert spec.tmpfs["/tmp"] == "size=4m,mode=1777"
    assert spec.tmpfs["/out"] == f"size={1 << 20},nr_inodes=256,mode=1777"
    assert spec.nano_cpus is None
    assert "nano_cpus" not in spec.to_create_kwargs()


def test_environment_rewritten_for_container(tmp_path, bench):
    req = make_request(tmp_path, bench)
    env = container_spec(req, IMAGE).environment
    assert env["HARNESS_DATA_DIR"] == "/data"
    assert env["HARNESS_OUT_DIR"] == "/out"
    assert env["PYTHONPATH"] == "/fixed"
    assert env["PYTHONUNBUFFERED"] == "1"
    assert env["HOME"] == "/tmp"
    assert env["HARNESS_BENCHMARK"] == "tiny"
    assert env["HARNESS_SEED"] == "7"
    assert env["HARNESS_TIME_BUDGET"] == "60.0"
    assert env["HARNESS_MODEL_HINT"] == '{"depth": 4}'
    assert "NVIDIA_DRIVER_CAPABILITIES" not in env
    # host-only variables never leak in, and no value names a host path
    assert "PATH" not in env and "CUDA_VISIBLE_DEVICES" not in env
    for value in env.values():
        assert str(tmp_path) not in value


def test_no_gpus_no_device_requests(tmp_path, bench):
    spec = container_spec(make_request(tmp_path, bench), IMAGE)
    assert spec.device_requests is None
    assert "device_requests" not in spec.to_create_kwargs()


def test_gpus_exactly_the_requested_uuids(tmp_path, bench):
    uuids = ["GPU-aaaa-1111", "GPU-bbbb-2222"]
    spec = container_spec(make_request(tmp_path, bench, gpu_uuids=uuids), IMAGE)
    assert len(spec.device_requests) == 1
    dr = spec.device_requests[0]
    assert isinstance(dr, docker.types.DeviceRequest)
    assert dr.device_ids == uuids
    assert dr.capabilities == [["gpu"]]
    assert dr.count in (None, 0)  # never "all"
    assert spec.environment["NVIDIA_DRIVER_CAPABILITIES"] == "compute,utility"


def test_labels(tmp_path, bench):
    spec = container_spec(make_request(tmp_path, bench, run_id="2024-01-01_abc"), IMAGE)
    assert spec.labels == {"harness": "1", "harness.run_id": "2024-01-01_abc", "harness.benchmark": "tiny"}


def test_command_default_and_override(tmp_path, bench):
    spec = container_spec(make_request(tmp_path, bench), IMAGE)
    assert run_command(spec.command) == ["python3", "-u", "/work/train.py"]
    cmd = ["python3", "-m", "harness_eval", "/out/model.pt"]
    assert run_command(container_spec(make_request(tmp_path, bench, command=cmd), IMAGE).command) == cmd


def test_keeper_deadline_token_and_runtime(tmp_path, bench):
    req = make_request(tmp_path, bench, hard_timeout_s=240.0)
    spec = container_spec(req, IMAGE, keeper_token="ab" * 16, runtime="runsc")
    # python3 -I -S -c KEEPER <deadline> <linger> -- command...
    assert float(spec.command[5]) == 240.0 + KEEPER_MARGIN_S
    assert spec.command[7] == "--"
    assert spec.environment["HARNESS_KEEPER_TOKEN"] == "ab" * 16
    assert spec.runtime == "runsc" and spec.to_create_kwargs()["runtime"] == "runsc"
    assert "HARNESS_KEEPER_TOKEN" not in container_spec(req, IMAGE).environment
    compile(KEEPER_SOURCE, "keeper", "exec")


def test_request_env_cannot_set_the_keeper_token(tmp_path, bench):
    req = make_request(tmp_path, bench)
    req.env["HARNESS_KEEPER_TOKEN"] = "chosen-by-someone-else"
    req.env["HARNESS_KEEPER_FD"] = "0"
    env = container_spec(req, IMAGE, keeper_token="ours").environment
    assert env["HARNESS_KEEPER_TOKEN"] == "ours" and "HARNESS_KEEPER_FD" not in env
    assert "HARNESS_KEEPER_TOKEN" not in container_spec(req, IMAGE).environment


def test_no_log_copy_in_daemon_and_no_core_dumps(tmp_path, bench):
    spec = container_spec(make_request(tmp_path, bench), IMAGE)
    assert spec.log_config["Type"] == "none"
    assert {u["Name"]: (u["Soft"], u["Hard"]) for u in spec.ulimits} == {"core": (0, 0)}


def test_to_create_kwargs_matches_docker_sdk_signature(tmp_path, bench):
    """Every key is a keyword `containers.create` understands (docker-py validates them)."""
    from docker.models.containers import RUN_CREATE_KWARGS, RUN_HOST_CONFIG_KWARGS

    kwargs = container_spec(make_request(tmp_path, bench, gpu_uuids=["GPU-x"]), IMAGE).to_create_kwargs()
    known = set(RUN_CREATE_KWARGS) | set(RUN_HOST_CONFIG_KWARGS) | {"image", "command"}
    assert set(kwargs) <= known, set(kwargs) - known


def test_pure(tmp_path, bench):
    """Nothing is created on disk and equal inputs give equal specs."""
    req = make_request(tmp_path, bench)
    a = container_spec(req, IMAGE)
    b = container_spec(req, IMAGE)
    assert a == b
    assert list(tmp_path.iterdir()) == []


def test_container_name_is_valid():
    import re

    for run_id in ["r1", "a b/c:d", "..x", "é", ""]:
        assert re.fullmatch(r"[a-zA-Z0-9][a-zA-Z0-9_.-]*", container_name(run_id))


def test_data_entries_mount_only_those(tmp_path, bench):
    req = make_request(tmp_path, bench, data_entries=["manifest.json", "tokenizer", "train"])
    m = mounts_by_target(container_spec(req, IMAGE))
    assert "/data" not in m and "/data/val" not in m
    for entry in ("manifest.json", "tokenizer", "train"):
        assert m[f"/data/{entry}"]["Source"] == str((req.data_dir / entry).absolute())
        assert m[f"/data/{entry}"]["ReadOnly"] is True
    assert [t for t, x in m.items() if not x["ReadOnly"]] == []


def test_evaluator_request_extra_mounts_no_candidate_and_placeholders(tmp_path, bench):
    export = tmp_path / "runs" / "train-run" / "out"
    cmd = ["{python}", "{fixed}/evaluate.py", "--program", "{export}/model.pt2", "--out", "{out}/eval.json",
           "--data", "{data}", "--src", "{train_py}"]
    req = make_request(tmp_path, bench, command=cmd, extra_mounts={"export": export}, mount_train_py=False)
    spec = container_spec(req, IMAGE)
    m = mounts_by_target(spec)
    assert "/work/train.py" not in m
    assert m["/mnt/export"]["Source"] == str(export.absolute()) and m["/mnt/export"]["ReadOnly"] is True
    assert [t for t, x in m.items() if not x["ReadOnly"]] == []
    assert run_command(spec.command) == ["python3", "/fixed/evaluate.py", "--program", "/mnt/export/model.pt2",
                            "--out", "/out/eval.json", "--data", "/data", "--src", "/work/train.py"]


@pytest.mark.parametrize("kw", [
    {"data_entries": ["../etc"]},
    {"data_entries": ["a/b"]},
    {"extra_mounts": {"..": Path("/")}},
    {"extra_mounts": {"x/y": Path("/")}},
])
def test_unsafe_names_are_refused(tmp_path, bench, kw):
    with pytest.raises(ValueError, match="plain file name"):
        container_spec(make_request(tmp_path, bench, **kw), IMAGE)
