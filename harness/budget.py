"""The training budget a run gets: decided here, once per submission, before anything runs.

    wall               every run gets the benchmark's time_budget_s (autoresearch's rule)
    reference-compute  time_budget_s is the budget on the benchmark's reference class; a run on another
                       class gets it scaled by reference peak / own peak (bf16 FLOP/s, class table), so
                       that labs on different GPUs compare scores at equal compute. A class the table has
                       no peak for (a CPU, an unknown GPU) is measured instead: the reference's expected
                       matmul FLOP/s over what fixed/calibrate.py measures on this machine. The factor is
                       kept within the benchmark's budget_bounds.

The record carries the plan (provenance.budget: mode, factor, where it came from); the benchmark
fingerprint covers the mode, the reference, the bounds and the unscaled budget, never the scaled seconds,
so runs of one benchmark on two classes share a fingerprint, and runs of the two modes never do.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

from harness.benchmarks import Benchmark
from harness.hw.gpu_class import GpuClass, class_from_label, expected_flops

WALL = "wall"
REFERENCE_COMPUTE = "reference-compute"


class BudgetError(RuntimeError):
    """The budget cannot be decided (no peak and no calibration); the message says what to do."""


@dataclass(frozen=True)
class BudgetPlan:
    mode: str
    base_s: float  # the benchmark's budget (or --budget): the reference class's seconds
    seconds: float  # what this run gets
    factor: float  # seconds / base_s
    source: str  # wall | override | reference | class-table | calibration
    reference: str | None = None
    reference_flops: float | None = None
    own_flops: float | None = None
    clamped: bool = False

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def plan_budget(bench: Benchmark, cls: GpuClass, *, override_s: float | None = None,
                measured_flops: Callable[[], float | None] | None = None) -> BudgetPlan:
    """This class's budget on this benchmark. measured_flops runs fixed/calibrate.py (asked only when the
    class table has no peak for the class); --budget (override_s) is a quick check: used as it is."""
    base = float(override_s if override_s is not None else bench.time_budget_s)
    if bench.budget_mode != REFERENCE_COMPUTE:
        return BudgetPlan(WALL, base, base, 1.0, "override" if override_s is not None else WALL)
    if override_s is not None:
        return BudgetPlan(REFERENCE_COMPUTE, base, base, 1.0, "override", bench.budget_reference)
    ref = class_from_label(str(bench.budget_reference))
    if cls.label == ref.label:
        return BudgetPlan(REFERENCE_COMPUTE, base, base, 1.0, "reference", ref.label)
    own_peak = cls.peak_flops.get("bf16")
    if own_peak:
        ref_flops, own, source = float(ref.peak_flops["bf16"] or 0.0), float(own_peak), "class-table"
    else:  # no peak in the table: the reference's expected matmul rate against what this machine delivers
        measured = measured_flops() if measured_flops is not None else None
        if not measured:
            raise BudgetError(f"benchmark '{bench.name}' scales its budget by compute (budget_mode "
                              f"reference-compute), and class {cls.label} has no peak FLOP/s in the class table; "
                              "the calibration that would measure it did not run (drop --no-calibrate)")
        ref_flops, own, source = float(expected_flops(ref, "bf16") or 0.0), float(measured), "calibration"
    raw = ref_flops / own
    lo, hi = bench.budget_bounds
    factor = min(max(raw, lo), hi)
    return BudgetPlan(REFERENCE_COMPUTE, base, base * factor, factor, source, ref.label, ref_flops, own,
                      clamped=factor != raw)


def calibrated_flops(timeout_s: float = 60.0) -> float | None:
    """The matmul FLOP/s fixed/calibrate.py measures on this machine (a fresh process of fixed code)."""
    from harness.hw.calibration import run_calibration_locally

    cal = run_calibration_locally(timeout=timeout_s)
    return cal.matmul_flops if cal is not None else None
