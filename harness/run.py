"""One run, start to finish: run folder, seed, environment, backend, live progress, result record."""

from __future__ import annotations

import json
import secrets
import shutil
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from harness import paths
from harness.backends.base import DEFAULT_LOG_CAP_BYTES, Backend, ProcessOutcome, RunRequest
from harness.benchmarks import Benchmark
from harness.clock import ClockLimits, judge, kill_reason
from harness.data import CacheInfo, cache_info
from harness.feed import FeedServer
from harness import journal
from harness.logparse import parse_progress, parse_summary
from harness.outcome import decide
from harness.provenance import build_provenance
from harness.hw.calibration import judge_calibration, parse_calibration
from harness.hw.context import HardwareContext, detect_hardware
from harness.scoring.baselines import Baselines, load_baselines
from harness.scoring.normalize import normalize
from harness.hw.telemetry import flags_for, start_sampler
from harness.result import RunResult, Timings, finite, write_json_atomic
from harness.verify import (COMPAT_ENTRIES, EXPORT_ENV, TRAINING_ENTRIES, apply_verification, check_floor,
                            export_info, run_evaluator)

Event = Callable[[str, Any], None]


class RunError(RuntimeError):
    """The run could not be set up (bad file, unprepared benchmark, unknown backend)."""


@dataclass
class RunOptions:
    benchmark: Benchmark
    backend: str = "auto"  # "auto" | "local" | "docker"
    budget_s: float | None = None  # overrides the benchmark's budget (quick checks, tests); recorded
    hard_timeout_s: float | None = None
    seed: int | None = None  # None: the harness draws one
    description: str = ""
    runs_dir: Path | None = None
    data_dir: Path | None = None
    gpu_uuids: list[str] = field(default_factory=list)
    peak_flops: float | None = None
    image: str | None = None
    log_cap_bytes: int = DEFAULT_LOG_CAP_BYTES
    extra_env: dict[str, str] = field(default_factory=dict)
    gpu: str | None = None  # GPU index or UUID; None: the first runnable one (or the CPU)
    calibrate: bool = True  # run fixed/calibrate.py in the run's own process space before train.py
    hardware: HardwareContext | None = None  # decided once by the caller (baseline, seeds) or here
    baselines_path: Path | None = None  # per-class baselines for normalization
    nvml_module: Any = None  # tests pass a fake pynvml; None: the real one
    verified: bool = False  # train without val, export the model, score it with fixed code elsewhere
    results_dir: Path | None = None  # the store a submit writes to: a recovered run is recorded there too
    runtime: str | None = None  # the docker backend's OCI runtime (runsc: gVisor); None: the benchmark's


def new_run_id() -> str:
    return time.strftime("%Y%m%d-%H%M%S", time.gmtime()) + "-" + secrets.token_hex(3)


def choose_seed(seed: int | None) -> int:
    """The harness, not train.py, chooses the seed: fresh per run unless one is asked for."""
    return seed if seed is not None else secrets.randbelow(2**31 - 1)


def make_backend(name: str, image: str | None = None, runtime: str | None = None) -> Backend:
    """The backend by name: "auto" (docker when a daemon answers, else local) or a registered one
    (harness/backends/registry.py: local, docker, and those installed packages declare). runtime (e.g.
    runsc) needs Docker: asking for it fails closed, never falls back to a process on the host or to
    the daemon's default runtime."""
    from harness.backends.registry import BackendUnavailable, UnknownBackend, backend_factory

    if name == "auto":
        from harness.backends.docker import client

        if client.docker_available():
            name = "docker"
        elif runtime:
            raise RunError(f"runtime {runtime!r} needs the docker backend: no Docker daemon is reachable, so "
                           "--backend auto would run train.py as a plain process on this host (start dockerd, "
                           "see .ci/docker-up, or drop the runtime)")
        else:
            name = "local"
    if name == "local" and runtime:
        raise RunError(f"runtime {runtime!r} needs the docker backend: the local backend runs train.py as a "
                       "plain process on this host (use --backend docker, or drop the runtime)")
    try:
        factory = backend_factory(name)
    except UnknownBackend as e:
        raise RunError(f"unknown backend {name!r}: use auto or a registered backend: {', '.join(e.names)}") from None
    except BackendUnavailable as e:
        raise RunError(str(e)) from None
    if name == "local":
        return factory()
    options: dict[str, Any] = {"image": image} if image else {}
    if runtime:
        options["runtime"] = runtime
    return factory(**options)


