"""The record of one run, built from typed parts and written once (schema: harness/schemas/result.schema.json).

    Outcome      what the run did, as the harness observed and judged it (status, timings, metrics, flags)
    Evaluation   how it was scored: the export, the fixed evaluator's verdict (verified) or train.py's own
    SubmissionDecision   the keep/discard of the submission the run belongs to (the same on each of its runs)
    Hardware     the device, its calibration and telemetry, and the normalization against its class
    provenance   what went in (harness/provenance.py alone builds it)

`decide_trust` is the one place the trust label is decided; a record read from disk gets its trust from
its parts again, never from the file. Version 1 records (wave 1) load through `migrate_v1`.
"""

from __future__ import annotations

import copy
import math
from dataclasses import asdict, dataclass, field, fields, replace
from typing import Any, Mapping

SCHEMA_VERSION = 2
# Flags that are facts about a run's submission rather than the run alone (decided in harness/submit.py and
# harness/journal.py); every flag keeps a run out of baselines, references and leaderboards.
SEED_IGNORED = "seed_ignored"  # scores the same whatever the harness's seed: the candidate fixed its own
SEEDS_FAILED = "seeds_failed"  # another seed of its submission did not count, or the submission was cut short
UNDECIDED = "undecided"  # its submission never reached a decision (the harness died between seeds)
OVER_BUDGET = "over_budget"  # trained past the harness's clock (harness/clock.py): never counts
SHARED_HOST = "shared_host"  # ran beside other runs on one CPU host (--parallel N without GPUs): never a baseline
STATUSES = ("ok", "crash", "timeout", "nan", "oom", "aborted", "infra_error", "invalid")
TRUST_LEVELS = ("verified", "self-reported", "unisolated")


class RecordError(ValueError):
    """A record that cannot be read: names the field and what is wrong with it."""


@dataclass(frozen=True)
class Timings:
    """As observed by the harness (epoch seconds and durations), never as claimed by the run."""
    started_at: float
    first_output_at: float | None
    ended_at: float
    startup_s: float | None  # container/process start to train.py's first output
    training_s: float | None  # from the run's summary, bounded by what the harness saw
    eval_s: float | None
    total_s: float
    calibration_s: float | None = None  # start to the end of the calibration, when one ran first
    training_observed_s: float | None = None  # the feed's window: first batch to last batch


@dataclass(frozen=True)
class Outcome:
    """What the run did, as the harness observed and judged it (harness/pipeline/judge.py)."""
    status: str
    reason: str | None
    backend: str
    isolated: bool
    log_path: str
    timings: Timings
    metrics: Mapping[str, Any] = field(default_factory=dict)
    log_truncated: bool = False
    traceback_tail: str | None = None
    flags: tuple[str, ...] = ()
    clock: Mapping[str, Any] | None = None  # the harness's clock (harness/clock.py): spans seen from outside
    reported: Mapping[str, Any] | None = None  # verified runs: train.py's own printed figures, never measured

    def __post_init__(self) -> None:
        if self.status not in STATUSES:
            raise RecordError(f"status {self.status!r}: not one of {', '.join(STATUSES)}")
        object.__setattr__(self, "flags", tuple(sorted(set(self.flags))))

    @property
    def val_bpb(self) -> float | None:
        return self.metrics.get("val_bpb")

    def with_flags(self, *more: str) -> "Outcome":
        return replace(self, flags=tuple(self.flags) + tuple(more))


EXPORT_KEYS = ("ok", "error", "file", "seq_len", "vocab_size", "dynamic_batch", "batch", "torch", "device",
               "sha256", "bytes", "seconds")


@dataclass(frozen=True)
class Export:
    """What fixed/prepare.py's export_model said about the exported program (only these keys are kept)."""
    ok: bool
    error: str | None = None
    file: str | None = None
    seq_len: int | None = None
    vocab_size: int | None = None
    dynamic_batch: bool | None = None
    batch: int | None = None
    torch: str | None = None
    device: str | None = None
    sha256: str | None = None
    bytes: int | None = None
    seconds: float | None = None

    @classmethod
    def from_doc(cls, doc: Mapping[str, Any]) -> "Export":
        return cls(**{k: doc.get(k) for k in EXPORT_KEYS} | {"ok": doc.get("ok") is True})


VERIFIED, COMPAT = "verified", "compat"


@dataclass(frozen=True)
class Evaluation:
    """How the run was scored. verified: the fixed evaluator's verdict on the exported model; compat:
    train.py's own score (self-reported), with why (asked for, or the export failed)."""
    mode: str  # VERIFIED | COMPAT
    export: Export | None = None
    evaluator: Mapping[str, Any] | None = None  # fixed/evaluate.py's verdict and how its containers ran
    training_status: str | None = None  # the status training ended with, before the evaluation
    rescored: bool = False
    note: str | None = None

    def __post_init__(self) -> None:
        if self.mode not in (VERIFIED, COMPAT):
            raise RecordError(f"evaluation.mode {self.mode!r}: must be {VERIFIED} or {COMPAT}")

    @property
    def scored(self) -> bool:
        """The fixed evaluator produced a score."""
        return self.mode == VERIFIED and bool(self.evaluator) and self.evaluator.get("ok") is True


