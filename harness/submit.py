"""`harness submit`: validate, run (one or more harness-chosen seeds) through the pipeline, decide, and
write each run's record once with the decision.

The decision is the research loop's keep/discard: keep only when the candidate's mean BPB beats the
reference (the current best other submission on this benchmark and GPU class, else the class
baseline) with a one-sided Welch's t-test at the benchmark's alpha, never assuming less spread than the
class's measured seed noise (harness.scoring.decision.keep_or_discard), and only when every seed counted.

A row goes to results.tsv only where the submitter asked: ``--tsv PATH``, else results.tsv at the root
of the git repository holding the current directory, else nowhere (never the repository that merely
holds train.py, which may be someone else's).
"""

from __future__ import annotations

import contextlib
import functools
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from harness import paths
from harness.benchmarks import Benchmark
from harness.fixedcode import file_sha256
from harness.backends.base import Backend
from harness.pipeline.backend import is_remote
from harness.pipeline.remote import remote_run, run_remote
from harness.pipeline.finish import write_record
from harness.pipeline.seeds import SeedOptions, pool_budget, run_seeds, salvage, scored_by_fixed_code, seed_backend
from harness.pool.parallel import DevicePool, run_threads
from harness.record import COMPAT, OVER_BUDGET, SEED_IGNORED, SEEDS_FAILED, RunRecord, SubmissionDecision
from harness.sanitize import clean_text
from harness.scoring.baselines import load_baselines
from harness.scoring.decision import Decision, keep_or_discard
from harness.scoring.stats import summarize
from harness.store import ResultStore, gpu_class_of
from harness.tsv import append_record, cwd_tsv_path, submission_commit
from harness.validate import ValidationReport, validate_file

Event = Callable[[str, Any], None]

SAME_SCORE = 1e-8  # BPB: equal to 8 decimals, orders of magnitude below any class's seed-to-seed spread


class SubmitError(RuntimeError):
    """The submission was refused before any run (invalid file)."""

    def __init__(self, message: str, report: ValidationReport | None = None):
        super().__init__(message)
        self.report = report


@dataclass
class SubmitOptions(SeedOptions):
    tsv: bool = True  # append a results.tsv row (where: tsv_target)
    tsv_path: Path | None = None  # --tsv: the row goes here; None: the current directory's repository
    reference: "Reference | None" = None  # compare with this (harness ci: the branch's last kept commit)


@dataclass
class Reference:
    kind: str  # "best" | "baseline" | "none"
    label: str
    samples: list[float] = field(default_factory=list)


@dataclass
class SubmitReport:
    results: list[RunRecord]
    decision: Decision
    reference: Reference
    record_paths: list[Path]
    tsv_path: Path | None
    scores: list[float] = field(default_factory=list)  # the scores that decided (see counted_runs)
    tsv_note: str = ""  # where the row went, or why none was written

    def to_dict(self) -> dict[str, Any]:
        s = summarize(self.scores) if self.scores else None
        return {
            "decision": "keep" if self.decision.keep else "discard",
            "reason": self.decision.reason,
            "reference": {"kind": self.reference.kind, "label": self.reference.label,
                          "samples": self.reference.samples},
            "scores": self.scores,
            "summary": s.to_dict() if s else None,
            "runs": [r.run_id for r in self.results],
            "records": [str(p) for p in self.record_paths],
            "tsv": str(self.tsv_path) if self.tsv_path else None,
            "tsv_note": self.tsv_note,
        }


def choose_reference(store: ResultStore, bench: Benchmark, sha: str, gpu_class: str, verified_only: bool,
                     baselines_path: Path) -> Reference:
    """The best other submission on this benchmark and class; else the class baseline; else none."""
    board = store.leaderboard(bench.name, by_gpu_class=True, include_unverified=not verified_only)
    for row in board:
        if row.submission_sha256 != sha and row.gpu_class == gpu_class:
            samples = store.samples(bench.name, row.submission_sha256, gpu_class, include_flagged=False,
                                    include_unverified=not verified_only)
            if samples:
                label = f"best so far {row.submission_sha256[:12]} ({row.description or 'no description'})"
                return Reference("best", label, samples)
    if baselines_path.exists():
        base = [s.val_bpb for s in load_baselines(baselines_path).samples(bench.name, gpu_class)]
        if base:
            return Reference("baseline", f"class baseline {gpu_class}", base)
    return Reference("none", "no reference yet")


