"""Loading benchmarks.yaml: validated against a JSON Schema, turned into Benchmark dataclasses.

A bad file gets an error that names the file, the benchmark and the field.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import jsonschema
import yaml

from harness import paths

DEFAULT_THRESHOLDS = {"throttle_max_share": 0.05, "min_sm_clock_fraction": 0.90, "slow_device_fraction": 0.5}
DEFAULT_SIGNIFICANCE = {"alpha": 0.05, "seeds": 3}
# The harness's clock, observed from outside the run (docs/design.md, "The clock"): the first training
# batch must be asked for within startup_s of the start; batches may flow for budget * (1 + overrun)
# + warmup_s; the run must end within export_s of its last batch. Past either, it is flagged over_budget.
DEFAULT_CLOCK = {"startup_s": 60.0, "warmup_s": 10.0, "overrun": 0.05, "export_s": 60.0}


class BenchmarkError(ValueError):
    """benchmarks.yaml is missing, malformed, or names no such benchmark."""


@dataclass(frozen=True)
class Limits:
    memory: str
    shm: str
    pids: int
    tmpfs: str
    output: str
    cpus: float | None = None


@dataclass(frozen=True)
class Benchmark:
    name: str
    description: str
    data: dict[str, Any]
    vocab_size: int
    seq_len: int
    eval_tokens: int
    time_budget_s: float
    hard_timeout_s: float
    model_hint: dict[str, int]
    allowed_imports: tuple[str, ...]
    limits: Limits
    thresholds: dict[str, float] = field(default_factory=lambda: dict(DEFAULT_THRESHOLDS))
    significance: dict[str, float] = field(default_factory=lambda: dict(DEFAULT_SIGNIFICANCE))
    eval_timeout_s: float = 600.0
    clock: dict[str, float] = field(default_factory=lambda: dict(DEFAULT_CLOCK))
    runtime: str | None = None  # the docker backend's OCI runtime (runsc: gVisor); None: the daemon's default
    budget_mode: str = "wall"  # or "reference-compute": time_budget_s is budget_reference's (harness/budget.py)
    budget_reference: str | None = None
    budget_bounds: tuple[float, float] = (0.25, 4.0)

    def data_config(self) -> dict[str, Any]:
        """What fixed/prepare.py needs to build the cache; its hash identifies the cache."""
        return {
            "name": self.name,
            "data": dict(self.data),
            "vocab_size": self.vocab_size,
            "seq_len": self.seq_len,
            "eval_tokens": self.eval_tokens,
        }

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "description": self.description,
            "source": self.data["source"],
            "vocab_size": self.vocab_size,
            "seq_len": self.seq_len,
            "eval_tokens": self.eval_tokens,
            "time_budget_s": self.time_budget_s,
            "hard_timeout_s": self.hard_timeout_s,
            "model_hint": dict(self.model_hint),
            "allowed_imports": list(self.allowed_imports),
            "runtime": self.runtime,
        }


def _schema() -> dict[str, Any]:
    text = resources.files("harness").joinpath("schemas/benchmarks.schema.json").read_text()
    return json.loads(text)


def _where(error: jsonschema.ValidationError) -> tuple[str | None, str]:
    """('tiny', 'data.seed') from an error's path ['benchmarks', 'tiny', 'data', 'seed']."""
    parts = [str(p) for p in error.absolute_path]
    if len(parts) >= 2 and parts[0] == "benchmarks":
        return parts[1], ".".join(parts[2:]) or "(the benchmark itself)"
    return None, ".".join(parts) or "(top level)"


def _most_specific(error: jsonschema.ValidationError) -> jsonschema.ValidationError:
    """Descend into combinator errors (allOf/if-then) to the error that names the deepest field."""
    while error.context:
        error = max(error.context, key=lambda e: len(e.absolute_path))
    return error


