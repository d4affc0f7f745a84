"""Leaderboards: group scored runs by submission (and GPU class) and rank them.

The functions take rows that :class:`harness.store.ResultStore` has already filtered from its index (ok runs
of one benchmark, flagged and unverified ones left out unless asked) and never read files themselves.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterable


@dataclass
class Row:
    """The headline fields of one run record, as the index holds them."""
    run_id: str
    created_at: str
    benchmark: str
    submission_sha256: str | None
    description: str
    status: str
    trust: str
    val_bpb: float | None
    gpu_class: str | None
    flags: list[str]
    seed: int | None
    backend: str
    decision: str | None
    path: Path
    reason: str | None = None
    fingerprint: str | None = None  # harness/fingerprint.py; None: recorded before fingerprints
    samples: list[float] = field(default_factory=list)  # filled by leaderboard() and best(): the group's val_bpbs

    @property
    def flagged(self) -> bool:
        return bool(self.flags)

    @property
    def verified(self) -> bool:
        return self.trust == "verified"

    @property
    def mean_bpb(self) -> float | None:
        return math.fsum(self.samples) / len(self.samples) if self.samples else None

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["path"] = str(self.path)
        d["mean_bpb"] = self.mean_bpb
        return d


def sort_key(row: Row) -> tuple[str, str]:
    """Oldest first: by creation time, then run id."""
    return (row.created_at, row.run_id)


def scored(rows: Iterable[Row]) -> list[Row]:
    """The rows with a val_bpb, oldest first."""
    return sorted((r for r in rows if r.val_bpb is not None), key=sort_key)


def with_samples(row: Row, samples: list[float]) -> Row:
    """A copy of ``row`` whose samples are ``samples``."""
    out = Row(**{k: getattr(row, k) for k in row.__dataclass_fields__})
    out.samples = list(samples)
    return out


def group_best(rows: Iterable[Row], by_gpu_class: bool) -> list[Row]:
    """One row per submission (per submission and class with by_gpu_class): its best run, with the group's
    val_bpbs as samples. Ties go to the earliest run."""
    groups: dict[tuple[str | None, str | None], list[Row]] = {}
    for r in rows:
        groups.setdefault((r.submission_sha256, r.gpu_class if by_gpu_class else None), []).append(r)
    out = []
    for members in groups.values():
        best = min(members, key=lambda r: (r.val_bpb, sort_key(r)))  # ties: the earliest run
        out.append(with_samples(best, [r.val_bpb for r in members]))
    return out


def rank(rows: Iterable[Row], by_gpu_class: bool = False) -> list[Row]:
    """The leaderboard of scored rows: the best run of each submission, lowest val_bpb first.

    With by_gpu_class there is one row per submission and class, ordered by class (runs without a class
    last), then by val_bpb.
    """
    groups = group_best(scored(rows), by_gpu_class)
    if by_gpu_class:
        return sorted(groups, key=lambda r: (r.gpu_class is None, r.gpu_class or "", r.val_bpb, sort_key(r)))
    return sorted(groups, key=lambda r: (r.val_bpb, sort_key(r)))


def samples_of(rows: Iterable[Row], submission_sha256: str) -> list[float]:
    """val_bpb of every scored row of one submission, oldest first: the input of a significance test."""
    return [r.val_bpb for r in scored(rows) if r.submission_sha256 == submission_sha256]


def best_by_mean(rows: Iterable[Row]) -> Row | None:
    """The submission with the lowest MEAN val_bpb: its best run, with samples holding all its val_bpbs."""
    groups = group_best(scored(rows), False)
    if not groups:
        return None
    return min(groups, key=lambda r: (r.mean_bpb, r.val_bpb, sort_key(r)))
