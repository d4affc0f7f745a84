"""`harness reproduce RUN_ID --seeds N`: train an imported submission here and set the local result beside
the claim, each normalized against its own class's baseline (the claim against the baselines of the lab
that ran it, the local runs against this lab's), with Welch's test on the normalized Δ.

The local runs are ordinary runs of this lab (stored, flagged as any run is, described as a reproduction
of LAB:RUN_ID) without a keep/discard decision: a reproduction never becomes this lab's reference.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from harness.exchange.labs import LabStore, lab_stores
from harness.scoring.baselines import Baselines, baselines_or_none
from harness.scoring.stats import MIN_SEEDS, summarize, welch


class ReproduceError(RuntimeError):
    """The run cannot be reproduced here (not imported, no source); the message says why."""


@dataclass
class Side:
    """One side of the comparison: a lab's runs of the submission on one class."""
    lab: str
    gpu_class: str | None
    run_ids: list[str]
    values: list[float]
    baseline_mean: float | None  # that class's baseline in that lab's baselines (None: none there)
    deltas: list[float] = field(default_factory=list)  # value - baseline_mean

    @property
    def n(self) -> int:
        return len(self.values)

    def to_dict(self) -> dict[str, Any]:
        s = summarize(self.values) if self.values else None
        d = summarize(self.deltas) if self.deltas else None
        return {**asdict(self), "n": self.n, "mean": s.mean if s else None, "std": s.std if s else None,
                "delta_mean": d.mean if d else None, "delta_std": d.std if d else None}


@dataclass
class Reproduction:
    submission_sha256: str
    claimed: Side
    local: Side
    welch: dict[str, Any] | None  # on the normalized Δ (or on raw val_bpb when both sides are one class)
    compared: str  # "normalized delta" | "val_bpb (same class)" | "nothing"
    note: str | None

    def to_dict(self) -> dict[str, Any]:
        return {"submission_sha256": self.submission_sha256, "claimed": self.claimed.to_dict(),
                "local": self.local.to_dict(), "welch": self.welch, "compared": self.compared, "note": self.note}


def find_imported(results_dir: Path, run_id: str) -> tuple[LabStore, dict[str, Any]]:
    """The imported lab and record of run_id (an id prefix that names one run is enough)."""
    hits = []
    for store in lab_stores(results_dir):
        for rid in store.runs():
            if rid.startswith(run_id):
                hits.append((store, rid))
    if not hits:
        raise ReproduceError(f"no imported run {run_id!r} in {results_dir} (harness import a bundle first)")
    if len(hits) > 1:
        raise ReproduceError(f"run id {run_id!r} names {len(hits)} imported runs: give more of it")
    store, rid = hits[0]
    record = store.existing(rid)
    if record is None or "unreadable" in record:
        raise ReproduceError(f"imported run {rid}: its record is missing or unreadable in {store.root}")
    return store, record


def _baseline_mean(baselines: Baselines, benchmark: str, cls: str | None) -> float | None:
    stats = baselines.stats(benchmark, cls) if cls else None
    return stats.mean if stats is not None and stats.n > 0 else None


def claimed_side(store: LabStore, record: dict[str, Any]) -> Side:
    """Every comparable, verified, unflagged ok run the lab sent of this submission on the record's class."""
    sha = record["provenance"]["submission"]["sha256"]
    bench = record["provenance"]["benchmark"]["name"]
    fp = record["provenance"]["benchmark"].get("fingerprint")
    cls = (record.get("hardware") or {}).get("class")
    ledger = store.runs()
    rows = [r for r in store.records.list(benchmark=bench, status="ok", include_unverified=True).rows
            if r.submission_sha256 == sha and r.gpu_class == cls and r.fingerprint == fp and r.trust == "verified"
            and not r.flags and r.run_id in ledger and not ledger[r.run_id].get("incomparable")
            and r.val_bpb is not None]
    rows.sort(key=lambda r: r.run_id)
    base = _baseline_mean(baselines_or_none(store.root / "baselines.json"), bench, cls)
    values = [r.val_bpb for r in rows]
    return Side(store.lab, cls, [r.run_id for r in rows], values, base,
                [v - base for v in values] if base is not None else [])


def compare(claimed: Side, local: Side, sha: str) -> Reproduction:
    """Welch's test on the normalized Δ when both sides have a baseline; on raw val_bpb when both ran on one
    class (the baseline cancels); else nothing to test, and the note says what is missing."""
    if claimed.deltas and local.deltas:
        a, b, what = local.deltas, claimed.deltas, "normalized delta"
    elif claimed.gpu_class == local.gpu_class and claimed.values and local.values:
        a, b, what = local.values, claimed.values, "val_bpb (same class)"
    else:
        missing = [f"{s.lab}'s {s.gpu_class}" for s in (claimed, local) if s.baseline_mean is None]
        return Reproduction(sha, claimed, local, None, "nothing",
                            f"no class baseline for {' and '.join(missing)}: run harness baseline there "
                            "(and export it with the bundle) to compare across classes")
    if len(a) < MIN_SEEDS or len(b) < MIN_SEEDS:
        return Reproduction(sha, claimed, local, None, what,
                            f"Welch's test needs {MIN_SEEDS}+ runs a side (here {len(a)}, claimed {len(b)}): "
                            "reproduce with --seeds 2 or more, and ask the lab for more seeds")
    w = welch(a, b)
    note = None if math.isfinite(w.t) else "both sides constant"
    return Reproduction(sha, claimed, local, w.to_dict(), what, note)


def reproduce(results_dir: Path, run_id: str, seeds: int, *, backend: str = "auto", runtime: str | None = None,
              calibrate: bool = True, baselines_path: Path | None = None,
              on_event: Any = lambda _k, _v: None) -> tuple[Reproduction, list[Any]]:
    """Run the imported submission `seeds` times here; the comparison and this lab's records."""
    from harness import paths
    from harness.baseline import measure_noise
    from harness.benchmarks import get_benchmark
    from harness.submit import SubmitOptions

    store, record = find_imported(results_dir, run_id)
    sha = record["provenance"]["submission"]["sha256"]
    source = store.source(sha)
    if not source.is_file():
        raise ReproduceError(f"run {record['run_id']}: its train.py (sources/{sha}.py) is missing in {store.root}")
    bench = get_benchmark(record["provenance"]["benchmark"]["name"])
    # The benchmark's own budget: a reproduction at another budget would measure another benchmark.
    opts = SubmitOptions(benchmark=bench, seeds=seeds, backend=backend, runtime=runtime,
                         calibrate=calibrate, results_dir=results_dir, baselines_path=baselines_path, tsv=False,
                         description=f"reproduce {store.lab}:{record['run_id']}")
    report = measure_noise(source, opts, seeds, on_event=on_event)
    base_path = Path(baselines_path or paths.baselines_file())
    base = _baseline_mean(baselines_or_none(base_path), bench.name, report.class_label)
    values = [r.val_bpb for r in report.used]
    local = Side("local", report.class_label, [r.run_id for r in report.used], values, base,
                 [v - base for v in values] if base is not None else [])
    return compare(claimed_side(store, record), local, sha), report.results
