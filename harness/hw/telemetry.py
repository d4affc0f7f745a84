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
where the GPU supports them; the power integral and the reason bits are the fallbacks. The summary
arithmetic and the throttle flags are :mod:`harness.hw.telemetry_summary` (re-exported here).
"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from types import ModuleType
from typing import Any, Callable

from harness.hw.nvml import NvmlSession, NvmlUnavailable, open_nvml
from harness.hw.telemetry_summary import (  # noqa: F401 - the summary's names are telemetry's public API too
    DEFAULT_INTERVAL_S,
    TelemetrySample,
    TelemetrySummary,
    Thresholds,
    flags_for,
    percentile,
    summarize,
    throttle_findings,
)

SERIES_FORMAT = "harness-telemetry/1"


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


def main(argv: list[str] | None = None, *, nvml_module: ModuleType | None = None) -> int:
    """``python -m harness.hw.telemetry overhead [--seconds S] [--interval S] [--gpu-uuid UUID]``

    For ``make bench``: prints one JSON line ``sampler_overhead {...}``; exit 1 when over budget, 2 without
    NVML. ``nvml_module``: a pynvml-like module to measure against instead of the real one (tests hand in
    their fake).
    """
    import argparse

    ap = argparse.ArgumentParser(prog="python -m harness.hw.telemetry")
    sub = ap.add_subparsers(dest="cmd", required=True)
    o = sub.add_parser("overhead", help="CPU cost of the sampler thread")
    o.add_argument("--seconds", type=float, default=5.0)
    o.add_argument("--interval", type=float, default=DEFAULT_INTERVAL_S)
    o.add_argument("--gpu-uuid", default=None)
    args = ap.parse_args(argv)
    try:
        res = measure_sampler_overhead(
            args.seconds, gpu_uuid=args.gpu_uuid, interval_s=args.interval, nvml_module=nvml_module
        )
    except NvmlUnavailable as exc:
        print(f"sampler_overhead unavailable: {exc}")
        return 2
    print("sampler_overhead " + json.dumps(res.to_dict()))
    return 0 if res.ok else 1


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
