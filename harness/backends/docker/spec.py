"""The container one run gets: every isolation knob in one pure function.

`container_spec(request, image)` turns a RunRequest into the keyword arguments for
`docker_client.containers.create(...)`. It touches neither the daemon nor the file system,
so tests can read every knob without Docker. harness/backends/docker/backend.py is the only caller.

What the run sees inside the container:

    /work/train.py   the candidate (read-only; a copy in run_dir, so editing the
                     submission during the run changes nothing); absent when
                     request.mount_train_py is False (the evaluator)
    /fixed           fixed/ (read-only; PYTHONPATH, so `import prepare` works)
    /data            the benchmark's data cache (read-only); with request.data_entries only
                     those top-level entries, each mounted on its own (the rest, e.g. val/, is
                     not in the container at all)
    /mnt/<name>      each of request.extra_mounts (read-only)
    /mnt/<name>      each of request.rw_mounts (writable bind mounts shared with other runs)
    /out             a tmpfs of limits.output bytes (and one inode per 4 KiB of it): the kernel
                     refuses writes past it (ENOSPC), open-but-unlinked files included, and nothing
                     of it touches the host disk during the run. Its pages are charged to the
                     container's memory limit, like /tmp's. When the run ends the backend copies it
                     to run_dir/out (see harness/backends/docker/output.py)
    /tmp             a tmpfs capped at limits.tmpfs (also charged to the memory limit)
    /dev/shm         capped at limits.shm

Everything else is the image's read-only root file system. No network, no capabilities,
no privilege escalation, a pids cap, a memory cap with no extra swap, the keeper
(harness/backends/docker/keeper.py) as PID 1 with its own deadline, and the container runtime the
caller asked for (None: the daemon's default).
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import docker.types

from harness import contract
from harness.backends.base import RunRequest, command_paths
from harness.backends.docker.keeper import KEEPER_LINGER_S, KEEPER_MARGIN_S, KEEPER_SOURCE, KEEPER_TOKEN_ENV
from harness.benchmarks import size_bytes

# Paths inside the container.
WORK_DIR = "/work"
TRAIN_PY = "/work/train.py"
FIXED_MOUNT = "/fixed"
DATA_MOUNT = "/data"
OUT_MOUNT = "/out"
TMP_MOUNT = "/tmp"
EXTRA_MOUNT_ROOT = "/mnt"  # extra_mounts["export"] -> /mnt/export
PYTHON = "python3"  # {python} in request.command: the image's venv python is first on PATH

OUT_SUBDIR = "out"  # run_dir/out is what /out shows
CANDIDATE_NAME = "train.py"  # run_dir/train.py is what /work/train.py shows

DEFAULT_COMMAND = ["python3", "-u", TRAIN_PY]
DEFAULT_UID = 1000  # 'runner' in the harness images

LABEL = "harness"  # every harness container carries harness=1; the janitor looks for it
LABEL_RUN_ID = "harness.run_id"
LABEL_BENCHMARK = "harness.benchmark"

# Host-only variables that must not leak into the container even if the caller put them in
# request.env: they name host paths or host device indices that mean nothing inside.
_HOST_ONLY_ENV = frozenset({
    "PATH", "LD_LIBRARY_PATH", "LD_PRELOAD", "PYTHONHOME", "VIRTUAL_ENV", "CONDA_PREFIX",
    "CUDA_VISIBLE_DEVICES", "NVIDIA_VISIBLE_DEVICES", "HOSTNAME", "PWD", "OLDPWD", "USER",
    "LOGNAME", "SHELL", "TERM", "DISPLAY", "SSH_AUTH_SOCK",
    "HARNESS_KEEPER_TOKEN", "HARNESS_KEEPER_FD",  # the keeper's own; only container_spec sets the token
})


def out_dir(request: RunRequest) -> Path:
    """The host directory /out is copied to when the run ends (during the run /out is a tmpfs)."""
    return Path(request.run_dir) / OUT_SUBDIR


def candidate_path(request: RunRequest) -> Path:
    """The host file the container sees as /work/train.py (the backend copies the candidate here)."""
    return Path(request.run_dir) / CANDIDATE_NAME


_SAFE_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]*")


def _safe(kind: str, name: str) -> str:
    if not _SAFE_NAME.fullmatch(name) or name in (".", ".."):
        raise ValueError(f"{kind} {name!r} is not a plain file name (letters, digits, _ . -)")
    return name


def extra_mount_target(name: str) -> str:
    return f"{EXTRA_MOUNT_ROOT}/{_safe('extra mount name', name)}"


def container_command(request: RunRequest) -> list[str]:
    """request.command with its {placeholders} as the container sees them, or the default."""
    command = command_paths(
        request, python=PYTHON, fixed=FIXED_MOUNT, data=DATA_MOUNT, out=OUT_MOUNT, train_py=TRAIN_PY,
        mounts={name: extra_mount_target(name) for name in {**request.extra_mounts, **request.rw_mounts}})
    return command or list(DEFAULT_COMMAND)


def container_name(run_id: str) -> str:
    """A valid, recognisable container name: harness-<run id> with odd characters replaced."""
    safe = re.sub(r"[^a-zA-Z0-9_.-]", "-", run_id).strip(".-") or "run"
    return f"harness-{safe}"[:128]


def keeper_command(request: RunRequest) -> list[str]:
    """What the container runs as PID 1: the keeper, its deadline and linger, then the run's command."""
    deadline = float(request.hard_timeout_s) + KEEPER_MARGIN_S
    return [PYTHON, "-I", "-S", "-c", KEEPER_SOURCE, f"{deadline:g}", f"{KEEPER_LINGER_S:g}", "--",
            *container_command(request)]


