"""Building and verifying benchmark data caches, through fixed/prepare.py."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from harness import paths
from harness.benchmarks import Benchmark
from harness.fixedcode import file_sha256, load_fixed_module

Log = Callable[[str], None]
Progress = Callable[[str, float, float | None], None]


class DataError(RuntimeError):
    """A benchmark's data cache is missing or cannot be built."""


@dataclass
class CacheInfo:
    benchmark: str
    data_dir: Path
    manifest: dict[str, Any]
    manifest_sha256: str

    @property
    def stats(self) -> dict[str, Any]:
        return self.manifest.get("stats", {})

    @property
    def tokenizer_sha256(self) -> str:
        return self.manifest["tokenizer"]["sha256"]

    def to_dict(self) -> dict[str, Any]:
        return {
            "benchmark": self.benchmark,
            "data_dir": str(self.data_dir),
            "manifest_sha256": self.manifest_sha256,
            "tokenizer_sha256": self.tokenizer_sha256,
            "stats": self.stats,
            "files": len(self.manifest["files"]),
        }


def _info(bench: Benchmark, data_dir: Path, manifest: dict[str, Any]) -> CacheInfo:
    return CacheInfo(bench.name, data_dir, manifest, file_sha256(data_dir / "manifest.json"))


def prepare_benchmark(bench: Benchmark, data_dir: Path | None = None, source_dir: Path | None = None,
                      log: Log = lambda _m: None, progress: Progress = lambda *_a: None) -> CacheInfo:
    """Build the benchmark's cache, or verify and reuse it (a corrupt file is rebuilt, with a message)."""
    prepare = load_fixed_module("prepare")
    data_dir = Path(data_dir or paths.data_dir(bench.name))
    data_dir.parent.mkdir(parents=True, exist_ok=True)
    try:
        manifest = prepare.build_cache(bench.data_config(), data_dir, source_dir=source_dir, log=log,
                                       progress=progress)
    except prepare.CacheError as e:
        raise DataError(str(e)) from None
    return _info(bench, data_dir, manifest)


def cache_info(bench: Benchmark, data_dir: Path | None = None, verify: bool = True) -> CacheInfo:
    """The cache of a prepared benchmark; DataError (saying what to run) when it is missing or broken."""
    prepare = load_fixed_module("prepare")
    data_dir = Path(data_dir or paths.data_dir(bench.name))
    if verify:
        problem = prepare.verify_cache(data_dir, bench.data_config())
        if problem:
            raise DataError(f"benchmark '{bench.name}': {problem}; run: harness prepare --benchmark {bench.name}")
    elif not (data_dir / "manifest.json").is_file():
        raise DataError(f"benchmark '{bench.name}' is not prepared; run: harness prepare --benchmark {bench.name}")
    return _info(bench, data_dir, json.loads((data_dir / "manifest.json").read_text()))
