"""The GPU class table: ``harness/data/gpu_classes.yaml`` loaded and checked, and memory sizes snapped to it.

What the table knows about each GPU family (PCI ids, peak FLOP/s, memory bandwidth, expected efficiency)
and the marketing memory sizes. Both :mod:`harness.hw.profile` (MIG profile names) and
:mod:`harness.hw.gpu_class` (labels) read it; this module imports neither.

The table is read with PyYAML (a dependency of the harness).
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

TABLE_PATH = Path(__file__).resolve().parent.parent / "data" / "gpu_classes.yaml"
DTYPES = ("bf16", "fp16", "tf32", "fp32")
REFERENCE_CLASS = "H100-SXM-80GB·700W"


# --- the table -----------------------------------------------------------------------------

@dataclass(frozen=True)
class Family:
    key: str  # label prefix, e.g. "H100-SXM"
    chip: str
    name_regex: str
    form_regex: str | None
    pci_device_ids: tuple[int, ...]
    power_range_w: tuple[float, float] | None
    memory_gb: int | None
    sm_count: int | None
    peak_flops: dict[str, float | None]
    mem_bw: float | dict[int, float] | None
    expected_efficiency: dict[str, float]

    def mem_bw_for(self, memory_gb: int | None) -> float | None:
        if isinstance(self.mem_bw, dict):
            if memory_gb in self.mem_bw:
                return float(self.mem_bw[memory_gb])
            return None
        return None if self.mem_bw is None else float(self.mem_bw)


@dataclass(frozen=True)
class ClassTable:
    families: dict[str, Family]
    reference_class: str
    power_bucket_w: int
    memory_sizes_gb: tuple[int, ...]
    default_expected_efficiency: dict[str, float]
    source: str


def _num(v: Any, where: str) -> float | None:
    if v is None:
        return None
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        raise ValueError(f"{where}: expected a number or null, got {v!r} (write floats as 1.0e+12)")
    return float(v)


def parse_class_table(data: dict[str, Any], source: str = "<data>") -> ClassTable:
    """Validate the loaded YAML document and build a :class:`ClassTable`."""
    if not isinstance(data, dict) or not isinstance(data.get("families"), dict):
        raise ValueError(f"{source}: expected a mapping with 'families'")
    default_eff = {k: float(v) for k, v in (data.get("default_expected_efficiency") or {}).items()}
    fams: dict[str, Family] = {}
    for key, f in data["families"].items():
        where = f"{source}: families.{key}"
        if not isinstance(f, dict) or not f.get("name_regex"):
            raise ValueError(f"{where}: needs name_regex")
        re.compile(f["name_regex"])
        if f.get("form_regex"):
            re.compile(f["form_regex"])
        peaks = f.get("peak_flops") or {}
        unknown = set(peaks) - set(DTYPES)
        if unknown:
            raise ValueError(f"{where}: unknown dtypes {sorted(unknown)}")
        bw = f.get("mem_bw")
        if isinstance(bw, dict):
            bw = {int(k): _num(v, f"{where}.mem_bw") for k, v in bw.items()}
        else:
            bw = _num(bw, f"{where}.mem_bw")
        pr = f.get("power_range_w")
        eff = dict(default_eff)
        eff.update({k: float(v) for k, v in (f.get("expected_efficiency") or {}).items()})
        fams[str(key)] = Family(
            key=str(key),
            chip=str(f.get("chip") or key),
            name_regex=f["name_regex"],
            form_regex=f.get("form_regex"),
            pci_device_ids=tuple(int(x) for x in f.get("pci_device_ids") or ()),
            power_range_w=(float(pr[0]), float(pr[1])) if pr else None,
            memory_gb=int(f["memory_gb"]) if f.get("memory_gb") else None,
            sm_count=int(f["sm_count"]) if f.get("sm_count") else None,
            peak_flops={d: _num(peaks.get(d), f"{where}.peak_flops.{d}") for d in DTYPES},
            mem_bw=bw,
            expected_efficiency=eff,
        )
    return ClassTable(
        families=fams,
        reference_class=str(data.get("reference_class") or REFERENCE_CLASS),
        power_bucket_w=int(data.get("power_bucket_w") or 25),
        memory_sizes_gb=tuple(int(x) for x in data.get("memory_sizes_gb") or ()),
        default_expected_efficiency=default_eff,
        source=source,
    )


def load_class_table(path: str | Path | None = None) -> ClassTable:
    """Load ``gpu_classes.yaml`` (the packaged one by default; cached)."""
    return _load_class_table_cached(str(Path(path).resolve()) if path else str(TABLE_PATH))


@functools.lru_cache(maxsize=8)
def _load_class_table_cached(path: str) -> ClassTable:
    text = Path(path).read_text(encoding="utf-8")
    return parse_class_table(yaml.safe_load(text), source=path)


def snap_memory_gb(total_bytes: int, sizes: tuple[int, ...] | None = None) -> int:
    """NVML's total memory -> the marketing size in GB (80 for an H100's 79.6 GiB)."""
    gib = total_bytes / 2**30
    if sizes is None:
        sizes = load_class_table().memory_sizes_gb
    for s in sorted(sizes):
        if s >= gib * 0.99:
            if s <= gib * 1.12:
                return s
            break
    return max(1, int(round(gib)))
