"""Reading what a train.py printed: progress lines, the summary block, and a crash's traceback.

The formats are documented in docs/design.md ("The train.py output contract").
"""

from __future__ import annotations

import math
import re
from dataclasses import asdict, dataclass, field
from typing import Any

_PROGRESS = re.compile(r"^progress((?:\s+[A-Za-z_]\w*=\S+)+)\s*$")
_SUMMARY_LINE = re.compile(r"^([a-z_M]+):\s+(.*?)\s*$")
SUMMARY_KEYS = ("val_bpb", "training_seconds", "total_seconds", "peak_vram_mb", "mfu_percent",
                "total_tokens_M", "num_steps", "num_params_M", "depth")
_INT_KEYS = {"num_steps", "depth", "step"}


def _number(value: str, integer: bool = False) -> float | int | None:
    """A float (nan and inf included), an int, or None for 'unknown' and the like."""
    token = value.split()[0] if value.split() else ""
    try:
        return int(token) if integer else float(token)
    except ValueError:
        try:
            return float(token) if integer and token.lower() in ("nan", "inf", "-inf") else None
        except ValueError:
            return None


@dataclass
class Progress:
    step: int | None = None
    elapsed: float | None = None
    budget: float | None = None
    loss: float | None = None
    tok_s: float | None = None
    mfu: float | None = None
    extra: dict[str, str] = field(default_factory=dict)


def parse_progress(line: str) -> Progress | None:
    m = _PROGRESS.match(line.strip())
    if not m:
        return None
    p = Progress()
    for pair in m.group(1).split():
        key, _, value = pair.partition("=")
        if key in ("step", "elapsed", "budget", "loss", "tok_s", "mfu"):
            setattr(p, key, _number(value, key in _INT_KEYS))
        else:
            p.extra[key] = value
    return p


@dataclass
class Summary:
    val_bpb: float | None = None
    training_seconds: float | None = None
    total_seconds: float | None = None
    peak_vram_mb: float | None = None
    mfu_percent: float | None = None  # None when the run said the peak FLOP/s was unknown
    total_tokens_M: float | None = None
    num_steps: int | None = None
    num_params_M: float | None = None
    depth: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def parse_summary(text: str) -> Summary | None:
    """The last autoresearch summary block (a '---' line followed by key: value lines), or None."""
    lines = text.splitlines()
    for i in range(len(lines) - 1, -1, -1):
        if lines[i].strip() != "---":
            continue
        values: dict[str, str] = {}
        for line in lines[i + 1:]:
            m = _SUMMARY_LINE.match(line.strip())
            if not m or m.group(1) not in SUMMARY_KEYS:
                break
            values[m.group(1)] = m.group(2)
        if "val_bpb" in values:
            return Summary(**{k: _number(v, k in _INT_KEYS) for k, v in values.items()})
    return None


def saw_nan(text: str, summary: Summary | None) -> bool:
    """A NaN loss in the progress lines, a NaN score, or the baseline's own FAIL line."""
    if summary is not None and summary.val_bpb is not None and not math.isfinite(summary.val_bpb):
        return True
    for line in text.splitlines():
        if line.startswith("FAIL") and "nan" in line.lower():
            return True
        p = parse_progress(line) if line.startswith("progress") else None
        if p is not None and p.loss is not None and math.isnan(p.loss):
            return True
    return False


_OOM = re.compile(r"CUDA out of memory|OutOfMemoryError|torch\.OutOfMemoryError|MemoryError|Cannot allocate memory")


def saw_oom(text: str) -> bool:
    return bool(_OOM.search(text))


def traceback_tail(text: str, max_lines: int = 40) -> str | None:
    """The last Python traceback in the log (its final lines), or the log's tail when there is none."""
    lines = text.splitlines()
    for i in range(len(lines) - 1, -1, -1):
        if lines[i].startswith("Traceback (most recent call last)"):
            return "\n".join(lines[i:][-max_lines:])
    tail = [line for line in lines[-max_lines:] if line.strip()]
    return "\n".join(tail) or None
