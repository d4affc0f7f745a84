"""Telemetry: the sampler thread, the summary arithmetic and the throttle flags (fake NVML)."""

from __future__ import annotations

import json
import time

import pytest

from harness.hw.nvml import NvmlUnavailable, open_nvml
from harness.hw.telemetry import (
    TelemetrySample,
    TelemetrySampler,
    TelemetrySummary,
    Thresholds,
    flags_for,
    main,
    measure_sampler_overhead,
    percentile,
    read_series,
    start_sampler,
    summarize,
    summarize_series,
    throttle_findings,
)
from tests.fakes import load_fake_nvml

FAKE = load_fake_nvml()


def _throttle_samples(n: int = 4) -> tuple[TelemetrySampler, list[TelemetrySample]]:
    """n samples of the throttling GPU at t = 0, 0.25, 0.5, ... taken synchronously."""
    gpu = FAKE.throttling_h100()
    mod = FAKE.make_module([gpu])
    times = iter([0.25 * i for i in range(n)])
    sampler = TelemetrySampler(gpu.uuid, nvml_module=mod, clock=lambda: next(times))
    sampler._session = open_nvml(mod)  # start() without the thread
    sampler._own_session = True
    h = sampler._session.handle_by_uuid(gpu.uuid)
    sampler._handle = sampler._mem_handle = h
    sampler.max_sm_clock_mhz = 1980
    out = [sampler.sample_once() for _ in range(n)]
    sampler._close_session()
    return sampler, out


def test_sample_fields_from_fake():
    _, samples = _throttle_samples(4)
    s = samples[2]
    assert s.t == 0.5 and s.sm_clock_mhz == 1200 and s.mem_clock_mhz == 2619
    assert s.power_w == 690.0 and s.energy_j == 1347.5 and s.temp_c == 91
    assert s.gpu_util_pct == 100 and s.mem_util_pct == 50 and s.mem_used_bytes == 61_000 * 2**20
    assert s.pstate == 0 and s.reasons == 0x24
    assert s.power_violation_ns == 500_000_000 and s.thermal_violation_ns == 250_000_000


def test_summary_hand_computed():
    _, samples = _throttle_samples(4)
    s = summarize(samples, max_sm_clock_mhz=1980, interval_s=0.25, gpu_uuid="GPU-x")
    assert s.sample_count == 4 and s.busy_sample_count == 4
    assert (s.window_start, s.window_end, s.duration_s) == (0.0, 0.75, 0.75)
    # sorted fractions: 1200/1980, 1500/1980, 1, 1
    assert s.sm_clock_frac_p10 == pytest.approx(1290 / 1980)  # 1200 + 0.3 * 300
    assert s.sm_clock_frac_p50 == pytest.approx(1740 / 1980)  # (1500 + 1980) / 2
    assert s.sm_clock_frac_p90 == pytest.approx(1.0)
    assert s.mean_power_w == pytest.approx(675.0)  # (700 + 700 + 690 + 610) / 4
    assert s.energy_j == pytest.approx(500.0) and s.energy_source == "counter"  # 1500 J - 1000 J
    assert s.throttle_share == {"power": 0.5, "thermal": 0.25, "hw_slowdown": 0.0, "power_brake": 0.0, "idle": 0.0}
    assert s.throttled_share == 0.5
    assert s.violation_s == {"power": pytest.approx(0.5), "thermal": pytest.approx(0.25)}
    assert s.max_temp_c == 91 and s.mean_gpu_util_pct == 100.0 and s.max_mem_used_bytes == 61_000 * 2**20
    d = s.to_dict()
    assert d["gpu_uuid"] == "GPU-x" and json.dumps(d)


def test_summary_window():
    _, samples = _throttle_samples(4)
    s = summarize(samples, max_sm_clock_mhz=1980, t0=0.25, t1=0.5)
    assert s.sample_count == 2 and s.duration_s == 0.25
    assert s.energy_j == pytest.approx(172.5)  # 1347.5 - 1175
    assert s.throttle_share["power"] == 1.0 and s.throttle_share["thermal"] == 0.5
    assert s.sm_clock_frac_p50 == pytest.approx(1350 / 1980)


