"""A fake ``pynvml`` (nvidia-ml-py) for tests and for ``make bench`` on machines without a GPU.

It implements exactly the functions ``harness/hw/nvml.py`` uses, with the same shapes as the
real module (structures with the same attribute names, ``busId`` as bytes, MIG checks returning
a ``ctypes.c_uint``, errors as ``NVMLError`` subclasses carrying ``.value``, power in mW, energy
in mJ, violation time in ns).

Use ``make_module(gpus, ...)`` for a fresh, independent module per test::

    fake = make_module([h100_sxm()])
    session = harness.hw.nvml.open_nvml(fake)

Importing this file as a module gives a default machine with one healthy H100 SXM, so
``harness.hw.telemetry.main(["overhead"], nvml_module=load_fake_nvml())`` works anywhere
(``tests/fakes/__init__.py`` loads it; of the product only ``harness/bench.py`` borrows it, without a GPU).

Live counters are scripted: each ``FakeGpu.script`` entry is a dict of counter values
(``sm``, ``mem``, ``power_mw``, ``energy_mj``, ``temp``, ``util``, ``mem_util``, ``used``,
``pstate``, ``reasons``, ``viol_power_ns``, ``viol_thermal_ns``). A sample starts with the SM
clock read (``nvmlDeviceGetClockInfo(h, NVML_CLOCK_SM)``), which moves the GPU to the next
entry; the script repeats from the start when it runs out (``loop=True``) or keeps its last
entry.
"""

from __future__ import annotations

import ctypes
import types
from collections import Counter
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any

IS_FAKE = True

NVML_CLOCK_SM = 1
NVML_CLOCK_MEM = 2
NVML_TEMPERATURE_GPU = 0
NVML_PERF_POLICY_POWER = 0
NVML_PERF_POLICY_THERMAL = 1
NVML_DEVICE_MIG_DISABLE = 0
NVML_DEVICE_MIG_ENABLE = 1

NVML_ERROR_UNINITIALIZED = 1
NVML_ERROR_NOT_SUPPORTED = 3
NVML_ERROR_NOT_FOUND = 6
NVML_ERROR_DRIVER_NOT_LOADED = 9
NVML_ERROR_LIBRARY_NOT_FOUND = 12
NVML_ERROR_FUNCTION_NOT_FOUND = 13
NVML_ERROR_GPU_IS_LOST = 15

_MESSAGES = {
    NVML_ERROR_UNINITIALIZED: "Uninitialized",
    NVML_ERROR_NOT_SUPPORTED: "Not Supported",
    NVML_ERROR_NOT_FOUND: "Not Found",
    NVML_ERROR_DRIVER_NOT_LOADED: "Driver Not Loaded",
    NVML_ERROR_LIBRARY_NOT_FOUND: "NVML Shared Library Not Found",
    NVML_ERROR_FUNCTION_NOT_FOUND: "Function Not Found",
    NVML_ERROR_GPU_IS_LOST: "GPU is lost",
}


class NVMLError(Exception):
    def __init__(self, value: int):
        super().__init__(value)
        self.value = value

    def __str__(self) -> str:
        return _MESSAGES.get(self.value, f"NVML error {self.value}")


def _err_class(name: str, code: int) -> type:
    return type(name, (NVMLError,), {"__init__": lambda self, value=code: NVMLError.__init__(self, value)})


NVMLError_Uninitialized = _err_class("NVMLError_Uninitialized", NVML_ERROR_UNINITIALIZED)
NVMLError_NotSupported = _err_class("NVMLError_NotSupported", NVML_ERROR_NOT_SUPPORTED)
NVMLError_NotFound = _err_class("NVMLError_NotFound", NVML_ERROR_NOT_FOUND)
NVMLError_DriverNotLoaded = _err_class("NVMLError_DriverNotLoaded", NVML_ERROR_DRIVER_NOT_LOADED)
NVMLError_LibraryNotFound = _err_class("NVMLError_LibraryNotFound", NVML_ERROR_LIBRARY_NOT_FOUND)
NVMLError_FunctionNotFound = _err_class("NVMLError_FunctionNotFound", NVML_ERROR_FUNCTION_NOT_FOUND)
NVMLError_GpuIsLost = _err_class("NVMLError_GpuIsLost", NVML_ERROR_GPU_IS_LOST)

