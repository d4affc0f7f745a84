"""`harness ci score`: walk agent branches commit by commit, score each commit whose candidate changed, and
decide keep/discard the autoresearch way: against the branch's last kept commit (the base for the first).

A candidate is its content: the same bytes on the same benchmark, GPU class, budget and fixed code are
scored once, whoever asks and from whichever branch (the store is the cache; a lock per candidate makes
two concurrent jobs score it once). The decision is made again on every walk from the stored scores,
because it depends on the branch's history. Commits are read with git's plumbing (harness/ci/gitwalk.py);
the working tree is never touched.
"""

from __future__ import annotations

import functools
import hashlib
import re
import tempfile
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from filelock import FileLock

from harness import paths
from harness.benchmarks import Benchmark
from harness.ci import gitwalk
from harness.ci.model import (CACHED, DISCARD, FAILED, KEEP, NONE, PLANNED, REFUSED, SCORED, BranchResult,
                              CiReport, CommitResult)
from harness.data import cache_info
from harness.fixedcode import fixed_hashes
from harness.pipeline.backend import backend_and_hardware
from harness.pipeline.refuse import REFUSED_BACKEND, refuse
from harness.pipeline.seeds import SeedOptions, pool_budget
from harness.pool.parallel import open_pool, run_threads
from harness.pool.slots import PoolError
from harness.record import COMPAT, RunRecord
from harness.sanitize import clean_text
from harness.store import ResultStore, gpu_class_of
from harness.submit import (Reference, SubmitOptions, class_noise_std, counted_runs, decide_keep,
                            incomplete_reason, submit)
from harness.validate import DEFAULT_MAX_BYTES, validate_file

Event = Callable[[str, Any], None]
DEFAULT_BRANCHES = ("autoresearch/*",)


class CiError(RuntimeError):
    """The walk cannot start: not a repository, no branch matches, a clone too shallow, an unknown base."""


@dataclass
class CiOptions:
    benchmark: Benchmark
    repo: Path = Path(".")
    branches: tuple[str, ...] = DEFAULT_BRANCHES
    base: str | None = None  # None: the repository's default branch
    path: str = "train.py"  # where the candidate lives in each commit
    seeds: int | None = None
    budget_s: float | None = None
    results_dir: Path | None = None
    runs_dir: Path | None = None
    max_commits: int | None = None  # at most this many candidates run in this call (cached ones are free)
    dry_run: bool = False
    backend: str = "auto"
    runtime: str | None = None
    calibrate: bool = True
    gpu: str | None = None
    nvml_module: Any = None
    parallel: str | None = None  # --parallel: branches walked at once, each commit's seeds on a device pool
    gpus: str | None = None  # --gpus: the pool's GPUs


@dataclass
class _Walk:
    opts: CiOptions
    top: Path
    repo_name: str
    store: ResultStore
    gpu_class: str
    fixed: dict[str, str]
    budget: float
    backend: Any
    hw: Any
    on_event: Event
    ran: int = 0  # candidates run in this call (for --max-commits)
    aborted: bool = False  # Ctrl-C or SIGTERM: the walk ends after the current run
    pool: Any = None  # a DevicePool (harness/pool/) with --parallel
    budget_plan: Any = None  # with a pool: decided once before any branch runs
    lock: threading.Lock = field(default_factory=threading.Lock)  # branches walked at once share `ran`

    @property
    def stopped(self) -> bool:
        return self.aborted or (self.pool is not None and self.pool.stop.is_set())

    def take_turn(self) -> bool:
        """Count one more candidate run, unless --max-commits is reached."""
        with self.lock:
            if self.opts.max_commits is not None and self.ran >= self.opts.max_commits:
                return False
            self.ran += 1
            return True


