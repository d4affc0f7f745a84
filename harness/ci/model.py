"""What `harness ci score` found and decided, as typed records: what the walk (harness/ci/walk.py) builds
and the reports (harness/ci/report.py: JUnit XML, the markdown summary, --json) read."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

# How a commit's candidate came out. scored: its runs ran now; cached: its runs were already in the store
# (same content, benchmark, GPU class and fixed code); refused: no run (missing, binary, not UTF-8, too big,
# or invalid to `harness validate`: a record with status invalid says why); planned: not run (--dry-run, or
# past --max-commits).
SCORED, CACHED, REFUSED, PLANNED = "scored", "cached", "refused", "planned"
# The decision against the branch's last kept commit (autoresearch's keep/reset), or why there is none.
KEEP, DISCARD, FAILED, NONE = "keep", "discard", "failed", "none"
FAIL_ON = ("any", "head", "never")


@dataclass(frozen=True)
class CommitResult:
    sha: str
    subject: str
    author_time: int  # epoch seconds
    blob: str | None  # the candidate file's git blob hash at this commit (None: the file is missing)
    how: str  # SCORED | CACHED | REFUSED | PLANNED
    decision: str  # KEEP | DISCARD | FAILED | NONE
    reason: str  # the decision's reason, or why it failed / was refused
    status: str | None = None  # the runs' worst status: ok, crash, timeout, oom, nan, invalid, ... (None: planned)
    val_bpb: float | None = None  # mean verified val_bpb over the seeds (None: no score)
    scores: tuple[float, ...] = ()
    delta: float | None = None  # mean minus the reference's mean
    p: float | None = None
    run_ids: tuple[str, ...] = ()
    log_tail: str | None = None  # the failing run's log tail (for a failure)
    is_head: bool = False  # the branch's head commit

    @property
    def short(self) -> str:
        return self.sha[:12]

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "scores": list(self.scores), "run_ids": list(self.run_ids)}


@dataclass(frozen=True)
class BranchResult:
    name: str
    head: str
    base: str  # the merge-base commit with --base
    base_val_bpb: float | None  # the base's mean val_bpb: what the first commit is compared with
    commits: tuple[CommitResult, ...] = ()
    gone: tuple[str, ...] = ()  # commits scored before that are no longer on the branch (force-push)

    @property
    def best(self) -> CommitResult | None:
        """The kept commit with the lowest mean verified val_bpb."""
        kept = [c for c in self.commits if c.decision == KEEP and c.val_bpb is not None]
        return min(kept, key=lambda c: c.val_bpb) if kept else None

    def count(self, *decisions: str) -> int:
        return sum(1 for c in self.commits if c.decision in decisions)

    def to_dict(self) -> dict[str, Any]:
        best = self.best
        return {"name": self.name, "head": self.head, "base": self.base, "base_val_bpb": self.base_val_bpb,
                "commits": [c.to_dict() for c in self.commits], "gone": list(self.gone),
                "scored": sum(1 for c in self.commits if c.how in (SCORED, CACHED)),
                "kept": self.count(KEEP), "discarded": self.count(DISCARD), "failed": self.count(FAILED),
                "best": {"sha": best.sha, "val_bpb": best.val_bpb} if best else None,
                "delta_vs_base": (best.val_bpb - self.base_val_bpb) if best and self.base_val_bpb is not None
                else None}


@dataclass(frozen=True)
class CiReport:
    repo: str  # the repository's name
    benchmark: str
    gpu_class: str
    base_ref: str
    branches: tuple[BranchResult, ...] = ()
    dry_run: bool = False
    missing: tuple[str, ...] = field(default_factory=tuple)  # branch globs that matched nothing

    def to_dict(self) -> dict[str, Any]:
        return {"repo": self.repo, "benchmark": self.benchmark, "gpu_class": self.gpu_class, "base": self.base_ref,
                "dry_run": self.dry_run, "branches": [b.to_dict() for b in self.branches],
                "missing": list(self.missing)}


def exit_code(report: CiReport, fail_on: str = "head") -> int:
    """0 when no commit that matters failed; 1 when one did: `head`, a branch head that crashed or was
    invalid (the default); `any`, any commit; `never`, none."""
    if fail_on not in FAIL_ON:
        raise ValueError(f"--fail-on must be one of {', '.join(FAIL_ON)}, not {fail_on!r}")
    if fail_on == "never":
        return 0
    for b in report.branches:
        for c in b.commits:
            if c.decision == FAILED and (fail_on == "any" or c.is_head):
                return 1
    return 0
