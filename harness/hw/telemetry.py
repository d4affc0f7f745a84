"""What the GPU did during a run: a background NVML sampler on the host, keyed by GPU UUID.

    sampler = TelemetrySampler(gpu_uuid, interval_s=0.25, series_path=run_dir / "telemetry.jsonl")
    sampler.start()            # at run start
    ...                        # the run
    sampler.stop()             # at run end
    summary = sampler.summary(t0=train_start, t1=train_end)   # epoch seconds; None = everything
    flags = flags_for(summary, {"throttle_max_share": 0.05, "min_sm_clock_fraction": 0.90})

The series file is JSON lines: one header line ``{"type": "header", ...}`` then one line per
sample (``TelemetrySample.to_dict()``, ``"type": "sample"``). Energy comes from NVML's
total-energy counter (difference over the window), throttle time from the violation counters
where the GPU supports them; the power integral and the reason bits are the fallbacks.
"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any, Callable, Mapping

from harness.hw.nvml import (
    REASON_GPU_IDLE,
    REASON_HW_POWER_BRAKE,
    REASON_HW_SLOWDOWN,
    REASON_HW_THERMAL,
    REASON_SW_POWER_CAP,
    REASON_SW_THERMAL,
    NvmlSession,
    NvmlUnavailable,
    open_nvml,
)

DEFAULT_INTERVAL_S = 0.25
SERIES_FORMAT = "harness-telemetry/1"

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


# --- the sampler ---------------------------------------------------------------------------

class TelemetrySampler:
    """Samples one GPU (by UUID) every ``interval_s`` on a daemon thread until :meth:`stop`.

    ``nvml_module``: a pynvml-like module (a fake in tests), default the real one. ``session``:
    an already open :class:`NvmlSession` to share instead. Opening NVML happens in
    :meth:`start`, which raises :class:`NvmlUnavailable` / ``LookupError`` (unknown UUID) there,
    not in the thread.
    """

    def __init__(
        self,
        gpu_uuid: str,
        *,
        interval_s: float = DEFAULT_INTERVAL_S,
        series_path: str | Path | None = None,
        nvml_module: ModuleType | None = None,
        session: NvmlSession | None = None,
        clock: Callable[[], float] = time.time,
    ):
        if interval_s <= 0:
            raise ValueError("interval_s must be > 0")
        self.gpu_uuid = gpu_uuid
        self.interval_s = float(interval_s)
        self.series_path = Path(series_path) if series_path else None
        self._module = nvml_module
        self._session = session
        self._own_session = False
        self._clock = clock
        self._samples: list[TelemetrySample] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._handle: Any = None
        self._mem_handle: Any = None
        self.max_sm_clock_mhz: int | None = None
        self.sample_errors = 0
        self.thread_cpu_s = 0.0
        self.started_at: float | None = None
        self.stopped_at: float | None = None
        self.error: str | None = None

    # -- life cycle -------------------------------------------------------------------------
    def start(self) -> "TelemetrySampler":
        if self._thread is not None:
            raise RuntimeError("sampler already started")
        if self._session is None:
            self._session = open_nvml(self._module)
            self._own_session = True
        s = self._session
        try:
            h = s.handle_by_uuid(self.gpu_uuid)
            self._mem_handle = h
            parent = s.parent_of_mig(h) if s.is_mig_device(h) else None
            self._handle = parent if parent is not None else h  # clocks/power are per physical GPU
            self.max_sm_clock_mhz, _ = s.max_clocks(self._handle)
        except Exception:
            self._close_session()
            raise
        self.started_at = self._clock()
        header = {
            "type": "header",
            "format": SERIES_FORMAT,
            "gpu_uuid": self.gpu_uuid,
            "interval_s": self.interval_s,
            "max_sm_clock_mhz": self.max_sm_clock_mhz,
            "started_at": self.started_at,
        }
        fh = None
        if self.series_path:
            self.series_path.parent.mkdir(parents=True, exist_ok=True)
            fh = self.series_path.open("w", encoding="utf-8")
            fh.write(json.dumps(header) + "\n")
            fh.flush()
        self._thread = threading.Thread(target=self._run, args=(fh,), name=f"telemetry-{self.gpu_uuid}", daemon=True)
        self._thread.start()
        return self

    def stop(self, timeout: float = 5.0) -> list[TelemetrySample]:
        """Stop sampling (taking one last sample) and return the series."""
        if self._thread is None:
            return self.samples
        self._stop.set()
        self._thread.join(timeout)
        self._thread = None
        self.stopped_at = self._clock()
        self._close_session()
        return self.samples

    def __enter__(self) -> "TelemetrySampler":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _close_session(self) -> None:
        if self._own_session and self._session is not None:
            self._session.close()
            self._session = None
            self._own_session = False

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    @property
    def samples(self) -> list[TelemetrySample]:
        with self._lock:
            return list(self._samples)

    # -- sampling ---------------------------------------------------------------------------
    def sample_once(self) -> TelemetrySample:
        s, h = self._session, self._handle
        assert s is not None, "sampler not started"
        sm = s.clock(h, "sm")
        mem = s.clock(h, "mem")
        gpu_u, mem_u = s.utilization(h)
        _, used = s.memory(self._mem_handle)
        return TelemetrySample(
            t=self._clock(),
            sm_clock_mhz=sm,
            mem_clock_mhz=mem,
            power_w=s.power_w(h),
            energy_j=s.energy_j(h),
            temp_c=s.temperature_c(h),
            gpu_util_pct=gpu_u,
            mem_util_pct=mem_u,
            mem_used_bytes=used,
            pstate=s.performance_state(h),
            reasons=s.clock_event_reasons(h),
            power_violation_ns=s.violation_ns(h, "power"),
            thermal_violation_ns=s.violation_ns(h, "thermal"),
        )

    def _run(self, fh: Any) -> None:
        cpu0 = time.thread_time()
        t_start = time.monotonic()
        k = 0
        try:
            while True:
                stopping = self._stop.is_set()
                try:
                    sample = self.sample_once()
                except Exception as exc:  # noqa: BLE001 - the sampler must never kill a run
                    self.sample_errors += 1
                    self.error = f"{type(exc).__name__}: {exc}"
                    sample = None
                if sample is not None:
                    with self._lock:
                        self._samples.append(sample)
                    if fh is not None:
                        fh.write(json.dumps(sample.to_dict()) + "\n")
                if stopping:
                    break
                k += 1
                delay = t_start + k * self.interval_s - time.monotonic()
                if delay < 0:  # fell behind (suspended?): skip missed ticks, no burst
                    k = int((time.monotonic() - t_start) / self.interval_s) + 1
                    delay = t_start + k * self.interval_s - time.monotonic()
                self._stop.wait(max(0.0, delay))
        finally:
            if fh is not None:
                try:
                    fh.close()
                except OSError:
                    pass
            self.thread_cpu_s = time.thread_time() - cpu0

    # -- results ----------------------------------------------------------------------------
    def summary(self, t0: float | None = None, t1: float | None = None) -> TelemetrySummary:
        return summarize(
            self.samples,
            max_sm_clock_mhz=self.max_sm_clock_mhz,
            interval_s=self.interval_s,
            t0=t0,
            t1=t1,
            gpu_uuid=self.gpu_uuid,
            sample_errors=self.sample_errors,
            series_path=str(self.series_path) if self.series_path else None,
        )


def start_sampler(
    gpu_uuid: str | None,
    *,
    interval_s: float = DEFAULT_INTERVAL_S,
    series_path: str | Path | None = None,
    nvml_module: ModuleType | None = None,
) -> tuple[TelemetrySampler | None, str | None]:
    """Start a sampler if this run has a GPU and NVML works: (sampler, None) or (None, why not).

    For the runner: never raises; ``why`` is "no GPU: CPU run", "NVML not available: ...", ...
    """
    if not gpu_uuid:
        return None, "no GPU: CPU run, no GPU telemetry"
    sampler = TelemetrySampler(gpu_uuid, interval_s=interval_s, series_path=series_path, nvml_module=nvml_module)
    try:
        sampler.start()
    except NvmlUnavailable as exc:
        return None, str(exc)
    except LookupError as exc:
        return None, f"telemetry unavailable: {exc}"
    except Exception as exc:  # noqa: BLE001
        return None, f"telemetry unavailable: {type(exc).__name__}: {exc}"
    return sampler, None


def read_series(path: str | Path) -> tuple[dict[str, Any], list[TelemetrySample]]:
    """Read a series file back: (header, samples). Tolerates a truncated last line."""
    header: dict[str, Any] = {}
    samples: list[TelemetrySample] = []
    with Path(path).open(encoding="utf-8") as fh:
        for line in fh:
            line = line.strip()
            if not line:
                continue
            try:
                d = json.loads(line)
            except json.JSONDecodeError:
                continue
            if d.get("type") == "header":
                header = d
            elif d.get("type") == "sample":
                samples.append(TelemetrySample.from_dict(d))
    return header, samples


def summarize_series(path: str | Path, t0: float | None = None, t1: float | None = None) -> TelemetrySummary:
    header, samples = read_series(path)
    return summarize(
        samples,
        max_sm_clock_mhz=header.get("max_sm_clock_mhz"),
        interval_s=float(header.get("interval_s") or DEFAULT_INTERVAL_S),
        t0=t0,
        t1=t1,
        gpu_uuid=header.get("gpu_uuid"),
        series_path=str(path),
    )


@dataclass
class SamplerOverhead:
    seconds: float  # wall time sampled
    interval_s: float
    samples: int
    thread_cpu_s: float  # CPU time of the sampler thread
    cpu_fraction: float  # thread_cpu_s / seconds (budget: < 0.01 of one core)
    gpu_uuid: str
    fake: bool  # measured against a fake NVML module

    @property
    def ok(self) -> bool:
        return self.cpu_fraction < 0.01

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["ok"] = self.ok
        return d


def measure_sampler_overhead(
    seconds: float = 5.0,
    *,
    gpu_uuid: str | None = None,
    interval_s: float = DEFAULT_INTERVAL_S,
    nvml_module: ModuleType | None = None,
    series_path: str | Path | None = None,
) -> SamplerOverhead:
    """Run the sampler for ``seconds`` and report its thread's CPU time / wall time.

    ``gpu_uuid`` defaults to the first GPU. Raises :class:`NvmlUnavailable` without NVML (pass a
    fake module with ``nvml_module`` to measure the harness's own cost on a machine without one).
    """
    session = open_nvml(nvml_module)
    try:
        if gpu_uuid is None:
            if session.device_count() < 1:
                raise NvmlUnavailable("NVML sees no GPU")
            gpu_uuid = session.uuid(session.handle_by_index(0)) or ""
        sampler = TelemetrySampler(gpu_uuid, interval_s=interval_s, series_path=series_path, session=session)
        t0 = time.monotonic()
        sampler.start()
        time.sleep(seconds)
        sampler.stop()
        wall = time.monotonic() - t0
    finally:
        session.close()
    return SamplerOverhead(
        seconds=wall,
        interval_s=interval_s,
        samples=len(sampler.samples),
        thread_cpu_s=sampler.thread_cpu_s,
        cpu_fraction=sampler.thread_cpu_s / wall if wall > 0 else 0.0,
        gpu_uuid=gpu_uuid,
        fake=session.is_fake,
    )


def load_module_from_path(path: str) -> ModuleType:
    import importlib.util
    import sys

    name = "harness_fake_pynvml"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot load {path}")
    mod = importlib.util.module_from_spec(spec)
    sys.modules[name] = mod  # dataclasses look their module up there
    try:
        spec.loader.exec_module(mod)
    except BaseException:
        del sys.modules[name]
        raise
    return mod


def main(argv: list[str] | None = None) -> int:
    """``python -m harness.hw.telemetry overhead [--seconds S] [--fake-module tests/fakes/pynvml.py]``

    For ``make bench``: prints one JSON line ``sampler_overhead {...}``; exit 1 when over budget.
    """
    import argparse

    ap = argparse.ArgumentParser(prog="python -m harness.hw.telemetry")
    sub = ap.add_subparsers(dest="cmd", required=True)
    o = sub.add_parser("overhead", help="CPU cost of the sampler thread")
    o.add_argument("--seconds", type=float, default=5.0)
    o.add_argument("--interval", type=float, default=DEFAULT_INTERVAL_S)
    o.add_argument("--gpu-uuid", default=None)
    o.add_argument("--fake-module", default=None, help="path of a fake pynvml module (tests/fakes/pynvml.py)")
    args = ap.parse_args(argv)
    module = load_module_from_path(args.fake_module) if args.fake_module else None
    try:
        res = measure_sampler_overhead(
            args.seconds, gpu_uuid=args.gpu_uuid, interval_s=args.interval, nvml_module=module
        )
    except NvmlUnavailable as exc:
        print(f"sampler_overhead unavailable: {exc} (use --fake-module tests/fakes/pynvml.py)")
        return 2
    print("sampler_overhead " + json.dumps(res.to_dict()))
    return 0 if res.ok else 1


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
