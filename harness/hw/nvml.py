"""The one place that talks to NVML (PyPI ``nvidia-ml-py``, module ``pynvml``).

Everything else in ``harness.hw`` receives an :class:`NvmlSession` (or a module to build one
from) instead of importing ``pynvml`` itself, so tests can hand in ``tests/fakes/pynvml.py``
and the library keeps no global state.

Without a driver (a CPU-only machine) ``pynvml.nvmlInit`` raises ``NVMLError_LibraryNotFound``;
:func:`open_nvml` turns that, a missing ``pynvml`` module and every other start-up failure into
:class:`NvmlUnavailable` whose message starts with ``"NVML not available: "``. Callers take the
CPU path from there.

Functions used from the module (the fake implements exactly these)::

    nvmlInit nvmlShutdown nvmlSystemGetDriverVersion nvmlSystemGetCudaDriverVersion
    nvmlDeviceGetCount nvmlDeviceGetHandleByIndex nvmlDeviceGetHandleByUUID
    nvmlDeviceGetName nvmlDeviceGetUUID nvmlDeviceGetPciInfo nvmlDeviceGetVbiosVersion
    nvmlDeviceGetCudaComputeCapability nvmlDeviceGetMemoryInfo
    nvmlDeviceGetEnforcedPowerLimit nvmlDeviceGetPowerManagementDefaultLimit
    nvmlDeviceGetMaxClockInfo nvmlDeviceGetApplicationsClock nvmlDeviceGetClockInfo
    nvmlDeviceGetMigMode nvmlDeviceIsMigDeviceHandle nvmlDeviceGetMaxMigDeviceCount
    nvmlDeviceGetMigDeviceHandleByIndex nvmlDeviceGetDeviceHandleFromMigDeviceHandle
    nvmlDeviceGetAttributes nvmlDeviceGetPersistenceMode nvmlDeviceGetEccMode
    nvmlDeviceGetPowerUsage nvmlDeviceGetTotalEnergyConsumption nvmlDeviceGetTemperature
    nvmlDeviceGetUtilizationRates nvmlDeviceGetPerformanceState
    nvmlDeviceGetCurrentClocksEventReasons (or nvmlDeviceGetCurrentClocksThrottleReasons)
    nvmlDeviceGetViolationStatus
    constants: NVML_CLOCK_SM NVML_CLOCK_MEM NVML_TEMPERATURE_GPU NVML_PERF_POLICY_POWER
               NVML_PERF_POLICY_THERMAL NVML_DEVICE_MIG_ENABLE
    errors:    NVMLError (with .value), NVMLError_LibraryNotFound, NVMLError_DriverNotLoaded
"""

from __future__ import annotations

import importlib
import threading
from dataclasses import dataclass
from types import ModuleType
from typing import Any, Callable

NVML_UNAVAILABLE_PREFIX = "NVML not available: "

# Clock-event (throttle) reason bits, identical in the Event and the older Throttle API.
REASON_GPU_IDLE = 0x1
REASON_APP_CLOCKS = 0x2
REASON_SW_POWER_CAP = 0x4
REASON_HW_SLOWDOWN = 0x8
REASON_SYNC_BOOST = 0x10
REASON_SW_THERMAL = 0x20
REASON_HW_THERMAL = 0x40
REASON_HW_POWER_BRAKE = 0x80
REASON_DISPLAY_CLOCKS = 0x100

REASON_NAMES = {
    REASON_GPU_IDLE: "gpu_idle",
    REASON_APP_CLOCKS: "applications_clocks",
    REASON_SW_POWER_CAP: "sw_power_cap",
    REASON_HW_SLOWDOWN: "hw_slowdown",
    REASON_SYNC_BOOST: "sync_boost",
    REASON_SW_THERMAL: "sw_thermal",
    REASON_HW_THERMAL: "hw_thermal",
    REASON_HW_POWER_BRAKE: "hw_power_brake",
    REASON_DISPLAY_CLOCKS: "display_clocks",
}

# pynvml constant values, used when a module lacks the attribute.
_DEFAULT_CONSTANTS = {
    "NVML_CLOCK_SM": 1,
    "NVML_CLOCK_MEM": 2,
    "NVML_TEMPERATURE_GPU": 0,
    "NVML_PERF_POLICY_POWER": 0,
    "NVML_PERF_POLICY_THERMAL": 1,
    "NVML_DEVICE_MIG_ENABLE": 1,
}


class NvmlUnavailable(RuntimeError):
    """NVML cannot be used here. ``str(exc)`` starts with ``"NVML not available: "``."""

    def __init__(self, reason: str):
        self.reason = reason
        super().__init__(NVML_UNAVAILABLE_PREFIX + reason)


