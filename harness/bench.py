"""`make bench`: speed figures measured side by side in one run, printed as ratios against their goals.

    python -m harness.bench [--seconds S]

Sections:
  dataloader   tokens/s on one core vs what an H100 consumes with the baseline (goal >= 10x)
  containers   steps in a container vs on the local backend, same train.py and budget (goal >= 0.97),
               a warm container's start-to-first-output latency (goal < 3 s), and gVisor's cost: steps
               under runsc vs runc, side by side (no goal: a figure to know; skipped, saying why, when
               dockerd has no runsc runtime: see .ci/docker-up)
  telemetry    the NVML sampler's CPU cost (goal < 1 % of a core; a fake NVML where there is no GPU)
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import sys
import time
from typing import Callable

from harness import paths
from harness.benchmarks import get_benchmark
from harness.data import cache_info
from harness.fixedcode import load_fixed_module

# What an H100 consumes with the baseline at the climbmix size (autoresearch: 499.6 M tokens in 300 s).
H100_TOKENS_PER_S = 1.7e6
LOADER_GOAL = 10.0


def _loader_rate(B: int, T: int, seconds: float) -> float:
    prepare = load_fixed_module("prepare", fresh=True)  # reads HARNESS_DATA_DIR, set by the caller
    loader = prepare.make_dataloader(prepare.Tokenizer.from_directory(), B, T, "train", device="cpu")
    next(loader)
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        x, _, _ = next(loader)
        n += x.numel()
    return n / (time.perf_counter() - t0)


def bench_dataloader(seconds: float, report: Callable[[str], None]) -> None:
    os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[0]})  # one core, as the goal says
    # The fixed module reads its data dir at import, so set it before anything imports it.
    os.environ["HARNESS_DATA_DIR"] = str(paths.data_dir("tiny"))
    cache_info(get_benchmark("tiny"))  # says what to run when tiny is not prepared
    import torch

    torch.set_num_threads(1)
    for B, T in ((64, 2048), (128, 256)):
        rate = _loader_rate(B, T, seconds)
        ratio = rate / H100_TOKENS_PER_S
        verdict = "ok" if ratio >= LOADER_GOAL else "BELOW GOAL"
        report(f"dataloader B={B} T={T}: {rate / 1e6:.1f} M tokens/s on one core = {ratio:.1f}x an H100's "
               f"{H100_TOKENS_PER_S / 1e6:.1f} M/s (goal >= {LOADER_GOAL:g}x) {verdict}")


STEPS_GOAL = 0.97
LATENCY_GOAL_S = 3.0
SAMPLER_GOAL = 0.01


def bench_containers(budget: float, report: Callable[[str], None]) -> None:
    import statistics
    import tempfile
    from pathlib import Path

    from harness.backends.base import RunRequest
    from harness.backends.docker import DockerBackend, docker_available
    from harness.pipeline import RunOptions, execute_run

    if not docker_available():
        report("containers: skipped: no Docker daemon reachable (start one with .ci/docker-up)")
        return
    bench = get_benchmark("tiny")
    baseline = paths.REPO_ROOT / "submissions" / "baseline" / "train.py"
    with tempfile.TemporaryDirectory() as tmp:
        steps = {"local": 0, "docker": 0}
        # Alternating order (local, docker, docker, local) so that drift in the machine's speed
        # falls on both sides; same train.py, budget and seed for all.
        for backend in ("local", "docker", "docker", "local"):
            opts = RunOptions(benchmark=bench, backend=backend, budget_s=budget, seed=1, calibrate=False,
                              runs_dir=Path(tmp) / "runs", baselines_path=Path(tmp) / "b.json")
            r = execute_run(baseline, opts)
            steps[backend] += r.metrics.get("num_steps") or 0
        ratio = steps["docker"] / max(1, steps["local"])
        report(f"containers: baseline steps in 2 x {budget:g}s: docker {steps['docker']} vs local {steps['local']} = "
               f"{ratio:.3f} (goal >= {STEPS_GOAL}) {'ok' if ratio >= STEPS_GOAL else 'BELOW GOAL'}")
        backend = DockerBackend()
        latencies = []
        for i in range(5):
            run_dir = Path(tmp) / f"lat{i}"
            (run_dir / "out").mkdir(parents=True)
            (run_dir / "train.py").write_text("print('ready', flush=True)\n")
            req = RunRequest(run_id=f"bench-latency-{i}", train_py=run_dir / "train.py", benchmark=bench,
                             data_dir=paths.data_dir("tiny"), fixed_dir=paths.fixed_dir(), run_dir=run_dir,
                             hard_timeout_s=60)
            asked = time.time()  # from asking for a container (create + start) to its first line
            out = backend.execute(req, lambda _line: None)
            if out.first_output_at:
                latencies.append(out.first_output_at - asked)
        med = statistics.median(latencies) if latencies else float("nan")
        report(f"containers: warm image, create+start to first output: median {med:.2f}s over {len(latencies)} "
               f"(goal < {LATENCY_GOAL_S:g}s) {'ok' if med < LATENCY_GOAL_S else 'ABOVE GOAL'}")
        bench_gvisor(budget, report, Path(tmp))


def bench_gvisor(budget: float, report: Callable[[str], None], tmp) -> None:
    """Steps of the baseline in one budget under runsc vs runc: the same image, train.py, budget and seed,
    alternating (runc, runsc, runsc, runc) so that drift in the machine's speed falls on both."""
    from harness.backends.docker import DockerBackend
    from harness.pipeline import RunOptions, execute_run

    backends = {"runc": DockerBackend(runtime="runc"), "runsc": DockerBackend(runtime="runsc")}
    try:
        versions = {name: b.runtime_info()[1] for name, b in backends.items()}
    except RuntimeError as e:
        report(f"gvisor: skipped: {e}")
        return
    bench = get_benchmark("tiny")
    baseline = paths.REPO_ROOT / "submissions" / "baseline" / "train.py"
    steps = {"runc": 0, "runsc": 0}
    for name in ("runc", "runsc", "runsc", "runc"):
        opts = RunOptions(benchmark=bench, backend="docker", budget_s=budget, seed=1, calibrate=False,
                          runs_dir=tmp / "gvisor-runs", baselines_path=tmp / "b.json")
        r = execute_run(baseline, opts, backend=backends[name])
        if r.status != "ok":
            report(f"gvisor: a {name} run ended {r.status} ({r.reason}); see {r.log_path}")
            return
        steps[name] += r.metrics.get("num_steps") or 0
    ratio = steps["runsc"] / max(1, steps["runc"])
    report(f"gvisor: baseline steps in 2 x {budget:g}s: runsc {steps['runsc']} vs runc {steps['runc']} = {ratio:.3f} "
           f"(gVisor's cost; no goal) [{versions['runsc']}; {versions['runc']}]")


