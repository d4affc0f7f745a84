"""Parse and judge the output of ``fixed/calibrate.py``.

The script prints one line ``calibration {json}``; :func:`parse_calibration` finds it in a log,
:func:`judge_calibration` compares it with what the run's class should deliver
(peak x the table's expected efficiency) and sets ``slow_device`` when the measured matmul
FLOP/s (or copy bandwidth) falls below ``threshold`` x that expectation.
"""

from __future__ import annotations

import json
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from harness.hw.gpu_class import GpuClass, expected_flops, expected_mem_bw

PREFIX = "calibration "
SCRIPT = Path(__file__).resolve().parents[2] / "fixed" / "calibrate.py"
DEFAULT_SLOW_THRESHOLD = 0.5  # benchmarks.yaml thresholds.slow_device_fraction


@dataclass
class Calibration:
    device: str | None  # "cuda" | "cpu"
    dtype: str | None  # "bf16" | "fp16" | "fp32"
    matmul_flops: float | None
    mem_bw_bytes_s: float | None
    seconds: float | None
    device_name: str | None = None
    error: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)  # every other key of the line

    @property
    def ok(self) -> bool:
        return self.error is None and self.matmul_flops is not None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class CalibrationJudgement:
    slow_device: bool
    threshold: float
    expected_matmul_flops: float | None
    expected_mem_bw: float | None
    matmul_ratio: float | None  # measured / expected
    mem_bw_ratio: float | None
    class_label: str
    note: str

    @property
    def flags(self) -> list[str]:
        return ["slow_device"] if self.slow_device else []

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["flags"] = self.flags
        return d


_KNOWN = {"device", "dtype", "matmul_flops", "mem_bw_bytes_s", "seconds", "device_name", "error"}


def _f(v: Any) -> float | None:
    if v is None or isinstance(v, bool):
        return None
    try:
        return float(v)
    except (TypeError, ValueError):
        return None


def parse_calibration_line(line: str) -> Calibration:
    """Parse one ``calibration {json}`` line (``ValueError`` when it is not one)."""
    line = line.strip()
    if not line.startswith(PREFIX):
        raise ValueError(f"not a calibration line: {line[:80]!r}")
    try:
        d = json.loads(line[len(PREFIX):])
    except json.JSONDecodeError as exc:
        raise ValueError(f"calibration line is not JSON: {exc}") from exc
    if not isinstance(d, dict):
        raise ValueError("calibration line must hold a JSON object")
    return Calibration(
        device=d.get("device"),
        dtype=d.get("dtype"),
        matmul_flops=_f(d.get("matmul_flops")),
        mem_bw_bytes_s=_f(d.get("mem_bw_bytes_s")),
        seconds=_f(d.get("seconds")),
        device_name=d.get("device_name"),
        error=d.get("error"),
        extra={k: v for k, v in d.items() if k not in _KNOWN},
    )


def parse_calibration(text: str) -> Calibration | None:
    """The last calibration line in ``text`` (a log), or None when there is none."""
    found = None
    for line in text.splitlines():
        if line.lstrip().startswith(PREFIX):
            try:
                found = parse_calibration_line(line)
            except ValueError:
                continue
    return found


def judge_calibration(
    cal: Calibration | None, cls: GpuClass, *, threshold: float = DEFAULT_SLOW_THRESHOLD
) -> CalibrationJudgement:
    """Compare a calibration with its class's expectation; ``slow_device`` below ``threshold``.

    Without an expectation (unknown class, CPU class, failed calibration) nothing is flagged and
    ``note`` says why.
    """
    if cal is None or not cal.ok:
        why = "no calibration" if cal is None else f"calibration failed: {cal.error or 'no matmul figure'}"
        return CalibrationJudgement(False, threshold, None, None, None, None, cls.label, why)
    exp_f = expected_flops(cls, cal.dtype) if cal.dtype else None
    exp_bw = expected_mem_bw(cls)
    mr = cal.matmul_flops / exp_f if exp_f and cal.matmul_flops is not None else None
    br = cal.mem_bw_bytes_s / exp_bw if exp_bw and cal.mem_bw_bytes_s is not None else None
    slow_parts = []
    if mr is not None and mr < threshold:
        slow_parts.append(f"matmul {mr:.0%} of expected {exp_f / 1e12:.1f} TFLOP/s")
    if br is not None and br < threshold:
        slow_parts.append(f"copy bandwidth {br:.0%} of expected {exp_bw / 1e9:.0f} GB/s")
    if slow_parts:
        note = "slow device: " + "; ".join(slow_parts) + f" (threshold {threshold:.0%})"
    elif mr is None and br is None:
        note = f"no expectation for class {cls.label} ({cal.dtype}): measured only"
    else:
        parts = []
        if mr is not None:
            parts.append(f"matmul {mr:.0%}")
        if br is not None:
            parts.append(f"copy {br:.0%}")
        note = "as expected: " + ", ".join(parts) + " of the class expectation"
    return CalibrationJudgement(bool(slow_parts), threshold, exp_f, exp_bw, mr, br, cls.label, note)


def calibration_command(python: str = "python3", script: str | Path | None = None, *extra: str) -> list[str]:
    """Command that runs the calibration (inside a container pass the in-container script path)."""
    return [python, str(script or SCRIPT), *extra]


def run_calibration_locally(*extra: str, timeout: float = 60.0, python: str | None = None) -> Calibration | None:
    """Run fixed/calibrate.py in a subprocess here (for ``harness hw`` and the local backend)."""
    import subprocess

    proc = subprocess.run(
        calibration_command(python or sys.executable, None, *extra), capture_output=True, text=True, timeout=timeout
    )
    return parse_calibration(proc.stdout)