def reason_names(mask: int | None) -> list[str]:
    """Names of the clock-event reason bits set in ``mask`` (unknown bits as hex)."""
    if not mask:
        return []
    names = [name for bit, name in REASON_NAMES.items() if mask & bit]
    rest = mask & ~sum(REASON_NAMES)
    if rest:
        names.append(hex(rest))
    return names


def _as_text(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, (bytes, bytearray)):
        return bytes(value).decode("utf-8", "replace").rstrip("\x00")
    return str(value)


def _as_int(value: Any) -> int | None:
    """pynvml returns some values as ctypes objects (nvmlDeviceIsMigDeviceHandle gives c_uint)."""
    if value is None:
        return None
    value = getattr(value, "value", value)
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def _describe_init_error(module: ModuleType, exc: BaseException) -> str:
    name = type(exc).__name__
    text = str(exc) or name
    if name == "NVMLError_LibraryNotFound":
        return f"NVML shared library not found (no NVIDIA driver on this machine) [{text}]"
    if name == "NVMLError_DriverNotLoaded":
        return f"the NVIDIA driver is not loaded [{text}]"
    if name == "NVMLError_NoPermission":
        return f"no permission to use the NVIDIA device nodes [{text}]"
    return f"nvmlInit failed: {name}: {text}"


def import_pynvml() -> ModuleType:
    """Import the real ``pynvml``; :class:`NvmlUnavailable` when nvidia-ml-py is not installed."""
    try:
        return importlib.import_module("pynvml")
    except ImportError as exc:  # pragma: no cover - nvidia-ml-py is a dependency
        raise NvmlUnavailable(f"nvidia-ml-py is not installed ({exc}); pip install nvidia-ml-py") from exc


