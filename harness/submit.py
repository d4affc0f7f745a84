"""`harness submit`: validate, run (one or more harness-chosen seeds), verify, normalize, store, decide.

The decision is the research loop's keep/discard: keep only when the candidate's mean BPB beats the
reference (the current best other submission on this benchmark and GPU class, else the class
baseline) with a one-sided Welch's t-test at the benchmark's alpha, never assuming less spread than the
class's measured seed noise (harness.scoring.decision.keep_or_discard).

A row goes to results.tsv only where the submitter asked: ``--tsv PATH``, else results.tsv at the root
of the git repository holding the current directory, else nowhere (never the repository that merely
holds train.py, which may be someone else's).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from harness.benchmarks import Benchmark
from harness.data import cache_info
from harness.fixedcode import file_sha256
from harness.hw.context import HardwareContext, detect_hardware
from harness.scoring.baselines import load_baselines
from harness.sanitize import clean_text
from harness import paths
from harness.result import RunResult, write_json_atomic
from harness.run import RunOptions, chosen_runtime, default_image, execute_run, make_backend
from harness.scoring.decision import Decision, keep_or_discard
from harness.scoring.stats import summarize
from harness.store import ResultStore
from harness.tsv import append_record, cwd_tsv_path, submission_commit
from harness.validate import ValidationReport, validate_file
from harness.verify import scored_by_fixed_code

Event = Callable[[str, Any], None]


class SubmitError(RuntimeError):
    """The submission was refused before any run (invalid file)."""

    def __init__(self, message: str, report: ValidationReport | None = None):
        super().__init__(message)
        self.report = report


@dataclass
class SubmitOptions:
    benchmark: Benchmark
    seeds: int | None = None  # None: the benchmark's significance.seeds
    description: str = ""
    backend: str = "auto"
    verified: bool = True  # False: compatibility mode (val mounted, train.py's own score, self-reported)
    budget_s: float | None = None
    results_dir: Path | None = None
    baselines_path: Path | None = None
    runs_dir: Path | None = None
    gpu: str | None = None
    calibrate: bool = True
    tsv: bool = True  # append a results.tsv row (where: tsv_target)
    tsv_path: Path | None = None  # --tsv: the row goes here; None: the current directory's repository
    nvml_module: Any = None
    runtime: str | None = None  # the docker backend's OCI runtime (runsc: gVisor); None: the benchmark's


@dataclass
class Reference:
    kind: str  # "best" | "baseline" | "none"
    label: str
    samples: list[float] = field(default_factory=list)


@dataclass
class SubmitReport:
    results: list[RunResult]
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


def run_seeds(train_py: Path, opts: SubmitOptions, n: int, on_event: Event = lambda _k, _v: None,
              hw: HardwareContext | None = None) -> list[RunResult]:
    """n runs of one candidate with fresh harness-chosen seeds, on one device, verified unless asked not."""
    bench = opts.benchmark
    cache = cache_info(bench)
    hw = hw or detect_hardware(opts.gpu, opts.nvml_module)  # once: every seed runs on the same device
    backend = make_backend(opts.backend, default_image(hw), chosen_runtime(opts.runtime, bench))
    baselines_path = Path(opts.baselines_path or paths.baselines_file())
    store = ResultStore(opts.results_dir)
    results: list[RunResult] = []
    for i in range(n):
        on_event("seed", {"index": i + 1, "of": n})
        run_opts = RunOptions(benchmark=bench, backend=backend.name, budget_s=opts.budget_s,
                              description=clean_text(opts.description).strip(), runs_dir=opts.runs_dir, hardware=hw,
                              calibrate=opts.calibrate, baselines_path=baselines_path, verified=opts.verified,
                              nvml_module=opts.nvml_module, results_dir=store.root)
        result = execute_run(train_py, run_opts, on_event=on_event, cache=cache, backend=backend)
        export = (result.evaluation or {}).get("export")
        if opts.verified and result.status == "ok" and export and not export.get("ok"):
            # The model could not be exported: score it the autoresearch way, labelled self-reported.
            on_event("fallback", {"run_id": result.run_id, "error": export.get("error")})
            compat = RunOptions(**{**run_opts.__dict__, "verified": False, "seed": result.provenance["seed"]})
            result = execute_run(train_py, compat, on_event=on_event, cache=cache, backend=backend)
            result.trust = "self-reported" if result.isolated else "unisolated"
            result.evaluation = {"mode": "compat", "export": export,
                                 "note": "export failed; train.py's own score, self-reported"}
            write_json_atomic(Path(result.log_path).parent / "result.json", result.to_dict())
        store.put(result.to_dict())  # stored as soon as it ends: a killed submit loses no finished run
        results.append(result)
        if result.status == "aborted":  # Ctrl-C or SIGTERM ends the whole submission, not one seed
            break
        if (result.evaluation or {}).get("mode") == "compat" and opts.verified:
            break  # unexportable: every seed would be too, and a self-reported score never counts
    return results


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


def submit(train_py: Path, opts: SubmitOptions, on_event: Event = lambda _k, _v: None) -> SubmitReport:
    bench = opts.benchmark
    train_py = Path(train_py)
    check_valid(train_py, bench)
    tsv_path, tsv_note = tsv_target(opts)  # decided before any run: a bad --tsv fails fast
    hw = detect_hardware(opts.gpu, opts.nvml_module)
    results = run_seeds(train_py, opts, opts.seeds or int(bench.significance["seeds"]), on_event, hw)
    flag_seed_ignored(results)
    store = ResultStore(opts.results_dir)
    baselines_path = Path(opts.baselines_path or paths.baselines_file())
    counted = counted_runs(results, opts.verified)
    scores = [r.val_bpb for r in counted]
    verified_only = bool(counted) and all(r.trust == "verified" for r in counted)
    reference = choose_reference(store, bench, file_sha256(train_py), hw.cls.label, verified_only, baselines_path)
    if any(r.status == "aborted" for r in results):
        decision = Decision(False, "aborted (Ctrl-C or SIGTERM): no decision; the records are stored", None, None)
    elif not counted and any((r.evaluation or {}).get("mode") == "compat" for r in results) and opts.verified:
        error = next(r.evaluation["export"].get("error") for r in results
                     if (r.evaluation or {}).get("mode") == "compat")
        decision = Decision(False, f"not verifiable: the model could not be exported ({error}); "
                                   "its self-reported score never counts", None, None)
    elif counted and len(counted) < len(results):
        decision = Decision(False, incomplete_reason(results, counted), None, None)
        for r in counted:  # its lucky seeds must not reach a leaderboard or become a reference either
            r.flags = sorted(set(r.flags) | {SEEDS_FAILED})
    else:
        decision = decide_keep(scores, reference, float(bench.significance["alpha"]),
                               class_noise_std(baselines_path, bench.name, hw.cls.label))
    aborted = any(r.status == "aborted" for r in results)
    label = "aborted" if aborted else ("keep" if decision.keep else "discard")
    paths_out: list[Path] = []
    for r in results:
        r.evaluation = {**(r.evaluation or {}), "decision": label,
                        "decision_reason": decision.reason, "reference": reference.label,
                        "seeds": len(results), "scores": scores}
        write_json_atomic(Path(r.log_path).parent / "result.json", r.to_dict())
        paths_out.append(store.put(r.to_dict()))
    if aborted and tsv_path is not None:  # no row for a cut-short submit
        tsv_path, tsv_note = None, "no results.tsv row: the submission was aborted"
    if tsv_path is not None:
        best = min(counted, key=lambda r: r.val_bpb) if counted else results[0]
        append_record(tsv_path, best.to_dict(), decision.keep,
                      submission_commit(train_py, best.provenance["submission"]["sha256"]), opts.description)
    return SubmitReport(results, decision, reference, paths_out, tsv_path, scores, tsv_note)


SEED_IGNORED = "seed_ignored"
SEEDS_FAILED = "seeds_failed"  # a scored run of a submission some of whose other seeds did not count
SAME_SCORE = 1e-8  # BPB: equal to 8 decimals, orders of magnitude below any class's seed-to-seed spread


def flag_seed_ignored(results: list[RunResult]) -> list[RunResult]:
    """Flag ``seed_ignored`` on each scored run whose score another run of this candidate with a different
    harness seed matched: the candidate fixed its own randomness (a hard-coded seed), so its runs are
    copies of one run, not seed-to-seed samples, and the seed may have been picked for a lucky score.

    The flagged runs still count toward the decision (the candidate did run and was scored each time),
    but their zero spread buys nothing: the decision floors the spread at the class's seed noise
    (harness.scoring.decision). Like every flag it keeps them out of baselines and leaderboards unless asked.
    Returns the runs it flagged; flags stay sorted and unique.
    """
    scored = [r for r in results if r.status == "ok" and r.val_bpb is not None]
    flagged = [r for r in scored
               if any(o is not r and o.provenance.get("seed") != r.provenance.get("seed")
                      and abs(o.val_bpb - r.val_bpb) <= SAME_SCORE for o in scored)]
    for r in flagged:
        r.flags = sorted(set(r.flags) | {SEED_IGNORED})
    return flagged


def class_noise_std(baselines_path: Path, benchmark: str, gpu_class: str) -> float | None:
    """The class's measured seed noise: the sample std of its baseline runs (None without 2+ of them,
    or when they do not vary, which says nothing about noise)."""
    if not baselines_path.exists():
        return None
    stats = load_baselines(baselines_path).stats(benchmark, gpu_class)
    return stats.std if stats is not None and stats.n >= 2 and stats.std else None


def counted_runs(results: list[RunResult], verified: bool) -> list[RunResult]:
    """The runs whose scores decide: ok, unflagged for the budget, and (when verification was asked
    for) scored by the fixed evaluator, so a candidate can never opt into a self-reported score."""
    out = [r for r in results if r.status == "ok" and r.val_bpb is not None and "over_budget" not in r.flags]
    return [r for r in out if scored_by_fixed_code(r)] if verified else out


def incomplete_reason(results: list[RunResult], counted: list[RunResult]) -> str:
    """Why a submission with some seeds that did not count is not kept. A candidate that crashes, hangs,
    overruns or NaNs on the seeds it finds unlucky (it can watch its own training loss) would otherwise
    be judged on its lucky seeds alone; so every seed must count, whatever made one fail (an
    infrastructure error included: the decision fails closed, resubmit once it is fixed)."""
    failed = [(i, r) for i, r in enumerate(results, 1) if r not in counted]
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
