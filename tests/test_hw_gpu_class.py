"""GPU class decision, the class table and peak FLOP/s."""

from __future__ import annotations


import pytest

from harness.hw import class_table
from harness.hw.class_table import TABLE_PATH
from harness.hw.gpu_class import (
    REFERENCE_CLASS,
    class_from_label,
    cpu_slug,
    decide_class,
    gpu_slug,
    load_class_table,
    peak_flops_env,
    peak_flops_for_run,
    power_bucket,
    snap_memory_gb,
)
from harness.hw.profile import GpuProfile, HostFacts, MachineProfile, machine_profile
from tests.fakes import load_fake_nvml

FAKE = load_fake_nvml()
MIB = 2**20


def _cls(gpu):
    mp = machine_profile(FAKE.make_module([gpu]), probe_docker=False)
    return decide_class(mp), mp


@pytest.mark.parametrize(
    "factory, label, family, bf16",
    [
        (FAKE.h100_sxm, "H100-SXM-80GB·700W", "H100-SXM", 989.5e12),
        (FAKE.h100_pcie, "H100-PCIe-80GB·350W", "H100-PCIe", 756e12),
        (FAKE.a100_sxm, "A100-SXM-80GB·400W", "A100-SXM", 312e12),
        (FAKE.rtx4090, "RTX4090-24GB·450W", "RTX4090", 165.2e12),
        (FAKE.throttling_h100, "H100-SXM-80GB·700W", "H100-SXM", 989.5e12),
    ],
)
def test_known_classes(factory, label, family, bf16):
    cls, _ = _cls(factory())
    assert cls.label == label and cls.family == family and cls.known and cls.kind == "gpu"
    assert cls.peak_flops["bf16"] == bf16 and cls.mem_bw > 0
    assert peak_flops_for_run(cls) == bf16


def test_mig_slice_class_scales_peaks():
    cls, mp = _cls(FAKE.a100_with_mig())
    assert cls.label == "A100-SXM-80GB·MIG-1g.10gb"  # the runnable device is the slice
    assert cls.known and cls.mig_profile == "1g.10gb" and cls.power_bucket_w is None
    assert cls.peak_flops["bf16"] == pytest.approx(312e12 * 14 / 108)
    assert cls.mem_bw == pytest.approx(2.039e12 * 9728 / 81920)
    parent = decide_class(mp.gpus[0])
    assert parent.label == "A100-SXM-80GB·400W"


def test_unknown_gpu_is_never_an_h100():
    cls, _ = _cls(FAKE.unknown_gpu())
    assert cls.label == "B200-180GB·1000W"
    assert not cls.known and cls.family == "B200"
    assert all(v is None for v in cls.peak_flops.values()) and cls.mem_bw is None
    assert peak_flops_for_run(cls) is None and peak_flops_env(cls) == "unknown"


def _gpu(name, dev=None, mem_mib=81559, default_w=None, enforced_w=None):
    return GpuProfile(
        name=name, uuid="GPU-t", pci_device_id=(dev << 16 | 0x10DE) if dev else None,
        memory_total_bytes=mem_mib * MIB, power_limit_default_w=default_w,
        power_limit_enforced_w=enforced_w if enforced_w is not None else default_w,
    )


def test_form_factor_from_name_then_power():
    assert decide_class(_gpu("NVIDIA H100 PCIe", default_w=350)).label == "H100-PCIe-80GB·350W"
    assert decide_class(_gpu("NVIDIA H100 80GB HBM3", default_w=700)).family == "H100-SXM"
    # no pci id, no form in the name: decided by the default power limit
    assert decide_class(_gpu("NVIDIA H100", default_w=700)).family == "H100-SXM"
    assert decide_class(_gpu("NVIDIA H100", default_w=300)).family == "H100-PCIe"
    # undecidable: chip label, peaks unknown
    c = decide_class(_gpu("NVIDIA H100", default_w=None))
    assert c.label == "H100-80GB" and not c.known and c.peak_flops["bf16"] is None
    assert "form factor undecided" in c.note


