"""Static facts: what GPU(s) this machine has (through NVML) and what the host is.

``machine_profile()`` never raises for a missing driver: on a CPU-only machine it returns a
profile with no GPUs and ``nvml = "NVML not available: <reason>"``.
"""

from __future__ import annotations

import os
import platform
import re
import shutil
import socket
import subprocess
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

from harness.hw.class_table import snap_memory_gb
from harness.hw.nvml import NvmlSession, NvmlUnavailable, open_nvml

UNAVAILABLE = "unavailable"


@dataclass
class GpuProfile:
    """One GPU or one MIG instance, as NVML describes it."""

    name: str
    uuid: str
    index: int | None = None
    pci_bus_id: str | None = None
    pci_device_id: int | None = None  # NVML's 32-bit value: device id << 16 | vendor id (0x10DE)
    pci_subsystem_id: int | None = None
    driver_version: str | None = None
    cuda_driver_version: str | None = None  # highest CUDA the driver supports, "12.4"
    vbios_version: str | None = None
    compute_capability: str | None = None  # "9.0"
    memory_total_bytes: int | None = None
    power_limit_enforced_w: float | None = None
    power_limit_default_w: float | None = None
    max_sm_clock_mhz: int | None = None
    max_mem_clock_mhz: int | None = None
    app_sm_clock_mhz: int | None = None
    app_mem_clock_mhz: int | None = None
    mig_mode: bool | None = None  # current MIG mode of the physical GPU; None = not supported
    mig_mode_pending: bool | None = None
    persistence_mode: bool | None = None
    ecc_enabled: bool | None = None
    multiprocessor_count: int | None = None
    # MIG instances only
    is_mig_instance: bool = False
    mig_profile: str | None = None  # "1g.10gb"
    parent_uuid: str | None = None
    parent_name: str | None = None
    parent_memory_total_bytes: int | None = None

    @property
    def pci_device(self) -> int | None:
        """The 16-bit PCI device id (0x2330 for an H100 SXM5)."""
        if self.pci_device_id is None:
            return None
        return (self.pci_device_id >> 16) & 0xFFFF

    @property
    def memory_gib(self) -> float | None:
        return None if self.memory_total_bytes is None else self.memory_total_bytes / 2**30

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["pci_device_id_hex"] = None if self.pci_device_id is None else f"0x{self.pci_device_id:08X}"
        return d


@dataclass
class HostFacts:
    hostname: str
    cpu_model: str
    cpu_logical_cores: int
    cpu_usable_cores: int  # CPUs this process may run on (affinity)
    cpu_physical_cores: int | None
    cpu_quota_cores: float | None  # cgroup CPU quota, None when unlimited
    ram_bytes: int | None
    os: str
    kernel: str
    arch: str
    python_version: str
    docker_version: str = UNAVAILABLE
    docker_api_version: str = UNAVAILABLE
    docker_components: dict[str, str] = field(default_factory=dict)  # containerd, runc, ...
    docker_runtimes: list[str] = field(default_factory=list)
    docker_default_runtime: str = UNAVAILABLE
    docker_error: str | None = None
    nvidia_container_cli: str = UNAVAILABLE  # version of the NVIDIA container toolkit CLI

    @property
    def effective_cores(self) -> int:
        """Cores a run here gets: affinity, further capped by a cgroup quota."""
        n = self.cpu_usable_cores
        if self.cpu_quota_cores:
            n = min(n, max(1, int(self.cpu_quota_cores + 0.5)))
        return max(1, n)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["effective_cores"] = self.effective_cores
        return d


@dataclass
class MachineProfile:
    host: HostFacts
    gpus: list[GpuProfile]
    nvml_available: bool
    nvml: str  # "NVML available (...)" or "NVML not available: <reason>"
    collected_at: float

    def gpu(self, uuid: str | None = None) -> GpuProfile | None:
        """The GPU with ``uuid``, or the first runnable one; None without GPUs."""
        gpus = runnable_gpus(self.gpus)
        if uuid is None:
            return gpus[0] if gpus else None
        for g in self.gpus:
            if g.uuid == uuid:
                return g
        return None

    def to_dict(self) -> dict[str, Any]:
        return {
            "host": self.host.to_dict(),
            "gpus": [g.to_dict() for g in self.gpus],
            "nvml_available": self.nvml_available,
            "nvml": self.nvml,
            "collected_at": self.collected_at,
        }


# --- GPUs ----------------------------------------------------------------------------------

_MIG_NAME = re.compile(r"MIG\s+(\d+g\.\d+gb)", re.IGNORECASE)


