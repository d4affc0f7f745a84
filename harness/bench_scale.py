"""`make bench`, scale-out figures (issue 14), each measured side by side in one run:

  pool      the pool's own cost per run: a lease taken and given back, alone and with every member busy;
            and a whole verified docker run of the baseline through a one-member pool against the same
            run without one (goal: under 1 s of overhead per run)
  store     a record written while N other threads write theirs, against one writing alone (goal: no run
            waits for another's bookkeeping: the busy write under 2x the lone one, and under 0.1 s)
  slurm     a job array of N tiny runs (N = the node's CPUs: one slot each) against one job of one run on
            the same cluster (goal: within 1.3x); skipped when no Slurm cluster answers
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import tempfile
import threading
import time
from pathlib import Path
from typing import Callable

from harness import paths
from harness.benchmarks import get_benchmark

POOL_GOAL_S = 1.0
STORE_GOAL_RATIO = 2.0
STORE_GOAL_S = 0.1
SLURM_GOAL = 1.3
BASELINE = paths.REPO_ROOT / "submissions" / "baseline" / "train.py"


def bench_pool(budget: float, report: Callable[[str], None], tmp: Path) -> None:
    from harness.hw.context import detect_hardware
    from harness.pool.parallel import DevicePool
    from harness.pool.slots import plan_pool

    hw = detect_hardware(probe_docker=False)
    n = len(os.sched_getaffinity(0))
    pool = DevicePool(plan_pool(str(n), None, hw, lambda _u: hw), tmp / "leases")
    lone = _lease_cost(pool, 200)
    busy_pool = DevicePool(plan_pool(str(n), None, hw, lambda _u: hw), tmp / "leases")
    stop = threading.Event()
    holders = [threading.Thread(target=_hold, args=(busy_pool, stop)) for _ in range(n - 1)]
    for t in holders:
        t.start()
    time.sleep(0.2)
    busy = _lease_cost(busy_pool, 200)
    stop.set()
    for t in holders:
        t.join()
    report(f"pool: a lease taken and given back: {lone * 1e3:.2f} ms alone, {busy * 1e3:.2f} ms with {n - 1} of "
           f"{n} members busy")
    from harness.backends.docker import docker_available

    if not docker_available():
        report("pool: whole-run overhead skipped: no Docker daemon reachable (start one with .ci/docker-up)")
        return
    from harness.pipeline.seeds import SeedOptions, run_seeds

    bench = get_benchmark("tiny")
    one = DevicePool(plan_pool("1", None, hw, lambda _u: hw), tmp / "leases1")
    took: dict[str, list[float]] = {"pool": [], "plain": []}
    for kind in ("plain", "pool", "pool", "plain"):  # alternating: drift in the machine falls on both sides
        opts = SeedOptions(benchmark=bench, seeds=1, backend="docker", budget_s=budget, calibrate=False,
                           runs_dir=tmp / "runs", results_dir=tmp / "results", baselines_path=tmp / "b.json")
        t0 = time.time()
        records = run_seeds(BASELINE, opts, 1, pool=one if kind == "pool" else None)
        took[kind].append(time.time() - t0)
        for r in records:
            _write(r, tmp)
    extra = statistics.mean(took["pool"]) - statistics.mean(took["plain"])
    report(f"pool: a verified docker run of the baseline ({budget:g} s budget): {statistics.mean(took['pool']):.2f} s "
           f"through a pool, {statistics.mean(took['plain']):.2f} s without: {extra:+.2f} s per run "
           f"(goal < {POOL_GOAL_S:g} s) {'ok' if extra < POOL_GOAL_S else 'ABOVE GOAL'}")


def _lease_cost(pool, n: int) -> float:
    t0 = time.perf_counter()
    for _ in range(n):
        with pool.member():
            pass
    return (time.perf_counter() - t0) / n


def _hold(pool, stop: threading.Event) -> None:
    with pool.member():
        stop.wait()


def _write(record, tmp: Path) -> None:
    from harness.pipeline.finish import write_record

    write_record(record, tmp / "results", store=True)


def bench_store(report: Callable[[str], None], tmp: Path, writers: int = 4, n: int = 40) -> None:
    """A record's write into the store: alone, and while `writers` other threads write theirs."""
    import json

    from harness.store import ResultStore

    template = json.loads(_sample_record(tmp).read_text())
    store = ResultStore(tmp / "store")

    def put(i: int, tag: str) -> float:
        doc = {**template, "run_id": f"20261203-000000-{tag}{i:05x}"}
        t0 = time.perf_counter()
        store.put(doc)
        return time.perf_counter() - t0

    lone = statistics.median(put(i, "a") for i in range(n))
    stop = threading.Event()

    def noise(k: int) -> None:
        i = 0
        while not stop.is_set():
            put(i, f"{k + 1:x}")
            i += 1

    threads = [threading.Thread(target=noise, args=(k,)) for k in range(writers)]
    for t in threads:
        t.start()
    busy = statistics.median(put(i, "f") for i in range(n))
    stop.set()
    for t in threads:
        t.join()
    ratio = busy / lone
    ok = ratio < STORE_GOAL_RATIO or busy < STORE_GOAL_S
    report(f"store: a record written alone {lone * 1e3:.1f} ms, with {writers} threads writing at once "
           f"{busy * 1e3:.1f} ms = {ratio:.2f}x (goal < {STORE_GOAL_RATIO:g}x or < {STORE_GOAL_S * 1e3:.0f} ms) "
           f"{'ok' if ok else 'ABOVE GOAL'}")


