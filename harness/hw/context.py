"""The hardware a run uses, decided once per run: the machine's profile, the chosen GPU and its class."""

from __future__ import annotations

from dataclasses import dataclass
from types import ModuleType
from typing import Any

from harness.hw.gpu_class import GpuClass, decide_class, peak_flops_env
from harness.hw.profile import GpuProfile, MachineProfile, machine_profile, runnable_gpus


class HardwareError(ValueError):
    """The GPU asked for does not exist here."""


@dataclass
class HardwareContext:
    profile: MachineProfile
    gpu: GpuProfile | None  # None: the run uses the CPU
    cls: GpuClass

    @property
    def gpu_uuids(self) -> list[str]:
        return [self.gpu.uuid] if self.gpu else []

    @property
    def peak_flops_env(self) -> str:
        """What HARNESS_PEAK_FLOPS carries: the class's peak, or 'unknown' (never an assumed H100)."""
        return peak_flops_env(self.cls)

    def to_record(self) -> dict[str, Any]:
        return {
            "class": self.cls.label,
            "class_info": self.cls.to_dict(),
            "gpu": self.gpu.to_dict() if self.gpu else None,
            "host": self.profile.host.to_dict(),
            "nvml": self.profile.nvml,
        }


def detect_hardware(gpu: str | None = None, nvml_module: ModuleType | None = None,
                    probe_docker: bool = True) -> HardwareContext:
    """This machine's hardware; gpu picks a device by index or UUID (default: the first runnable one)."""
    profile = machine_profile(nvml_module, probe_docker=probe_docker)
    devices = runnable_gpus(profile.gpus)
    chosen = None
    if gpu is not None:
        matches = [g for g in devices if g.uuid == gpu or str(g.index) == gpu]
        if not matches:
            known = ", ".join(f"{g.index}:{g.uuid}" for g in devices) or "none (no GPU visible through NVML)"
            raise HardwareError(f"no GPU '{gpu}' on this machine; runnable GPUs: {known}")
        chosen = matches[0]
    elif devices:
        chosen = devices[0]
    cls = decide_class(chosen or profile, gpu_uuid=chosen.uuid if chosen else None)
    return HardwareContext(profile, chosen, cls)
