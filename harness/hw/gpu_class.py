"""Where a run's GPU class is decided.

A class is a canonical label built from NVML facts -- ``H100-SXM-80GB·700W``,
``A100-SXM-80GB·MIG-1g.10gb``, ``RTX4090-24GB·450W`` -- plus what the table in
``harness/data/gpu_classes.yaml`` knows about that family (peak FLOP/s, memory bandwidth).
A GPU the table does not know still gets a label from its own facts, with every peak None:
nothing is ever assumed to be an H100. A machine without GPUs gets ``CPU-<model>-<N>c``.

The table itself (families, peaks, memory sizes) is :mod:`harness.hw.class_table`.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field
from typing import Any

from harness.hw.class_table import REFERENCE_CLASS  # noqa: F401 - the reference class's label, named here too
from harness.hw.class_table import DTYPES, ClassTable, Family, load_class_table, snap_memory_gb
from harness.hw.profile import GpuProfile, HostFacts, MachineProfile, runnable_gpus

SEP = "·"  # U+00B7, between the device part and the power / MIG part of a label


# --- the class ----------------------------------------------------------------------------

@dataclass
class GpuClass:
    label: str
    family: str  # table key ("H100-SXM"), chip for an undecided form ("H100"), or a slug
    known: bool  # the family is in the table and its peaks are taken from there
    peak_flops: dict[str, float | None]  # by dtype: bf16 fp16 tf32 fp32
    mem_bw: float | None  # bytes/s
    kind: str = "gpu"  # "gpu" | "cpu"
    memory_gb: int | None = None
    power_bucket_w: int | None = None
    mig_profile: str | None = None
    expected_efficiency: dict[str, float] = field(default_factory=dict)
    note: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def power_bucket(watts: float | None, step: int = 25) -> int | None:
    if watts is None or watts <= 0:
        return None
    return int(round(watts / step) * step)


_VENDOR_WORDS = {"NVIDIA", "GEFORCE", "TESLA", "QUADRO"}


def gpu_slug(name: str) -> str:
    """A label-safe slug of an unknown GPU's name: 'NVIDIA GeForce RTX 5090' -> 'RTX5090'."""
    toks = re.split(r"[\s\-_/()]+", name)
    keep = [
        re.sub(r"[^A-Za-z0-9.]", "", t)
        for t in toks
        if t and t.upper() not in _VENDOR_WORDS and not re.fullmatch(r"\d+\s*GB", t, re.IGNORECASE)
    ]
    slug = "-".join(k for k in keep if k)
    slug = re.sub(r"\b(RTX|GTX)-(\d)", r"\1\2", slug)
    return slug or "GPU"


def cpu_slug(model: str) -> str:
    """'AMD EPYC 7763 64-Core Processor' -> 'AMD-EPYC-7763'."""
    m = re.sub(r"\(R\)|\(TM\)|\(tm\)|\(r\)", "", model)
    m = re.sub(r"@.*$", "", m)
    m = re.sub(r"\b\d+-Core\b|\bProcessor\b|\bCPU\b", " ", m, flags=re.IGNORECASE)
    toks = [re.sub(r"[^A-Za-z0-9.]", "", t) for t in m.split()]
    return "-".join(t for t in toks if t) or "unknown"


def _name_memory_gb(name: str) -> int | None:
    m = re.search(r"(\d+)\s*GB", name, re.IGNORECASE)
    return int(m.group(1)) if m else None


def _memory_gb(name: str, total_bytes: int | None, table: ClassTable, fallback: int | None) -> int | None:
    named = _name_memory_gb(re.sub(r"MIG\s+\S+", "", name))
    if total_bytes:
        snapped = snap_memory_gb(total_bytes, table.memory_sizes_gb)
        if named and 0.85 <= named / (total_bytes / 2**30) <= 1.15:
            return named
        return snapped
    return named or fallback


