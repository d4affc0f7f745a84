"""`make bench`: speed figures measured side by side in one run, printed as ratios against their goals.

    python -m harness.bench [--seconds S]

Sections: the dataloader (tokens/s on one core vs what an H100 consumes with the baseline).
"""

from __future__ import annotations

import argparse
import os
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
    prepare = load_fixed_module("prepare")
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=3.0, help="measuring time per figure")
    args = parser.parse_args()
    print(f"harness bench · {time.strftime('%Y-%m-%d %H:%M')} · {os.cpu_count()} cores · repo {paths.repo_root()}")
    bench_dataloader(args.seconds, print)


if __name__ == "__main__":
    main()