def parse_benchmarks(doc: Any, source: str = "benchmarks.yaml") -> dict[str, Benchmark]:
    validator = jsonschema.Draft202012Validator(_schema())
    errors = sorted(validator.iter_errors(doc), key=lambda e: list(map(str, e.absolute_path)))
    if errors:
        lines = []
        for error in errors:
            best = _most_specific(error)
            bench, field_path = _where(best)
            message = best.message
            where = f"benchmark '{bench}', field '{field_path}'" if bench else f"field '{field_path}'"
            lines.append(f"{source}: {where}: {message}")
        raise BenchmarkError("\n".join(lines) + "\nFix the file (the schema is harness/schemas/benchmarks.schema.json).")
    out: dict[str, Benchmark] = {}
    for name, b in doc["benchmarks"].items():
        _check_consistency(name, b, source)
        out[name] = Benchmark(
            name=name,
            description=" ".join(b["description"].split()),
            data=dict(b["data"]),
            vocab_size=b["tokenizer"]["vocab_size"],
            seq_len=b["seq_len"],
            eval_tokens=b["eval_tokens"],
            time_budget_s=float(b["time_budget_s"]),
            hard_timeout_s=float(b["hard_timeout_s"]),
            model_hint=dict(b["model_hint"]),
            allowed_imports=tuple(b["allowed_imports"]),
            limits=Limits(**b["limits"]),
            thresholds={**DEFAULT_THRESHOLDS, **b.get("thresholds", {})},
            significance={**DEFAULT_SIGNIFICANCE, **b.get("significance", {})},
            eval_timeout_s=float(b.get("eval_timeout_s", 600.0)),
            clock={**DEFAULT_CLOCK, **b.get("clock", {})},
            runtime=b.get("runtime") or None,
            budget_mode=b.get("budget_mode", "wall"),
            budget_reference=b.get("budget_reference") or None,
            budget_bounds=tuple(float(x) for x in b.get("budget_bounds", (0.25, 4.0))),  # type: ignore[arg-type]
        )
    return out


def _check_consistency(name: str, b: dict[str, Any], source: str) -> None:
    """Rules a schema cannot say: relations between fields."""

    def fail(field_path: str, message: str) -> None:
        raise BenchmarkError(f"{source}: benchmark '{name}', field '{field_path}': {message}")

    if b["eval_tokens"] % b["seq_len"]:
        fail("eval_tokens", f"{b['eval_tokens']} is not a multiple of seq_len {b['seq_len']}: "
             "evaluation covers whole rows, so make it a multiple")
    if b["hard_timeout_s"] <= b["time_budget_s"]:
        fail("hard_timeout_s", f"{b['hard_timeout_s']} must exceed time_budget_s {b['time_budget_s']} "
             "(startup and evaluation need time too)")
    data = b["data"]
    if data["source"] == "markov":
        lo, hi = data["doc_bytes"]
        if lo > hi:
            fail("data.doc_bytes", f"[{lo}, {hi}]: the minimum exceeds the maximum")
        if data["successors"] > len(data["alphabet"]):
            fail("data.successors", f"{data['successors']} exceeds the alphabet size {len(data['alphabet'])}")
        if len(set(data["alphabet"])) != len(data["alphabet"]) or not data["alphabet"].isascii():
            fail("data.alphabet", "must be distinct ASCII characters")
    if b.get("budget_mode") == "reference-compute":
        from harness.hw.class_table import load_class_table
        from harness.hw.gpu_class import class_from_label

        ref = b.get("budget_reference")
        if not ref:
            fail("budget_reference", "budget_mode reference-compute needs the class whose budget time_budget_s is "
                 "(e.g. H100-SXM-80GB)")
        if not class_from_label(ref, load_class_table()).peak_flops.get("bf16"):
            fail("budget_reference", f"{ref!r} has no bf16 peak in harness/data/gpu_classes.yaml: name a class "
                 "the table knows")
    lo, hi = b.get("budget_bounds", (0.25, 4.0))
    if not lo <= 1.0 <= hi:
        fail("budget_bounds", f"[{lo}, {hi}] must hold 1 (the reference's own budget)")
    if "prepare" not in b["allowed_imports"]:
        fail("allowed_imports", "must include 'prepare' (train.py imports the fixed API from it)")


def load_benchmarks(path: Path | str | None = None) -> dict[str, Benchmark]:
    path = Path(path) if path is not None else paths.benchmarks_file()
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise BenchmarkError(f"{path}: not found; run from the repository root or set HARNESS_BENCHMARKS") from None
    try:
        doc = yaml.safe_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f":{mark.line + 1}" if mark else ""
        raise BenchmarkError(f"{path}{where}: not valid YAML: {getattr(e, 'problem', e)}") from None
    return parse_benchmarks(doc, source=str(path))


def get_benchmark(name: str, path: Path | str | None = None) -> Benchmark:
    benchmarks = load_benchmarks(path)
    if name not in benchmarks:
        raise BenchmarkError(f"no benchmark '{name}'; known: {', '.join(sorted(benchmarks))}")
    return benchmarks[name]


_SIZE = re.compile(r"^(\d+)([kmg])$")


def size_bytes(size: str) -> int:
    """'6g' -> bytes, for limits."""
    m = _SIZE.match(size)
    if not m:
        raise BenchmarkError(f"bad size {size!r}: use a number followed by k, m or g")
    return int(m.group(1)) * {"k": 1 << 10, "m": 1 << 20, "g": 1 << 30}[m.group(2)]