class NvmlSession:
    """An initialised NVML. Close it (or use ``with``) to call ``nvmlShutdown``.

    NVML reference-counts init/shutdown, so several sessions (the sampler thread's and the
    caller's, say) may be open at once.
    """

    def __init__(self, module: ModuleType):
        self.module = module
        self._closed = False
        self._unsupported: set[str] = set()
        self._lock = threading.Lock()
        self.is_fake = bool(getattr(module, "IS_FAKE", False))

    # -- life cycle -------------------------------------------------------------------------
    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        try:
            self.module.nvmlShutdown()
        except Exception:  # noqa: BLE001 - shutdown failures are not interesting
            pass

    def __enter__(self) -> "NvmlSession":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- helpers ----------------------------------------------------------------------------
    def const(self, name: str) -> int:
        return getattr(self.module, name, _DEFAULT_CONSTANTS[name])

    def _is_nvml_error(self, exc: BaseException) -> bool:
        err = getattr(self.module, "NVMLError", None)
        return isinstance(err, type) and isinstance(exc, err)

    def call(self, fn_name: str, *args: Any, remember: bool = False) -> Any:
        """Call ``module.fn_name(*args)``; None when the function is missing or NVML errors.

        With ``remember`` (used by the live counters) a function that answered "not supported" or
        "function not found" (or is missing from the module) is not asked again: the sampler calls
        the same functions every tick, and an unsupported one should cost nothing after the first
        try.
        """
        if fn_name in self._unsupported:
            return None
        fn: Callable[..., Any] | None = getattr(self.module, fn_name, None)
        if fn is None:
            self._unsupported.add(fn_name)
            return None
        try:
            return fn(*args)
        except Exception as exc:  # noqa: BLE001
            if not self._is_nvml_error(exc):
                raise
            code = getattr(exc, "value", None)
            # 3 = NOT_SUPPORTED, 13 = FUNCTION_NOT_FOUND
            if remember and code in (3, 13):
                with self._lock:
                    self._unsupported.add(fn_name)
            return None

    def supported(self, fn_name: str) -> bool:
        return fn_name not in self._unsupported and hasattr(self.module, fn_name)

    # -- system -----------------------------------------------------------------------------
    def driver_version(self) -> str | None:
        return _as_text(self.call("nvmlSystemGetDriverVersion"))

    def cuda_driver_version(self) -> str | None:
        """CUDA version the driver supports, e.g. ``"12.4"`` (NVML gives 12040)."""
        v = _as_int(self.call("nvmlSystemGetCudaDriverVersion"))
        if v is None:
            return None
        return f"{v // 1000}.{(v % 1000) // 10}"

    def device_count(self) -> int:
        return _as_int(self.call("nvmlDeviceGetCount")) or 0

    def handle_by_index(self, index: int) -> Any:
        return self.module.nvmlDeviceGetHandleByIndex(index)

    def handle_by_uuid(self, uuid: str) -> Any:
        """Handle of a GPU or MIG instance by UUID (``GPU-...`` or ``MIG-...``).

        Raises ``LookupError`` when no device has that UUID.
        """
        try:
            return self.module.nvmlDeviceGetHandleByUUID(uuid)
        except Exception as exc:  # noqa: BLE001
            if self._is_nvml_error(exc):
                raise LookupError(f"no GPU with UUID {uuid!r}: {exc}") from exc
            raise

    # -- device facts ----------------------------------------------------------------------
    def name(self, h: Any) -> str | None:
        return _as_text(self.call("nvmlDeviceGetName", h))

    def uuid(self, h: Any) -> str | None:
        return _as_text(self.call("nvmlDeviceGetUUID", h))

    def pci(self, h: Any) -> tuple[str | None, int | None, int | None]:
        """(bus id, 32-bit PCI device id (device << 16 | vendor), subsystem id)."""
        info = self.call("nvmlDeviceGetPciInfo", h)
        if info is None:
            return None, None, None
        bus = _as_text(getattr(info, "busId", None)) or _as_text(getattr(info, "busIdLegacy", None))
        return bus, _as_int(getattr(info, "pciDeviceId", None)), _as_int(getattr(info, "pciSubSystemId", None))

    def vbios(self, h: Any) -> str | None:
        return _as_text(self.call("nvmlDeviceGetVbiosVersion", h))

    def compute_capability(self, h: Any) -> str | None:
        cc = self.call("nvmlDeviceGetCudaComputeCapability", h)
        if not cc:
            return None
        return f"{int(cc[0])}.{int(cc[1])}"

    def memory(self, h: Any) -> tuple[int | None, int | None]:
        """(total bytes, used bytes)."""
        m = self.call("nvmlDeviceGetMemoryInfo", h)
        if m is None:
            return None, None
        return _as_int(getattr(m, "total", None)), _as_int(getattr(m, "used", None))

    def power_limits_w(self, h: Any) -> tuple[float | None, float | None]:
        """(enforced, default) power limit in W."""
        enf = _as_int(self.call("nvmlDeviceGetEnforcedPowerLimit", h))
        dflt = _as_int(self.call("nvmlDeviceGetPowerManagementDefaultLimit", h))
        return (enf / 1000.0 if enf is not None else None, dflt / 1000.0 if dflt is not None else None)

    def max_clocks(self, h: Any) -> tuple[int | None, int | None]:
        """(SM, memory) maximum clocks in MHz."""
        return (
            _as_int(self.call("nvmlDeviceGetMaxClockInfo", h, self.const("NVML_CLOCK_SM"))),
            _as_int(self.call("nvmlDeviceGetMaxClockInfo", h, self.const("NVML_CLOCK_MEM"))),
        )

    def application_clocks(self, h: Any) -> tuple[int | None, int | None]:
        return (
            _as_int(self.call("nvmlDeviceGetApplicationsClock", h, self.const("NVML_CLOCK_SM"))),
            _as_int(self.call("nvmlDeviceGetApplicationsClock", h, self.const("NVML_CLOCK_MEM"))),
        )

    def mig_mode(self, h: Any) -> tuple[bool | None, bool | None]:
        """(current, pending) MIG mode; None where MIG is not supported."""
        modes = self.call("nvmlDeviceGetMigMode", h)
        if not modes:
            return None, None
        on = self.const("NVML_DEVICE_MIG_ENABLE")
        return int(modes[0]) == on, int(modes[1]) == on

    def is_mig_device(self, h: Any) -> bool:
        return bool(_as_int(self.call("nvmlDeviceIsMigDeviceHandle", h)))

    def mig_devices(self, h: Any) -> list[Any]:
        """Handles of the MIG instances of a physical GPU (empty without MIG)."""
        count = _as_int(self.call("nvmlDeviceGetMaxMigDeviceCount", h)) or 0
        out = []
        for i in range(count):
            mh = self.call("nvmlDeviceGetMigDeviceHandleByIndex", h, i)
            if mh is not None:
                out.append(mh)
        return out

    def parent_of_mig(self, h: Any) -> Any:
        return self.call("nvmlDeviceGetDeviceHandleFromMigDeviceHandle", h)

    def attributes(self, h: Any) -> dict[str, int] | None:
        """multiprocessorCount, gpuInstanceSliceCount, memorySizeMB, ... (MIG-aware)."""
        a = self.call("nvmlDeviceGetAttributes", h)
        if a is None:
            return None
        keys = ("multiprocessorCount", "gpuInstanceSliceCount", "computeInstanceSliceCount", "memorySizeMB")
        return {k: _as_int(getattr(a, k, None)) for k in keys if getattr(a, k, None) is not None}

    def persistence_mode(self, h: Any) -> bool | None:
        v = _as_int(self.call("nvmlDeviceGetPersistenceMode", h))
        return None if v is None else bool(v)

    def ecc_mode(self, h: Any) -> bool | None:
        v = self.call("nvmlDeviceGetEccMode", h)
        if not v:
            return None
        return bool(int(v[0]))

    # -- live counters ---------------------------------------------------------------------
    def clock(self, h: Any, which: str) -> int | None:
        const = self.const("NVML_CLOCK_SM" if which == "sm" else "NVML_CLOCK_MEM")
        return _as_int(self.call("nvmlDeviceGetClockInfo", h, const, remember=True))

    def power_w(self, h: Any) -> float | None:
        mw = _as_int(self.call("nvmlDeviceGetPowerUsage", h, remember=True))
        return None if mw is None else mw / 1000.0

    def energy_j(self, h: Any) -> float | None:
        """Total-energy counter since the driver loaded, in J (NVML gives mJ)."""
        mj = _as_int(self.call("nvmlDeviceGetTotalEnergyConsumption", h, remember=True))
        return None if mj is None else mj / 1000.0

    def temperature_c(self, h: Any) -> int | None:
        return _as_int(self.call("nvmlDeviceGetTemperature", h, self.const("NVML_TEMPERATURE_GPU"), remember=True))

    def utilization(self, h: Any) -> tuple[int | None, int | None]:
        u = self.call("nvmlDeviceGetUtilizationRates", h, remember=True)
        if u is None:
            return None, None
        return _as_int(getattr(u, "gpu", None)), _as_int(getattr(u, "memory", None))

    def performance_state(self, h: Any) -> int | None:
        return _as_int(self.call("nvmlDeviceGetPerformanceState", h, remember=True))

    def clock_event_reasons(self, h: Any) -> int | None:
        """Current clock-event reasons bitmask (falls back to the older ThrottleReasons call)."""
        if self.supported("nvmlDeviceGetCurrentClocksEventReasons"):
            v = self.call("nvmlDeviceGetCurrentClocksEventReasons", h, remember=True)
            if v is not None:
                return _as_int(v)
        return _as_int(self.call("nvmlDeviceGetCurrentClocksThrottleReasons", h, remember=True))

    def violation_ns(self, h: Any, policy: str) -> int | None:
        """Cumulative time (ns) the GPU was held back by ``policy`` ("power" or "thermal")."""
        const = self.const("NVML_PERF_POLICY_POWER" if policy == "power" else "NVML_PERF_POLICY_THERMAL")
        v = self.call("nvmlDeviceGetViolationStatus", h, const, remember=True)
        if v is None:
            return None
        return _as_int(getattr(v, "violationTime", None))