def test_energy_falls_back_to_power_integral():
    samples = [TelemetrySample(t=0.0, power_w=100.0), TelemetrySample(t=1.0, power_w=300.0),
               TelemetrySample(t=3.0, power_w=300.0)]
    s = summarize(samples, max_sm_clock_mhz=None)
    assert s.energy_j == pytest.approx(200.0 + 600.0) and s.energy_source == "power_integral"
    assert s.sm_clock_frac_p50 is None and s.throttle_share == {}
    # a counter that went backwards (reset) is not trusted
    samples = [TelemetrySample(t=0.0, power_w=100.0, energy_j=50.0),
               TelemetrySample(t=1.0, power_w=100.0, energy_j=10.0)]
    assert summarize(samples, max_sm_clock_mhz=None).energy_source == "power_integral"


def test_idle_samples_excluded_from_clock_percentiles():
    samples = [TelemetrySample(t=i, sm_clock_mhz=300, reasons=0x1) for i in range(3)]
    samples += [TelemetrySample(t=3 + i, sm_clock_mhz=1980, reasons=0) for i in range(2)]
    s = summarize(samples, max_sm_clock_mhz=1980)
    assert s.busy_sample_count == 2 and s.sm_clock_frac_p50 == 1.0
    assert s.throttle_share["idle"] == pytest.approx(0.6) and s.throttled_share == 0.0
    assert flags_for(s, None) == []


def test_percentile():
    assert percentile([], 50) is None
    assert percentile([3.0], 10) == 3.0
    assert percentile([1, 2, 3, 4], 50) == 2.5
    assert percentile([10, 0, 5], 10) == pytest.approx(1.0)


def _summary(**kw) -> TelemetrySummary:
    base = dict(gpu_uuid="g", sample_count=100, interval_s=0.25, window_start=0, window_end=25, duration_s=25,
                max_sm_clock_mhz=1980, busy_sample_count=100, sm_clock_frac_p10=0.95, sm_clock_frac_p50=0.97,
                sm_clock_frac_p90=1.0, mean_power_w=600, energy_j=15000, energy_source="counter",
                throttle_share={"power": 0.0, "thermal": 0.0, "hw_slowdown": 0.0, "power_brake": 0.0, "idle": 0.0})
    base.update(kw)
    return TelemetrySummary(**base)


@pytest.mark.parametrize(
    "kw, expected",
    [
        ({}, []),
        ({"throttle_share": {"power": 0.05}, "throttled_share": 0.05}, []),  # exactly the limit: not more
        ({"throttle_share": {"power": 0.06}, "throttled_share": 0.06}, ["throttled"]),
        ({"throttle_share": {"thermal": 0.2}, "throttled_share": 0.2}, ["throttled"]),
        ({"throttle_share": {"hw_slowdown": 0.1}, "throttled_share": 0.1}, ["throttled"]),
        ({"throttle_share": {"idle": 0.9}}, []),
        ({"sm_clock_frac_p50": 0.90}, []),
        ({"sm_clock_frac_p50": 0.89}, ["throttled"]),
        ({"sample_count": 0, "sm_clock_frac_p50": 0.1}, []),
    ],
)
def test_flags_default_thresholds(kw, expected):
    assert flags_for(_summary(**kw), {"throttle_max_share": 0.05, "min_sm_clock_fraction": 0.90}) == expected