def chosen_runtime(asked: str | None, bench: Benchmark) -> str | None:
    """--runtime if given, else the benchmark's `runtime:` setting, else the daemon's default (None)."""
    return asked or bench.runtime or None


def default_image(hw: HardwareContext) -> str:
    """The CUDA image for a GPU run, the CPU image otherwise."""
    from harness.images import latest_tag

    return latest_tag("cuda" if hw.gpu else "cpu")


def run_env(bench: Benchmark, data_dir: Path, run_dir: Path, budget_s: float, seed: int,
            peak_flops: float | str | None) -> dict[str, str]:
    """The environment contract of docs/design.md: what fixed/prepare.py reads."""
    return {
        "HARNESS_BENCHMARK": bench.name,
        "HARNESS_DATA_DIR": str(data_dir),
        "HARNESS_TIME_BUDGET": repr(float(budget_s)),
        "HARNESS_SEED": str(seed),
        "HARNESS_PEAK_FLOPS": str(peak_flops) if peak_flops else "unknown",
        "HARNESS_MODEL_HINT": json.dumps(bench.model_hint, sort_keys=True),
        "HARNESS_OUT_DIR": str(run_dir / "out"),
    }


class _Watcher:
    """Sees every output line: forwards progress, and notes when training ended and the summary came."""

    def __init__(self, on_event: Event):
        self.on_event = on_event
        self.train_started_at: float | None = None  # first progress line's arrival minus its elapsed
        self.last_progress_at: float | None = None
        self.summary_at: float | None = None
        self.calibrated_at: float | None = None  # the calibration line came
        self.first_train_output_at: float | None = None

    def __call__(self, line: str) -> None:
        now = time.time()
        if line.startswith("calibration ") and self.calibrated_at is None and self.first_train_output_at is None:
            self.calibrated_at = now  # only fixed/calibrate.py's own line, before train.py said anything
        elif self.first_train_output_at is None:
            self.first_train_output_at = now
        if line.startswith("progress"):
            p = parse_progress(line)
            if p is not None:
                if self.train_started_at is None:
                    self.train_started_at = now - (p.elapsed or 0.0)
                self.last_progress_at = now
                self.on_event("progress", p)
                return
        if line.strip() == "---":
            self.summary_at = now
        self.on_event("line", line)


# Calibration runs first, in the run's own container (or process space), so it measures the very
# device and limits the candidate gets; then train.py replaces the shell.
CALIBRATED_COMMAND = ["sh", "-c", "{python_q} {fixed_q}/calibrate.py --max-seconds 5; exec {python_q} -u {train_py_q}"]