def match_family(
    name: str, pci_device_id: int | None, default_power_w: float | None, table: ClassTable
) -> tuple[Family | None, str | None, str]:
    """(family, chip, how) for a GPU's facts; family None when unknown or the form is undecided."""
    dev = (pci_device_id >> 16) & 0xFFFF if pci_device_id else None
    by_name = [f for f in table.families.values() if re.search(f.name_regex, name)]
    if dev is not None:
        for f in table.families.values():
            if dev in f.pci_device_ids and (f in by_name or not name):
                return f, f.chip, f"pci device id 0x{dev:04X}"
    if not by_name:
        return None, None, "no family matches the name"
    chip = by_name[0].chip
    if len(by_name) == 1:
        return by_name[0], chip, "name"
    by_form = [f for f in by_name if f.form_regex and re.search(f.form_regex, name)]
    if len(by_form) == 1:
        return by_form[0], chip, "name (form factor)"
    if default_power_w is not None:
        by_power = [
            f for f in by_name if f.power_range_w and f.power_range_w[0] <= default_power_w <= f.power_range_w[1]
        ]
        if len(by_power) == 1:
            return by_power[0], chip, f"default power limit {default_power_w:.0f} W"
    return None, chip, f"{chip}: form factor undecided (name {name!r}, default power {default_power_w})"


def gpu_class_for(gpu: GpuProfile, table: ClassTable | None = None) -> GpuClass:
    table = table or load_class_table()
    is_mig = gpu.is_mig_instance
    phys_name = (gpu.parent_name or gpu.name) if is_mig else gpu.name
    phys_mem = gpu.parent_memory_total_bytes if is_mig else gpu.memory_total_bytes
    fam, chip, how = match_family(phys_name, gpu.pci_device_id, gpu.power_limit_default_w, table)
    mem_gb = _memory_gb(phys_name, phys_mem, table, fam.memory_gb if fam else None)
    bucket = power_bucket(gpu.power_limit_enforced_w or gpu.power_limit_default_w, table.power_bucket_w)

    if fam is not None:
        prefix = fam.key
    elif chip is not None:
        prefix = chip
    else:
        prefix = gpu_slug(phys_name)
    device = f"{prefix}-{mem_gb}GB" if mem_gb else prefix
    if is_mig:
        label = f"{device}{SEP}MIG-{gpu.mig_profile or 'unknown'}"
    else:
        label = f"{device}{SEP}{bucket}W" if bucket else device

    if fam is None:
        note = (
            f"unknown GPU {phys_name!r}: peak FLOP/s unknown" if chip is None else f"{how}: peak FLOP/s unknown"
        )
        return GpuClass(
            label=label, family=prefix, known=False, peak_flops={d: None for d in DTYPES}, mem_bw=None,
            memory_gb=mem_gb, power_bucket_w=None if is_mig else bucket, mig_profile=gpu.mig_profile,
            expected_efficiency=dict(table.default_expected_efficiency), note=note,
        )

    peaks = dict(fam.peak_flops)
    bw = fam.mem_bw_for(mem_gb)
    note = f"matched {fam.key} by {how}"
    if is_mig:
        sm_share = None
        if gpu.multiprocessor_count and fam.sm_count:
            sm_share = min(1.0, gpu.multiprocessor_count / fam.sm_count)
        mem_share = None
        if gpu.memory_total_bytes and phys_mem:
            mem_share = min(1.0, gpu.memory_total_bytes / phys_mem)
        peaks = {d: (v * sm_share if v is not None and sm_share else None) for d, v in peaks.items()}
        bw = bw * mem_share if bw is not None and mem_share else None
        if sm_share:
            note += f"; MIG slice: peaks scaled by SM share {sm_share:.3f}"
        else:
            note += "; MIG slice: SM share unknown, peaks unknown"
    return GpuClass(
        label=label, family=fam.key, known=True, peak_flops=peaks, mem_bw=bw, memory_gb=mem_gb,
        power_bucket_w=None if is_mig else bucket, mig_profile=gpu.mig_profile,
        expected_efficiency=dict(fam.expected_efficiency), note=note,
    )


def cpu_class_for(host: HostFacts, cores: int | None = None) -> GpuClass:
    """``CPU-<model slug>-<N>c``; N is ``cores`` (the run's CPU limit) or the host's effective cores."""
    n = cores or host.effective_cores
    slug = cpu_slug(host.cpu_model)
    return GpuClass(
        label=f"CPU-{slug}-{n}c", family=f"CPU-{slug}", known=False, peak_flops={d: None for d in DTYPES},
        mem_bw=None, kind="cpu", note="no GPU: CPU class, peak FLOP/s unknown (calibration measures it)",
    )