def score_branches(opts: CiOptions, on_event: Event = lambda _k, _v: None) -> CiReport:
    try:
        top = gitwalk.toplevel(opts.repo)
        found, unmatched = gitwalk.branches(top, list(opts.branches))
        if not found:
            raise CiError(f"no branch of {top} matches {', '.join(opts.branches)} (local branches and remote-tracking "
                          "ones are searched; fetch them, or pass --branches GLOB)")
        base_ref = opts.base or gitwalk.default_branch(top)
        gitwalk.resolve(top, base_ref)
    except gitwalk.GitError as e:
        raise CiError(str(e)) from None
    bench = opts.benchmark
    cache_info(bench)  # unprepared data is a set-up error before anything runs
    backend, hw = backend_and_hardware(opts.backend, None, opts.runtime, bench, opts.gpu, opts.nvml_module)
    if hw is None:
        raise CiError(f"ci score runs on this machine's devices (--parallel for several at once); the {backend.name} "
                      "backend is not supported by ci score yet")
    walk = _Walk(opts, top, gitwalk.repo_name(top), ResultStore(opts.results_dir), hw.cls.label,
                 fixed_hashes(paths.fixed_dir()), float(opts.budget_s or bench.time_budget_s), backend, hw, on_event)
    if opts.parallel is not None and not opts.dry_run:
        try:
            walk.pool = open_pool(opts.parallel, opts.gpus, backend, hw, opts.nvml_module)
        except PoolError as e:
            raise CiError(str(e)) from None
        walk.budget_plan = pool_budget(SeedOptions(benchmark=bench, budget_s=opts.budget_s,
                                                   calibrate=opts.calibrate), walk.pool).budget_plan
    results = []
    try:
        if walk.pool is not None:  # every branch at once (each in order, its commits' seeds on the pool)
            for done in run_threads([functools.partial(_walk_branch, walk, b, base_ref) for b in found],
                                    walk.pool.stop):
                if isinstance(done, BaseException):
                    raise done
                results.append(done)
        else:
            for branch in found:
                if walk.stopped:
                    break
                results.append(_walk_branch(walk, branch, base_ref))
    except gitwalk.GitError as e:
        raise CiError(str(e)) from None
    return CiReport(repo=walk.repo_name, benchmark=bench.name, gpu_class=walk.gpu_class, base_ref=base_ref,
                    branches=tuple(results), dry_run=opts.dry_run, missing=tuple(unmatched))


def _walk_branch(walk: _Walk, branch: gitwalk.Branch, base_ref: str) -> BranchResult:
    top, path = walk.top, walk.opts.path
    base = gitwalk.merge_base(top, base_ref, branch.ref)
    walk.on_event("branch", {"name": branch.name, "base": base})
    # The base is scored as the base branch's commit (its record names that branch, not the agent's).
    base_branch = gitwalk.Branch(base_ref, base_ref, base)
    base_result = _candidate(walk, gitwalk.commit_info(top, base), gitwalk.blob_at(top, base, path), base_branch,
                             Reference("none", "the base of the branch"), is_head=False)
    reference = _reference_of(base_result, f"the base {base[:12]}")
    shas = gitwalk.commits(top, base, branch.ref)
    commits: list[CommitResult] = []
    for sha in shas:
        if walk.stopped:
            break
        info = gitwalk.commit_info(top, sha)
        blob = gitwalk.blob_at(top, sha, path)
        if info.parent is not None and blob == gitwalk.blob_at(top, info.parent, path):
            continue  # the candidate did not change: nothing to score
        result = _candidate(walk, info, blob, branch, reference, is_head=(sha == branch.head))
        commits.append(result)
        if result.decision == KEEP:
            reference = _reference_of(result, f"the last kept commit {sha[:12]}")
    on_branch = set(shas) | {base}
    gone = tuple(sorted(sha for sha in _scored_commits(walk, branch.name) if sha not in on_branch))
    return BranchResult(name=branch.name, head=branch.head, base=base, base_val_bpb=base_result.val_bpb,
                        commits=tuple(commits), gone=gone)


def _reference_of(result: CommitResult, label: str) -> Reference:
    return Reference("best", label, list(result.scores)) if result.scores else Reference("none", f"{label} (no score)")


