"""The typed record (harness/record.py): built from parts, trust decided in one place, version 1 records
(real wave-1 records kept as fixtures, written by the wave-1 harness) still load."""

from __future__ import annotations

import json
from dataclasses import replace

import jsonschema
import pytest

from harness.record import (COMPAT, SCHEMA_VERSION, VERIFIED, SubmissionDecision, Evaluation, Export, Outcome, RecordError,
                            RunRecord, Timings, decide_trust, migrate_v1)
from tests.conftest import REPO

SCHEMA = json.loads((REPO / "harness" / "schemas" / "result.schema.json").read_text())
FIXTURES = REPO / "tests" / "fixtures"
WAVE1 = ["wave1_verified_docker.json", "wave1_unisolated_local.json"]


def _record(status="ok", isolated=True, evaluation=None, val_bpb=2.0) -> RunRecord:
    timings = Timings(started_at=1.0, first_output_at=2.0, ended_at=10.0, startup_s=1.0, training_s=5.0,
                      eval_s=None, total_s=9.0)
    outcome = Outcome(status=status, reason=None if status == "ok" else "why", backend="docker" if isolated else "local",
                      isolated=isolated, log_path="/runs/20260101-000000-abcdef/log.txt", timings=timings,
                      metrics={"val_bpb": val_bpb}, flags=("throttled", "over_budget", "throttled"))
    prov = {"submission": {"path": "train.py", "sha256": "a" * 64, "description": ""},
            "benchmark": {"name": "tiny", "prepare_sha256": "b" * 64, "manifest_sha256": "c" * 64,
                          "tokenizer_sha256": "d" * 64},
            "backend": outcome.backend, "image": None, "seed": 7, "versions": {"harness": "0"}, "created_at": "now"}
    return RunRecord(run_id="20260101-000000-abcdef", budget_s=60.0, hard_timeout_s=240.0, outcome=outcome,
                     provenance=prov, evaluation=evaluation)


SCORED = Evaluation(mode=VERIFIED, export=Export(ok=True), training_status="ok",
                    evaluator={"ok": True, "val_bpb": 2.0, "backend": "docker", "isolated": True})


def test_trust_is_decided_from_the_parts_alone():
    assert decide_trust(_record().outcome, SCORED) == "verified"
    assert _record(evaluation=SCORED).trust == "verified"
    assert _record(isolated=False, evaluation=SCORED).trust == "unisolated"  # a host process never verifies
    assert _record(status="invalid", evaluation=SCORED).trust == "self-reported"  # e.g. below the entropy floor
    assert _record(evaluation=Evaluation(mode=COMPAT)).trust == "self-reported"
    assert _record(evaluation=replace(SCORED, evaluator={"ok": False})).trust == "self-reported"
    assert _record(evaluation=SCORED, val_bpb=None).trust == "self-reported"
    # Every part must agree: one edited field is not verified.
    assert _record(evaluation=SCORED, val_bpb=0.01).trust == "self-reported"  # not the evaluator's score
    assert _record(evaluation=replace(SCORED, training_status="crash")).trust == "self-reported"
    assert _record(evaluation=replace(SCORED, export=Export(ok=False))).trust == "self-reported"
    assert _record(evaluation=replace(SCORED, export=None)).trust == "self-reported"
    local_eval = replace(SCORED, evaluator={**SCORED.evaluator, "backend": "local", "isolated": False})
    assert _record(evaluation=local_eval).trust == "self-reported"  # the model ran as a host process
    edited = _record(isolated=False, evaluation=SCORED)
    assert replace(edited, outcome=replace(edited.outcome, isolated=True)).trust == "unisolated"  # backend local


def test_a_record_round_trips_through_its_schema_and_flags_are_a_sorted_set():
    rec = replace(_record(evaluation=SCORED), decision=SubmissionDecision("keep", "first", None, 1, (2.0,)))
    doc = rec.to_dict()
    jsonschema.validate(doc, SCHEMA)
    assert doc["schema_version"] == SCHEMA_VERSION and doc["flags"] == ["over_budget", "throttled"]
    assert doc["decision"] == {"label": "keep", "reason": "first", "reference": None, "seeds": 1, "scores": [2.0],
                              "delta": None, "p": None}
    assert RunRecord.from_dict(doc) == rec
    assert RunRecord.from_dict(json.loads(json.dumps(doc))).to_dict() == doc


def test_a_forged_trust_on_disk_is_not_believed():
    doc = _record(evaluation=Evaluation(mode=COMPAT)).to_dict()
    doc["trust"] = "verified"  # edited by hand
    assert RunRecord.from_dict(doc).trust == "self-reported"


def test_the_parts_are_frozen():
    rec = _record()
    with pytest.raises(AttributeError):
        rec.outcome.status = "ok"  # type: ignore[misc]
    with pytest.raises(AttributeError):
        rec.evaluation = SCORED  # type: ignore[misc]


def test_bad_records_name_what_is_wrong():
    doc = _record().to_dict()
    with pytest.raises(RecordError, match="schema_version 9"):
        RunRecord.from_dict({**doc, "schema_version": 9})
    bad = dict(doc)
    del bad["timings"]
    with pytest.raises(RecordError, match="missing field 'timings'"):
        RunRecord.from_dict(bad)
    with pytest.raises(RecordError, match="status 'great'"):
        RunRecord.from_dict({**doc, "status": "great"})


@pytest.mark.parametrize("name", WAVE1)
def test_wave1_records_load_and_migrate(name):
    v1 = json.loads((FIXTURES / name).read_text())
    assert v1["schema_version"] == 1 and v1["evaluation"]["decision"] == "keep"  # a real wave-1 record
    rec = RunRecord.from_dict(v1)
    assert rec.decision is not None and rec.decision.label == "keep" and rec.decision.seeds == 1
    assert rec.decision.reason == v1["evaluation"]["decision_reason"]
    assert rec.evaluation is not None and rec.evaluation.mode == v1["evaluation"]["mode"]
    assert rec.trust == v1["trust"]  # derived again from the parts: the same label wave 1 wrote
    assert (rec.status, rec.val_bpb, rec.seed) == (v1["status"], v1["metrics"]["val_bpb"], v1["provenance"]["seed"])
    doc = rec.to_dict()
    jsonschema.validate(doc, SCHEMA)  # what a migrated record is written as: version 2
    assert "decision" not in doc["evaluation"] and doc["decision"]["label"] == "keep"
    assert migrate_v1(v1)["schema_version"] == SCHEMA_VERSION and v1["schema_version"] == 1  # input untouched