def decide_class(
    profile: GpuProfile | HostFacts | MachineProfile,
    *,
    gpu_uuid: str | None = None,
    cpu_cores: int | None = None,
    table: ClassTable | None = None,
) -> GpuClass:
    """The class of a run's device.

    ``profile``: a :class:`GpuProfile` (that GPU), a :class:`HostFacts` (CPU class), or a
    :class:`MachineProfile` (the GPU with ``gpu_uuid``, else the first runnable GPU, else the
    CPU class). ``cpu_cores``: the CPU count a CPU run is limited to (default: the host's).
    """
    if isinstance(profile, GpuProfile):
        return gpu_class_for(profile, table)
    if isinstance(profile, HostFacts):
        return cpu_class_for(profile, cpu_cores)
    if isinstance(profile, MachineProfile):
        if gpu_uuid is not None:
            g = profile.gpu(gpu_uuid)
            if g is None:
                raise LookupError(f"no GPU with UUID {gpu_uuid!r} in the machine profile")
            return gpu_class_for(g, table)
        gpus = runnable_gpus(profile.gpus)
        if gpus:
            return gpu_class_for(gpus[0], table)
        return cpu_class_for(profile.host, cpu_cores)
    raise TypeError(f"decide_class: unsupported profile type {type(profile).__name__}")


def peak_flops_for_run(cls: GpuClass, dtype: str = "bf16") -> float | None:
    """What the harness passes to train.py as HARNESS_PEAK_FLOPS (None when unknown)."""
    if dtype not in DTYPES:
        raise ValueError(f"unknown dtype {dtype!r}; one of {DTYPES}")
    v = cls.peak_flops.get(dtype)
    return float(v) if v else None


def peak_flops_env(cls: GpuClass, dtype: str = "bf16") -> str:
    """HARNESS_PEAK_FLOPS as a string: the number (repr) or ``"unknown"``."""
    v = peak_flops_for_run(cls, dtype)
    return "unknown" if v is None else repr(v)


def expected_flops(cls: GpuClass, dtype: str) -> float | None:
    """peak[dtype] x the family's expected matmul efficiency (None when unknown)."""
    peak = cls.peak_flops.get(dtype)
    eff = cls.expected_efficiency.get("matmul")
    return peak * eff if peak and eff else None


def expected_mem_bw(cls: GpuClass) -> float | None:
    eff = cls.expected_efficiency.get("mem_bw")
    return cls.mem_bw * eff if cls.mem_bw and eff else None


_LABEL = re.compile(r"^(?P<device>.+?)(?:-(?P<mem>\d+)GB)?(?:" + SEP + r"(?:(?P<w>\d+)W|MIG-(?P<mig>\S+)))?$")


def class_from_label(label: str, table: ClassTable | None = None) -> GpuClass:
    """Rebuild a class from its label (for reference classes and baselines files).

    Known full-GPU families get their table peaks; MIG labels and unknown prefixes get None.
    """
    table = table or load_class_table()
    m = _LABEL.match(label)
    if not m:
        raise ValueError(f"not a class label: {label!r}")
    device, mem, w, mig = m.group("device"), m.group("mem"), m.group("w"), m.group("mig")
    mem_gb = int(mem) if mem else None
    if label.startswith("CPU-"):
        return GpuClass(label=label, family=label.rsplit("-", 1)[0], known=False,
                        peak_flops={d: None for d in DTYPES}, mem_bw=None, kind="cpu")
    fam = table.families.get(device)
    if fam is None or mig:
        return GpuClass(label=label, family=device, known=False, peak_flops={d: None for d in DTYPES},
                        mem_bw=None, memory_gb=mem_gb, power_bucket_w=int(w) if w else None, mig_profile=mig,
                        expected_efficiency=dict(table.default_expected_efficiency),
                        note="MIG slice: peaks need the slice's SM count" if mig else "unknown family")
    return GpuClass(label=label, family=fam.key, known=True, peak_flops=dict(fam.peak_flops),
                    mem_bw=fam.mem_bw_for(mem_gb if mem_gb is not None else fam.memory_gb),
                    memory_gb=mem_gb, power_bucket_w=int(w) if w else None,
                    expected_efficiency=dict(fam.expected_efficiency))
