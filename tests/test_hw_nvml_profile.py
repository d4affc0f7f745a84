"""NVML access and static profiles: the real no-GPU path here, the GPU paths with the fake."""

from __future__ import annotations

import ctypes
import re
import sys

import pytest

from harness.hw.gpu_class import decide_class
from harness.hw.nvml import NvmlUnavailable, nvml_status, open_nvml, reason_names
from harness.hw.profile import (
    GpuProfile,
    docker_facts,
    gpu_profile_by_uuid,
    host_facts,
    list_gpu_profiles,
    machine_profile,
    runnable_gpus,
)
from tests.fakes import load_fake_nvml

FAKE = load_fake_nvml()


def real_nvml_works() -> bool:
    return nvml_status().available


# --- the real library on this machine -------------------------------------------------------

def test_real_pynvml_without_driver_raises_clear_unavailable():
    if real_nvml_works():
        pytest.skip("this machine has a working NVIDIA driver")
    import pynvml

    with pytest.raises(pynvml.NVMLError_LibraryNotFound):
        pynvml.nvmlInit()
    with pytest.raises(NvmlUnavailable) as ei:
        open_nvml()
    msg = str(ei.value)
    assert msg.startswith("NVML not available: ")
    assert "library not found" in msg.lower()
    st = nvml_status()
    assert not st.available and st.label.startswith("NVML not available: ")


def test_real_machine_profile_without_gpu_gives_cpu_class():
    if real_nvml_works():
        pytest.skip("this machine has a working NVIDIA driver")
    mp = machine_profile(probe_docker=False)
    assert mp.gpus == [] and not mp.nvml_available
    assert mp.nvml.startswith("NVML not available: ")
    cls = decide_class(mp)
    assert cls.kind == "cpu" and not cls.known
    assert re.fullmatch(r"CPU-[A-Za-z0-9.\-]+-\d+c", cls.label), cls.label
    assert cls.label.endswith(f"-{mp.host.effective_cores}c")
    assert all(v is None for v in cls.peak_flops.values())
    d = mp.to_dict()
    assert d["host"]["cpu_model"] and d["host"]["ram_bytes"] > 0 and d["host"]["kernel"]


def test_missing_pynvml_module(monkeypatch):
    monkeypatch.setitem(sys.modules, "pynvml", None)  # import pynvml -> ImportError
    with pytest.raises(NvmlUnavailable, match="NVML not available: nvidia-ml-py is not installed"):
        open_nvml()
    mp = machine_profile(probe_docker=False)
    assert mp.gpus == [] and "nvidia-ml-py is not installed" in mp.nvml


@pytest.mark.parametrize(
    "err, text",
    [("library_not_found", "library not found"), ("driver_not_loaded", "driver is not loaded"),
     ("uninitialized", "nvmlinit failed")],
)
def test_init_errors_are_unavailable(err, text):
    mod = FAKE.make_module([FAKE.h100_sxm()], init_error=err)
    with pytest.raises(NvmlUnavailable) as ei:
        open_nvml(mod)
    assert str(ei.value).startswith("NVML not available: ") and text in str(ei.value).lower()


# --- host facts / docker --------------------------------------------------------------------

class _FakeDocker:
    def version(self):
        return {"Version": "27.1.0", "ApiVersion": "1.46",
                "Components": [{"Name": "containerd", "Version": "1.7.19"}, {"Name": "runc", "Version": "1.1.13"}]}

    def info(self):
        return {"Runtimes": {"runc": {}, "nvidia": {}}, "DefaultRuntime": "runc"}


class _BrokenDocker:
    def version(self):
        raise ConnectionError("socket missing")


def test_docker_facts_from_sdk_and_unavailable():
    d = docker_facts(_FakeDocker())
    assert d["docker_version"] == "27.1.0" and d["docker_api_version"] == "1.46"
    assert d["docker_components"] == {"containerd": "1.7.19", "runc": "1.1.13"}
    assert d["docker_runtimes"] == ["nvidia", "runc"]
    bad = docker_facts(_BrokenDocker())
    assert "docker_version" not in bad and "socket missing" in bad["docker_error"]
    h = host_facts(docker_client=_BrokenDocker())
    assert h.docker_version == "unavailable" and h.docker_runtimes == [] and "ConnectionError" in h.docker_error


def test_host_facts_without_probe():
    h = host_facts(probe_docker=False)
    assert h.cpu_logical_cores >= 1 and 1 <= h.effective_cores <= h.cpu_logical_cores
    assert h.docker_version == "unavailable" and h.docker_error == "not probed"


# --- GPU profiles through the fake ----------------------------------------------------------