def execute_run(train_py: Path, opts: RunOptions, on_event: Event = lambda _k, _v: None,
                cache: CacheInfo | None = None, backend: Backend | None = None) -> RunResult:
    """Run train.py once on opts.benchmark and return its result, also saved as run_dir/result.json.

    Whatever happens (crash, timeout, Ctrl-C) a result with its status is written.
    """
    bench = opts.benchmark
    train_py = Path(train_py)
    if not train_py.is_file():
        raise RunError(f"{train_py}: no such file")
    cache = cache or cache_info(bench, opts.data_dir)
    hw = opts.hardware or detect_hardware(opts.gpu, opts.nvml_module)
    backend = backend or make_backend(opts.backend, opts.image or default_image(hw),
                                      chosen_runtime(opts.runtime, bench))
    seed = choose_seed(opts.seed)
    budget = float(opts.budget_s if opts.budget_s is not None else bench.time_budget_s)
    # A shorter budget shortens the hard timeout with it, keeping the benchmark's margin for startup and eval.
    hard_timeout = opts.hard_timeout_s or (bench.hard_timeout_s - bench.time_budget_s + budget)
    run_id = new_run_id()
    run_dir = Path(opts.runs_dir or paths.runs_dir()) / run_id
    run_dir.mkdir(parents=True)
    (run_dir / "out").mkdir()
    shutil.copyfile(train_py, run_dir / "train.py")  # the run sees a copy: the original cannot be changed
    # The train split is served by the harness from outside (harness/feed.py), never mounted.
    feed = FeedServer(cache.data_dir, cache.manifest, run_dir / "feed")
    request = RunRequest(
        run_id=run_id, train_py=run_dir / "train.py", benchmark=bench, data_dir=cache.data_dir,
        fixed_dir=paths.fixed_dir(), run_dir=run_dir,
        env={**run_env(bench, cache.data_dir, run_dir, budget, seed, hw.peak_flops_env),
             "HARNESS_FEED": str(feed.sock_dir), **(EXPORT_ENV if opts.verified else {}), **opts.extra_env},
        hard_timeout_s=hard_timeout, gpu_uuids=hw.gpu_uuids, log_cap_bytes=opts.log_cap_bytes,
        command=list(CALIBRATED_COMMAND) if opts.calibrate else None,
        extra_mounts={"feed": feed.sock_dir},
        data_entries=list(TRAINING_ENTRIES if opts.verified else COMPAT_ENTRIES), cancel=threading.Event())
    on_event("start", {"run_id": run_id, "run_dir": run_dir, "backend": backend.name, "budget_s": budget,
                       "seed": seed, "isolated": backend.isolated, "hardware": hw.cls.label})
    # Telemetry is sampled here on the host, by UUID, never inside the container; the series goes beside
    # the result, out of the run's reach.
    sampler, no_telemetry = start_sampler(hw.gpu.uuid if hw.gpu else None, series_path=run_dir / "telemetry.jsonl",
                                          nvml_module=opts.nvml_module)
    # Written before anything runs: if this process dies, the next harness command records the run.
    journal.begin(run_dir, provisional_record(request, cache, budget, seed, opts.description, train_py, backend.name),
                  opts.results_dir)
    watcher = _Watcher(on_event)
    limits = ClockLimits.of(budget, bench.clock)
    t0 = time.time()
    feed.start()
    guard = _ClockGuard(feed, limits, request, watcher, t0, check_tail=opts.verified, calibrated=opts.calibrate)
    guard.start()
    try:
        outcome = backend.execute(request, watcher)
    except KeyboardInterrupt:  # a backend should catch it itself; this is the safety net
        outcome = _failed_outcome(backend.name, run_dir, t0, aborted=True)
    except Exception as e:  # noqa: BLE001 - whatever broke, the run still gets its record
        outcome = _failed_outcome(backend.name, run_dir, t0, infra_error=f"{type(e).__name__}: {e}")
    finally:
        guard.stop()
        feed.stop()
        if sampler is not None:
            sampler.stop()
    result = build_result(request, outcome, watcher, cache, budget, seed, opts.description, train_py,
                          score_deferred=opts.verified)
    clock = judge(feed.stats(), guard.start_at(), outcome.ended_at, limits, check_tail=opts.verified)
    if guard.killed and result.status not in ("aborted", "infra_error"):
        result.status, result.reason = "timeout", f"killed by the harness's clock: {guard.killed}"
    if opts.verified:
        export = export_info(run_dir)
        evaluation = None
        if result.status == "ok" and export and export.get("ok"):
            on_event("evaluate", {"run_id": run_id})
            evaluation = run_evaluator(request, bench, backend)
        apply_verification(result, export, evaluation)
    check_floor(result)
    attach_clock(result, clock)
    attach_hardware(result, hw, bench, sampler, no_telemetry, watcher, run_dir, calibrated=opts.calibrate)
    if opts.verified:
        measured_metrics(result)
    attach_normalization(result, hw, bench, opts.baselines_path)
    write_json_atomic(run_dir / "result.json", result.to_dict())
    journal.end(run_dir)
    on_event("end", result)
    return result