_ERRORS = {
    "uninitialized": NVMLError_Uninitialized,
    "not_supported": NVMLError_NotSupported,
    "not_found": NVMLError_NotFound,
    "driver_not_loaded": NVMLError_DriverNotLoaded,
    "library_not_found": NVMLError_LibraryNotFound,
    "function_not_found": NVMLError_FunctionNotFound,
    "gpu_is_lost": NVMLError_GpuIsLost,
}

MIB = 2**20

# every function harness/hw/nvml.py calls
FUNCTIONS = (
    "nvmlInit", "nvmlShutdown", "nvmlSystemGetDriverVersion", "nvmlSystemGetCudaDriverVersion",
    "nvmlDeviceGetCount", "nvmlDeviceGetHandleByIndex", "nvmlDeviceGetHandleByUUID",
    "nvmlDeviceGetName", "nvmlDeviceGetUUID", "nvmlDeviceGetPciInfo", "nvmlDeviceGetVbiosVersion",
    "nvmlDeviceGetCudaComputeCapability", "nvmlDeviceGetMemoryInfo", "nvmlDeviceGetEnforcedPowerLimit",
    "nvmlDeviceGetPowerManagementDefaultLimit", "nvmlDeviceGetMaxClockInfo", "nvmlDeviceGetApplicationsClock",
    "nvmlDeviceGetClockInfo", "nvmlDeviceGetMigMode", "nvmlDeviceIsMigDeviceHandle",
    "nvmlDeviceGetMaxMigDeviceCount", "nvmlDeviceGetMigDeviceHandleByIndex",
    "nvmlDeviceGetDeviceHandleFromMigDeviceHandle", "nvmlDeviceGetAttributes", "nvmlDeviceGetPersistenceMode",
    "nvmlDeviceGetEccMode", "nvmlDeviceGetPowerUsage", "nvmlDeviceGetTotalEnergyConsumption",
    "nvmlDeviceGetTemperature", "nvmlDeviceGetUtilizationRates", "nvmlDeviceGetPerformanceState",
    "nvmlDeviceGetCurrentClocksEventReasons", "nvmlDeviceGetCurrentClocksThrottleReasons",
    "nvmlDeviceGetViolationStatus",
)


@dataclass(eq=False)
class FakeGpu:
    name: str
    uuid: str
    pci_device_id: int  # 32-bit, device << 16 | 0x10DE
    bus_id: str = "00000000:01:00.0"
    memory_mib: int = 81559
    power_default_mw: int | None = 700_000
    power_enforced_mw: int | None = None  # None = default
    max_sm: int = 1980
    max_mem: int = 2619
    app_sm: int | None = 1755
    app_mem: int | None = 2619
    cc: tuple[int, int] = (9, 0)
    vbios: str = "96.00.74.00.01"
    ecc: bool | None = True  # None = not supported
    persistence: bool = True
    mig: tuple[int, int] | None = (0, 0)  # (current, pending); None = MIG not supported
    sm_count: int = 132
    mig_slices: int = 0
    mig_children: list["FakeGpu"] = field(default_factory=list)
    parent: "FakeGpu | None" = None
    unsupported: set[str] = field(default_factory=set)  # functions that raise NotSupported
    script: list[dict[str, Any]] = field(default_factory=list)
    loop: bool = True
    tick: int = 0

    def current(self) -> dict[str, Any]:
        if not self.script:
            return {}
        i = max(self.tick - 1, 0)
        i = i % len(self.script) if self.loop else min(i, len(self.script) - 1)
        return self.script[i]


def steady_script(sm: int = 1980, power_w: float = 650.0, interval_s: float = 0.25, n: int = 1) -> list[dict[str, Any]]:
    """n identical busy samples; the energy counter grows by power x interval per sample."""
    return [
        {
            "sm": sm, "mem": 2619, "power_mw": int(power_w * 1000),
            "energy_mj": 10_000_000 + int(power_w * interval_s * 1000) * i,
            "temp": 60, "util": 100, "mem_util": 40, "used": 40_000 * MIB, "pstate": 0, "reasons": 0,
            "viol_power_ns": 0, "viol_thermal_ns": 0,
        }
        for i in range(n)
    ]


# --- profiles ------------------------------------------------------------------------------