def _candidate(walk: _Walk, info: gitwalk.CommitInfo, blob: str | None, branch: gitwalk.Branch, reference: Reference,
               is_head: bool) -> CommitResult:
    """One commit's candidate (blob: its file at the commit): refused, cached, planned or scored now."""
    opts, bench = walk.opts, walk.opts.benchmark
    origin = {"repo": walk.repo_name, "branch": branch.name, "commit": info.sha, "subject": info.subject,
              "author_time": info.author_time, "path": opts.path, "blob": blob}
    base = dict(sha=info.sha, subject=info.subject, author_time=info.author_time, blob=blob, is_head=is_head)
    content, problem = _read(walk, blob)
    if problem is None:
        problem = _invalid(content, bench)
    digest = hashlib.sha256(content or b"").hexdigest()
    if problem is not None:
        if opts.dry_run:
            return CommitResult(**base, how=PLANNED, decision=FAILED, reason=problem, status="invalid")
        known = _cached_refusal(walk, digest)
        record = known or refuse(content or b"", problem, bench, cache_info(bench), runs_dir=opts.runs_dir,
                                 results_dir=walk.store.root, description=info.subject, origin=origin)
        return CommitResult(**base, how=CACHED if known else REFUSED, decision=FAILED, reason=problem,
                            status="invalid", run_ids=(record.run_id,), log_tail=problem)
    lock_dir = walk.store.root / "locks"
    lock_dir.mkdir(parents=True, exist_ok=True)
    slug = re.sub(r"[^A-Za-z0-9_.-]+", "_", walk.gpu_class)[:60]
    with FileLock(str(lock_dir / f"{bench.name}.{slug}.{digest[:40]}.lock")):  # released on any exit, even kill -9
        cached = _cached_runs(walk, digest)
        if cached:
            return _decided(walk, base, CACHED, cached, reference)
        if opts.dry_run:
            return CommitResult(**base, how=PLANNED, decision=NONE, reason="would be scored")
        if not walk.take_turn():
            return CommitResult(**base, how=PLANNED, decision=NONE,
                                reason=f"not scored: --max-commits {opts.max_commits} reached")
        walk.on_event("commit", {"branch": branch.name, "sha": info.sha, "subject": info.subject})
        with tempfile.TemporaryDirectory(prefix="harness-ci-") as tmp:
            train_py = Path(tmp) / "train.py"
            train_py.write_bytes(content)
            report = submit(train_py, SubmitOptions(
                benchmark=bench, seeds=opts.seeds, description=info.subject, backend=walk.backend.name,
                budget_s=opts.budget_s, results_dir=walk.store.root, runs_dir=opts.runs_dir, gpu=opts.gpu,
                calibrate=opts.calibrate, nvml_module=opts.nvml_module, runtime=opts.runtime, origin=origin,
                tsv=False, reference=reference, budget_plan=walk.budget_plan), on_event=walk.on_event, pool=walk.pool,
                backend=walk.backend)
        if any(r.status == "aborted" for r in report.results):
            walk.aborted = True
        return _decided(walk, base, SCORED, report.results, reference)


def _read(walk: _Walk, blob: str | None) -> tuple[bytes | None, str | None]:
    if blob is None:
        return None, f"{walk.opts.path} is missing at this commit"
    content = gitwalk.read_blob(walk.top, blob, DEFAULT_MAX_BYTES)
    if content is None:
        return None, f"{walk.opts.path} is larger than {DEFAULT_MAX_BYTES} bytes"
    if b"\0" in content:
        return content, f"{walk.opts.path} is binary (it holds NUL bytes)"
    try:
        content.decode("utf-8")
    except UnicodeDecodeError as e:
        return content, f"{walk.opts.path} is not UTF-8 ({e.reason} at byte {e.start})"
    return content, None


def _invalid(content: bytes | None, bench: Benchmark) -> str | None:
    """`harness validate`'s errors, as one reason (None: valid)."""
    with tempfile.TemporaryDirectory(prefix="harness-ci-") as tmp:
        path = Path(tmp) / "train.py"
        path.write_bytes(content or b"")
        report = validate_file(path, bench.allowed_imports)
    if report.ok:
        return None
    return "invalid: " + "; ".join(clean_text(e.format()).replace(str(path), "train.py") for e in report.errors[:5])


def _matching(walk: _Walk, digest: str) -> list[dict[str, Any]]:
    """Stored records of this content on this benchmark whose submission reached a decision."""
    bench = walk.opts.benchmark
    rows = [r for r in walk.store.list(benchmark=bench.name, include_flagged=True, include_unverified=True).rows
            if r.submission_sha256 == digest and r.decision in (KEEP, DISCARD)]
    return [walk.store.get(r.run_id) for r in rows]