def test_flags_custom_thresholds_and_findings():
    _, samples = _throttle_samples(4)
    s = summarize(samples, max_sm_clock_mhz=1980)
    assert flags_for(s, None) == ["throttled"]  # defaults 0.05 / 0.90
    found = throttle_findings(s, Thresholds())
    assert any(f.startswith("power throttling in 50%") for f in found)
    assert any(f.startswith("median SM clock 88%") for f in found)
    assert flags_for(s, {"throttle_max_share": 0.6, "min_sm_clock_fraction": 0.85}) == []
    assert flags_for(s, Thresholds(throttle_max_share=0.6, min_sm_clock_fraction=0.878)) == []  # p50 = 0.8788
    assert flags_for(s, Thresholds(throttle_max_share=0.6, min_sm_clock_fraction=0.879)) == ["throttled"]
    assert flags_for(s, Thresholds(throttle_max_share=0.49, min_sm_clock_fraction=0.5)) == ["throttled"]
    assert flags_for(None, None) == []
    assert Thresholds.from_any({"throttle_max_share": None}).throttle_max_share == 0.05
    th = Thresholds.from_any({"throttle_max_share": 0.1, "min_sm_clock_fraction": 0.8, "slow_device_fraction": 0.6})
    assert (th.throttle_max_share, th.min_sm_clock_fraction, th.slow_device_fraction) == (0.1, 0.8, 0.6)

    class Bench:  # an object with attributes works too
        throttle_max_share = 0.2

    assert Thresholds.from_any(Bench()).throttle_max_share == 0.2


def _wait_for(pred, timeout=5.0):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if pred():
            return True
        time.sleep(0.01)
    return False


def test_sampler_thread_writes_series_and_summary(tmp_path):
    gpu = FAKE.h100_sxm(script=FAKE.steady_script(sm=1980, power_w=650.0, n=10_000), loop=False)
    mod = FAKE.make_module([gpu])
    path = tmp_path / "telemetry.jsonl"
    sampler = TelemetrySampler(gpu.uuid, interval_s=0.02, series_path=path, nvml_module=mod)
    with sampler:
        assert sampler.running
        assert _wait_for(lambda: len(sampler.samples) >= 5)
    assert not sampler.running and mod.state.init_count == 0
    samples = sampler.samples
    k = len(samples)
    assert k >= 5 and sampler.sample_errors == 0 and sampler.max_sm_clock_mhz == 1980
    assert all(b.t >= a.t for a, b in zip(samples, samples[1:]))
    s = sampler.summary()
    assert s.sample_count == k and s.interval_s == 0.02 and s.gpu_uuid == gpu.uuid
    assert s.sm_clock_frac_p10 == s.sm_clock_frac_p50 == s.sm_clock_frac_p90 == 1.0
    assert s.mean_power_w == pytest.approx(650.0)
    assert s.energy_j == pytest.approx((k - 1) * 162.5) and s.energy_source == "counter"
    assert s.throttled_share == 0.0 and flags_for(s, None) == []
    assert s.series_path == str(path)
    header, back = read_series(path)
    assert header["type"] == "header" and header["gpu_uuid"] == gpu.uuid and header["max_sm_clock_mhz"] == 1980
    assert back == samples
    assert summarize_series(path) == s


def test_sampler_window_by_time(tmp_path):
    gpu = FAKE.h100_sxm(script=FAKE.steady_script(n=10_000), loop=False)
    sampler = TelemetrySampler(gpu.uuid, interval_s=0.01, nvml_module=FAKE.make_module([gpu]))
    sampler.start()
    assert _wait_for(lambda: len(sampler.samples) >= 6)
    sampler.stop()
    samples = sampler.samples
    t0, t1 = samples[2].t, samples[4].t
    assert sampler.summary(t0, t1).sample_count == 3


def test_sampler_on_mig_slice_reads_parent_counters():
    parent = FAKE.a100_with_mig()
    mod = FAKE.make_module([parent])
    sampler = TelemetrySampler("MIG-66666666-6666-6666-6666-666666666666", interval_s=0.01, nvml_module=mod)
    sampler.start()
    assert _wait_for(lambda: len(sampler.samples) >= 2)
    sampler.stop()
    s = sampler.samples[0]
    assert s.sm_clock_mhz == 1410 and s.power_w == 380.0  # the physical GPU's
    assert s.mem_used_bytes == 5000 * 2**20  # the slice's
    assert sampler.max_sm_clock_mhz == 1410


def test_sampler_unsupported_counters_are_none_and_not_retried():
    gpu = FAKE.rtx4090()  # no violation counters
    mod = FAKE.make_module([gpu])
    sampler = TelemetrySampler(gpu.uuid, interval_s=0.01, nvml_module=mod)
    sampler.start()
    assert _wait_for(lambda: len(sampler.samples) >= 4)
    sampler.stop()
    assert all(s.power_violation_ns is None for s in sampler.samples)
    assert mod.state.calls["nvmlDeviceGetViolationStatus"] == 1
    assert sampler.summary().violation_s == {"power": None, "thermal": None}


