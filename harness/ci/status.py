"""`harness ci status`: what the store knows about agent branches, without running anything: per branch its
head, the commits scored, those still pending (when the repository is at hand) and the best kept score."""

from __future__ import annotations

import hashlib
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from harness.ci import gitwalk
from harness.store import ResultStore


@dataclass(frozen=True)
class BranchStatus:
    branch: str
    head: str | None  # the newest commit scored (or the branch's head, with the repository)
    scored: int  # commits with records
    pending: int | None  # changed commits without records (None: no repository to ask)
    best_val_bpb: float | None  # the best score of a kept commit (a verified one when there is any)
    best_commit: str | None
    best_trust: str | None  # that score's trust label (verified unless the runs were unisolated)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def branch_status(store: ResultStore, benchmark: str, repo: Path | None = None, base: str | None = None,
                  path: str = "train.py") -> list[BranchStatus]:
    runs: dict[str, list[dict[str, Any]]] = {}
    for row in store.list(benchmark=benchmark, include_flagged=True, include_unverified=True).rows:
        doc = store.get(row.run_id)
        git = doc["provenance"]["submission"].get("git") or {}
        if git.get("branch") and git.get("commit"):
            runs.setdefault(git["branch"], []).append(doc)
    out = []
    for branch, docs in sorted(runs.items()):
        commits = {d["provenance"]["submission"]["git"]["commit"]: d for d in docs}
        newest = max(docs, key=lambda d: d["provenance"]["submission"]["git"].get("author_time") or 0)
        kept = [d for d in docs if (d.get("decision") or {}).get("label") == "keep"
                and d["metrics"].get("val_bpb") is not None]
        verified = [d for d in kept if d["trust"] == "verified"]
        best = min(verified or kept, key=lambda d: d["metrics"]["val_bpb"]) if kept else None
        head, pending = newest["provenance"]["submission"]["git"]["commit"], None
        if repo is not None:
            head, pending = _pending(store, benchmark, repo, branch, base, path)
        out.append(BranchStatus(branch, head, len(commits), pending,
                                best["metrics"]["val_bpb"] if best else None,
                                best["provenance"]["submission"]["git"]["commit"] if best else None,
                                best["trust"] if best else None))
    return out


def _pending(store: ResultStore, benchmark: str, repo: Path, branch: str, base: str | None,
             path: str) -> tuple[str | None, int | None]:
    """(the branch's head, how many of its changed commits have no record of their content yet)."""
    try:
        top = gitwalk.toplevel(repo)
        found, _ = gitwalk.branches(top, [branch])
        if not found:
            return None, None
        b = found[0]
        start = gitwalk.merge_base(top, base or gitwalk.default_branch(top), b.ref)
        known = {r.submission_sha256 for r in store.list(benchmark=benchmark, include_flagged=True,
                                                         include_unverified=True).rows}
        pending = 0
        for sha in gitwalk.commits(top, start, b.ref):
            info = gitwalk.commit_info(top, sha)
            blob = gitwalk.blob_at(top, sha, path)
            if blob is None or (info.parent and blob == gitwalk.blob_at(top, info.parent, path)):
                continue
            content = gitwalk.read_blob(top, blob, 1 << 24) or b""
            pending += hashlib.sha256(content).hexdigest() not in known
        return b.head, pending
    except gitwalk.GitError:
        return None, None
