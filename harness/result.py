"""The result of one run: a typed record, written as one JSON document (schema: harness/schemas/result.schema.json)."""

from __future__ import annotations

import json
import math
import os
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

SCHEMA_VERSION = 1


@dataclass
class Timings:
    """As observed by the harness (epoch seconds and durations), never as claimed by the run."""
    started_at: float
    first_output_at: float | None
    ended_at: float
    startup_s: float | None  # container/process start to train.py's first output
    training_s: float | None  # from the run's summary, bounded by what the harness saw
    eval_s: float | None
    total_s: float
    calibration_s: float | None = None  # start to the end of the calibration, when one ran first
    training_observed_s: float | None = None  # train.py's first output to the model hand-over / last progress


@dataclass
class RunResult:
    run_id: str
    status: str
    reason: str | None
    trust: str  # "unisolated" (local backend), "self-reported", "verified"
    backend: str
    isolated: bool
    provenance: dict[str, Any]  # written by harness/provenance.py alone
    timings: Timings
    metrics: dict[str, Any]
    budget_s: float
    hard_timeout_s: float
    log_path: str
    log_truncated: bool = False
    traceback_tail: str | None = None
    hardware: dict[str, Any] | None = None
    telemetry: dict[str, Any] | None = None
    calibration: dict[str, Any] | None = None
    normalization: dict[str, Any] | None = None
    flags: list[str] = field(default_factory=list)
    evaluation: dict[str, Any] | None = None
    clock: dict[str, Any] | None = None  # the harness's clock (harness/clock.py): spans seen from outside
    reported: dict[str, Any] | None = None  # verified runs: train.py's own printed figures, never measured
    schema_version: int = SCHEMA_VERSION

    @property
    def val_bpb(self) -> float | None:
        return self.metrics.get("val_bpb")

    def to_dict(self) -> dict[str, Any]:
        return finite(asdict(self))

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "RunResult":
        d = dict(d)
        d["timings"] = Timings(**d["timings"])
        return cls(**d)


def finite(value: Any) -> Any:
    """The same structure with every non-finite float as null: JSON has no NaN, and a record must
    always be writable whatever a run or an evaluator produced (the status says what went wrong)."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [finite(v) for v in value]
    return value


def write_json_atomic(path: Path, doc: Any) -> None:
    """Write to a temp file in the same folder, fsync, then rename: a reader sees all or nothing."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(doc, f, indent=1, sort_keys=True, allow_nan=False)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