class _ClockGuard:
    """Watches the feed while the run goes: kills it (through request.cancel) once it is far past the
    clock's limits, so an over-long run cannot keep the machine until its hard timeout."""

    def __init__(self, feed: FeedServer, limits: ClockLimits, request: RunRequest, watcher: "_Watcher",
                 t0: float, check_tail: bool, calibrated: bool):
        self.feed, self.limits, self.request, self.watcher, self.t0 = feed, limits, request, watcher, t0
        self.check_tail, self.calibrated = check_tail, calibrated
        self.killed: str | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="harness-clock", daemon=True)

    def start_at(self) -> float:
        """Where the candidate's time starts: after the calibration, when one ran first (without one, a
        'calibration' line can only be train.py's own, and moves nothing)."""
        return (self.watcher.calibrated_at if self.calibrated else None) or self.t0

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(2)

    def _run(self) -> None:
        while not self._stop.wait(0.25):
            why = kill_reason(self.feed.stats(), self.start_at(), time.time(), self.limits, self.check_tail)
            if why and self.request.cancel is not None:
                self.killed = why
                self.request.cancel.set()
                return


def attach_clock(result: RunResult, clock: Any) -> None:
    """The clock's spans go into the record. A run that trained to the end past a limit is flagged
    over_budget (it never counts), and so is one the clock killed; other failures keep their status."""
    result.clock = clock.to_dict()
    result.timings.training_observed_s = clock.window_s
    killed = (result.reason or "").startswith("killed by the harness's clock")
    if (result.status == "ok" and clock.over_budget) or killed:
        result.flags = sorted(set(result.flags) | {"over_budget"})


def measured_metrics(result: RunResult) -> None:
    """A verified record's metrics hold what the harness measured; train.py's printed figures go to
    `reported`, never shown as measured."""
    reported = {k: v for k, v in result.metrics.items() if k not in ("val_bpb", "reported_val_bpb")}
    result.reported = reported or None
    clock = result.clock or {}
    summary = (result.telemetry or {}).get("summary") or {}
    peak = summary.get("max_mem_used_bytes")
    result.metrics = {
        "val_bpb": result.metrics.get("val_bpb"),
        "reported_val_bpb": result.metrics.get("reported_val_bpb"),
        "training_seconds": clock.get("window_s"),
        "total_tokens_M": (clock.get("tokens") or 0) / 1e6,
        "peak_vram_mb": peak / (1024 * 1024) if peak else None,
        "num_steps": None, "mfu_percent": None,
    }


def attach_hardware(result: RunResult, hw: HardwareContext, bench: Benchmark, sampler: Any,
                    no_telemetry: str | None, watcher: _Watcher, run_dir: Path, calibrated: bool = True) -> None:
    """Hardware label, calibration and telemetry summary, and the flags they raise."""
    result.hardware = hw.to_record()
    # A calibration line counts only when fixed/calibrate.py ran, and only its own (the first) line.
    cal = parse_calibration(first_calibration_line(Path(result.log_path))) if calibrated else None
    judgement = judge_calibration(cal, hw.cls, threshold=bench.thresholds["slow_device_fraction"])
    result.calibration = {"result": cal.to_dict() if cal else None, "judgement": judgement.to_dict()}
    summary = None
    if sampler is not None:
        summary = sampler.summary(watcher.train_started_at, watcher.last_progress_at)
        result.telemetry = {"summary": summary.to_dict(), "series": str(run_dir / "telemetry.jsonl"),
                            "unavailable": None}
    else:
        result.telemetry = {"summary": None, "series": None, "unavailable": no_telemetry}
    result.flags = sorted(set(result.flags) | set(flags_for(summary, bench.thresholds)) | set(judgement.flags))


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