def check_valid(train_py: Path, bench: Benchmark) -> None:
    report = validate_file(train_py, bench.allowed_imports)
    if not report.ok:
        raise SubmitError(f"{train_py}: invalid ({len(report.errors)} error(s)); fix them and submit again",
                          report)


def tsv_target(opts: SubmitOptions) -> tuple[Path | None, str]:
    """(where the results.tsv row goes, what to tell the user): --tsv PATH, else results.tsv at the root
    of the git repository holding the current directory, else no row."""
    if not opts.tsv:
        return None, "no results.tsv row (not asked for)"
    if opts.tsv_path is not None:
        path = Path(opts.tsv_path).absolute()
        if path.is_dir():
            raise SubmitError(f"--tsv {opts.tsv_path}: is a directory; give the results.tsv file's path")
        return path, f"results.tsv row: {path}"
    path = cwd_tsv_path()
    if path is None:
        return None, ("no results.tsv row: the current directory is not in a git repository "
                      "(run from your repository or pass --tsv PATH)")
    return path, f"results.tsv row: {path}"


def submit(train_py: Path, opts: SubmitOptions, on_event: Event = lambda _k, _v: None,
           pool: DevicePool | None = None, backend: Backend | None = None,
           decide_lock: threading.Lock | None = None) -> SubmitReport:
    """One candidate: validated, run with its seeds (at once on `pool`'s members when given), decided.
    decide_lock: held while deciding and writing, so that candidates of one call decide one at a time."""
    bench = opts.benchmark
    train_py = Path(train_py)
    check_valid(train_py, bench)
    tsv_path, tsv_note = tsv_target(opts)  # decided before any run: a bad --tsv fails fast
    backend, hw = seed_backend(opts, pool, backend)
    held = run_seeds(train_py, opts, seeds_of(opts), on_event, hw, backend, pool=pool)
    return decide(train_py, opts, held, hw.cls.label if hw is not None else None, tsv_path, tsv_note, decide_lock)


def classes_of(records: list[RunRecord]) -> list[str]:
    """The GPU classes the records name (each as probed where it ran), sorted."""
    return sorted({c for c in (gpu_class_of(r.to_dict()) for r in records) if c})


def seeds_of(opts: SubmitOptions) -> int:
    return opts.seeds or int(opts.benchmark.significance["seeds"])


def decide(train_py: Path, opts: SubmitOptions, held: list[RunRecord], gpu_class: str | None, tsv_path: Path | None,
           tsv_note: str, decide_lock: threading.Lock | None = None) -> SubmitReport:
    """Decide one candidate from its held runs and write each run once with the decision. gpu_class: the
    class its runs had (None: each run's own record says, as for runs made on a remote node)."""
    results = flag_seed_ignored(held)
    mixed = None
    if gpu_class is None:  # made on remote nodes: each record names its node's class
        classes = classes_of(results)
        gpu_class = classes[0] if classes else "unknown"
        if len(classes) > 1:  # not samples of one thing
            mixed = f"its seeds ran on different GPU classes ({', '.join(classes)}): pin the jobs to one class"
    try:
        with decide_lock or contextlib.nullcontext():
            return _decide_and_write(train_py, opts, gpu_class, results, tsv_path, tsv_note, mixed)
    except BaseException as e:  # Ctrl-C, a corrupt store or baselines file ...: every run still gets its record
        salvage(results, opts.results_dir, f"the submission stopped before its decision ({type(e).__name__}: {e})")
        raise


