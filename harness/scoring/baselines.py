"""The per-class baselines file: load, save, merge and add samples (the storage behind normalisation).

A class's baseline is the baseline train.py's runs ON THAT CLASS; :mod:`harness.scoring.normalize`
compares a result with it.

Baselines file (JSON, shareable; merge two with :func:`merge_baselines`)::

    {
      "format": "harness-baselines",
      "version": 1,
      "benchmarks": {
        "tiny": {
          "H100-SXM-80GB·700W": {
            "samples": [{"val_bpb": 0.9979, "tokens": 499600000, "run_id": "r-1", "seed": 1,
                         "host": "node-3", "recorded_at": "2025-01-01T00:00:00Z"}, ...],
            "mean": 0.9979, "std": 0.0005, "n": 3          # recomputed from samples on save
          }
        }
      }
    }

Samples are the truth; mean/std/n are written for people and recomputed on load. std is the
sample standard deviation (n - 1). Unknown sample keys are kept (``extra``).
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterable

FORMAT = "harness-baselines"
VERSION = 1


class BaselineFormatError(ValueError):
    pass


@dataclass
class BaselineSample:
    val_bpb: float
    tokens: int | None
    run_id: str
    seed: int | None
    host: str | None
    recorded_at: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        d = {k: v for k, v in asdict(self).items() if k != "extra"}
        d.update(self.extra)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any], where: str = "sample") -> "BaselineSample":
        if not isinstance(d, dict):
            raise BaselineFormatError(f"{where}: expected an object")
        try:
            val = float(d["val_bpb"])
            run_id = str(d["run_id"])
        except (KeyError, TypeError, ValueError) as exc:
            raise BaselineFormatError(f"{where}: needs numeric val_bpb and a run_id ({exc})") from exc
        if not math.isfinite(val):
            raise BaselineFormatError(f"{where}: val_bpb must be finite")
        known = {"val_bpb", "tokens", "run_id", "seed", "host", "recorded_at"}
        return cls(
            val_bpb=val,
            tokens=int(d["tokens"]) if d.get("tokens") is not None else None,
            run_id=run_id,
            seed=int(d["seed"]) if d.get("seed") is not None else None,
            host=d.get("host"),
            recorded_at=d.get("recorded_at"),
            extra={k: v for k, v in d.items() if k not in known},
        )


@dataclass
class BaselineStats:
    mean: float
    std: float | None  # None when n < 2
    n: int

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def stats_of(values: Iterable[float]) -> BaselineStats | None:
    xs = [float(v) for v in values]
    if not xs:
        return None
    mean = sum(xs) / len(xs)
    std = math.sqrt(sum((x - mean) ** 2 for x in xs) / (len(xs) - 1)) if len(xs) >= 2 else None
    return BaselineStats(mean=mean, std=std, n=len(xs))


class Baselines:
    """benchmark -> class label -> samples."""

    def __init__(self, data: dict[str, dict[str, list[BaselineSample]]] | None = None):
        self.data: dict[str, dict[str, list[BaselineSample]]] = data or {}

    def benchmarks(self) -> list[str]:
        return sorted(self.data)

    def classes(self, benchmark: str) -> list[str]:
        return sorted(self.data.get(benchmark, {}))

    def samples(self, benchmark: str, class_label: str) -> list[BaselineSample]:
        return list(self.data.get(benchmark, {}).get(class_label, []))

    def stats(self, benchmark: str, class_label: str) -> BaselineStats | None:
        return stats_of(s.val_bpb for s in self.samples(benchmark, class_label))

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Baselines) and self.to_dict() == other.to_dict()

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for b in sorted(self.data):
            out[b] = {}
            for c in sorted(self.data[b]):
                samples = self.data[b][c]
                st = stats_of(s.val_bpb for s in samples)
                out[b][c] = {
                    "samples": [s.to_dict() for s in samples],
                    "mean": st.mean if st else None,
                    "std": st.std if st else None,
                    "n": st.n if st else 0,
                }
        return {"format": FORMAT, "version": VERSION, "benchmarks": out}

    @classmethod
    def from_dict(cls, d: Any, source: str = "<baselines>") -> "Baselines":
        if not isinstance(d, dict) or d.get("format") != FORMAT:
            raise BaselineFormatError(f"{source}: not a baselines file (format must be {FORMAT!r})")
        if d.get("version") != VERSION:
            raise BaselineFormatError(f"{source}: unsupported version {d.get('version')!r} (expected {VERSION})")
        benches = d.get("benchmarks") or {}
        if not isinstance(benches, dict):
            raise BaselineFormatError(f"{source}: 'benchmarks' must be an object")
        data: dict[str, dict[str, list[BaselineSample]]] = {}
        for b, classes in benches.items():
            if not isinstance(classes, dict):
                raise BaselineFormatError(f"{source}: benchmarks.{b} must be an object")
            for c, entry in classes.items():
                where = f"{source}: benchmarks.{b}.{c}"
                if not isinstance(entry, dict) or not isinstance(entry.get("samples"), list):
                    raise BaselineFormatError(f"{where}: needs a 'samples' list")
                samples = [BaselineSample.from_dict(s, f"{where}.samples[{i}]") for i, s in enumerate(entry["samples"])]
                data.setdefault(b, {})[c] = _dedupe(samples)
        return cls(data)


def _dedupe(samples: Iterable[BaselineSample]) -> list[BaselineSample]:
    seen: set[str] = set()
    out = []
    for s in samples:
        if s.run_id not in seen:
            seen.add(s.run_id)
            out.append(s)
    return out


def load_baselines(path: str | Path) -> Baselines:
    """Load a baselines file; a missing file is an empty set of baselines."""
    p = Path(path)
    if not p.exists():
        return Baselines()
    try:
        d = json.loads(p.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise BaselineFormatError(f"{p}: not JSON ({exc})") from exc
    return Baselines.from_dict(d, source=str(p))


def baselines_or_none(path: str | Path) -> Baselines:
    """A baselines file for display (another lab's, say): unreadable or malformed counts as no baselines,
    so its rows show no Δ or z instead of failing the whole view. Writers use load_baselines."""
    try:
        return load_baselines(path)
    except (BaselineFormatError, OSError, ValueError):
        return Baselines()


def save_baselines(baselines: Baselines, path: str | Path) -> None:
    """Write atomically (temp file + rename), UTF-8, the class labels' "·" unescaped."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=p.name + ".", suffix=".tmp", dir=p.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            json.dump(baselines.to_dict(), fh, indent=2, ensure_ascii=False)
            fh.write("\n")
        os.replace(tmp, p)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def merge_baselines(a: Baselines, b: Baselines) -> Baselines:
    """Union of two baselines sets; a run_id already in ``a`` (same benchmark and class) is skipped."""
    data: dict[str, dict[str, list[BaselineSample]]] = {}
    for src in (a, b):
        for bench, classes in src.data.items():
            for cls, samples in classes.items():
                data.setdefault(bench, {}).setdefault(cls, []).extend(samples)
    return Baselines({bn: {c: _dedupe(s) for c, s in cl.items()} for bn, cl in data.items()})


def add_sample(
    baselines: Baselines,
    benchmark: str,
    class_label: str,
    sample: BaselineSample | None = None,
    **fields: Any,
) -> bool:
    """Add one sample (a :class:`BaselineSample` or its fields as keywords).

    Returns False (and changes nothing) when that run_id is already there.
    """
    if sample is None:
        fields.setdefault("tokens", None)
        fields.setdefault("seed", None)
        fields.setdefault("host", None)
        sample = BaselineSample.from_dict(fields, "add_sample")
    if not math.isfinite(sample.val_bpb):
        raise ValueError("val_bpb must be finite")
    lst = baselines.data.setdefault(benchmark, {}).setdefault(class_label, [])
    if any(s.run_id == sample.run_id for s in lst):
        return False
    lst.append(sample)
    return True