def test_power_limit_bucket_uses_enforced_limit():
    capped = decide_class(_gpu("NVIDIA H100 80GB HBM3", dev=0x2330, default_w=700, enforced_w=498.7))
    assert capped.label == "H100-SXM-80GB·500W" and capped.family == "H100-SXM"
    assert power_bucket(689) == 700 and power_bucket(680) == 675 and power_bucket(None) is None


def test_pci_id_needs_agreeing_name():
    # a device id of an H100 SXM, but the name says A100 PCIe: trust the name
    c = decide_class(_gpu("NVIDIA A100 80GB PCIe", dev=0x2330, mem_mib=81920, default_w=300))
    assert c.family == "A100-PCIe" and c.label == "A100-PCIe-80GB·300W"
    assert c.mem_bw == 1.935e12


def test_a100_40gb_bandwidth_by_memory():
    c = decide_class(_gpu("NVIDIA A100-SXM4-40GB", dev=0x20B0, mem_mib=40960, default_w=400))
    assert c.label == "A100-SXM-40GB·400W" and c.mem_bw == 1.555e12


@pytest.mark.parametrize(
    "mib, gb",
    [(81559, 80), (81920, 80), (143771, 141), (46068, 48), (23028, 24), (24564, 24), (15360, 16),
     (40960, 40), (95830, 94), (9728, 10), (4864, 5), (183359, 180), (30000, 32), (28000, 27)],
)
def test_snap_memory(mib, gb):
    assert snap_memory_gb(mib * MIB) == gb


def test_slugs():
    assert gpu_slug("NVIDIA GeForce RTX 5090") == "RTX5090"
    assert gpu_slug("NVIDIA RTX A6000") == "RTX-A6000"
    assert gpu_slug("NVIDIA B200") == "B200"
    assert cpu_slug("AMD EPYC 7763 64-Core Processor") == "AMD-EPYC-7763"
    assert cpu_slug("Intel(R) Xeon(R) Platinum 8480+ CPU @ 2.00GHz") == "Intel-Xeon-Platinum-8480"


def _host(model="AMD EPYC 7763 64-Core Processor", usable=16, quota=None):
    return HostFacts(hostname="h", cpu_model=model, cpu_logical_cores=128, cpu_usable_cores=usable,
                     cpu_physical_cores=64, cpu_quota_cores=quota, ram_bytes=1, os="x", kernel="y",
                     arch="x86_64", python_version="3.11")


def test_cpu_class():
    c = decide_class(_host())
    assert c.label == "CPU-AMD-EPYC-7763-16c" and c.kind == "cpu" and not c.known
    assert peak_flops_for_run(c) is None
    assert decide_class(_host(quota=4.0)).label.endswith("-4c")
    assert decide_class(_host(), cpu_cores=8).label.endswith("-8c")
    mp = MachineProfile(host=_host(), gpus=[], nvml_available=False, nvml="NVML not available: x", collected_at=0)
    assert decide_class(mp).label == "CPU-AMD-EPYC-7763-16c"


def test_decide_class_by_uuid_in_machine_profile():
    mod = FAKE.make_module([FAKE.h100_pcie(), FAKE.rtx4090()])
    mp = machine_profile(mod, probe_docker=False)
    assert decide_class(mp).label == "H100-PCIe-80GB·350W"
    assert decide_class(mp, gpu_uuid=mp.gpus[1].uuid).label == "RTX4090-24GB·450W"
    with pytest.raises(LookupError):
        decide_class(mp, gpu_uuid="GPU-nope")
    with pytest.raises(TypeError):
        decide_class("H100")