def _sample_record(tmp: Path) -> Path:
    """A real record to copy: the one the pool figure stored, else a run of the baseline on the local backend."""
    found = sorted((tmp / "results" / "runs").glob("*.json")) if (tmp / "results" / "runs").is_dir() else []
    if found:
        return found[0]
    from harness.pipeline import RunOptions, execute_run

    opts = RunOptions(benchmark=get_benchmark("tiny"), backend="local", budget_s=1, calibrate=False,
                      runs_dir=tmp / "runs", results_dir=tmp / "results", baselines_path=tmp / "b.json")
    execute_run(BASELINE, opts)
    return sorted((tmp / "results" / "runs").glob("*.json"))[0]


def bench_slurm(budget: float, report: Callable[[str], None], tmp: Path) -> None:
    if shutil.which("sinfo") is None or subprocess.run(["sinfo", "-h"], capture_output=True).returncode != 0:
        report("slurm: skipped: no Slurm cluster answers (start one with .ci/slurm-up)")
        return
    from harness.pipeline.remote import RemoteRun
    from harness.slurm.backend import SlurmBackend
    from harness.slurm.config import SlurmOptions

    cpus = int(subprocess.run(["sinfo", "-h", "-o", "%c"], capture_output=True, text=True).stdout.split()[0])
    shared = tmp / "shared"
    shared.mkdir()
    backend = SlurmBackend(options=SlurmOptions(shared_dir=shared, cpus_per_task=1, poll_s=0.5))
    bench = get_benchmark("tiny")

    def batch(k: int) -> float:
        runs = [RemoteRun(BASELINE, bench, budget_s=budget, calibrate=False) for _ in range(k)]
        t0 = time.time()
        records = backend.run_many(runs)
        if len(records) != k or any(r.status != "ok" for r in records):
            raise RuntimeError(f"slurm bench: runs did not end ok: {[(r.status, r.reason) for r in records]}")
        return time.time() - t0

    single, array = batch(1), batch(cpus)
    ratio = array / single
    report(f"slurm: a job array of {cpus} tiny runs ({budget:g} s budget) {array:.1f} s, one job of one run "
           f"{single:.1f} s = {ratio:.2f}x (goal <= {SLURM_GOAL}x, {cpus} slots) "
           f"{'ok' if ratio <= SLURM_GOAL else 'ABOVE GOAL'}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--budget", type=float, default=5.0, help="training budget of each run")
    parser.add_argument("--only", choices=["pool", "store", "slurm"], default=None)
    args = parser.parse_args()
    report = lambda line: print(line, flush=True)  # noqa: E731
    with tempfile.TemporaryDirectory(prefix="harness-bench-scale-") as tmp:
        t = Path(tmp)
        if args.only in (None, "pool"):
            bench_pool(args.budget, report, t)
        if args.only in (None, "store"):
            bench_store(report, t)
        if args.only in (None, "slurm"):
            bench_slurm(args.budget, report, t)


if __name__ == "__main__":
    main()
