"""Hardware: what GPU a run had, what it did, and how to compare results across GPUs.

- ``nvml``        the only module that imports pynvml (``open_nvml``, ``NvmlUnavailable``)
- ``profile``     static GPU profile + host facts (``machine_profile``)
- ``class_table`` the GPU class table ``harness/data/gpu_classes.yaml`` (``load_class_table``, ``snap_memory_gb``)
- ``gpu_class``   the class label and its peak FLOP/s (``decide_class``, ``peak_flops_for_run``)
- ``telemetry``   background NVML sampler + summary + ``flags_for``
- ``calibration`` parse / judge ``fixed/calibrate.py`` output

Baselines and normalisation against them are scoring, not hardware: :mod:`harness.scoring`.

The names below are re-exported lazily (``from harness.hw import decide_class`` works), so
``python -m harness.hw.telemetry`` does not import its own module twice.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "calibration": ["Calibration", "CalibrationJudgement", "judge_calibration", "parse_calibration"],
    "class_table": ["REFERENCE_CLASS", "load_class_table"],
    "gpu_class": ["GpuClass", "class_from_label", "decide_class", "peak_flops_env", "peak_flops_for_run"],
    "nvml": ["NvmlSession", "NvmlUnavailable", "nvml_status", "open_nvml"],
    "profile": ["GpuProfile", "HostFacts", "MachineProfile", "host_facts", "machine_profile"],
    "telemetry": ["TelemetrySample", "TelemetrySampler", "TelemetrySummary", "Thresholds", "flags_for",
                  "measure_sampler_overhead", "start_sampler", "summarize_series"],
}
_WHERE = {name: mod for mod, names in _EXPORTS.items() for name in names}
__all__ = sorted(_WHERE)


def __getattr__(name: str) -> Any:
    mod = _WHERE.get(name)
    if mod is None:
        raise AttributeError(f"module 'harness.hw' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"harness.hw.{mod}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(list(globals()) + __all__)