def test_sampler_survives_a_lost_gpu():
    gpu = FAKE.h100_sxm()
    mod = FAKE.make_module([gpu])
    sampler = TelemetrySampler(gpu.uuid, interval_s=0.01, nvml_module=mod)
    sampler.start()
    assert _wait_for(lambda: len(sampler.samples) >= 1)
    orig = mod.nvmlDeviceGetClockInfo

    def lost(h, which):  # from here on the clock raises ...
        raise FAKE.NVMLError_GpuIsLost()

    mod.nvmlDeviceGetClockInfo = lost
    n = len(sampler.samples)
    assert _wait_for(lambda: len(sampler.samples) >= n + 2)
    sampler.stop()
    assert sampler.samples[-1].sm_clock_mhz is None  # ... and the samples go on without it
    mod.nvmlDeviceGetClockInfo = orig


def test_sampler_start_errors():
    with pytest.raises(NvmlUnavailable):
        TelemetrySampler("GPU-x", nvml_module=FAKE.make_module([], init_error="library_not_found")).start()
    mod = FAKE.make_module([FAKE.h100_sxm()])
    with pytest.raises(LookupError):
        TelemetrySampler("GPU-nope", nvml_module=mod).start()
    assert mod.state.init_count == 0  # session closed again
    with pytest.raises(ValueError):
        TelemetrySampler("GPU-x", interval_s=0)


def test_start_sampler_never_raises():
    s, why = start_sampler(None)
    assert s is None and why.startswith("no GPU")
    s, why = start_sampler("GPU-x", nvml_module=FAKE.make_module([], init_error="library_not_found"))
    assert s is None and why.startswith("NVML not available: ")
    s, why = start_sampler("GPU-nope", nvml_module=FAKE.make_module([FAKE.h100_sxm()]))
    assert s is None and "GPU-nope" in why
    gpu = FAKE.h100_sxm()
    s, why = start_sampler(gpu.uuid, interval_s=0.01, nvml_module=FAKE.make_module([gpu]))
    assert why is None and s.running
    s.stop()


def test_read_series_tolerates_truncated_last_line(tmp_path):
    p = tmp_path / "t.jsonl"
    lines = [json.dumps({"type": "header", "gpu_uuid": "g", "interval_s": 0.5, "max_sm_clock_mhz": 1000}),
             json.dumps(TelemetrySample(t=1.0, sm_clock_mhz=900).to_dict()),
             '{"type": "sample", "t": 2.0, "sm_']
    p.write_text("\n".join(lines), encoding="utf-8")
    header, samples = read_series(p)
    assert header["interval_s"] == 0.5 and len(samples) == 1
    s = summarize_series(p)
    assert s.sm_clock_frac_p50 == 0.9 and s.interval_s == 0.5


def test_measure_sampler_overhead_with_fake():
    res = measure_sampler_overhead(0.3, interval_s=0.02, nvml_module=FAKE.make_module([FAKE.h100_sxm()]))
    assert res.fake and res.samples >= 5 and res.seconds >= 0.3
    assert 0.0 <= res.cpu_fraction < 0.5  # the < 1 % budget is checked by `make bench`, not on a shared CI core
    assert res.to_dict()["gpu_uuid"].startswith("GPU-")
    with pytest.raises(NvmlUnavailable):
        measure_sampler_overhead(0.01, nvml_module=FAKE.make_module([FAKE.h100_sxm()], init_error="library_not_found"))


def test_overhead_cli_with_fake_module(capsys):
    rc = main(["overhead", "--seconds", "0.2", "--interval", "0.05"], nvml_module=FAKE)
    out = capsys.readouterr().out
    assert out.startswith("sampler_overhead {")
    d = json.loads(out.split(" ", 1)[1])
    assert d["fake"] is True and d["samples"] >= 2 and rc in (0, 1)
