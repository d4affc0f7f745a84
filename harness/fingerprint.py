"""The benchmark fingerprint: one hash over everything that makes two results comparable.

Two runs share a fingerprint when they ran the same fixed code (every file under fixed/: the data
loader, the evaluator, the model server, the calibration), on the same data (each file of the
prepared cache by sha256, val and tokenizer included), under the same benchmark settings that bear
on the score (data config, vocab, sequence length, eval tokens, the budget actually used, the clock
and the container limits). A lab that changes any of them gets a different fingerprint; two labs that
prepared the same shards with the same code get the same one.

Not in it: the benchmark's description, its decision thresholds (they judge a score, they do not make
it), the hard timeout (it ends runs, it does not shape a finished one) and the container runtime (kept
in the record's provenance).

tiny's val split is drawn from a secret seed at prepare time (integrity: a candidate cannot rebuild
it), so two labs that each prepared tiny have different fingerprints; they compare by sharing one
prepared cache. climbmix's val shard is a pinned public file: independent preparations agree.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from typing import Any

from harness.benchmarks import Benchmark

FORMAT = 1
PREFIX = "bfp1:"  # a fingerprint is never mistaken for a file's sha256


def scoring_config(bench: Benchmark, budget_s: float | None = None) -> dict[str, Any]:
    """The benchmark settings that bear on a score, with the run's unscaled budget (the benchmark's, or a
    --budget): with reference-compute budgets, runs on two classes have two budgets and one fingerprint."""
    return {
        **bench.data_config(),
        "time_budget_s": float(budget_s if budget_s is not None else bench.time_budget_s),
        "budget_mode": bench.budget_mode,  # two modes never share a fingerprint (nor a leaderboard row)
        **({"budget_reference": bench.budget_reference, "budget_bounds": list(bench.budget_bounds)}
           if bench.budget_mode != "wall" else {}),
        "clock": {k: float(v) for k, v in sorted(bench.clock.items())},
        "limits": {k: v for k, v in sorted(vars(bench.limits).items())},
        "allowed_imports": sorted(bench.allowed_imports),
    }


def fingerprint_parts(bench: Benchmark, manifest: Mapping[str, Any], fixed: Mapping[str, str],
                      budget_s: float | None = None) -> dict[str, Any]:
    """What the fingerprint hashes, in a form a person can diff when two fingerprints differ."""
    files = manifest.get("files") or {}
    return {
        "format": FORMAT,
        "benchmark": scoring_config(bench, budget_s),
        "fixed": dict(sorted(fixed.items())),
        "data": {name: files[name]["sha256"] for name in sorted(files)},
        "tokenizer": (manifest.get("tokenizer") or {}).get("sha256"),
    }


def fingerprint_of(parts: Mapping[str, Any]) -> str:
    canonical = json.dumps(parts, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    return PREFIX + hashlib.sha256(canonical.encode()).hexdigest()


def benchmark_fingerprint(bench: Benchmark, manifest: Mapping[str, Any], fixed: Mapping[str, str],
                          budget_s: float | None = None) -> str:
    """The fingerprint of a benchmark as prepared here (at its own budget, or the one a run had)."""
    return fingerprint_of(fingerprint_parts(bench, manifest, fixed, budget_s))


def differences(a: Mapping[str, Any], b: Mapping[str, Any], prefix: str = "") -> list[str]:
    """Where two sets of fingerprint parts differ, as dotted paths (for an error that says why)."""
    out: list[str] = []
    for key in sorted(set(a) | set(b)):
        x, y = a.get(key), b.get(key)
        path = f"{prefix}{key}"
        if isinstance(x, Mapping) and isinstance(y, Mapping):
            out += differences(x, y, path + ".")
        elif x != y:
            out.append(path)
    return out


def local_fingerprint(bench: Benchmark, data_dir: Any = None, budget_s: float | None = None) -> str:
    """This machine's fingerprint of a benchmark: its prepared cache, fixed/ and benchmarks.yaml as they are
    here. DataError (saying to run harness prepare) when the benchmark is not prepared."""
    from harness.data import cache_info
    from harness.fixedcode import fixed_hashes

    cache = cache_info(bench, data_dir, verify=False)
    return benchmark_fingerprint(bench, cache.manifest, fixed_hashes(), budget_s)