def bench_telemetry(seconds: float, report: Callable[[str], None], stand_in: str | None = None) -> None:
    """The sampler's CPU cost on the real NVML; without a GPU, on the pynvml-compatible module at stand_in
    (`make bench` passes the tests' fake, so the sampler's own cost is still measured)."""
    from harness.hw.nvml import NvmlUnavailable
    from harness.hw.telemetry import measure_sampler_overhead

    try:
        o, where = measure_sampler_overhead(seconds), "real NVML"
    except NvmlUnavailable:
        if not stand_in:
            report("telemetry: no NVML here and no --nvml-stand-in: the sampler's cost is not measured")
            return
        spec = importlib.util.spec_from_file_location("harness_bench_pynvml", stand_in)
        module = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = module  # its dataclasses look their module up there
        spec.loader.exec_module(module)
        o, where = measure_sampler_overhead(seconds, nvml_module=module), f"stand-in NVML {stand_in} (no GPU here)"
    report(f"telemetry: sampler at {o.interval_s:g}s uses {o.cpu_fraction * 100:.3f}% of a core, {where} "
           f"(goal < {SAMPLER_GOAL * 100:g}%) {'ok' if o.cpu_fraction < SAMPLER_GOAL else 'ABOVE GOAL'}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=3.0, help="measuring time per figure")
    parser.add_argument("--budget", type=float, default=15.0, help="training budget for the steps comparison")
    parser.add_argument("--only", choices=["dataloader", "containers", "telemetry"], default=None)
    parser.add_argument("--nvml-stand-in", default=None, help="a pynvml-compatible module file for the telemetry "
                        "figure on a machine without a GPU (make bench passes tests/fakes/pynvml.py)")
    args = parser.parse_args()
    print(f"harness bench · {time.strftime('%Y-%m-%d %H:%M')} · {os.cpu_count()} cores · repo {paths.repo_root()}",
          flush=True)
    report = lambda line: print(line, flush=True)  # noqa: E731
    if args.only in (None, "telemetry"):
        bench_telemetry(args.seconds, report, args.nvml_stand_in)
    if args.only in (None, "containers"):
        bench_containers(args.budget, report)
    if args.only in (None, "dataloader"):  # last: it pins this process to one core
        bench_dataloader(args.seconds, report)


if __name__ == "__main__":
    main()