def open_nvml(module: ModuleType | None = None) -> NvmlSession:
    """Initialise NVML and return a session.

    ``module`` is the pynvml-like module to use (a fake in tests); None imports the real one.
    Raises :class:`NvmlUnavailable` (``"NVML not available: <reason>"``) when NVML cannot start.
    """
    mod = module if module is not None else import_pynvml()
    try:
        mod.nvmlInit()
    except Exception as exc:  # noqa: BLE001 - every init failure means "no NVML here"
        raise NvmlUnavailable(_describe_init_error(mod, exc)) from exc
    return NvmlSession(mod)


@dataclass
class NvmlStatus:
    available: bool
    reason: str | None  # None when available
    driver_version: str | None = None
    cuda_driver_version: str | None = None
    device_count: int = 0

    @property
    def label(self) -> str:
        """``"NVML <driver>"`` or ``"NVML not available: <reason>"``."""
        if self.available:
            return (
                f"NVML available (driver {self.driver_version}, CUDA {self.cuda_driver_version}, "
                f"{self.device_count} GPU(s))"
            )
        return NVML_UNAVAILABLE_PREFIX + (self.reason or "unknown reason")

    def to_dict(self) -> dict[str, Any]:
        return {
            "available": self.available,
            "reason": self.reason,
            "driver_version": self.driver_version,
            "cuda_driver_version": self.cuda_driver_version,
            "device_count": self.device_count,
            "label": self.label,
        }


def nvml_status(module: ModuleType | None = None) -> NvmlStatus:
    """Probe NVML without raising."""
    try:
        session = open_nvml(module)
    except NvmlUnavailable as exc:
        return NvmlStatus(available=False, reason=exc.reason)
    with session:
        return NvmlStatus(
            available=True,
            reason=None,
            driver_version=session.driver_version(),
            cuda_driver_version=session.cuda_driver_version(),
            device_count=session.device_count(),
        )