@dataclass(frozen=True)
class SubmissionDecision:
    """The keep/discard of the submission the run belongs to (harness/submit.py)."""
    label: str  # keep | discard | aborted
    reason: str
    reference: str | None = None
    seeds: int = 0
    scores: tuple[float, ...] = ()
    delta: float | None = None  # candidate mean - reference mean (BPB)
    p: float | None = None  # one-sided Welch p-value, when a test was made


@dataclass(frozen=True)
class Hardware:
    """The device of the run (harness/hw/), its calibration and telemetry, and the normalization."""
    machine: Mapping[str, Any] | None = None  # written as "hardware"
    telemetry: Mapping[str, Any] | None = None
    calibration: Mapping[str, Any] | None = None
    normalization: Mapping[str, Any] | None = None


def decide_trust(outcome: Outcome, evaluation: Evaluation | None) -> str:
    """The one place trust is decided. unisolated: the run was a plain host process (the local backend);
    verified: isolated training (no val split) that ended ok, a model that exported, and a score the fixed
    evaluator computed in isolated runs, the very score the record carries; anything else isolated is
    self-reported. Every part must agree, so a record edited in one place is not verified."""
    if not outcome.isolated or outcome.backend == "local":
        return "unisolated"
    ev = evaluation
    if (outcome.status == "ok" and ev is not None and ev.scored and ev.training_status == "ok"
            and ev.export is not None and ev.export.ok and evaluator_isolated(ev.evaluator)
            and outcome.val_bpb is not None and outcome.val_bpb == ev.evaluator.get("val_bpb")):
        return "verified"
    return "self-reported"


def evaluator_isolated(verdict: Mapping[str, Any] | None) -> bool:
    """The scorer and the model servers ran in isolated runs (containers), not as host processes."""
    if not verdict:
        return False
    if "isolated" in verdict:
        return verdict["isolated"] is True
    return verdict.get("backend") not in (None, "local")  # a version 1 verdict names its backend only


@dataclass(frozen=True)
class RunRecord:
    run_id: str
    budget_s: float
    hard_timeout_s: float
    outcome: Outcome
    provenance: Mapping[str, Any]
    evaluation: Evaluation | None = None
    hardware: Hardware = field(default_factory=Hardware)
    decision: SubmissionDecision | None = None
    schema_version: int = SCHEMA_VERSION

    # -- read-only views, so that readers need not know which part holds a fact --
    @property
    def trust(self) -> str:
        return decide_trust(self.outcome, self.evaluation)

    @property
    def status(self) -> str:
        return self.outcome.status

    @property
    def reason(self) -> str | None:
        return self.outcome.reason

    @property
    def val_bpb(self) -> float | None:
        return self.outcome.val_bpb

    @property
    def metrics(self) -> Mapping[str, Any]:
        return self.outcome.metrics

    @property
    def flags(self) -> tuple[str, ...]:
        return self.outcome.flags

    @property
    def timings(self) -> Timings:
        return self.outcome.timings

    @property
    def backend(self) -> str:
        return self.outcome.backend

    @property
    def isolated(self) -> bool:
        return self.outcome.isolated

    @property
    def log_path(self) -> str:
        return self.outcome.log_path

    @property
    def log_truncated(self) -> bool:
        return self.outcome.log_truncated

    @property
    def traceback_tail(self) -> str | None:
        return self.outcome.traceback_tail

    @property
    def normalization(self) -> Mapping[str, Any] | None:
        return self.hardware.normalization

    @property
    def telemetry(self) -> Mapping[str, Any] | None:
        return self.hardware.telemetry

    @property
    def calibration(self) -> Mapping[str, Any] | None:
        return self.hardware.calibration

    @property
    def clock(self) -> Mapping[str, Any] | None:
        return self.outcome.clock

    @property
    def reported(self) -> Mapping[str, Any] | None:
        return self.outcome.reported

    @property
    def seed(self) -> int | None:
        return self.provenance.get("seed")

    @property
    def submission_sha256(self) -> str | None:
        return (self.provenance.get("submission") or {}).get("sha256")

    def with_outcome(self, **changes: Any) -> "RunRecord":
        return replace(self, outcome=replace(self.outcome, **changes))

    # -- on disk --
    def to_dict(self) -> dict[str, Any]:
        o = self.outcome
        doc = {
            "schema_version": SCHEMA_VERSION,
            "run_id": self.run_id,
            "status": o.status,
            "reason": o.reason,
            "trust": self.trust,
            "backend": o.backend,
            "isolated": o.isolated,
            "provenance": copy.deepcopy(dict(self.provenance)),
            "timings": asdict(o.timings),
            "metrics": dict(o.metrics),
            "budget_s": self.budget_s,
            "hard_timeout_s": self.hard_timeout_s,
            "log_path": o.log_path,
            "log_truncated": o.log_truncated,
            "traceback_tail": o.traceback_tail,
            "flags": list(o.flags),
            "clock": _plain(o.clock),
            "reported": _plain(o.reported),
            "hardware": _plain(self.hardware.machine),
            "telemetry": _plain(self.hardware.telemetry),
            "calibration": _plain(self.hardware.calibration),
            "normalization": _plain(self.hardware.normalization),
            "evaluation": _evaluation_doc(self.evaluation),
            "decision": asdict(self.decision) if self.decision else None,
        }
        return finite(doc)

    @classmethod
    def from_dict(cls, doc: Mapping[str, Any]) -> "RunRecord":
        """A record from its JSON document (version 1 or 2). Raises RecordError naming the field."""
        if not isinstance(doc, Mapping):
            raise RecordError("a record must be a JSON object")
        version = doc.get("schema_version")
        if version == 1:
            try:
                doc = migrate_v1(doc)
            except (ValueError, TypeError, AttributeError) as e:
                raise RecordError(f"a version 1 record that cannot be read: {e}") from None
        elif version != SCHEMA_VERSION:
            raise RecordError(f"schema_version {version!r}: this harness reads versions 1 and {SCHEMA_VERSION}")
        try:
            timings = Timings(**{f.name: doc["timings"].get(f.name) for f in fields(Timings)})
            outcome = Outcome(status=doc["status"], reason=doc.get("reason"), backend=doc["backend"],
                              isolated=bool(doc["isolated"]), log_path=doc["log_path"], timings=timings,
                              metrics=dict(doc.get("metrics") or {}), log_truncated=bool(doc.get("log_truncated")),
                              traceback_tail=doc.get("traceback_tail"), flags=tuple(doc.get("flags") or ()),
                              clock=doc.get("clock"), reported=doc.get("reported"))
            return cls(run_id=doc["run_id"], budget_s=doc["budget_s"], hard_timeout_s=doc["hard_timeout_s"],
                       outcome=outcome, provenance=dict(doc["provenance"]),
                       evaluation=_evaluation_of(doc.get("evaluation")),
                       hardware=Hardware(machine=doc.get("hardware"), telemetry=doc.get("telemetry"),
                                         calibration=doc.get("calibration"), normalization=doc.get("normalization")),
                       decision=SubmissionDecision(**{**doc["decision"], "scores": tuple(doc["decision"].get("scores") or ())})
                       if doc.get("decision") else None)
        except KeyError as e:
            raise RecordError(f"missing field {e.args[0]!r}") from None
        except (TypeError, AttributeError, ValueError) as e:
            raise RecordError(f"malformed record: {e}") from None