def h100_sxm(uuid: str = "GPU-11111111-1111-1111-1111-111111111111", **kw: Any) -> FakeGpu:
    kw.setdefault("script", steady_script(sm=1980, power_w=650.0))
    return FakeGpu(name="NVIDIA H100 80GB HBM3", uuid=uuid, pci_device_id=0x233010DE, bus_id="00000000:18:00.0",
                   memory_mib=81559, power_default_mw=700_000, max_sm=1980, max_mem=2619, app_sm=1755, app_mem=2619,
                   cc=(9, 0), sm_count=132, **kw)


def h100_pcie(uuid: str = "GPU-22222222-2222-2222-2222-222222222222", **kw: Any) -> FakeGpu:
    kw.setdefault("script", steady_script(sm=1755, power_w=330.0))
    return FakeGpu(name="NVIDIA H100 PCIe", uuid=uuid, pci_device_id=0x233110DE, bus_id="00000000:41:00.0",
                   memory_mib=81559, power_default_mw=350_000, max_sm=1755, max_mem=1593, app_sm=1755, app_mem=1593,
                   cc=(9, 0), sm_count=114, **kw)


def a100_sxm(uuid: str = "GPU-33333333-3333-3333-3333-333333333333", **kw: Any) -> FakeGpu:
    kw.setdefault("script", steady_script(sm=1410, power_w=380.0))
    return FakeGpu(name="NVIDIA A100-SXM4-80GB", uuid=uuid, pci_device_id=0x20B210DE, bus_id="00000000:07:00.0",
                   memory_mib=81920, power_default_mw=400_000, max_sm=1410, max_mem=1593, app_sm=1275, app_mem=1593,
                   cc=(8, 0), sm_count=108, vbios="92.00.45.00.06", **kw)


def rtx4090(uuid: str = "GPU-44444444-4444-4444-4444-444444444444", **kw: Any) -> FakeGpu:
    kw.setdefault("script", steady_script(sm=2745, power_w=430.0))
    kw.setdefault("unsupported", {"nvmlDeviceGetViolationStatus"})
    return FakeGpu(name="NVIDIA GeForce RTX 4090", uuid=uuid, pci_device_id=0x268410DE, bus_id="00000000:01:00.0",
                   memory_mib=24564, power_default_mw=450_000, max_sm=3105, max_mem=10501, app_sm=None, app_mem=None,
                   cc=(8, 9), ecc=None, persistence=False, mig=None, sm_count=128, vbios="95.02.18.80.5F", **kw)


def a100_with_mig(uuid: str = "GPU-55555555-5555-5555-5555-555555555555",
                  mig_uuid: str = "MIG-66666666-6666-6666-6666-666666666666") -> FakeGpu:
    """An A100-SXM4-80GB in MIG mode with one 1g.10gb instance."""
    parent = a100_sxm(uuid=uuid, mig=(1, 1))
    child = FakeGpu(
        name="NVIDIA A100-SXM4-80GB MIG 1g.10gb", uuid=mig_uuid, pci_device_id=0x20B210DE, memory_mib=9728,
        power_default_mw=None, max_sm=1410, cc=(8, 0), mig=None, sm_count=14, mig_slices=1, parent=parent,
        unsupported={
            "nvmlDeviceGetPciInfo", "nvmlDeviceGetPowerUsage", "nvmlDeviceGetEnforcedPowerLimit",
            "nvmlDeviceGetPowerManagementDefaultLimit", "nvmlDeviceGetClockInfo", "nvmlDeviceGetMaxClockInfo",
            "nvmlDeviceGetApplicationsClock", "nvmlDeviceGetTotalEnergyConsumption", "nvmlDeviceGetTemperature",
            "nvmlDeviceGetUtilizationRates", "nvmlDeviceGetCurrentClocksEventReasons",
            "nvmlDeviceGetViolationStatus", "nvmlDeviceGetVbiosVersion", "nvmlDeviceGetEccMode",
        },
        script=[{"used": 5000 * MIB}],
    )
    parent.mig_children = [child]
    return parent