def test_h100_profile_fields():
    mod = FAKE.make_module([FAKE.h100_sxm()])
    mp = machine_profile(mod, probe_docker=False)
    assert mp.nvml_available and "driver 550.54.15" in mp.nvml
    (g,) = mp.gpus
    assert g.name == "NVIDIA H100 80GB HBM3"
    assert g.uuid.startswith("GPU-") and g.pci_bus_id == "00000000:18:00.0"  # bytes decoded
    assert g.pci_device == 0x2330 and g.to_dict()["pci_device_id_hex"] == "0x233010DE"
    assert g.driver_version == "550.54.15" and g.cuda_driver_version == "12.4"
    assert g.compute_capability == "9.0" and g.vbios_version
    assert g.memory_total_bytes == 81559 * 2**20
    assert g.power_limit_enforced_w == 700.0 and g.power_limit_default_w == 700.0
    assert (g.max_sm_clock_mhz, g.max_mem_clock_mhz) == (1980, 2619)
    assert (g.app_sm_clock_mhz, g.app_mem_clock_mhz) == (1755, 2619)
    assert g.mig_mode is False and g.persistence_mode is True and g.ecc_enabled is True
    assert g.multiprocessor_count == 132 and not g.is_mig_instance
    assert mod.state.init_count == 0  # the session was shut down


def test_rtx4090_unsupported_fields_are_none():
    mod = FAKE.make_module([FAKE.rtx4090()])
    (g,) = machine_profile(mod, probe_docker=False).gpus
    assert g.ecc_enabled is None and g.mig_mode is None and g.app_sm_clock_mhz is None
    assert g.power_limit_default_w == 450.0


def test_mig_instances_listed_and_runnable():
    mod = FAKE.make_module([FAKE.a100_with_mig()])
    with open_nvml(mod) as s:
        gpus = list_gpu_profiles(s)
        assert [g.is_mig_instance for g in gpus] == [False, True]
        mig = gpus[1]
        assert mig.uuid.startswith("MIG-") and mig.mig_profile == "1g.10gb"
        assert mig.parent_uuid == gpus[0].uuid and mig.parent_name == "NVIDIA A100-SXM4-80GB"
        assert mig.pci_device == 0x20B2 and mig.power_limit_default_w == 400.0  # read on the parent
        assert mig.multiprocessor_count == 14 and mig.memory_total_bytes == 9728 * 2**20
        assert runnable_gpus(gpus) == [mig]
        assert gpu_profile_by_uuid(s, mig.uuid).mig_profile == "1g.10gb"
        with pytest.raises(LookupError):
            gpu_profile_by_uuid(s, "GPU-does-not-exist")


def test_mig_profile_from_attributes_when_name_lacks_it():
    parent = FAKE.a100_with_mig()
    parent.mig_children[0].name = "NVIDIA A100-SXM4-80GB"  # an older driver
    mod = FAKE.make_module([parent])
    mig = machine_profile(mod, probe_docker=False).gpus[1]
    assert mig.mig_profile == "1g.10gb"


def test_session_helpers_and_ctypes_values():
    mod = FAKE.make_module([FAKE.a100_with_mig()])
    with open_nvml(mod) as s:
        mig = s.handle_by_uuid("MIG-66666666-6666-6666-6666-666666666666")
        assert isinstance(mod.nvmlDeviceIsMigDeviceHandle(mig), ctypes.c_uint)
        assert s.is_mig_device(mig) is True
        assert s.power_w(mig) is None  # not supported on a MIG handle -> None, remembered
        assert not s.supported("nvmlDeviceGetPowerUsage")
        assert s.power_w(s.parent_of_mig(mig)) is None  # remembered for the session (sampler reads the parent)
    assert mod.state.calls["nvmlDeviceGetPowerUsage"] == 1


def test_throttle_reason_fallback_for_old_module():
    mod = FAKE.make_module([FAKE.throttling_h100()], missing=("nvmlDeviceGetCurrentClocksEventReasons",))
    with open_nvml(mod) as s:
        h = s.handle_by_index(0)
        s.clock(h, "sm")
        s.clock(h, "sm")  # second script entry: power cap
        assert s.clock_event_reasons(h) == 0x4
    assert mod.state.calls["nvmlDeviceGetCurrentClocksThrottleReasons"] == 1


def test_reason_names():
    assert reason_names(0) == []
    assert reason_names(0x4 | 0x20) == ["sw_power_cap", "sw_thermal"]
    assert reason_names(0x1 | 0x8000) == ["gpu_idle", "0x8000"]


def test_profile_dataclass_roundtrip_keys():
    g = GpuProfile(name="x", uuid="GPU-x")
    d = g.to_dict()
    assert d["name"] == "x" and d["pci_device_id_hex"] is None and g.pci_device is None
