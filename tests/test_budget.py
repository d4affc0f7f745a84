"""Equal-compute budgets (benchmarks.yaml budget_mode: reference-compute): the budget a class gets, from
the class table (two classes through the fake NVML) or from the calibration (a CPU, for real)."""

from __future__ import annotations

import dataclasses

import pytest
import yaml

from harness.benchmarks import BenchmarkError, parse_benchmarks
from harness.budget import BudgetError, plan_budget
from harness.hw.context import detect_hardware
from tests.conftest import REPO
from tests.fakes import pynvml as fake

TOY = REPO / "tests" / "cases" / "toy_train.py"


def equal_compute(bench, **kw):
    return dataclasses.replace(bench, budget_mode="reference-compute", budget_reference="H100-SXM-80GB", **kw)


def cls_of(gpu):
    return detect_hardware(nvml_module=fake.make_module([gpu]), probe_docker=False).cls


def test_two_classes_get_budgets_in_the_ratio_of_their_peaks(tiny_bench):
    bench = equal_compute(tiny_bench)
    h100, a100 = cls_of(fake.h100_sxm()), cls_of(fake.a100_sxm())
    on_h100, on_a100 = plan_budget(bench, h100), plan_budget(bench, a100)
    assert on_h100.seconds == pytest.approx(60.0) and on_h100.source == "class-table"  # H100-SXM-80GB·700W
    ratio = h100.peak_flops["bf16"] / a100.peak_flops["bf16"]
    assert on_a100.seconds / on_h100.seconds == pytest.approx(ratio) and on_a100.factor == pytest.approx(ratio)
    assert on_a100.reference == "H100-SXM-80GB" and not on_a100.clamped
    # Bounded: a far slower class gets at most the upper bound.
    tight = plan_budget(equal_compute(tiny_bench, budget_bounds=(0.5, 2.0)), a100)
    assert tight.factor == 2.0 and tight.clamped and tight.seconds == 120.0
    # wall (the default) and --budget leave the budget alone.
    assert plan_budget(tiny_bench, a100).seconds == 60.0 and plan_budget(tiny_bench, a100).source == "wall"
    assert plan_budget(bench, a100, override_s=2).seconds == 2.0


def test_a_class_without_a_peak_is_measured(tiny_bench):
    bench = equal_compute(tiny_bench, budget_bounds=(1e-3, 1e6))
    cpu = detect_hardware(nvml_module=fake.make_module([]), probe_docker=False).cls
    assert cpu.peak_flops["bf16"] is None
    plan = plan_budget(bench, cpu, measured_flops=lambda: 1e11)
    ref_expected = 989.5e12 * 0.7  # the H100's bf16 peak x the class table's expected matmul efficiency
    assert plan.source == "calibration" and plan.factor == pytest.approx(ref_expected / 1e11)
    with pytest.raises(BudgetError, match="no peak FLOP/s in the class table"):
        plan_budget(bench, cpu, measured_flops=None)


def test_the_fingerprint_has_the_mode_but_not_the_scaled_seconds(tiny_bench, tiny_cache):
    from harness.fingerprint import benchmark_fingerprint
    from harness.fixedcode import fixed_hashes

    fixed = fixed_hashes()
    wall = benchmark_fingerprint(tiny_bench, tiny_cache.manifest, fixed)
    rc = equal_compute(tiny_bench)
    a100 = plan_budget(rc, cls_of(fake.a100_sxm()))
    assert benchmark_fingerprint(rc, tiny_cache.manifest, fixed, a100.base_s) \
        == benchmark_fingerprint(rc, tiny_cache.manifest, fixed)  # every class of one benchmark: one fingerprint
    assert benchmark_fingerprint(rc, tiny_cache.manifest, fixed) != wall  # two modes never share one


def test_benchmarks_yaml_checks_the_reference():
    doc = yaml.safe_load((REPO / "benchmarks.yaml").read_text())
    doc["benchmarks"]["tiny"]["budget_mode"] = "reference-compute"
    with pytest.raises(BenchmarkError, match="'budget_reference'"):
        parse_benchmarks(doc)
    doc["benchmarks"]["tiny"]["budget_reference"] = "NOT-A-GPU"
    with pytest.raises(BenchmarkError, match="no bf16 peak"):
        parse_benchmarks(doc)
    doc["benchmarks"]["tiny"]["budget_reference"] = "H100-SXM-80GB"
    doc["benchmarks"]["tiny"]["budget_bounds"] = [2, 4]
    with pytest.raises(BenchmarkError, match="must hold 1"):
        parse_benchmarks(doc)
    doc["benchmarks"]["tiny"]["budget_bounds"] = [0.5, 3]
    assert parse_benchmarks(doc)["tiny"].budget_bounds == (0.5, 3.0)


def test_a_cpu_run_gets_the_calibrated_budget(tiny_bench, tiny_cache, tmp_path, monkeypatch):
    """For real on this machine: the calibration measures the CPU, which is far slower than the H100
    reference, so the 1 s reference budget grows to the upper bound, 3 s, and the record says why."""
    from harness.pipeline import RunOptions, execute_run

    monkeypatch.setenv("HARNESS_BASELINES", str(tmp_path / "b.json"))
    bench = equal_compute(tiny_bench, time_budget_s=1.0, budget_bounds=(0.5, 3.0))
    r = execute_run(TOY, RunOptions(benchmark=bench, backend="local", runs_dir=tmp_path / "runs",
                                    data_dir=tiny_cache.data_dir, calibrate=True))
    assert r.status == "ok", r.reason
    budget = r.provenance["budget"]
    assert budget["mode"] == "reference-compute" and budget["source"] == "calibration" and budget["clamped"]
    assert budget["own_flops"] > 0 and budget["factor"] == 3.0 and r.budget_s == 3.0
    assert r.clock["limits"]["budget_s"] == 3.0  # the harness's clock holds the run to the scaled budget