# Throttling GPU script: 4-sample cycle. Hand-computed facts for one full cycle (tests rely on these):
#   SM clocks 1980, 1500, 1200, 1980 of max 1980; reasons: none, power cap, thermal+power cap, none.
THROTTLE_CYCLE = [
    {"sm": 1980, "mem": 2619, "power_mw": 700_000, "energy_mj": 1_000_000, "temp": 80, "util": 100, "mem_util": 50,
     "used": 60_000 * MIB, "pstate": 0, "reasons": 0x0, "viol_power_ns": 0, "viol_thermal_ns": 0},
    {"sm": 1500, "mem": 2619, "power_mw": 700_000, "energy_mj": 1_175_000, "temp": 86, "util": 100, "mem_util": 50,
     "used": 60_000 * MIB, "pstate": 0, "reasons": 0x4, "viol_power_ns": 250_000_000, "viol_thermal_ns": 0},
    {"sm": 1200, "mem": 2619, "power_mw": 690_000, "energy_mj": 1_347_500, "temp": 91, "util": 100, "mem_util": 50,
     "used": 61_000 * MIB, "pstate": 0, "reasons": 0x4 | 0x20, "viol_power_ns": 500_000_000,
     "viol_thermal_ns": 250_000_000},
    {"sm": 1980, "mem": 2619, "power_mw": 610_000, "energy_mj": 1_500_000, "temp": 84, "util": 100, "mem_util": 50,
     "used": 60_000 * MIB, "pstate": 0, "reasons": 0x0, "viol_power_ns": 500_000_000,
     "viol_thermal_ns": 250_000_000},
]


def throttling_h100(uuid: str = "GPU-77777777-7777-7777-7777-777777777777") -> FakeGpu:
    return h100_sxm(uuid=uuid, script=[dict(x) for x in THROTTLE_CYCLE], loop=False)


def unknown_gpu(uuid: str = "GPU-88888888-8888-8888-8888-888888888888") -> FakeGpu:
    return FakeGpu(name="NVIDIA B200", uuid=uuid, pci_device_id=0x290110DE, memory_mib=183359,
                   power_default_mw=1_000_000, max_sm=1965, cc=(10, 0), sm_count=148,
                   script=steady_script(sm=1965, power_w=900.0))


# --- the module ----------------------------------------------------------------------------