def run_command(command: list[str]) -> list[str]:
    """The run's own command inside a keeper command (the part after its "--")."""
    return command[command.index("--") + 1:] if "--" in command else list(command)


def out_tmpfs_options(limits: Any) -> str:
    """/out's tmpfs: limits.output bytes, one inode per MIN_ENTRY_BYTES of it (an inode flood hits the
    cap too; gVisor ignores nr_inodes, so the harness also counts entries when it copies /out out)."""
    cap = size_bytes(limits.output)
    return f"size={cap},nr_inodes={out_max_entries(limits)},mode=1777"


MIN_ENTRY_BYTES = 4096  # each entry of /out costs at least this much of limits.output


def out_max_entries(limits: Any) -> int:
    return max(size_bytes(limits.output) // MIN_ENTRY_BYTES, 16)


@dataclass
class ContainerSpec:
    """Exactly the keyword arguments of `client.containers.create(...)` for one run."""

    image: str
    command: list[str]
    name: str
    user: str
    working_dir: str
    environment: dict[str, str]
    mounts: list[docker.types.Mount]
    tmpfs: dict[str, str]
    read_only: bool
    network_mode: str
    cap_drop: list[str]
    security_opt: list[str]
    pids_limit: int
    mem_limit: int
    memswap_limit: int
    shm_size: int
    init: bool
    labels: dict[str, str]
    hostname: str = "harness"
    nano_cpus: int | None = None
    cpuset_cpus: str | None = None  # a member of a CPU pool (harness/pool/): the run's CPUs, no others
    device_requests: list[docker.types.DeviceRequest] | None = None
    ulimits: list[docker.types.Ulimit] = field(default_factory=list)
    # Output is streamed over `attach`; the daemon keeps no copy, so a stdout flood cannot
    # fill the daemon's disk (and the container is removed afterwards anyway).
    log_config: docker.types.LogConfig | None = None
    stdin_open: bool = False
    tty: bool = False
    # The OCI runtime dockerd starts it with ("runsc": gVisor); None: the daemon's default (runc).
    runtime: str | None = None

    def to_create_kwargs(self) -> dict[str, Any]:
        """The kwargs for `client.containers.create(**kwargs)`; None-valued knobs left out."""
        kwargs = {k: getattr(self, k) for k in self.__dataclass_fields__}
        return {k: v for k, v in kwargs.items() if v is not None}

    def describe(self) -> dict[str, Any]:
        """A JSON-able summary (for results and `--dry-run` style output)."""
        d = {k: v for k, v in asdict(self).items() if v is not None}
        d["mounts"] = [dict(m) for m in self.mounts]
        d["device_requests"] = [dict(r) for r in (self.device_requests or [])]
        d["ulimits"] = [dict(u) for u in self.ulimits]
        d["log_config"] = dict(self.log_config) if self.log_config is not None else None
        return d


def cpu_quota(cpus: float | None, cpuset: str | None) -> int | None:
    """limits.cpus as nano-CPUs, never more than the pinned set holds (a pool member's share)."""
    if not cpus:
        return None
    if cpuset:
        cpus = min(cpus, len(cpuset.split(",")))
    return int(round(cpus * 1e9))


def container_env(request: RunRequest, gpus: bool) -> dict[str, str]:
    """request.env rewritten for the container's paths, host-only variables dropped."""
    host_paths = {
        str(Path(request.data_dir)): DATA_MOUNT,
        str(Path(request.fixed_dir)): FIXED_MOUNT,
        str(out_dir(request)): OUT_MOUNT,
        **{str(Path(p)): extra_mount_target(n) for n, p in {**request.extra_mounts, **request.rw_mounts}.items()},
    }
    env: dict[str, str] = {}
    for key, value in request.env.items():
        if key in _HOST_ONLY_ENV:
            continue
        value = str(value)
        env[key] = host_paths.get(value, host_paths.get(value.rstrip("/"), value))
    env.update({
        contract.ENV_DATA_DIR: DATA_MOUNT,
        contract.ENV_OUT_DIR: OUT_MOUNT,
        "PYTHONPATH": FIXED_MOUNT,
        "PYTHONUNBUFFERED": "1",
        "PYTHONDONTWRITEBYTECODE": "1",  # the mounts are read-only; don't even try
        "HOME": TMP_MOUNT,
        "TMPDIR": TMP_MOUNT,
        # getpass.getuser() (torch's compile caches use it) needs a name even when the uid has
        # no passwd entry in the image
        "USER": "runner",
        "LOGNAME": "runner",
    })
    if gpus:
        env["NVIDIA_DRIVER_CAPABILITIES"] = "compute,utility"
    return env


def container_spec(request: RunRequest, image: str, uid: int = DEFAULT_UID, keeper_token: str = "",
                   runtime: str | None = None) -> ContainerSpec:
    """The container for one run. Pure: reads only its arguments.

    keeper_token: the per-run secret that marks the keeper's last line (the backend draws it).
    """
    limits = request.benchmark.limits
    memory = size_bytes(limits.memory)
    gpus = list(request.gpu_uuids)
    def ro(target: str, source: Path) -> docker.types.Mount:
        return docker.types.Mount(target, str(Path(source).absolute()), type="bind", read_only=True)

    mounts = []
    if request.mount_train_py:
        mounts.append(ro(TRAIN_PY, candidate_path(request)))
    mounts.append(ro(FIXED_MOUNT, request.fixed_dir))
    if request.data_entries is None:
        mounts.append(ro(DATA_MOUNT, request.data_dir))
    else:
        for entry in request.data_entries:
            mounts.append(ro(f"{DATA_MOUNT}/{_safe('data entry', entry)}", Path(request.data_dir) / entry))
    for name, source in sorted(request.extra_mounts.items()):
        mounts.append(ro(extra_mount_target(name), source))
    for name, source in sorted(request.rw_mounts.items()):
        mounts.append(docker.types.Mount(extra_mount_target(name), str(Path(source).absolute()), type="bind",
                                         read_only=False))
    environment = container_env(request, gpus=bool(gpus))
    if keeper_token:
        environment[KEEPER_TOKEN_ENV] = keeper_token
    return ContainerSpec(
        image=image,
        command=keeper_command(request),
        name=container_name(request.run_id),
        user=f"{uid}:{uid}",
        working_dir=WORK_DIR,
        environment=environment,
        mounts=mounts,
        tmpfs={TMP_MOUNT: f"size={limits.tmpfs},mode=1777", OUT_MOUNT: out_tmpfs_options(limits)},
        read_only=True,
        network_mode="none",
        cap_drop=["ALL"],
        security_opt=["no-new-privileges"],
        pids_limit=int(limits.pids),
        mem_limit=memory,
        memswap_limit=memory,  # equal: no swap on top of the memory limit
        shm_size=size_bytes(limits.shm),
        init=False,  # the keeper is PID 1 (it reaps, kills at its deadline, and its exit ends everything)
        labels={LABEL: "1", LABEL_RUN_ID: request.run_id, LABEL_BENCHMARK: request.benchmark.name},
        nano_cpus=cpu_quota(limits.cpus, request.cpuset),
        cpuset_cpus=request.cpuset,
        device_requests=[docker.types.DeviceRequest(device_ids=gpus, capabilities=[["gpu"]])] if gpus else None,
        ulimits=[docker.types.Ulimit(name="core", soft=0, hard=0)],  # no core dumps
        log_config=docker.types.LogConfig(type="none"),
        runtime=runtime,
    )
