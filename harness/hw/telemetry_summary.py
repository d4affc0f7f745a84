"""What a telemetry series says: the samples, their summary over a window, and the throttle flags.

Pure arithmetic over :class:`TelemetrySample` lists (no NVML, no threads); the sampler that takes them
is :mod:`harness.hw.telemetry`, which re-exports these names.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Mapping

from harness.hw.nvml import (
    REASON_GPU_IDLE,
    REASON_HW_POWER_BRAKE,
    REASON_HW_SLOWDOWN,
    REASON_HW_THERMAL,
    REASON_SW_POWER_CAP,
    REASON_SW_THERMAL,
)

DEFAULT_INTERVAL_S = 0.25  # seconds between samples, the sampler's default

# Reason groups reported as shares of samples. "power", "thermal" and "hw_slowdown" are the
# ones that make a result "throttled"; "power_brake" is an external brake signal, counted too.
REASON_GROUPS: dict[str, int] = {
    "power": REASON_SW_POWER_CAP,
    "thermal": REASON_SW_THERMAL | REASON_HW_THERMAL,
    "hw_slowdown": REASON_HW_SLOWDOWN,
    "power_brake": REASON_HW_POWER_BRAKE,
    "idle": REASON_GPU_IDLE,
}
THROTTLE_MASK = REASON_SW_POWER_CAP | REASON_SW_THERMAL | REASON_HW_THERMAL | REASON_HW_SLOWDOWN | REASON_HW_POWER_BRAKE


@dataclass
class TelemetrySample:
    t: float  # epoch seconds (time.time()) when the sample was taken
    sm_clock_mhz: int | None = None
    mem_clock_mhz: int | None = None
    power_w: float | None = None
    energy_j: float | None = None  # NVML total-energy counter (since driver load), J
    temp_c: int | None = None
    gpu_util_pct: int | None = None
    mem_util_pct: int | None = None
    mem_used_bytes: int | None = None
    pstate: int | None = None
    reasons: int | None = None  # clock-event reason bitmask
    power_violation_ns: int | None = None  # cumulative counters
    thermal_violation_ns: int | None = None

    def to_dict(self) -> dict[str, Any]:
        d = {"type": "sample"}
        d.update(asdict(self))
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "TelemetrySample":
        names = cls.__dataclass_fields__.keys()
        return cls(**{k: d.get(k) for k in names})


@dataclass
class TelemetrySummary:
    gpu_uuid: str | None
    sample_count: int
    interval_s: float
    window_start: float | None  # epoch seconds of the window summarised
    window_end: float | None
    duration_s: float
    max_sm_clock_mhz: int | None
    busy_sample_count: int  # samples without the GPU-idle reason; clock percentiles use these
    sm_clock_frac_p10: float | None  # SM clock / max SM clock
    sm_clock_frac_p50: float | None
    sm_clock_frac_p90: float | None
    mean_power_w: float | None
    energy_j: float | None
    energy_source: str | None  # "counter" | "power_integral" | None
    throttle_share: dict[str, float] = field(default_factory=dict)  # reason group -> share of samples
    throttled_share: float = 0.0  # samples with any of power / thermal / hw_slowdown / power_brake
    violation_s: dict[str, float | None] = field(default_factory=dict)  # "power" / "thermal" counter time
    max_temp_c: int | None = None
    mean_gpu_util_pct: float | None = None
    max_mem_used_bytes: int | None = None
    sample_errors: int = 0
    series_path: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class Thresholds:
    """benchmarks.yaml ``thresholds``: ``throttle_max_share``, ``min_sm_clock_fraction`` (used by
    :func:`flags_for`) and ``slow_device_fraction`` (for
    :func:`harness.hw.calibration.judge_calibration`'s ``threshold``)."""

    throttle_max_share: float = 0.05
    min_sm_clock_fraction: float = 0.90
    slow_device_fraction: float = 0.5

    @classmethod
    def from_any(cls, value: "Thresholds | Mapping[str, Any] | Any | None") -> "Thresholds":
        """From a Thresholds, a mapping (benchmark.thresholds), or an object with those attributes."""
        if value is None:
            return cls()
        if isinstance(value, Thresholds):
            return value
        t = cls()
        for k in ("throttle_max_share", "min_sm_clock_fraction", "slow_device_fraction"):
            v = value.get(k) if isinstance(value, Mapping) else getattr(value, k, None)
            if v is not None:
                setattr(t, k, float(v))
        return t

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


# --- arithmetic ----------------------------------------------------------------------------

def percentile(values: list[float], q: float) -> float | None:
    """Linear-interpolation percentile (numpy's default), q in [0, 100]."""
    if not values:
        return None
    xs = sorted(values)
    if len(xs) == 1:
        return xs[0]
    pos = (len(xs) - 1) * q / 100.0
    lo = int(pos)
    hi = min(lo + 1, len(xs) - 1)
    return xs[lo] + (xs[hi] - xs[lo]) * (pos - lo)


def _counter_delta(first: float | None, last: float | None) -> float | None:
    if first is None or last is None or last < first:  # counter reset or missing
        return None
    return last - first


def summarize(
    samples: list[TelemetrySample],
    *,
    max_sm_clock_mhz: int | None,
    interval_s: float = DEFAULT_INTERVAL_S,
    t0: float | None = None,
    t1: float | None = None,
    gpu_uuid: str | None = None,
    sample_errors: int = 0,
    series_path: str | None = None,
) -> TelemetrySummary:
    """Summarise the samples whose time lies in [t0, t1] (either bound may be None)."""
    win = [s for s in samples if (t0 is None or s.t >= t0) and (t1 is None or s.t <= t1)]
    win.sort(key=lambda s: s.t)
    n = len(win)
    start = t0 if t0 is not None else (win[0].t if win else None)
    end = t1 if t1 is not None else (win[-1].t if win else None)
    duration = (end - start) if start is not None and end is not None else 0.0

    with_reasons = [s for s in win if s.reasons is not None]
    busy = [s for s in win if s.reasons is None or not (s.reasons & REASON_GPU_IDLE)]
    clock_src = busy if busy else win
    fracs: list[float] = []
    if max_sm_clock_mhz:
        fracs = [s.sm_clock_mhz / max_sm_clock_mhz for s in clock_src if s.sm_clock_mhz is not None]

    powers = [s.power_w for s in win if s.power_w is not None]
    energy = None
    energy_source = None
    counters = [s for s in win if s.energy_j is not None]
    if len(counters) >= 2:
        energy = _counter_delta(counters[0].energy_j, counters[-1].energy_j)
        energy_source = "counter" if energy is not None else None
    if energy is None:
        pw = [s for s in win if s.power_w is not None]
        if len(pw) >= 2:
            energy = sum((b.t - a.t) * (a.power_w + b.power_w) / 2.0 for a, b in zip(pw, pw[1:]))
            energy_source = "power_integral"

    share: dict[str, float] = {}
    throttled_share = 0.0
    if with_reasons:
        for group, mask in REASON_GROUPS.items():
            share[group] = sum(1 for s in with_reasons if s.reasons & mask) / len(with_reasons)
        throttled_share = sum(1 for s in with_reasons if s.reasons & THROTTLE_MASK) / len(with_reasons)

    violation: dict[str, float | None] = {}
    for key, attr in (("power", "power_violation_ns"), ("thermal", "thermal_violation_ns")):
        vals = [getattr(s, attr) for s in win if getattr(s, attr) is not None]
        d = _counter_delta(vals[0], vals[-1]) if len(vals) >= 2 else None
        violation[key] = None if d is None else d / 1e9

    temps = [s.temp_c for s in win if s.temp_c is not None]
    utils = [s.gpu_util_pct for s in win if s.gpu_util_pct is not None]
    mems = [s.mem_used_bytes for s in win if s.mem_used_bytes is not None]
    return TelemetrySummary(
        gpu_uuid=gpu_uuid,
        sample_count=n,
        interval_s=interval_s,
        window_start=start,
        window_end=end,
        duration_s=duration,
        max_sm_clock_mhz=max_sm_clock_mhz,
        busy_sample_count=len(busy),
        sm_clock_frac_p10=percentile(fracs, 10),
        sm_clock_frac_p50=percentile(fracs, 50),
        sm_clock_frac_p90=percentile(fracs, 90),
        mean_power_w=sum(powers) / len(powers) if powers else None,
        energy_j=energy,
        energy_source=energy_source,
        throttle_share=share,
        throttled_share=throttled_share,
        violation_s=violation,
        max_temp_c=max(temps) if temps else None,
        mean_gpu_util_pct=sum(utils) / len(utils) if utils else None,
        max_mem_used_bytes=max(mems) if mems else None,
        sample_errors=sample_errors,
        series_path=series_path,
    )


def throttle_findings(summary: TelemetrySummary, thresholds: Thresholds | Mapping[str, Any] | None = None) -> list[str]:
    """Human-readable reasons a summary counts as throttled (empty when it does not)."""
    th = Thresholds.from_any(thresholds)
    out = []
    for group in ("power", "thermal", "hw_slowdown", "power_brake"):
        sh = summary.throttle_share.get(group, 0.0)
        if sh > th.throttle_max_share:
            out.append(f"{group} throttling in {sh:.0%} of samples (> {th.throttle_max_share:.0%})")
    if summary.throttled_share > th.throttle_max_share and not out:
        out.append(f"throttled in {summary.throttled_share:.0%} of samples (> {th.throttle_max_share:.0%})")
    if summary.sm_clock_frac_p50 is not None and summary.sm_clock_frac_p50 < th.min_sm_clock_fraction:
        out.append(
            f"median SM clock {summary.sm_clock_frac_p50:.0%} of max (< {th.min_sm_clock_fraction:.0%})"
        )
    return out


def flags_for(summary: TelemetrySummary | None, thresholds: Thresholds | Mapping[str, Any] | None = None) -> list[str]:
    """``["throttled"]`` when power, thermal or HW-slowdown reasons cover more than
    ``throttle_max_share`` of the window's samples, or the median busy SM clock is below
    ``min_sm_clock_fraction`` of max; ``[]`` otherwise (and without telemetry)."""
    if summary is None or summary.sample_count == 0:
        return []
    return ["throttled"] if throttle_findings(summary, thresholds) else []
