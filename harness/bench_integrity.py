"""`make bench`, the integrity costs, measured side by side in one run on the tiny benchmark:

  evaluation  the split evaluation (scorer + two model servers, every row probed) against the wave-1
              evaluator (one process loading the program with torch.export.load, the first batch and
              about 1/8 of the rest probed with two draws), same exported baseline model (goal <= 2.5x)
  feed        training steps in one budget with batches served by the harness's feed against reading
              the shards in the process, same baseline train.py, alternating pairs (goal >= 0.97)

    python -m harness.bench_integrity [--seconds S]
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable

from harness import paths
from harness.benchmarks import get_benchmark
from harness.data import cache_info
from harness.feed import FeedServer

EVAL_GOAL = 2.5
FEED_GOAL = 0.97

# The wave-1 evaluator's work, for comparison: load the program in the scoring process, one forward per
# batch, a probe (two draws of cut positions) on the first batch and on about 1/8 of the rest.
LEGACY_EVAL = r'''
import math, random, sys, time
import torch, torch.nn.functional as F
import prepare
t0 = time.time()
model = torch.export.load(sys.argv[1]).run_decompositions({}).module()
T = prepare.MAX_SEQ_LEN; n_rows = prepare.EVAL_TOKENS // T
data_dir, shards = prepare._split_shards("val")
stream = prepare._RowStream(data_dir, shards, single_pass=True)
tb = prepare.get_token_bytes("cpu"); rng = random.SystemRandom()
nats = nbytes = 0.0; done = 0
with torch.no_grad():
    while done < n_rows:
        rows = torch.from_numpy(stream.next_rows(min(32, n_rows - done), T))
        x, y = rows[:, :-1], rows[:, 1:]
        logits = model(x.clone()).float()
        if done == 0 or rng.random() < 0.125:
            for _ in range(2):
                cuts = torch.randint(1, T, (x.shape[0],))
                fut = torch.arange(T)[None, :] >= cuts[:, None]
                model(torch.where(fut, torch.randint(0, 100, x.shape), x))
        l = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), y.reshape(-1), reduction="none")
        a, b, _ = prepare.masked_sums(l, y, tb)
        nats += a.item(); nbytes += b.item(); done += x.shape[0]
print(f"legacy val_bpb {nats / (math.log(2) * nbytes):.6f} seconds {time.time() - t0:.2f}", flush=True)
'''


def _env(data_dir: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("HARNESS_")}
    env.update({"HARNESS_DATA_DIR": str(data_dir), "PYTHONPATH": str(paths.fixed_dir()), **extra})
    return env


def _export_baseline(data_dir: Path, out: Path, seconds: float) -> Path:
    env = _env(data_dir, HARNESS_TIME_BUDGET=str(seconds), HARNESS_EVAL_MODE="export", HARNESS_OUT_DIR=str(out))
    subprocess.run([sys.executable, str(paths.REPO_ROOT / "submissions" / "baseline" / "train.py")], env=env,
                   cwd=out, check=True, capture_output=True, timeout=600)
    return out / "model.pt2"


def _split_eval(data_dir: Path, program: Path, work: Path) -> float:
    sock = work / "sock" / "model.sock"
    sock.parent.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    scorer = subprocess.Popen([sys.executable, str(paths.fixed_dir() / "evaluate.py"), "--socket", str(sock),
                               "--out", str(work / "eval.json")], env=_env(data_dir), stdout=subprocess.DEVNULL)
    servers = [subprocess.Popen([sys.executable, str(paths.fixed_dir() / "model_server.py"), "--program",
                                 str(program), "--socket", str(sock), "--role", r],
                                env={**_env(work / "nodata"), "TMPDIR": str(work)}, stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL) for r in "ab"]
    scorer.wait(600)
    for s in servers:
        s.wait(60)
    return time.perf_counter() - t0


def _legacy_eval(data_dir: Path, program: Path) -> float:
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-c", LEGACY_EVAL, str(program)], env=_env(data_dir), check=True,
                   capture_output=True, timeout=600)
    return time.perf_counter() - t0


def bench_evaluation(report: Callable[[str], None], pairs: int = 2) -> None:
    data_dir = paths.data_dir("tiny")
    cache_info(get_benchmark("tiny"))  # says what to run when tiny is not prepared
    with tempfile.TemporaryDirectory(prefix="harness-bench-") as tmp:
        program = _export_baseline(data_dir, Path(tmp), 5.0)
        new, old = [], []
        for i in range(pairs):  # alternate, so a noisy neighbour hits both
            old.append(_legacy_eval(data_dir, program))
            new.append(_split_eval(data_dir, program, Path(tmp) / f"split{i}"))
        ratio = sum(new) / sum(old)
        verdict = "ok" if ratio <= EVAL_GOAL else "ABOVE GOAL"
        report(f"evaluation (tiny, baseline model): split + every row probed {sum(new) / pairs:.1f} s vs wave-1 "
               f"evaluator {sum(old) / pairs:.1f} s = {ratio:.2f}x (goal <= {EVAL_GOAL:g}x) {verdict}")


def _steps(data_dir: Path, seconds: float, feed_dir: Path | None) -> int:
    extra = {"HARNESS_TIME_BUDGET": str(seconds)}
    if feed_dir is not None:
        extra["HARNESS_FEED"] = str(feed_dir)
    with tempfile.TemporaryDirectory(prefix="harness-bench-run-") as tmp:
        out = subprocess.run([sys.executable, str(paths.REPO_ROOT / "submissions" / "baseline" / "train.py")],
                             env=_env(data_dir, **extra), cwd=tmp, capture_output=True, text=True, timeout=600)
    m = re.search(r"^num_steps:\s+(\d+)", out.stdout, re.M)
    if not m:
        raise RuntimeError(f"the baseline printed no num_steps: {out.stdout[-500:]} {out.stderr[-500:]}")
    return int(m.group(1))


def bench_feed(seconds: float, report: Callable[[str], None], pairs: int = 2) -> None:
    bench = get_benchmark("tiny")
    cache = cache_info(bench)
    direct = fed = 0
    for _ in range(pairs):
        direct += _steps(cache.data_dir, seconds, None)
        with tempfile.TemporaryDirectory(prefix="harness-feed-") as tmp, \
                FeedServer(cache.data_dir, cache.manifest, Path(tmp)) as feed:
            fed += _steps(cache.data_dir, seconds, feed.sock_dir)
    ratio = fed / max(direct, 1)
    verdict = "ok" if ratio >= FEED_GOAL else "BELOW GOAL"
    report(f"feed (tiny, baseline train.py, {seconds:g} s x {pairs}): {fed} steps served by the harness vs {direct} "
           f"reading the shards = {ratio:.3f} (goal >= {FEED_GOAL:g}) {verdict}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=15.0, help="training budget per feed run")
    args = parser.parse_args()
    bench_evaluation(print)
    bench_feed(args.seconds, print)


if __name__ == "__main__":
    main()