def _mig_profile_name(name: str | None, attrs: dict[str, int] | None, mem_bytes: int | None) -> str | None:
    if name:
        m = _MIG_NAME.search(name)
        if m:
            return m.group(1).lower()
    if attrs and attrs.get("gpuInstanceSliceCount"):
        mb = attrs.get("memorySizeMB") or (mem_bytes // 2**20 if mem_bytes else None)
        if mb:
            return f"{attrs['gpuInstanceSliceCount']}g.{snap_memory_gb(mb * 2**20)}gb"
    return None


def read_gpu_profile(session: NvmlSession, handle: Any, index: int | None = None) -> GpuProfile:
    """Static profile of a physical GPU or a MIG instance handle."""
    s = session
    is_mig = s.is_mig_device(handle)
    phys = s.parent_of_mig(handle) if is_mig else handle
    if phys is None:
        phys = handle
    name = s.name(handle) or s.name(phys) or "unknown GPU"
    uuid = s.uuid(handle) or ""
    bus, dev_id, subsys = s.pci(phys)
    total, _ = s.memory(handle)
    enforced, default = s.power_limits_w(phys)
    max_sm, max_mem = s.max_clocks(phys)
    app_sm, app_mem = s.application_clocks(phys)
    mig_cur, mig_pend = s.mig_mode(phys)
    attrs = s.attributes(handle)
    prof = GpuProfile(
        name=name,
        uuid=uuid,
        index=index,
        pci_bus_id=bus,
        pci_device_id=dev_id,
        pci_subsystem_id=subsys,
        driver_version=s.driver_version(),
        cuda_driver_version=s.cuda_driver_version(),
        vbios_version=s.vbios(phys),
        compute_capability=s.compute_capability(phys),
        memory_total_bytes=total,
        power_limit_enforced_w=enforced,
        power_limit_default_w=default,
        max_sm_clock_mhz=max_sm,
        max_mem_clock_mhz=max_mem,
        app_sm_clock_mhz=app_sm,
        app_mem_clock_mhz=app_mem,
        mig_mode=mig_cur,
        mig_mode_pending=mig_pend,
        persistence_mode=s.persistence_mode(phys),
        ecc_enabled=s.ecc_mode(phys),
        multiprocessor_count=(attrs or {}).get("multiprocessorCount"),
        is_mig_instance=is_mig,
    )
    if is_mig:
        prof.parent_uuid = s.uuid(phys)
        prof.parent_name = s.name(phys)
        prof.parent_memory_total_bytes, _ = s.memory(phys)
        prof.mig_profile = _mig_profile_name(name, attrs, total)
    return prof


def list_gpu_profiles(session: NvmlSession, include_mig: bool = True) -> list[GpuProfile]:
    """Every physical GPU, followed by its MIG instances when MIG mode is on."""
    out: list[GpuProfile] = []
    for i in range(session.device_count()):
        h = session.call("nvmlDeviceGetHandleByIndex", i)  # None: that GPU is lost / not accessible
        if h is None:
            continue
        p = read_gpu_profile(session, h, index=i)
        out.append(p)
        if include_mig and p.mig_mode:
            for mh in session.mig_devices(h):
                out.append(read_gpu_profile(session, mh, index=i))
    return out


def gpu_profile_by_uuid(session: NvmlSession, uuid: str) -> GpuProfile:
    """Profile of the GPU / MIG instance with ``uuid`` (``LookupError`` if there is none)."""
    h = session.handle_by_uuid(uuid)
    return read_gpu_profile(session, h)


def runnable_gpus(gpus: list[GpuProfile]) -> list[GpuProfile]:
    """Devices a run can be given: MIG instances replace a physical GPU in MIG mode."""
    out = []
    for g in gpus:
        if g.is_mig_instance:
            out.append(g)
        elif not g.mig_mode:
            out.append(g)
    return out


# --- host ----------------------------------------------------------------------------------

def _read(path: str) -> str | None:
    try:
        return Path(path).read_text(errors="replace")
    except OSError:
        return None


def _cpu_model_and_physical() -> tuple[str, int | None]:
    text = _read("/proc/cpuinfo") or ""
    model = None
    pairs: set[tuple[str, str]] = set()
    phys = core = None
    for line in text.splitlines():
        key, _, val = line.partition(":")
        key, val = key.strip(), val.strip()
        if key in ("model name", "Hardware", "cpu model") and not model:
            model = val
        elif key == "physical id":
            phys = val
        elif key == "core id":
            core = val
        elif not line.strip():
            if phys is not None and core is not None:
                pairs.add((phys, core))
            phys = core = None
    if phys is not None and core is not None:
        pairs.add((phys, core))
    model = model or platform.processor() or platform.machine() or "unknown"
    return model, (len(pairs) or None)


def _cgroup_quota_cores() -> float | None:
    text = _read("/sys/fs/cgroup/cpu.max")  # cgroup v2: "max 100000" or "200000 100000"
    if text:
        parts = text.split()
        if len(parts) == 2 and parts[0] != "max":
            try:
                return int(parts[0]) / int(parts[1])
            except (ValueError, ZeroDivisionError):
                return None
        return None
    q = _read("/sys/fs/cgroup/cpu/cpu.cfs_quota_us")  # cgroup v1
    p = _read("/sys/fs/cgroup/cpu/cpu.cfs_period_us")
    try:
        if q and p and int(q) > 0:
            return int(q) / int(p)
    except ValueError:
        pass
    return None


def _ram_bytes() -> int | None:
    for line in (_read("/proc/meminfo") or "").splitlines():
        if line.startswith("MemTotal:"):
            try:
                return int(line.split()[1]) * 1024
            except (IndexError, ValueError):
                return None
    return None


def _os_name() -> str:
    text = _read("/etc/os-release") or ""
    for line in text.splitlines():
        if line.startswith("PRETTY_NAME="):
            return line.split("=", 1)[1].strip().strip('"')
    return platform.platform()


def _nvidia_container_cli_version() -> str:
    exe = shutil.which("nvidia-container-cli")
    if not exe:
        return UNAVAILABLE
    try:
        out = subprocess.run([exe, "--version"], capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.SubprocessError) as exc:
        return f"{UNAVAILABLE} ({exc})"
    for line in out.stdout.splitlines():
        if "version" in line.lower():
            return line.split(":", 1)[-1].strip()
    return out.stdout.strip().splitlines()[0] if out.stdout.strip() else UNAVAILABLE


def docker_facts(client: Any = None, timeout: float = 3.0) -> dict[str, Any]:
    """Docker versions and runtimes (harness/backends/docker/probe.py, imported lazily: the hardware
    package has no Docker import); "unavailable" (with ``docker_error``) if unreachable."""
    try:
        from harness.backends.docker import probe
    except ImportError as exc:
        return {"docker_error": f"{type(exc).__name__}: {exc}"}
    return probe.docker_facts(client, timeout=timeout)


def host_facts(*, probe_docker: bool = True, docker_client: Any = None, docker_timeout: float = 3.0) -> HostFacts:
    model, physical = _cpu_model_and_physical()
    try:
        usable = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        usable = os.cpu_count() or 1
    facts = HostFacts(
        hostname=socket.gethostname(),
        cpu_model=model,
        cpu_logical_cores=os.cpu_count() or usable,
        cpu_usable_cores=usable,
        cpu_physical_cores=physical,
        cpu_quota_cores=_cgroup_quota_cores(),
        ram_bytes=_ram_bytes(),
        os=_os_name(),
        kernel=platform.release(),
        arch=platform.machine(),
        python_version=platform.python_version(),
    )
    if probe_docker:
        for k, v in docker_facts(docker_client, timeout=docker_timeout).items():
            setattr(facts, k, v)
        facts.nvidia_container_cli = _nvidia_container_cli_version()
    else:
        facts.docker_error = "not probed"
    return facts


def machine_profile(
    nvml_module: ModuleType | None = None,
    *,
    session: NvmlSession | None = None,
    probe_docker: bool = True,
    docker_client: Any = None,
) -> MachineProfile:
    """Host facts plus every GPU NVML sees. Never raises for a missing driver."""
    host = host_facts(probe_docker=probe_docker, docker_client=docker_client)
    gpus: list[GpuProfile] = []
    if session is not None:
        gpus = list_gpu_profiles(session)
        return MachineProfile(host, gpus, True, _nvml_label(session, gpus), time.time())
    try:
        own = open_nvml(nvml_module)
    except NvmlUnavailable as exc:
        return MachineProfile(host, [], False, str(exc), time.time())
    with own:
        gpus = list_gpu_profiles(own)
        label = _nvml_label(own, gpus)
    return MachineProfile(host, gpus, True, label, time.time())


def _nvml_label(session: NvmlSession, gpus: list[GpuProfile]) -> str:
    return (
        f"NVML available (driver {session.driver_version()}, CUDA {session.cuda_driver_version()}, "
        f"{len(runnable_gpus(gpus))} GPU(s))"
    )