def _cached_runs(walk: _Walk, digest: str) -> list[RunRecord]:
    """The runs of the latest decided submission of this content on the same GPU class, budget and fixed
    code; [] when there is none (the candidate must run)."""
    docs = [d for d in _matching(walk, digest)
            if d["backend"] == walk.backend.name and _runtime_of(d) == _runtime_wanted(walk)
            and gpu_class_of(d) == walk.gpu_class and d["budget_s"] == walk.budget
            and d["provenance"]["benchmark"].get("fixed_sha256") == walk.fixed]
    if not docs:
        return []
    latest = max(docs, key=lambda d: d["provenance"]["created_at"])
    same = [d for d in docs if d["decision"] == latest["decision"]]  # the runs of that one submission
    runs = [RunRecord.from_dict(d) for d in sorted(same, key=lambda d: d["provenance"]["created_at"])]
    wanted = walk.opts.seeds or int(walk.opts.benchmark.significance["seeds"])
    stopped_on_purpose = any(r.evaluation is not None and r.evaluation.mode == COMPAT for r in runs)  # unexportable
    return runs if len(runs) >= wanted or stopped_on_purpose else []


def _runtime_wanted(walk: _Walk) -> str | None:
    """The container runtime this walk's runs get: an unisolated or a runc score is no stand-in for a runsc
    one (nor the other way round); None: the daemon's default (runc), or no containers at all."""
    name = getattr(walk.backend, "runtime", None)
    return None if name in (None, "runc") else name


def _runtime_of(doc: dict[str, Any]) -> str | None:
    name = (doc["provenance"].get("runtime") or {}).get("name")
    return None if name in (None, "runc") else name


def _cached_refusal(walk: _Walk, digest: str) -> RunRecord | None:
    docs = [d for d in _matching(walk, digest) if d["backend"] == REFUSED_BACKEND]
    return RunRecord.from_dict(max(docs, key=lambda d: d["provenance"]["created_at"])) if docs else None


def _decided(walk: _Walk, base: dict[str, Any], how: str, runs: list[RunRecord], reference: Reference) -> CommitResult:
    """The commit's decision from its runs' scores, against this branch's reference."""
    bench = walk.opts.benchmark
    counted = counted_runs(runs, verified=True)
    scores = tuple(r.val_bpb for r in counted)
    failed = [r for r in runs if r.run_id not in {c.run_id for c in counted}]
    status = failed[0].status if failed else "ok"
    ids = tuple(r.run_id for r in runs)
    mean = sum(scores) / len(scores) if scores else None
    if not counted:
        why = failed[0].reason if failed else "no run"
        return CommitResult(**base, how=how, decision=FAILED, reason=clean_text(why or status), status=status,
                            run_ids=ids, log_tail=_tail(failed[0]) if failed else None)
    if failed:
        return CommitResult(**base, how=how, decision=DISCARD, status=status, val_bpb=mean, scores=scores,
                            run_ids=ids, reason=incomplete_reason(runs, {c.run_id for c in counted}),
                            log_tail=_tail(failed[0]))
    d = decide_keep(list(scores), reference, float(bench.significance["alpha"]),
                    class_noise_std(Path(paths.baselines_file()), bench.name, walk.gpu_class))
    return CommitResult(**base, how=how, decision=KEEP if d.keep else DISCARD, reason=d.reason, status="ok",
                        val_bpb=mean, scores=scores, delta=d.delta, p=d.p, run_ids=ids)


def _tail(record: RunRecord) -> str | None:
    if record.traceback_tail:
        return record.traceback_tail[-2000:]
    try:
        return Path(record.log_path).read_text(errors="replace")[-2000:]
    except OSError:
        return record.reason


def _scored_commits(walk: _Walk, branch: str) -> set[str]:
    """Commits of this branch that have records in the store (to find those a force-push removed)."""
    out = set()
    for row in walk.store.list(benchmark=walk.opts.benchmark.name, include_flagged=True,
                               include_unverified=True).rows:
        git = (walk.store.get(row.run_id)["provenance"]["submission"].get("git") or {})
        if git.get("branch") == branch and git.get("commit"):
            out.add(git["commit"])
    return out
