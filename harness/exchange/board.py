"""The cross-lab leaderboard: this lab's runs and every imported lab's, one row per lab, GPU class and
submission, each against its own class's baseline (from the baselines of the lab that ran it).

Only runs that share this lab's benchmark fingerprint are ranked: a run with another fingerprint ran
other fixed code, data, budget or limits, and is listed apart (`incomparable`) only when asked.
Trust: `verified` (this lab's, or an imported run whose bundle signature verified), `unsigned`,
`confirmed` / `disputed` (an imported model re-scored here, see harness rescore-claims).
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from harness.exchange.labs import lab_stores
from harness.scoring.baselines import Baselines, baselines_or_none
from harness.scoring.leaderboard import Row, group_best, scored
from harness.scoring.normalize import normalize
from harness.scoring.stats import summarize
from harness.store import ResultStore

LOCAL = "local"


@dataclass
class LabRow:
    lab: str
    gpu_class: str | None
    submission_sha256: str | None
    description: str
    n: int
    mean_bpb: float
    std_bpb: float | None
    best_bpb: float
    delta: float | None  # mean - the class baseline's mean (that lab's baseline)
    z: float | None
    relative: float | None
    trust: str
    fingerprint: str | None
    run_id: str  # the best run
    comparable: bool = True
    note: str | None = None
    energy_j: float | None = None  # mean energy of a run's training window (NVML), where telemetry had it
    class_ratio: float | None = None  # this row's mean / the same submission's best class mean (1.0: that class)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _trust_of_import(signature: str, claim: dict[str, Any] | None) -> str:
    if claim and claim.get("status") in ("confirmed", "disputed"):
        return claim["status"]
    return "verified" if signature == "verified" else "unsigned"


def _lab_rows(lab: str, rows: list[Row], trust_of: dict[str, str], baselines: Baselines, benchmark: str,
              fingerprint: str | None, include_incomparable: bool) -> list[LabRow]:
    ok = [r for r in scored(rows) if r.benchmark == benchmark and r.status == "ok" and not r.flags]
    out = []
    for best in group_best(ok, by_gpu_class=True):
        members = [r for r in ok if r.submission_sha256 == best.submission_sha256 and r.gpu_class == best.gpu_class]
        comparable = fingerprint is not None and all(r.fingerprint == fingerprint for r in members)
        if not comparable and not include_incomparable:
            continue
        s = summarize(best.samples)
        norm = normalize(s.mean, best.gpu_class or "", baselines, benchmark=benchmark)
        trusts = {trust_of.get(r.run_id, r.trust) for r in members}
        # One word per row: the weakest trust among its runs (a disputed run taints its row).
        trust = next((t for t in ("disputed", "unsigned", "confirmed", "verified") if t in trusts), sorted(trusts)[0])
        energies = [e for e in (_energy(r.path) for r in members) if e is not None]
        out.append(LabRow(lab=lab, gpu_class=best.gpu_class, submission_sha256=best.submission_sha256,
                          description=best.description, n=s.n, mean_bpb=s.mean, std_bpb=s.std, best_bpb=best.val_bpb,
                          delta=norm.delta, z=norm.z, relative=norm.relative, trust=trust,
                          fingerprint=best.fingerprint, run_id=best.run_id, comparable=comparable,
                          note=norm.note, energy_j=math.fsum(energies) / len(energies) if energies else None))
    return out


def _energy(record_path: Path) -> float | None:
    """The energy of one run's training window (J), from its telemetry summary, when NVML gave one."""
    try:
        summary = ((json.loads(Path(record_path).read_text()).get("telemetry") or {}).get("summary") or {})
    except (OSError, ValueError):
        return None
    value = summary.get("energy_j")
    return float(value) if isinstance(value, (int, float)) and math.isfinite(value) else None


def with_class_ratios(rows: list[LabRow]) -> list[LabRow]:
    """Where one submission ran on several GPU classes (in any lab): each row's mean over its best class's."""
    best: dict[str | None, float] = {}
    classes: dict[str | None, set[str | None]] = {}
    for r in rows:
        if r.comparable:
            best[r.submission_sha256] = min(best.get(r.submission_sha256, math.inf), r.mean_bpb)
            classes.setdefault(r.submission_sha256, set()).add(r.gpu_class)
    for r in rows:
        if r.comparable and len(classes.get(r.submission_sha256, ())) > 1 and best[r.submission_sha256] > 0:
            r.class_ratio = r.mean_bpb / best[r.submission_sha256]
    return rows


def by_improvement(rows: list[LabRow]) -> list[LabRow]:
    """The cross-class view: every lab and class together, ranked by the improvement over the row's own
    class baseline (relative Δ, then z); rows whose class has no baseline come last."""
    return sorted(rows, key=lambda r: (not r.comparable, r.relative is None,
                                       r.relative if r.relative is not None else 0.0,
                                       r.z if r.z is not None else 0.0, r.mean_bpb, r.lab))


def cross_lab_board(results_dir: Path, benchmark: str, fingerprint: str | None, *, baselines_path: Path,
                    labs: list[str] | None = None, include_incomparable: bool = False,
                    local_lab: str | None = None) -> list[LabRow]:
    """Every lab's rows (labs None: all of them, this one included), by class, then mean val_bpb."""
    local_name = local_lab or LOCAL
    out: list[LabRow] = []
    if labs is None or local_name in labs or LOCAL in labs:
        own = ResultStore(results_dir).list(benchmark=benchmark, status="ok").rows  # verified and unflagged
        out += _lab_rows(local_name, own, {}, baselines_or_none(baselines_path), benchmark, fingerprint,
                         include_incomparable)
    for store in lab_stores(results_dir):
        if labs is not None and store.lab not in labs:
            continue
        ledger = store.runs()
        trust_of = {rid: _trust_of_import(e.get("signature", "unsigned") if store.signed else "unsigned",
                                          e.get("claim")) for rid, e in ledger.items()}
        rows = [r for r in store.records.list(benchmark=benchmark, status="ok", include_unverified=True).rows
                if r.trust == "verified" and r.run_id in ledger]
        out += _lab_rows(store.lab, rows, trust_of, baselines_or_none(store.root / "baselines.json"), benchmark,
                         fingerprint, include_incomparable)
    out = with_class_ratios(out)
    return sorted(out, key=lambda r: (not r.comparable, r.gpu_class is None, r.gpu_class or "", r.mean_bpb, r.lab))
