"""Stage 5, the hardware and the normalization: the device's label, the calibration fixed/calibrate.py
measured in the run's own container, the NVML telemetry sampled from outside the run, the flags they
raise, and the score against the class's own baseline."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from harness import contract, paths
from harness.benchmarks import Benchmark
from harness.hw.calibration import judge_calibration, parse_calibration
from harness.hw.context import HardwareContext
from harness.hw.telemetry import flags_for
from harness.pipeline.train import Watcher
from harness.record import Hardware, Outcome
from harness.scoring.baselines import BaselineFormatError, Baselines, load_baselines
from harness.scoring.normalize import normalize


def first_calibration_line(log_path: Path) -> str:
    """The calibration line fixed/calibrate.py printed before train.py started. Only the first one
    counts: a candidate printing its own 'calibration {...}' line later cannot replace it."""
    try:
        with open(log_path, errors="replace") as f:
            for line in f:
                if line.startswith("calibration "):
                    return line
    except OSError:
        pass
    return ""


def hardware_part(outcome: Outcome, hw: HardwareContext, bench: Benchmark, sampler: Any, no_telemetry: str | None,
                  watcher: Watcher, run_dir: Path, calibrated: bool) -> tuple[Hardware, tuple[str, ...]]:
    """The hardware label, calibration and telemetry summary, and the flags they raise."""
    # A calibration line counts only when fixed/calibrate.py ran, and only its own (the first) line.
    cal = parse_calibration(first_calibration_line(Path(outcome.log_path))) if calibrated else None
    judgement = judge_calibration(cal, hw.cls, threshold=bench.thresholds["slow_device_fraction"])
    calibration = {"result": cal.to_dict() if cal else None, "judgement": judgement.to_dict()}
    summary = None
    if sampler is not None:
        summary = sampler.summary(watcher.train_started_at, watcher.last_progress_at)
        telemetry = {"summary": summary.to_dict(), "series": str(run_dir / contract.RUN_TELEMETRY),
                     "unavailable": None}
    else:
        telemetry = {"summary": None, "series": None, "unavailable": no_telemetry}
    flags = tuple(flags_for(summary, bench.thresholds)) + tuple(judgement.flags)
    return Hardware(machine=hw.to_record(), telemetry=telemetry, calibration=calibration), flags


def normalization(outcome: Outcome, hardware: Hardware, hw: HardwareContext, bench: Benchmark,
                  baselines_path: Path | None) -> dict[str, Any] | None:
    """Delta, z-score and relative change against this class's own baseline (when the run scored)."""
    bpb = outcome.val_bpb
    if outcome.status != "ok" or bpb is None:
        return None
    path = Path(baselines_path or paths.baselines_file())
    try:
        baselines = load_baselines(path) if path.exists() else Baselines()
    except BaselineFormatError as e:  # the run's own outcome stands; only its comparison is missing
        return {"error": f"{path}: {e}", "baselines_file": str(path)}
    cal = (hardware.calibration or {}).get("result")
    n = normalize(bpb, hw.cls.label, baselines, calibration=cal, benchmark=bench.name)
    return {**n.to_dict(), "line": n.line(), "baselines_file": str(path)}