DECISION_KEYS_V1 = {"decision": "label", "decision_reason": "reason", "reference": "reference", "seeds": "seeds",
                    "scores": "scores"}


def migrate_v1(doc: Mapping[str, Any]) -> dict[str, Any]:
    """A wave-1 record (schema_version 1) as version 2: the submission's decision, which version 1 kept
    inside `evaluation`, becomes the record's `decision`; an evaluation without a mode (a wave-1 record
    that only carried a decision) becomes none."""
    out = copy.deepcopy(dict(doc))
    ev = dict(out.get("evaluation") or {})
    decision = {new: ev.pop(old) for old, new in DECISION_KEYS_V1.items() if old in ev}
    out["decision"] = None
    if decision.get("label") is not None:
        out["decision"] = {"label": decision["label"], "reason": decision.get("reason") or "",
                           "reference": decision.get("reference"), "seeds": int(decision.get("seeds") or 0),
                           "scores": list(decision.get("scores") or []), "delta": None, "p": None}
    out["evaluation"] = None
    if ev.get("mode"):
        export = ev.get("export")
        out["evaluation"] = {"mode": ev["mode"], "evaluator": ev.get("evaluator"),
                             "export": {k: export.get(k) for k in EXPORT_KEYS} if isinstance(export, Mapping) else None,
                             "training_status": ev.get("training_status"), "rescored": bool(ev.get("rescored")),
                             "note": ev.get("note")}
    out["schema_version"] = SCHEMA_VERSION
    return out


def _evaluation_doc(ev: Evaluation | None) -> dict[str, Any] | None:
    if ev is None:
        return None
    return {"mode": ev.mode, "export": asdict(ev.export) if ev.export else None, "evaluator": _plain(ev.evaluator),
            "training_status": ev.training_status, "rescored": ev.rescored, "note": ev.note}


def _evaluation_of(doc: Mapping[str, Any] | None) -> Evaluation | None:
    if not doc:
        return None
    export = doc.get("export")
    return Evaluation(mode=doc["mode"], export=Export.from_doc(export) if isinstance(export, Mapping) else None,
                      evaluator=doc.get("evaluator"), training_status=doc.get("training_status"),
                      rescored=bool(doc.get("rescored")), note=doc.get("note"))


def _plain(value: Any) -> Any:
    return copy.deepcopy(dict(value)) if isinstance(value, Mapping) else value


def finite(value: Any) -> Any:
    """The same structure with every non-finite float as null: JSON has no NaN, and a record must
    always be writable whatever a run or an evaluator produced (the status says what went wrong)."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [finite(v) for v in value]
    return value