class FakeNvml:
    def __init__(self, gpus: list[FakeGpu], *, init_error: str | None = None, driver: str = "550.54.15",
                 cuda: int = 12040, missing: tuple[str, ...] = ()):
        self.gpus = gpus
        self.init_error = init_error
        self.driver = driver
        self.cuda = cuda
        self.missing = set(missing)  # functions absent from the module (an older nvidia-ml-py)
        self.init_count = 0
        self.calls: Counter[str] = Counter()

    # helpers
    def _chk(self, fn: str, h: FakeGpu) -> FakeGpu:
        self.calls[fn] += 1
        if self.init_count <= 0:
            raise NVMLError_Uninitialized()
        if not isinstance(h, FakeGpu):
            raise NVMLError(2)  # invalid argument
        if fn in h.unsupported:
            raise NVMLError_NotSupported()
        return h

    def _all(self) -> list[FakeGpu]:
        return self.gpus + [c for g in self.gpus for c in g.mig_children]

    # init
    def nvmlInit(self) -> None:
        self.calls["nvmlInit"] += 1
        if self.init_error:
            raise _ERRORS[self.init_error]()
        self.init_count += 1

    def nvmlShutdown(self) -> None:
        self.calls["nvmlShutdown"] += 1
        if self.init_count <= 0:
            raise NVMLError_Uninitialized()
        self.init_count -= 1

    def nvmlSystemGetDriverVersion(self) -> str:
        return self.driver

    def nvmlSystemGetCudaDriverVersion(self) -> int:
        return self.cuda

    def nvmlDeviceGetCount(self) -> int:
        self.calls["nvmlDeviceGetCount"] += 1
        if self.init_count <= 0:
            raise NVMLError_Uninitialized()
        return len(self.gpus)

    def nvmlDeviceGetHandleByIndex(self, i: int) -> FakeGpu:
        if not 0 <= i < len(self.gpus):
            raise NVMLError(2)
        return self.gpus[i]

    def nvmlDeviceGetHandleByUUID(self, uuid: str | bytes) -> FakeGpu:
        self.calls["nvmlDeviceGetHandleByUUID"] += 1
        if isinstance(uuid, bytes):
            uuid = uuid.decode()
        for g in self._all():
            if g.uuid == uuid:
                return g
        raise NVMLError_NotFound()

    # static facts
    def nvmlDeviceGetName(self, h: FakeGpu) -> str:
        return self._chk("nvmlDeviceGetName", h).name

    def nvmlDeviceGetUUID(self, h: FakeGpu) -> str:
        return self._chk("nvmlDeviceGetUUID", h).uuid

    def nvmlDeviceGetPciInfo(self, h: FakeGpu) -> SimpleNamespace:
        g = self._chk("nvmlDeviceGetPciInfo", h)
        return SimpleNamespace(busId=g.bus_id.encode(), busIdLegacy=g.bus_id.encode(), domain=0, bus=1, device=0,
                               pciDeviceId=g.pci_device_id, pciSubSystemId=0x16C110DE)

    def nvmlDeviceGetVbiosVersion(self, h: FakeGpu) -> str:
        return self._chk("nvmlDeviceGetVbiosVersion", h).vbios

    def nvmlDeviceGetCudaComputeCapability(self, h: FakeGpu) -> tuple[int, int]:
        return self._chk("nvmlDeviceGetCudaComputeCapability", h).cc

    def nvmlDeviceGetMemoryInfo(self, h: FakeGpu) -> SimpleNamespace:
        g = self._chk("nvmlDeviceGetMemoryInfo", h)
        total = g.memory_mib * MIB
        used = int(g.current().get("used", 0)) if g.script else 0
        return SimpleNamespace(total=total, free=total - used, used=used)

    def nvmlDeviceGetEnforcedPowerLimit(self, h: FakeGpu) -> int:
        g = self._chk("nvmlDeviceGetEnforcedPowerLimit", h)
        v = g.power_enforced_mw if g.power_enforced_mw is not None else g.power_default_mw
        if v is None:
            raise NVMLError_NotSupported()
        return v

    def nvmlDeviceGetPowerManagementDefaultLimit(self, h: FakeGpu) -> int:
        g = self._chk("nvmlDeviceGetPowerManagementDefaultLimit", h)
        if g.power_default_mw is None:
            raise NVMLError_NotSupported()
        return g.power_default_mw

    def nvmlDeviceGetMaxClockInfo(self, h: FakeGpu, which: int) -> int:
        g = self._chk("nvmlDeviceGetMaxClockInfo", h)
        return g.max_sm if which == NVML_CLOCK_SM else g.max_mem

    def nvmlDeviceGetApplicationsClock(self, h: FakeGpu, which: int) -> int:
        g = self._chk("nvmlDeviceGetApplicationsClock", h)
        v = g.app_sm if which == NVML_CLOCK_SM else g.app_mem
        if v is None:
            raise NVMLError_NotSupported()
        return v

    def nvmlDeviceGetMigMode(self, h: FakeGpu) -> list[int]:
        g = self._chk("nvmlDeviceGetMigMode", h)
        if g.mig is None:
            raise NVMLError_NotSupported()
        return list(g.mig)

    def nvmlDeviceIsMigDeviceHandle(self, h: FakeGpu) -> ctypes.c_uint:
        g = self._chk("nvmlDeviceIsMigDeviceHandle", h)
        return ctypes.c_uint(1 if g.parent is not None else 0)  # the real one returns a c_uint too

    def nvmlDeviceGetMaxMigDeviceCount(self, h: FakeGpu) -> int:
        g = self._chk("nvmlDeviceGetMaxMigDeviceCount", h)
        if g.mig is None:
            raise NVMLError_NotSupported()
        return 7 if g.mig[0] else 0

    def nvmlDeviceGetMigDeviceHandleByIndex(self, h: FakeGpu, i: int) -> FakeGpu:
        g = self._chk("nvmlDeviceGetMigDeviceHandleByIndex", h)
        if i >= len(g.mig_children):
            raise NVMLError_NotFound()
        return g.mig_children[i]

    def nvmlDeviceGetDeviceHandleFromMigDeviceHandle(self, h: FakeGpu) -> FakeGpu:
        g = self._chk("nvmlDeviceGetDeviceHandleFromMigDeviceHandle", h)
        if g.parent is None:
            raise NVMLError(2)
        return g.parent

    def nvmlDeviceGetAttributes(self, h: FakeGpu) -> SimpleNamespace:
        g = self._chk("nvmlDeviceGetAttributes", h)
        return SimpleNamespace(multiprocessorCount=g.sm_count, sharedCopyEngineCount=1, sharedDecoderCount=0,
                               sharedEncoderCount=0, sharedJpegCount=0, sharedOfaCount=0,
                               gpuInstanceSliceCount=g.mig_slices or 7, computeInstanceSliceCount=g.mig_slices or 7,
                               memorySizeMB=g.memory_mib)

    def nvmlDeviceGetPersistenceMode(self, h: FakeGpu) -> int:
        return int(self._chk("nvmlDeviceGetPersistenceMode", h).persistence)

    def nvmlDeviceGetEccMode(self, h: FakeGpu) -> list[int]:
        g = self._chk("nvmlDeviceGetEccMode", h)
        if g.ecc is None:
            raise NVMLError_NotSupported()
        return [int(g.ecc), int(g.ecc)]

    # live counters
    def nvmlDeviceGetClockInfo(self, h: FakeGpu, which: int) -> int:
        g = self._chk("nvmlDeviceGetClockInfo", h)
        if which == NVML_CLOCK_SM:
            g.tick += 1
            return int(g.current().get("sm", g.max_sm))
        return int(g.current().get("mem", g.max_mem))

    def _counter(self, fn: str, h: FakeGpu, key: str) -> Any:
        g = self._chk(fn, h)
        cur = g.current()
        if key not in cur:
            raise NVMLError_NotSupported()
        return cur[key]

    def nvmlDeviceGetPowerUsage(self, h: FakeGpu) -> int:
        return int(self._counter("nvmlDeviceGetPowerUsage", h, "power_mw"))

    def nvmlDeviceGetTotalEnergyConsumption(self, h: FakeGpu) -> int:
        return int(self._counter("nvmlDeviceGetTotalEnergyConsumption", h, "energy_mj"))

    def nvmlDeviceGetTemperature(self, h: FakeGpu, sensor: int) -> int:
        return int(self._counter("nvmlDeviceGetTemperature", h, "temp"))

    def nvmlDeviceGetUtilizationRates(self, h: FakeGpu) -> SimpleNamespace:
        g = self._chk("nvmlDeviceGetUtilizationRates", h)
        cur = g.current()
        if "util" not in cur:
            raise NVMLError_NotSupported()
        return SimpleNamespace(gpu=cur["util"], memory=cur.get("mem_util", 0))

    def nvmlDeviceGetPerformanceState(self, h: FakeGpu) -> int:
        return int(self._counter("nvmlDeviceGetPerformanceState", h, "pstate"))

    def nvmlDeviceGetCurrentClocksEventReasons(self, h: FakeGpu) -> int:
        return int(self._counter("nvmlDeviceGetCurrentClocksEventReasons", h, "reasons"))

    def nvmlDeviceGetCurrentClocksThrottleReasons(self, h: FakeGpu) -> int:
        return int(self._counter("nvmlDeviceGetCurrentClocksThrottleReasons", h, "reasons"))

    def nvmlDeviceGetViolationStatus(self, h: FakeGpu, policy: int) -> SimpleNamespace:
        key = "viol_power_ns" if policy == NVML_PERF_POLICY_POWER else "viol_thermal_ns"
        v = self._counter("nvmlDeviceGetViolationStatus", h, key)
        return SimpleNamespace(referenceTime=0, violationTime=int(v))


def make_module(gpus: list[FakeGpu] | None = None, **kw: Any) -> types.ModuleType:
    """A fresh fake ``pynvml`` module over ``gpus`` (keyword args: see :class:`FakeNvml`)."""
    state = FakeNvml(list(gpus) if gpus is not None else [], **kw)
    mod = types.ModuleType("pynvml_fake")
    mod.IS_FAKE = True
    mod.state = state
    for name, value in globals().items():
        if name.startswith(("NVML_", "NVMLError")):
            setattr(mod, name, value)
    for fn in FUNCTIONS:
        if fn not in state.missing:
            setattr(mod, fn, getattr(state, fn))
    return mod



# Importing this file directly gives one healthy H100 SXM.
_default = make_module([h100_sxm()])
state = _default.state
for _fn in FUNCTIONS:
    globals()[_fn] = getattr(_default, _fn)
del _fn