def test_peak_flops_env_and_dtypes():
    c = class_from_label(REFERENCE_CLASS)
    assert peak_flops_env(c) == repr(989.5e12)
    assert peak_flops_for_run(c, "fp32") == 66.9e12
    with pytest.raises(ValueError):
        peak_flops_for_run(c, "int8")
    v100 = class_from_label("V100-SXM-32GB·300W")
    assert v100.known and peak_flops_for_run(v100, "bf16") is None and peak_flops_for_run(v100, "fp16") == 125e12


def test_class_from_label():
    c = class_from_label("H100-SXM-80GB·700W")
    assert c.known and c.family == "H100-SXM" and c.memory_gb == 80 and c.power_bucket_w == 700
    assert c.expected_efficiency["matmul"] == 0.70
    assert not class_from_label("Foo-12GB·100W").known
    assert class_from_label("CPU-AMD-EPYC-7763-16c").kind == "cpu"
    mig = class_from_label("A100-SXM-80GB·MIG-1g.10gb")
    assert mig.mig_profile == "1g.10gb" and mig.peak_flops["bf16"] is None


def test_table_contents_and_reference():
    t = load_class_table()
    assert t.reference_class == REFERENCE_CLASS
    f = t.families
    assert f["H100-SXM"].peak_flops["bf16"] == 989.5e12
    assert f["H100-PCIe"].peak_flops["bf16"] == 756e12
    assert f["H200-SXM"].peak_flops["bf16"] == 989.5e12
    assert f["A100-SXM"].peak_flops["bf16"] == 312e12
    assert f["L40S"].peak_flops["bf16"] == pytest.approx(362e12, rel=1e-3)
    assert f["RTX4090"].peak_flops["bf16"] == pytest.approx(165e12, rel=1e-2)
    for fam in f.values():
        for v in fam.peak_flops.values():
            assert v is None or 1e12 < v < 1e16
        assert 0 < fam.expected_efficiency["matmul"] <= 1


def test_table_loads_without_pyyaml(monkeypatch, tmp_path):
    import sys

    p = tmp_path / "t.yaml"
    p.write_text(TABLE_PATH.read_text(encoding="utf-8"), encoding="utf-8")
    monkeypatch.setitem(sys.modules, "yaml", None)
    t = class_table.load_class_table(p)
    assert t.families["H100-SXM"].pci_device_ids == (0x2330,)


def test_bad_table_is_rejected(tmp_path):
    p = tmp_path / "bad.yaml"
    p.write_text("families:\n  X:\n    name_regex: 'X'\n    peak_flops: {bf16: 312e12}\n", encoding="utf-8")
    with pytest.raises(ValueError, match="expected a number"):
        load_class_table(p)


def test_package_reexports():
    import harness.hw as hw

    for name in hw.__all__:
        assert getattr(hw, name) is not None, name
    assert hw.decide_class is decide_class
    with pytest.raises(AttributeError):
        hw.no_such_name  # noqa: B018


@pytest.mark.parametrize(
    "name, mib, watts, label",
    [
        ("NVIDIA H100 NVL", 95830, 400, "H100-NVL-94GB·400W"),
        ("NVIDIA H200", 143771, 700, "H200-SXM-141GB·700W"),
        ("NVIDIA H200 NVL", 143771, 600, "H200-NVL-141GB·600W"),
        ("NVIDIA A100-PCIE-40GB", 40960, 250, "A100-PCIe-40GB·250W"),
        ("Tesla V100-SXM2-16GB", 16160, 300, "V100-SXM-16GB·300W"),
        ("NVIDIA L40S", 46068, 350, "L40S-48GB·350W"),
        ("NVIDIA L4", 23034, 72, "L4-24GB·75W"),
        ("NVIDIA A10G", 23028, 300, "A10G-24GB·300W"),  # not an A10: unknown
        ("NVIDIA H800", 81559, 700, "H800-80GB·700W"),  # not an H100: unknown
    ],
)
def test_names_without_pci_ids(name, mib, watts, label):
    c = decide_class(_gpu(name, mem_mib=mib, default_w=watts))
    assert c.label == label
    assert c.known == (label.split("-")[0] not in ("A10G", "H800"))