def attach_normalization(result: RunResult, hw: HardwareContext, bench: Benchmark,
                         baselines_path: Path | None) -> None:
    """Delta, z-score and relative change against this class's own baseline (when the run scored)."""
    bpb = result.metrics.get("val_bpb")
    if result.status != "ok" or bpb is None:
        result.normalization = None
        return
    path = Path(baselines_path or paths.baselines_file())
    baselines = load_baselines(path) if path.exists() else Baselines()
    cal = (result.calibration or {}).get("result")
    n = normalize(bpb, hw.cls.label, baselines, calibration=cal, benchmark=bench.name)
    result.normalization = {**n.to_dict(), "line": n.line(), "baselines_file": str(path)}


def provisional_record(request: RunRequest, cache: CacheInfo, budget: float, seed: int, description: str,
                       original: Path, backend: str) -> dict[str, Any]:
    """The record a run keeps if its harness dies before writing the real one (harness/journal.py)."""
    now = time.time()
    prov = build_provenance(train_py=original, description=description, bench=request.benchmark, cache=cache,
                            seed=seed, backend=backend, image=None, fixed_dir=request.fixed_dir)
    return RunResult(
        run_id=request.run_id, status="aborted", reason="the harness process died during the run",
        trust="unisolated" if backend == "local" else "self-reported", backend=backend,
        isolated=backend != "local", provenance=prov,
        timings=Timings(started_at=now, first_output_at=None, ended_at=now, startup_s=None, training_s=None,
                        eval_s=None, total_s=0.0),
        metrics={}, budget_s=budget, hard_timeout_s=request.hard_timeout_s,
        log_path=str(request.run_dir / "log.txt")).to_dict()


def _failed_outcome(backend: str, run_dir: Path, t0: float, aborted: bool = False,
                    infra_error: str | None = None) -> ProcessOutcome:
    log = run_dir / "log.txt"
    if not log.exists():
        log.write_text("")
    return ProcessOutcome(backend, backend != "local", None, False, aborted, False, infra_error, t0, None,
                          time.time(), log, False)


def build_result(request: RunRequest, outcome: ProcessOutcome, watcher: _Watcher, cache: CacheInfo, budget: float,
                 seed: int, description: str, original: Path, score_deferred: bool = False) -> RunResult:
    log_text = outcome.log_path.read_text(errors="replace") if outcome.log_path.exists() else ""
    summary = parse_summary(log_text)
    verdict = decide(outcome, log_text, summary, request.hard_timeout_s, score_deferred)
    metrics = finite(summary.to_dict()) if summary else {}
    # Startup: from the start the harness saw to train.py's first output (calibration, when run, is apart).
    first = watcher.first_train_output_at or outcome.first_output_at
    startup = first - outcome.started_at if first else None
    calibration_s = watcher.calibrated_at - outcome.started_at if watcher.calibrated_at else None
    eval_s = (watcher.summary_at - watcher.last_progress_at
              if watcher.summary_at and watcher.last_progress_at else None)
    timings = Timings(started_at=outcome.started_at, first_output_at=outcome.first_output_at,
                      ended_at=outcome.ended_at, startup_s=startup, calibration_s=calibration_s,
                      training_s=metrics.get("training_seconds"), eval_s=eval_s,
                      total_s=outcome.ended_at - outcome.started_at)
    image = {"id": outcome.image, "tag": outcome.image_tag} if outcome.image or outcome.image_tag else None
    prov = build_provenance(train_py=original, description=description, bench=request.benchmark, cache=cache,
                            seed=seed, backend=outcome.backend, image=image, fixed_dir=request.fixed_dir)
    runtime = getattr(outcome, "runtime", None)
    if runtime:  # the container runtime (runc, runsc) and its version, as the backend found them
        prov["runtime"] = {"name": runtime, "version": getattr(outcome, "runtime_version", None)}
    return RunResult(
        run_id=request.run_id, status=verdict.status, reason=verdict.reason,
        trust="self-reported" if outcome.isolated else "unisolated",
        backend=outcome.backend, isolated=outcome.isolated, provenance=prov, timings=timings, metrics=metrics,
        budget_s=budget, hard_timeout_s=request.hard_timeout_s, log_path=str(outcome.log_path),
        log_truncated=outcome.log_truncated,
        traceback_tail=verdict.traceback_tail if verdict.status != "ok" else None)
