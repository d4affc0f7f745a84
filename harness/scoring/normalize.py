"""The normalisation of a result against its own GPU class's baseline.

A 5-minute val_bpb depends on the GPU, so a result is compared with the baseline train.py's
runs ON THE SAME CLASS: delta = val_bpb - class mean, z = delta / class std. The baselines
themselves are stored by :mod:`harness.scoring.baselines`.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Iterable

from harness.hw.class_table import REFERENCE_CLASS, ClassTable
from harness.hw.gpu_class import SEP, GpuClass, class_from_label, expected_flops
from harness.scoring.baselines import BaselineSample, Baselines, BaselineStats, stats_of

BASELINE_RUNS_HINT = 5


@dataclass
class Normalization:
    raw_bpb: float
    baseline_mean: float | None
    baseline_std: float | None
    baseline_n: int
    delta: float | None  # raw_bpb - baseline_mean (negative = better than the class baseline)
    z: float | None  # delta / baseline_std; None when n < 2 or std == 0 (see note)
    relative: float | None  # delta / baseline_mean
    speed_factor: float | None  # calibration matmul FLOP/s / the reference class's expected FLOP/s
    class_label: str
    note: str | None
    benchmark: str | None = None
    reference_class: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def line(self) -> str:
        return scorecard_line(self)


def _calibration_flops(calibration: Any) -> float | None:
    if calibration is None:
        return None
    if isinstance(calibration, (int, float)):
        return float(calibration)
    v = getattr(calibration, "matmul_flops", None)
    if v is None and isinstance(calibration, dict):
        v = calibration.get("matmul_flops")
    return float(v) if v else None


def speed_factor(
    calibration: Any,
    reference_class: str | GpuClass = REFERENCE_CLASS,
    *,
    reference_dtype: str = "bf16",
    table: ClassTable | None = None,
) -> float | None:
    """This run's calibration matmul FLOP/s / what the reference class is expected to deliver
    (its ``reference_dtype`` peak x expected efficiency). bf16 because the baseline trains in
    bf16: a CPU's fp32 figure is compared with the rate the reference would really train at."""
    flops = _calibration_flops(calibration)
    if not flops:
        return None
    ref = reference_class if isinstance(reference_class, GpuClass) else class_from_label(reference_class, table)
    exp = expected_flops(ref, reference_dtype)
    return flops / exp if exp else None


def normalize(
    val_bpb: float,
    class_label: str,
    baselines: Baselines | BaselineStats | Iterable[float | BaselineSample] | None,
    calibration: Any = None,
    reference_class: str | GpuClass = REFERENCE_CLASS,
    *,
    benchmark: str | None = None,
    table: ClassTable | None = None,
    reference_dtype: str = "bf16",
) -> Normalization:
    """Compare ``val_bpb`` with the baseline of ``class_label``.

    ``baselines``: a :class:`Baselines` (then ``benchmark`` is required), the class's
    :class:`BaselineStats`, or its samples / values. ``calibration``: a
    :class:`~harness.hw.calibration.Calibration`, a dict with ``matmul_flops``, or FLOP/s.
    """
    if isinstance(baselines, Baselines):
        if benchmark is None:
            raise ValueError("normalize: benchmark= is required with a Baselines object")
        st = baselines.stats(benchmark, class_label)
    elif isinstance(baselines, BaselineStats) or baselines is None:
        st = baselines
    else:
        st = stats_of(v.val_bpb if isinstance(v, BaselineSample) else float(v) for v in baselines)
    ref_label = reference_class.label if isinstance(reference_class, GpuClass) else reference_class
    sf = speed_factor(calibration, reference_class, reference_dtype=reference_dtype, table=table)
    if st is None or st.n == 0:
        return Normalization(
            raw_bpb=val_bpb, baseline_mean=None, baseline_std=None, baseline_n=0, delta=None, z=None,
            relative=None, speed_factor=sf, class_label=class_label,
            note="no baseline for this class yet", benchmark=benchmark, reference_class=ref_label,
        )
    delta = val_bpb - st.mean
    relative = delta / st.mean if st.mean else None
    if st.n < 2:
        z, note = None, f"z needs 2+ baseline runs (n={st.n})"
    elif not st.std:
        z, note = None, "z undefined: baseline std is 0"
    else:
        z, note = delta / st.std, None
    return Normalization(
        raw_bpb=val_bpb, baseline_mean=st.mean, baseline_std=st.std, baseline_n=st.n, delta=delta, z=z,
        relative=relative, speed_factor=sf, class_label=class_label, note=note, benchmark=benchmark,
        reference_class=ref_label,
    )


def _fmt_z(z: float) -> str:
    return f"{z:.0f}" if abs(z) >= 10 else f"{z:.1f}"


def scorecard_line(n: Normalization, benchmark: str | None = None, *, with_speed: bool = False) -> str:
    """``val_bpb 0.9812 · H100-SXM-80GB·700W · Δ -0.0167 vs class baseline 0.9979 ± 0.0005 (n=5) · z -33``"""
    sep = f" {SEP} "
    parts = [f"val_bpb {n.raw_bpb:.4f}", n.class_label]
    bench = benchmark or n.benchmark or "<benchmark>"
    if n.baseline_mean is None:
        parts.append(
            f"no baseline for this class yet: run harness baseline --benchmark {bench} --runs {BASELINE_RUNS_HINT}"
        )
    else:
        spread = f" ± {n.baseline_std:.4f}" if n.baseline_std is not None else ""
        parts.append(f"Δ {n.delta:+.4f} vs class baseline {n.baseline_mean:.4f}{spread} (n={n.baseline_n})")
        if n.z is not None:
            parts.append(f"z {_fmt_z(n.z)}")
        else:
            parts.append(f"z n/a ({n.note})")
    if with_speed and n.speed_factor is not None:
        parts.append(f"speed {n.speed_factor:.2f}x {n.reference_class or REFERENCE_CLASS}")
    return sep.join(parts)