def submit_many(train_pys: list[Path], opts: SubmitOptions, pool: DevicePool | None,
                on_event: Event = lambda _k, _v: None,
                backend: Backend | None = None) -> list[SubmitReport | BaseException]:
    """Several candidates: every file validated before any run; then each submitted, all at once on the
    pool (its seeds spread over the free members) or one after another without one. Each is decided as
    soon as all of its own seeds are in. A candidate's failure to start (an error) is returned in its
    place; Ctrl-C stops all (each run still gets its record)."""
    for path in train_pys:
        check_valid(Path(path), opts.benchmark)
    tsv_path, tsv_note = tsv_target(opts)
    if backend is None:
        backend, _hw = seed_backend(opts, pool)
    if is_remote(backend):  # every seed of every candidate: one batch of jobs
        n = seeds_of(opts)
        runs = [remote_run(p, opts) for p in train_pys for _ in range(n)]
        held = run_remote(backend, runs, on_event)
        by_run = {r.run_id: r for r in held}
        return [_or_error(decide, p, opts, [by_run[x.run_id] for x in runs[i * n:(i + 1) * n] if x.run_id in by_run],
                          None, tsv_path, tsv_note) for i, p in enumerate(train_pys)]
    if pool is None:
        return [_or_error(submit, p, opts, on_event, backend=backend) for p in train_pys]
    opts = pool_budget(opts, pool)  # once for every candidate, before any of them runs
    lock = threading.Lock()
    jobs = [functools.partial(_or_error, submit, p, opts, on_event, pool=pool, backend=backend, decide_lock=lock)
            for p in train_pys]
    return run_threads(jobs, pool.stop)


def _or_error(fn: Callable[..., Any], *args: Any, **kw: Any) -> Any:
    try:
        return fn(*args, **kw)
    except (SubmitError, RuntimeError, OSError, ValueError) as e:
        return e


def _decide_and_write(train_py: Path, opts: SubmitOptions, gpu_class: str, results: list[RunRecord],
                      tsv_path: Path | None, tsv_note: str, mixed: str | None = None) -> SubmitReport:
    """mixed: why the runs are not samples of one thing (seeds on two GPU classes): a discard, every run
    flagged, no results.tsv row."""
    bench = opts.benchmark
    store = ResultStore(opts.results_dir)
    baselines_path = Path(opts.baselines_path or paths.baselines_file())
    counted = counted_runs(results, opts.verified)
    counted_ids = {r.run_id for r in counted}
    scores = [r.val_bpb for r in counted]
    verified_only = bool(counted) and all(r.trust == "verified" for r in counted)
    reference = opts.reference or choose_reference(store, bench, file_sha256(train_py), gpu_class, verified_only,
                                                   baselines_path)
    compat = [r for r in results if r.evaluation is not None and r.evaluation.mode == COMPAT]
    aborted = any(r.status == "aborted" for r in results)
    if aborted:
        decision = Decision(False, "aborted (Ctrl-C or SIGTERM): no decision; the records are stored", None, None)
        results = [with_flag(r, SEEDS_FAILED) if r.run_id in counted_ids else r for r in results]  # cut short
    elif mixed:
        decision = Decision(False, mixed, None, None)
        results = [with_flag(r, SEEDS_FAILED) for r in results]
        tsv_path, tsv_note = None, f"no results.tsv row: {mixed}"
    elif not counted and compat and opts.verified:
        export = compat[0].evaluation.export
        decision = Decision(False, f"not verifiable: the model could not be exported "
                                   f"({export.error if export else None}); its self-reported score never counts",
                            None, None)
    elif counted and len(counted) < len(results):
        decision = Decision(False, incomplete_reason(results, counted_ids), None, None)
        # its lucky seeds must not reach a leaderboard or become a reference either
        results = [with_flag(r, SEEDS_FAILED) if r.run_id in counted_ids else r for r in results]
    else:
        decision = decide_keep(scores, reference, float(bench.significance["alpha"]),
                               class_noise_std(baselines_path, bench.name, gpu_class))
    label = "aborted" if aborted else ("keep" if decision.keep else "discard")
    made = SubmissionDecision(label=label, reason=decision.reason, reference=reference.label, seeds=len(results),
                              scores=tuple(scores), delta=decision.delta, p=decision.p)
    written = [write_record(r, store.root, store=True, decision=made) for r in results]  # once each
    paths_out = [store.path_for(r.run_id) for r in written]
    if aborted and tsv_path is not None:  # no row for a cut-short submit
        tsv_path, tsv_note = None, "no results.tsv row: the submission was aborted"
    if tsv_path is not None:
        best = min((r for r in written if r.run_id in counted_ids), key=lambda r: r.val_bpb, default=written[0])
        append_record(tsv_path, best.to_dict(), decision.keep, submission_commit(train_py, best.submission_sha256),
                      opts.description)
    return SubmitReport(written, decision, reference, paths_out, tsv_path, scores, tsv_note)


