"""Hardware: what GPU a run had, what it did, and how to compare results across GPUs.

- ``nvml``        the only module that imports pynvml (``open_nvml``, ``NvmlUnavailable``)
- ``profile``     static GPU profile + host facts (``machine_profile``)
- ``gpu_class``   the class label and its peak FLOP/s (``decide_class``, ``peak_flops_for_run``)
- ``telemetry``   background NVML sampler + summary + ``flags_for``
- ``calibration`` parse / judge ``fixed/calibrate.py`` output
- ``normalize``   per-class baselines files and normalisation
- ``doctor``      machine readiness checks

The names below are re-exported lazily (``from harness.hw import decide_class`` works), so
``python -m harness.hw.telemetry`` does not import its own module twice.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "calibration": ["Calibration", "CalibrationJudgement", "judge_calibration", "parse_calibration"],
    "doctor": ["Check", "all_ok", "format_checks", "run_checks"],
    "gpu_class": ["REFERENCE_CLASS", "GpuClass", "class_from_label", "decide_class", "load_class_table",
                  "peak_flops_env", "peak_flops_for_run"],
    # the function normalize() is not re-exported: the name is its module's (harness.hw.normalize)
    "normalize": ["Baselines", "BaselineSample", "Normalization", "add_sample", "load_baselines", "merge_baselines",
                  "save_baselines", "scorecard_line"],
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