def with_flag(record: RunRecord, flag: str) -> RunRecord:
    return record.with_outcome(flags=(*record.flags, flag))


def flag_seed_ignored(results: list[RunRecord]) -> list[RunRecord]:
    """Flag ``seed_ignored`` on each scored run whose score another run of this candidate with a different
    harness seed matched: the candidate fixed its own randomness (a hard-coded seed), so its runs are
    copies of one run, not seed-to-seed samples, and the seed may have been picked for a lucky score.

    The flagged runs still count toward the decision (the candidate did run and was scored each time),
    but their zero spread buys nothing: the decision floors the spread at the class's seed noise
    (harness.scoring.decision). Like every flag it keeps them out of baselines and leaderboards unless asked.
    Returns the runs, the flagged ones replaced.
    """
    scored = [r for r in results if r.status == "ok" and r.val_bpb is not None]
    same = {r.run_id for r in scored
            if any(o.run_id != r.run_id and o.seed != r.seed and abs(o.val_bpb - r.val_bpb) <= SAME_SCORE
                   for o in scored)}
    return [with_flag(r, SEED_IGNORED) if r.run_id in same else r for r in results]


def class_noise_std(baselines_path: Path, benchmark: str, gpu_class: str) -> float | None:
    """The class's measured seed noise: the sample std of its baseline runs (None without 2+ of them,
    or when they do not vary, which says nothing about noise)."""
    if not baselines_path.exists():
        return None
    stats = load_baselines(baselines_path).stats(benchmark, gpu_class)
    return stats.std if stats is not None and stats.n >= 2 and stats.std else None


def counted_runs(results: list[RunRecord], verified: bool) -> list[RunRecord]:
    """The runs whose scores decide: ok, unflagged for the budget, and (when verification was asked
    for) scored by the fixed evaluator, so a candidate can never opt into a self-reported score."""
    out = [r for r in results if r.status == "ok" and r.val_bpb is not None and OVER_BUDGET not in r.flags]
    return [r for r in out if scored_by_fixed_code(r)] if verified else out


def incomplete_reason(results: list[RunRecord], counted_ids: set[str]) -> str:
    """Why a submission with some seeds that did not count is not kept. A candidate that crashes, hangs,
    overruns or NaNs on the seeds it finds unlucky (it can watch its own training loss) would otherwise
    be judged on its lucky seeds alone; so every seed must count, whatever made one fail (an
    infrastructure error included: the decision fails closed, resubmit once it is fixed)."""
    failed = [(i, r) for i, r in enumerate(results, 1) if r.run_id not in counted_ids]
    what = "; ".join(f"seed {i}: {r.status}" + (f" ({', '.join(r.flags)})" if r.status == "ok" and r.flags else "")
                     + (f" - {clean_text(r.reason)[:120]}" if r.reason else "") for i, r in failed)
    return (f"{len(failed)} of {len(results)} seed(s) did not count ({what}): a candidate is kept only when "
            "every seed scores, so failing on unlucky seeds cannot choose the lucky ones")


def decide_keep(scores: list[float], reference: Reference, alpha: float,
                noise_std: float | None = None) -> Decision:
    if not scores:
        return Decision(False, "no run counts: none ended ok with a verified score inside the budget "
                               "(see the statuses and flags above)", None, None)
    if reference.kind == "none":
        return Decision(True, "first scored submission on this benchmark and class: it becomes the reference",
                        None, None)
    return keep_or_discard(scores, reference.samples, alpha, noise_std=noise_std)
